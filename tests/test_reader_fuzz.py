"""Malformed models: convert() must raise a TinyEngineError or compile a model equal to TFLM.

Inputs: random byte strings, truncations of valid models, and seeded byte mutations of valid
models, some anywhere, most aimed at the flatbuffer's structure (root offset, vtables, offset
fields) and at the fields the compiler trusts (tensor shapes, types, buffer indices,
quantization scales / zero points / axis, op inputs / outputs, op options).

Each convert() runs in this process under a time limit (a hang fails the test). A mutant that
converts is judged in a worker subprocess, TFLM first: the interpreter can crash or reject a
corrupt model, and such mutants are counted but not compared. The generated C then runs in the
same worker, so a crash of our code is attributed to us, not taken down with pytest.

A failure message names the seed model and the exact byte edits, so any case replays with
``mutate(base, edits)``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest

import tinyengine_tf as te
from conftest import ROOT
from tflite_builder import ModelBuilder, bias_scale

CONVERT_LIMIT_S = 20     # a normal conversion of these models takes well under a second
TFLM_LIMIT_S = 30
TE_LIMIT_S = 180         # includes gcc on a new model, on a busy machine
N_SAMPLES = 4            # all -128, all 127, alternating extremes, one random


# -- seed models --------------------------------------------------------------------------------
def _filter_and_bias(b, rng, shape, scales, x_scale, bias_bound, qdim=0):
    """A random int8 filter (output channels on axis qdim) and int32 bias, drawn in that order."""
    zp = [0] * len(scales)
    w = b.tensor(shape, scale=scales, zp=zp, qdim=qdim, data=rng.integers(-127, 128, shape))
    bias = b.tensor((shape[qdim],), dtype="int32", scale=bias_scale(x_scale, scales), zp=zp,
                    data=rng.integers(-bias_bound, bias_bound, shape[qdim]))
    return w, bias


def _conv_model() -> bytes:
    """Per-channel conv, SAME, stride 2, RELU6: small enough to fuzz hundreds of times."""
    rng = np.random.default_rng(11)
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 3), scale=0.05, zp=-3)
    w, bias = _filter_and_bias(b, rng, (4, 3, 3, 3), [0.011, 0.02, 0.007, 0.015], 0.05, 800)
    y = b.tensor((1, 3, 3, 4), scale=0.08, zp=4)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=2, strideW=2,
         fusedActivationFunction="RELU6")
    return _force_defaults(b.build([x], [y]))


def _force_defaults(data: bytes) -> bytes:
    """Repack with every scalar written out (opcode_index 0, quantized_dimension 0, buffer 0...),
    so those fields exist in the file for mutations to hit."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    fb = flatbuffers.Builder(1024)
    fb.ForceDefaults(True)
    fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def _conv_reshape_model() -> bytes:
    """Per-tensor conv, VALID, then a RESHAPE (a view op) to a flat output."""
    rng = np.random.default_rng(12)
    b = ModelBuilder()
    x = b.tensor((1, 5, 4, 2), scale=0.04, zp=7)
    w, bias = _filter_and_bias(b, rng, (3, 2, 2, 2), [0.013], 0.04, 300)
    y = b.tensor((1, 4, 3, 3), scale=0.05, zp=-6)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="VALID", strideH=1, strideW=1)
    shape = b.tensor((2,), dtype="int32", data=[1, 36])
    flat = b.tensor((1, 36), scale=0.05, zp=-6)
    b.op("RESHAPE", [y, shape], [flat], "ReshapeOptions", newShape=[1, 36])
    return b.build([x], [flat])


def _mini_model() -> bytes:
    """A tiny DS-CNN: conv, depthwise, average pool, reshape, fully connected, softmax, so the
    mutations reach every kernel family the conformance models use, at a small compile cost."""
    rng = np.random.default_rng(13)
    b = ModelBuilder()
    x = b.tensor((1, 6, 5, 1), scale=0.1, zp=-10)
    w, bias = _filter_and_bias(b, rng, (4, 3, 3, 1), [0.02, 0.015, 0.03, 0.01], 0.1, 300)
    c = b.tensor((1, 3, 3, 4), scale=0.12, zp=-128)
    b.op("CONV_2D", [x, w, bias], [c], "Conv2DOptions", padding="SAME", strideH=2, strideW=2,
         fusedActivationFunction="RELU")
    dw, dbias = _filter_and_bias(b, rng, (1, 3, 3, 4), [0.05, 0.04, 0.06, 0.03], 0.12, 200, qdim=3)
    d = b.tensor((1, 3, 3, 4), scale=0.2, zp=-128)
    b.op("DEPTHWISE_CONV_2D", [c, dw, dbias], [d], "DepthwiseConv2DOptions", padding="SAME",
         strideH=1, strideW=1, depthMultiplier=1, fusedActivationFunction="RELU6")
    p = b.tensor((1, 1, 1, 4), scale=0.2, zp=-128)
    b.op("AVERAGE_POOL_2D", [d], [p], "Pool2DOptions", padding="VALID", strideH=3, strideW=3,
         filterHeight=3, filterWidth=3)
    shape = b.tensor((2,), dtype="int32", data=[1, 4])
    flat = b.tensor((1, 4), scale=0.2, zp=-128)
    b.op("RESHAPE", [p, shape], [flat], "ReshapeOptions", newShape=[1, 4])
    fw, fb = _filter_and_bias(b, rng, (3, 4), [0.01], 0.2, 100)
    logits = b.tensor((1, 3), scale=0.15, zp=3)
    b.op("FULLY_CONNECTED", [flat, fw, fb], [logits], "FullyConnectedOptions")
    probs = b.tensor((1, 3), scale=1.0 / 256, zp=-128)
    b.op("SOFTMAX", [logits], [probs], "SoftmaxOptions", beta=1.0)
    return _force_defaults(b.build([x], [probs]))


def _new_ops_model() -> bytes:
    """Every op family issue 11 added, chained on a small map, so mutations reach their checks:
    LEAKY_RELU, PRELU, MAXIMUM, SQUARED_DIFFERENCE, RSQRT (on the non-negative squares), resizes,
    SPACE_TO_DEPTH / DEPTH_TO_SPACE, TRANSPOSE_CONV, BATCH_MATMUL, MINIMUM."""
    rng = np.random.default_rng(14)
    b = ModelBuilder()
    q = dict(scale=0.05, zp=-10)
    x = b.tensor((1, 4, 4, 4), **q)
    t1 = b.tensor((1, 4, 4, 4), scale=0.04, zp=-20)
    b.op("LEAKY_RELU", [x], [t1], "LeakyReluOptions", alpha=0.2)
    alpha = b.tensor((4,), scale=0.01, zp=0, data=rng.integers(-60, 60, 4))
    t2 = b.tensor((1, 4, 4, 4), scale=0.04, zp=-20)
    b.op("PRELU", [t1, alpha], [t2])
    c = b.tensor((1, 1, 1, 4), scale=0.04, zp=-20, data=rng.integers(-128, 128, (1, 1, 1, 4)))
    t3 = b.tensor((1, 4, 4, 4), scale=0.04, zp=-20)
    b.op("MAXIMUM", [t2, c], [t3], "MaximumMinimumOptions")
    t4 = b.tensor((1, 4, 4, 4), scale=0.05, zp=-128)
    b.op("SQUARED_DIFFERENCE", [t3, t1], [t4], "SquaredDifferenceOptions")
    t5 = b.tensor((1, 4, 4, 4), scale=0.1, zp=-128)
    b.op("RSQRT", [t4], [t5])
    size8 = b.tensor((2,), dtype="int32", data=[8, 8])
    t6 = b.tensor((1, 8, 8, 4), scale=0.1, zp=-128)
    b.op("RESIZE_NEAREST_NEIGHBOR", [t5, size8], [t6], "ResizeNearestNeighborOptions")
    t7 = b.tensor((1, 4, 4, 16), scale=0.1, zp=-128)
    b.op("SPACE_TO_DEPTH", [t6], [t7], "SpaceToDepthOptions", blockSize=2)
    t8 = b.tensor((1, 8, 8, 4), scale=0.1, zp=-128)
    b.op("DEPTH_TO_SPACE", [t7], [t8], "DepthToSpaceOptions", blockSize=2)
    size3 = b.tensor((2,), dtype="int32", data=[3, 3])
    t9 = b.tensor((1, 3, 3, 4), scale=0.1, zp=-128)
    b.op("RESIZE_BILINEAR", [t8, size3], [t9], "ResizeBilinearOptions", halfPixelCenters=True)
    oshape = b.tensor((4,), dtype="int32", data=[1, 6, 6, 3])
    fs = [0.01, 0.02, 0.015]
    w = b.tensor((3, 2, 2, 4), scale=fs, zp=[0] * 3, data=rng.integers(-127, 128, (3, 2, 2, 4)))
    bias = b.tensor((3,), dtype="int32", scale=bias_scale(0.1, fs), zp=[0] * 3,
                    data=rng.integers(-300, 300, 3))
    t10 = b.tensor((1, 6, 6, 3), scale=0.2, zp=3)
    b.op("TRANSPOSE_CONV", [oshape, w, t9, bias], [t10], "TransposeConvOptions", padding="SAME",
         strideH=2, strideW=2)
    rshape = b.tensor((3,), dtype="int32", data=[1, 36, 3])
    t11 = b.tensor((1, 36, 3), scale=0.2, zp=3)
    b.op("RESHAPE", [t10, rshape], [t11], "ReshapeOptions", newShape=[1, 36, 3])
    m = b.tensor((3, 2), scale=0.02, zp=0, data=rng.integers(-127, 128, (3, 2)))
    t12 = b.tensor((1, 36, 2), scale=0.1, zp=-5)
    b.op("BATCH_MATMUL", [t11, m], [t12], "BatchMatMulOptions")
    c2 = b.tensor((2,), scale=0.1, zp=-5, data=[40, -30])
    y = b.tensor((1, 36, 2), scale=0.1, zp=-5)
    b.op("MINIMUM", [t12, c2], [y], "MaximumMinimumOptions")
    return _force_defaults(b.build([x], [y]))


def _int16x8_model() -> bytes:
    """A 16x8 keyword-model chain: conv (int64 bias), depthwise, average pool, reshape, fully
    connected (int32 bias), add, int16 softmax."""
    rng = np.random.default_rng(15)
    b = ModelBuilder()
    x = b.tensor((1, 6, 4, 1), dtype="int16", scale=3e-5, zp=0)
    fs = [0.02, 0.015, 0.03, 0.01]
    w = b.tensor((4, 3, 3, 1), scale=fs, zp=[0] * 4, data=rng.integers(-127, 128, (4, 3, 3, 1)))
    bias = b.tensor((4,), dtype="int64", scale=bias_scale(3e-5, fs), zp=[0] * 4,
                    data=rng.integers(-3000, 3000, 4))
    c = b.tensor((1, 3, 2, 4), dtype="int16", scale=4e-5, zp=0)
    b.op("CONV_2D", [x, w, bias], [c], "Conv2DOptions", padding="SAME", strideH=2, strideW=2,
         fusedActivationFunction="RELU")
    dfs = [0.05, 0.04, 0.06, 0.03]
    dw = b.tensor((1, 3, 3, 4), scale=dfs, zp=[0] * 4, qdim=3, data=rng.integers(-127, 128, (1, 3, 3, 4)))
    dbias = b.tensor((4,), dtype="int64", scale=bias_scale(4e-5, dfs), zp=[0] * 4,
                     data=rng.integers(-2000, 2000, 4))
    d = b.tensor((1, 3, 2, 4), dtype="int16", scale=5e-5, zp=0)
    b.op("DEPTHWISE_CONV_2D", [c, dw, dbias], [d], "DepthwiseConv2DOptions", padding="SAME",
         strideH=1, strideW=1, depthMultiplier=1, fusedActivationFunction="RELU6")
    p = b.tensor((1, 1, 1, 4), dtype="int16", scale=5e-5, zp=0)
    b.op("AVERAGE_POOL_2D", [d], [p], "Pool2DOptions", padding="VALID", strideH=3, strideW=2,
         filterHeight=3, filterWidth=2)
    shape = b.tensor((2,), dtype="int32", data=[1, 4])
    flat = b.tensor((1, 4), dtype="int16", scale=5e-5, zp=0)
    b.op("RESHAPE", [p, shape], [flat], "ReshapeOptions", newShape=[1, 4])
    fw = b.tensor((3, 4), scale=[0.01], zp=[0], data=rng.integers(-127, 128, (3, 4)))
    fb = b.tensor((3,), dtype="int32", scale=bias_scale(5e-5, [0.01]), zp=[0] * 3,
                  data=rng.integers(-500, 500, 3))
    logits = b.tensor((1, 3), dtype="int16", scale=1e-4, zp=0)
    b.op("FULLY_CONNECTED", [flat, fw, fb], [logits], "FullyConnectedOptions")
    k = b.tensor((3,), dtype="int16", scale=1e-4, zp=0, data=[1000, -2000, 300])
    s2 = b.tensor((1, 3), dtype="int16", scale=2e-4, zp=0)
    b.op("ADD", [logits, k], [s2], "AddOptions")
    probs = b.tensor((1, 3), dtype="int16", scale=1 / 32768, zp=0)
    b.op("SOFTMAX", [s2], [probs], "SoftmaxOptions", beta=1.0)
    return _force_defaults(b.build([x], [probs]))


def _kws_model() -> bytes:
    from conftest import SHARED_MODELS
    return (SHARED_MODELS / "kws_ref_model.tflite").read_bytes()


def _stateful_model() -> bytes:
    """State of every kind in one subgraph: an LSTM (int8 hidden + int16 cell variables), an
    SVDF (int16 activation state) and a resource variable (VAR_HANDLE, READ, ADD, ASSIGN)."""
    from test_kernels_lstm import _lstm
    from test_kernels_svdf import add_svdf
    rng = np.random.default_rng(13)
    b = ModelBuilder()
    x1 = b.tensor((1, 2, 3), scale=0.02, zp=-7)
    x2 = b.tensor((1, 4), scale=0.05, zp=-3)
    y1 = _lstm(b, rng, x1, 0.02, batch=1, steps=2, n_in=3, units=3, time_major=False,
               cell_scale=2.0 ** -11, cell_clip=3.0, h_scale=0.007, h_zp=5)
    y2, _ = add_svdf(b, rng, x2, 0.05, 1, 4, rank=2, units=2, memory=3)
    r = b.tensor((), dtype="int32")
    b.tensors[r].type = 13  # TensorType.RESOURCE
    b.op("VAR_HANDLE", [], [r], "VarHandleOptions", container="", sharedName="acc")
    a = b.tensor((1, 4), scale=0.05, zp=-3)
    b.op("READ_VARIABLE", [r], [a])
    y3 = b.tensor((1, 4), scale=0.05, zp=-3)
    b.op("ADD", [a, x2], [y3], "AddOptions")
    b.op("ASSIGN_VARIABLE", [r, y3], [])
    return _force_defaults(b.build([x1, x2], [y1, y2, y3]))


def _lstm16_model() -> bytes:
    """A 16x8 LSTM (int16 activations and hidden state, int16 cell, int64 biases), time major,
    batch 2, with a cell clip: mutations reach its type, bias-width and shape checks."""
    from test_kernels_lstm16 import lstm16
    rng = np.random.default_rng(15)
    b = ModelBuilder()
    x = b.tensor((2, 2, 3), dtype="int16", scale=3.0e-5, zp=0)
    y = lstm16(b, rng, x, 3.0e-5, batch=2, steps=2, n_in=3, units=3, time_major=True,
               cell_scale=2.0 ** -12, cell_clip=2.0, h_zp=9, w_zp=1)
    return _force_defaults(b.build([x], [y]))


def _variables_model() -> bytes:
    """tf.Variables as the converter lays them out: CALL_ONCE and an init subgraph (test_state)."""
    from test_state import variable_model
    return variable_model()


SEEDS = {"conv": _conv_model, "conv_reshape": _conv_reshape_model, "mini": _mini_model,
         "kws": _kws_model, "new_ops": _new_ops_model, "int16x8": _int16x8_model,
         "stateful": _stateful_model, "variables": _variables_model, "lstm16": _lstm16_model}
_CACHE: dict = {}


def seed_model(name: str) -> bytes:
    if name not in _CACHE:
        _CACHE[name] = SEEDS[name]()
    return _CACHE[name]


# -- where things are in a flatbuffer ---------------------------------------------------------
def _u32(d, p):
    return struct.unpack_from("<I", d, p)[0]


def _i32(d, p):
    return struct.unpack_from("<i", d, p)[0]


def _u16(d, p):
    return struct.unpack_from("<H", d, p)[0]


# The fields each table type records: (vtable slot, kind, element width, is a vector), per
# TFLite's schema.fbs.
OPCODE_FIELDS = [(4, "opcode", 1, False), (8, "opcode", 4, False),   # deprecated code, version,
                 (10, "opcode", 4, False)]                            # builtin code
TENSOR_FIELDS = [(4, "shape", 4, True), (6, "type", 1, False), (8, "buffer_index", 4, False),
                 (14, "is_variable", 1, False)]
QUANT_FIELDS = [(8, "scale", 4, True), (10, "zero_point", 8, True), (16, "quantized_dim", 4, False)]
SUBGRAPH_IO_FIELDS = [(6, "io", 4, True), (8, "io", 4, True)]
OP_FIELDS = [(4, "opcode_index", 4, False), (6, "io", 4, True), (8, "io", 4, True),
             (10, "options_type", 1, False)]


class Layout:
    """Byte regions of a valid TFLite flatbuffer, by what they hold.

    Regions are (start, length, width): width is the element size a mutation should overwrite
    (4 for int32/float32/offsets, 8 for int64 zero points, 2 for vtable entries, 1 for bytes).
    """

    def __init__(self, data: bytes):
        self.d = data
        self.regions: dict = {}
        self._add("header", 0, 8, 4)
        self._model(self._table_at(0))

    def _add(self, kind, start, length, width):
        if length > 0:
            self.regions.setdefault(kind, []).append((start, length, width))

    def _table_at(self, ref_pos):
        """The table an offset stored at ref_pos points to; records its vtable and fields."""
        self._add("offset", ref_pos, 4, 4)
        pos = ref_pos + _u32(self.d, ref_pos)
        vt = pos - _i32(self.d, pos)
        self._add("vtable", vt, _u16(self.d, vt), 2)
        self._add("table", pos, _u16(self.d, vt + 2), 1)
        return pos

    def _field(self, pos, slot):
        vt = pos - _i32(self.d, pos)
        if slot >= _u16(self.d, vt):
            return None
        off = _u16(self.d, vt + slot)
        return pos + off if off else None

    def _vector(self, pos, slot, kind=None, width=4):
        """(start, count) of a vector field; records its length word and its elements."""
        f = self._field(pos, slot)
        if f is None:
            return None, 0
        self._add("offset", f, 4, 4)
        start = f + _u32(self.d, f)
        n = _u32(self.d, start)
        self._add("vector_length", start, 4, 4)
        if kind:
            self._add(kind, start + 4, n * width, width)
        return start + 4, n

    def _tables(self, pos, slot):
        start, n = self._vector(pos, slot)
        return [self._table_at(start + 4 * k) for k in range(n)] if start else []

    def _scalar(self, pos, slot, kind, width):
        f = self._field(pos, slot)
        if f is not None:
            self._add(kind, f, width, width)

    def _fields(self, pos, fields):
        for slot, kind, width, vector in fields:
            (self._vector if vector else self._scalar)(pos, slot, kind, width)

    def _sub_table(self, pos, slot):
        """The table a field points to (its vtable and fields recorded), or None."""
        f = self._field(pos, slot)
        return None if f is None else self._table_at(f)

    def _model(self, m):
        self._scalar(m, 4, "model_version", 4)
        for oc in self._tables(m, 6):
            self._fields(oc, OPCODE_FIELDS)
        for sg in self._tables(m, 8):
            self._subgraph(sg)
        for buf in self._tables(m, 12):
            self._vector(buf, 4)

    def _subgraph(self, sg):
        for t in self._tables(sg, 4):
            self._fields(t, TENSOR_FIELDS)
            q = self._sub_table(t, 12)
            if q is not None:
                self._fields(q, QUANT_FIELDS)
        self._fields(sg, SUBGRAPH_IO_FIELDS)
        for op in self._tables(sg, 10):
            self._fields(op, OP_FIELDS)
            opt = self._sub_table(op, 12)
            if opt is not None:
                # every scalar of the options table, one byte wide
                vt = opt - _i32(self.d, opt)
                self._fields(opt, [(slot, "options", 1, False) for slot in range(4, _u16(self.d, vt), 2)])


# -- mutations --------------------------------------------------------------------------------
SPECIAL_I32 = [0, 1, -1, 2, 3, 4, 7, 8, 255, 256, 65535, 1 << 24, 1 << 30, 2**31 - 1, -2**31]
SPECIAL_F32 = [0.0, -0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-30, 1e-45, 1e30,
               3.4e38, 0.5, 1.0, 2.0 ** -31, 1e-9]
SPECIAL_I64 = [0, 1, -1, 127, -128, 128, -129, 255, 2**31, -2**31 - 1, 2**63 - 1, -2**63]
SPECIAL_U8 = [0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF]


def mutate(data: bytes, edits) -> bytes:
    """Apply [(position, new bytes), ...]; the replay function for any reported case."""
    out = bytearray(data)
    for pos, new in edits:
        out[pos:pos + len(new)] = new
    return bytes(out[:len(data)])


def _value(rng, kind, width, old: bytes) -> bytes:
    pick = rng.integers(0, 4)
    if width == 1:
        v = rng.choice(SPECIAL_U8) if pick else rng.integers(0, 256)
        return bytes([int(v)])
    if width == 2:
        v = int(rng.choice([0, 2, 4, 0xFFFF, 0x8000])) if pick else int(rng.integers(0, 1 << 16))
        if pick == 3:  # shift a vtable entry to a neighbouring field
            v = (_u16(old, 0) + int(rng.choice([-4, -2, 2, 4]))) & 0xFFFF
        return struct.pack("<H", v)
    if width == 8:
        return struct.pack("<q", int(rng.choice(SPECIAL_I64)) if pick else int(rng.integers(-300, 300)))
    if kind == "scale":
        return struct.pack("<f", float(rng.choice(SPECIAL_F32)) if pick else float(rng.uniform(1e-4, 4)))
    if kind in ("offset", "vector_length", "header") and pick >= 2:
        # Near-miss offsets point at the wrong object instead of off the end: the subtle case.
        v = _i32(old, 0) + int(rng.choice([-8, -4, 4, 8, 12, 16]))
        return struct.pack("<i", max(-2**31, min(2**31 - 1, v)))
    if kind in ("shape", "io", "buffer_index", "opcode_index", "quantized_dim") and pick == 3:
        return struct.pack("<i", _i32(old, 0) + int(rng.choice([-2, -1, 1, 2])))
    return struct.pack("<i", int(rng.choice(SPECIAL_I32)) if pick else int(rng.integers(-2**31, 2**31)))


def targeted_edits(data: bytes, layout: Layout, rng, kinds=None):
    """1-3 edits, each overwriting one aligned element of a region of a chosen kind."""
    kinds = [k for k in (kinds or sorted(layout.regions)) if k in layout.regions]
    edits = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        kind = str(rng.choice(kinds))
        start, length, width = layout.regions[kind][rng.integers(len(layout.regions[kind]))]
        pos = start + width * int(rng.integers(max(1, length // width)))
        if pos + width > len(data):
            continue
        edits.append((pos, _value(rng, kind, width, data[pos:pos + width])))
    return edits


def random_edits(data: bytes, rng):
    """Bit flips and byte overwrites anywhere, the first 64 bytes (root, vtables) favoured."""
    edits = []
    for _ in range(int(rng.choice([1, 1, 2, 4]))):
        hi = 64 if rng.random() < 0.3 else len(data)
        pos = int(rng.integers(0, min(hi, len(data))))
        if rng.random() < 0.5:
            new = data[pos] ^ (1 << int(rng.integers(8)))
        else:
            new = int(rng.choice(SPECIAL_U8)) if rng.random() < 0.5 else int(rng.integers(256))
        edits.append((pos, bytes([new])))
    return edits


# -- the judge: TFLM and the generated C, in a worker process ----------------------------------
WORKER = r"""
import os, pickle, struct, sys, traceback
out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # stray prints from C or Python must not corrupt the protocol
sys.path[:0] = sys.argv[1:3]  # the project root and tests/
import numpy as np
import tinyengine_tf as te
from reference import TFLMSequence
inp = sys.stdin.buffer
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    what, model, xs = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
    try:
        if what == "tflm":
            # One interpreter over the samples, reset first: a stateful model's samples are
            # consecutive steps from the reset state (a stateless model is unaffected).
            res = TFLMSequence(model).run(xs)
        else:
            res = te.convert(model).run(xs)
        reply = ("ok", [np.asarray(r) for r in (res if isinstance(res, list) else [res])])
    except BaseException as exc:
        reply = ("raised", f"{type(exc).__name__}: {exc}"[:500], isinstance(exc, te.TinyEngineError),
                 traceback.format_exc()[-1500:])
    blob = pickle.dumps(reply)
    out.write(struct.pack("<Q", len(blob)) + blob)
    out.flush()
"""


class Worker:
    """One long-lived subprocess; restarted after a crash or a timeout."""

    def __init__(self):
        self.proc = None

    def _start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT), str(ROOT / "tests")],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def call(self, what, model, xs, limit):
        """('ok', outputs) | ('raised', msg, is_te_error, tb) | ('crashed', rc) | ('timeout',)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        blob = pickle.dumps((what, model, xs))
        try:
            self.proc.stdin.write(struct.pack("<Q", len(blob)) + blob)
            self.proc.stdin.flush()
            head = self._read(8, time.monotonic() + limit)
            if head is None:
                return self._died()
            body = self._read(struct.unpack("<Q", head)[0], time.monotonic() + limit)
            return pickle.loads(body) if body is not None else self._died()
        except BrokenPipeError:
            return self._died()
        except TimeoutError:
            self.stop()
            return ("timeout",)

    def _died(self):
        rc = self.proc.wait()
        self.proc = None
        return ("crashed", rc)

    def _read(self, n, deadline):
        fd, buf = self.proc.stdout.fileno(), b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


# -- running one case -------------------------------------------------------------------------
class _Hang(BaseException):
    """Raised by the alarm; a BaseException so no `except Exception` in the reader can hide it."""


def _alarm(_signum, _frame):
    raise _Hang()


def convert_with_limit(model: bytes, limit=CONVERT_LIMIT_S):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return te.convert(model)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_NP_RANGE = {"int8": (-128, 128), "uint8": (0, 256), "int16": (-32768, 32768),
             "int32": (-1000, 1000), "float32": (-1, 1)}


def sample_inputs(cm, seed):
    """N_SAMPLES per input, the first three the int8 extremes (as reference.int8_inputs)."""
    from reference import int8_inputs, sample_shape
    xs = []
    for k, d in enumerate(cm.input_details):
        sample = sample_shape(d["shape"])
        if d["dtype"] == "int8":
            xs.append(int8_inputs(sample, N_SAMPLES, seed=seed + k))
        elif d["dtype"] == "int16":  # 16x8 models: the int16 extremes first
            x = np.random.default_rng(seed + k).integers(-32768, 32768, (N_SAMPLES, *sample))
            x[0], x[1] = -32768, 32767
            x[2].flat[::2] = -32768
            x[2].flat[1::2] = 32767
            xs.append(x.astype(np.int16))
        else:
            lo, hi = _NP_RANGE.get(d["dtype"], (0, 1))
            rng = np.random.default_rng(seed + k)
            xs.append(rng.uniform(lo, hi, (N_SAMPLES, *sample)).astype(d["dtype"]))
    return xs


@dataclass
class Tally:
    """Outcome counts of one fuzz campaign, and every case that broke the contract."""
    label: str
    counts: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)
    compiled: set = field(default_factory=set)
    max_new_compiles: int = 40

    def fail(self, case, why):
        self.failures.append(f"{case}: {why}")

    def report(self):
        summary = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        print(f"\n[{self.label}] {summary}")
        assert not self.failures, (f"{len(self.failures)} cases broke the contract "
                                   f"(raise TinyEngineError or match TFLM):\n" + "\n".join(self.failures[:15]))


def check_case(model: bytes, case: str, tally: Tally, worker: Worker, seed: int = 0):
    """convert(model) raises a TinyEngineError, or its outputs equal TFLM's."""
    tally.counts["cases"] += 1
    t0 = time.monotonic()
    try:
        cm = convert_with_limit(model)
    except te.TinyEngineError:
        tally.counts["rejected"] += 1
        return
    except _Hang:
        tally.fail(case, f"convert() did not finish in {CONVERT_LIMIT_S} s")
        return
    except Exception as exc:  # noqa: BLE001  (the point of the test)
        tb = [l.strip() for l in traceback.format_exc().strip().splitlines()
              if l.strip() and set(l.strip()) - set("^~")]
        tally.fail(case, f"{type(exc).__name__} escaped convert(): {exc} | at "
                         f"{' / '.join(tb[-3:-1])}")
        return
    finally:
        tally.counts["max_convert_ms"] = max(tally.counts["max_convert_ms"],
                                             int(1000 * (time.monotonic() - t0)))
    tally.counts["accepted"] += 1
    _judge(cm, model, case, tally, worker, seed)


def _judge(cm, model, case, tally, worker, seed):
    key = hashlib.sha256(repr(sorted(cm.sources.items())).encode()).hexdigest()
    if key not in tally.compiled and len(tally.compiled) >= tally.max_new_compiles:
        tally.counts["accepted_not_compared(compile cap)"] += 1
        return
    try:
        xs = sample_inputs(cm, seed)
    except Exception as exc:  # noqa: BLE001
        tally.fail(case, f"cannot build inputs from input_details {cm.input_details}: {exc}")
        return
    if sum(x.nbytes for x in xs) > 8 << 20:
        tally.counts["accepted_not_compared(huge input)"] += 1
        return
    ref = worker.call("tflm", model, xs, TFLM_LIMIT_S)
    if ref[0] != "ok":
        tally.counts[f"tflm_{ref[0]}"] += 1
        return
    ours = worker.call("te", model, xs, TE_LIMIT_S)
    tally.compiled.add(key)
    if ours[0] != "ok":
        tally.fail(case, f"convert() accepted it but running the generated C {ours[0]}: {ours[1:]}")
        return
    _compare(ours[1], ref[1], case, tally)


def _compare(ours, ref, case, tally):
    if len(ours) != len(ref):
        tally.fail(case, f"{len(ours)} outputs, TFLM has {len(ref)}")
        return
    for k, (a, b) in enumerate(zip(ours, ref)):
        a, b = np.asarray(a), np.asarray(b)
        if a.size != b.size or not np.array_equal(a.reshape(-1).astype(np.float64),
                                                  b.reshape(-1).astype(np.float64)):
            diff = "shape" if a.size != b.size else int(np.sum(a.reshape(-1) != b.reshape(-1)))
            tally.fail(case, f"output {k} differs from TFLM (ours {a.shape} {a.dtype}, TFLM "
                             f"{b.shape} {b.dtype}, {diff} values differ)")
            return
    tally.counts["matched_tflm"] += 1


# -- the campaigns ------------------------------------------------------------------------------
def test_layout_finds_the_fields_it_targets():
    """The targeting is real: every kind the mutations aim at is located in each seed model."""
    want = {"header", "offset", "vtable", "table", "vector_length", "shape", "type",
            "buffer_index", "scale", "zero_point", "io", "opcode_index", "options",
            "quantized_dim", "options_type", "model_version", "opcode", "is_variable"}
    for name, absent in (("conv", set()), ("kws", {"is_variable"})):  # kws omits defaults
        layout = Layout(seed_model(name))
        assert want - absent <= set(layout.regions), (name, want - set(layout.regions))
    # Shapes sit where the layout says: the conv model's input shape is 1, 6, 6, 3.
    data = seed_model("conv")
    starts = [s for s, n, _ in Layout(data).regions["shape"] if n == 16]
    assert any(struct.unpack_from("<4i", data, s) == (1, 6, 6, 3) for s in starts)


def test_seed_models_match_tflm(worker):
    """The unmutated models are judged like mutants: the harness itself can tell a match."""
    tally = Tally("seeds")
    for name in ("conv", "conv_reshape", "mini", "new_ops", "int16x8", "stateful", "lstm16"):
        check_case(seed_model(name), f"seed {name}", tally, worker)
    tally.report()
    assert tally.counts["matched_tflm"] == 7


def test_random_bytes(worker):
    rng = np.random.default_rng(2024)
    tally = Tally("random bytes")
    for k in range(300):
        n = int(rng.choice([0, 1, 7, 8, 15, 16, 17, 31, 64, 200, 1000, 5000]))
        data = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        if k % 3 and n >= 8:
            data[4:8] = b"TFL3"            # get past the identifier check
        if k % 3 == 2 and n >= 8:
            data[0:4] = struct.pack("<I", int(rng.integers(0, n)))  # a root offset inside
        check_case(bytes(data), f"random bytes #{k} (seed 2024, len {n})", tally, worker)
    tally.report()
    assert tally.counts["rejected"] >= 290


def truncation_points(n: int, count: int, rng) -> list:
    """Every length in the header, the last few bytes, and the rest spread over the file."""
    head = list(range(0, min(n, 24)))
    tail = [n - d for d in (1, 2, 3, 4, 8, 16) if n - d > 0]
    rest = count - len(head) - len(tail)
    spread = np.linspace(24, n - 17, rest // 2, dtype=int).tolist()
    spread += rng.integers(24, n - 1, rest - len(spread)).tolist()
    return sorted(set(head + tail + spread))


@pytest.mark.parametrize("name,count", [("kws", 110), ("conv", 90), ("stateful", 40)])
def test_truncations(name, count, worker):
    data = seed_model(name)
    tally = Tally(f"truncations of {name}", max_new_compiles=4)
    for cut in truncation_points(len(data), count, np.random.default_rng(7)):
        check_case(data[:cut], f"{name} truncated to {cut} of {len(data)} bytes", tally, worker)
    tally.report()
    assert tally.counts["cases"] >= count - 10
    assert tally.counts["rejected"] >= tally.counts["cases"] // 2


# (seed model, campaign, mutants, compiles allowed): the small models take most of the budget;
# kws checks the reader on a real converter's layout (many tensors, shared vtables).
CAMPAIGNS = [("conv", "targeted", 150, 25), ("conv_reshape", "targeted", 100, 15),
             ("mini", "targeted", 150, 15), ("conv", "random", 60, 8), ("mini", "random", 40, 5),
             ("kws", "targeted", 60, 2), ("kws", "random", 30, 1),
             ("new_ops", "targeted", 120, 12), ("new_ops", "random", 30, 3),
             ("int16x8", "targeted", 100, 10), ("stateful", "targeted", 80, 6),
             ("stateful", "random", 20, 2), ("variables", "targeted", 60, 4),
             ("lstm16", "targeted", 60, 4)]


@pytest.mark.parametrize("name,how,count,compiles", CAMPAIGNS)
def test_mutations(name, how, count, compiles, worker):
    data = seed_model(name)
    layout = Layout(data)
    tally = Tally(f"{how} mutations of {name}", max_new_compiles=compiles)
    for k in range(count):
        rng = np.random.default_rng([hash_name(name), k])
        edits = targeted_edits(data, layout, rng) if how == "targeted" else random_edits(data, rng)
        if not edits:
            continue
        case = f"{name} {how} #{k}: mutate(seed_model({name!r}), {_show(edits)})"
        check_case(mutate(data, edits), case, tally, worker, seed=k)
    tally.report()
    assert tally.counts["rejected"] > 0, "the campaign never produced an invalid model"
    if _converts(data):
        assert tally.counts["matched_tflm"] > 0, "no mutant was ever compared with TFLM"


def _converts(data: bytes) -> bool:
    """Whether the unmutated model compiles (kws needs op families that may not exist yet)."""
    try:
        te.convert(data)
        return True
    except te.UnsupportedOpError:
        return False


def hash_name(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def _show(edits) -> str:
    return "[" + ", ".join(f"({p}, {new!r})" for p, new in edits) + "]"


@pytest.mark.parametrize("kind", ["shape", "scale", "zero_point", "quantized_dim", "io",
                                  "buffer_index", "type", "is_variable", "options", "vtable",
                                  "offset"])
def test_every_field_kind_mutated(kind, worker):
    """Each field kind on its own, so a kind the broad campaigns rarely pick is still covered."""
    data = seed_model("conv")
    layout = Layout(data)
    tally = Tally(f"{kind} mutations of conv", max_new_compiles=3)
    for k in range(12):
        rng = np.random.default_rng([hash_name(kind), k])
        edits = targeted_edits(data, layout, rng, kinds=[kind])
        case = f"conv {kind} #{k}: mutate(seed_model('conv'), {_show(edits)})"
        check_case(mutate(data, edits), case, tally, worker, seed=k)
    tally.report()
    assert tally.counts["cases"] == 12


# Cases the campaigns above found, kept by name so each reads as its own regression test. Each
# edit is (seed, region kind, which region of that kind, new bytes); with today's builder the
# byte positions are the ones in the comments.
KNOWN_CASES = {
    # builtin_options_type Conv2DOptions -> DepthwiseConv2DOptions: the options table is read
    # with the wrong field layout (activation RELU6 becomes RELU, dilation 256). [(483, b'\x02')]
    "options_type_mismatch": ("conv", "options_type", 0, 0, b"\x02"),
    # builtin_options_type set to an unknown union member: CONV_2D without options.
    # conv_reshape [(363, b'\x80')]
    "options_type_unknown": ("conv_reshape", "options_type", 0, 0, b"\x80"),
    # the subgraph output points at the constant bias tensor #2. [(576, b'\x02\x00\x00\x00')]
    "constant_model_output": ("conv", "io", 1, 0, struct.pack("<i", 2)),
    # fused_activation_function byte 0xbb: not an ActivationFunctionType. [(535, b'\xbb')]
    "unknown_activation_enum": ("conv", "options", 3, 0, b"\xbb"),
    # filter scale of channel 2 = 1e30: the multiplier's shift is ~100, beyond what TFLM's
    # integer recipe computes defined-ly. [(964, b'\xca\xf2Iq')]
    "huge_filter_scale": ("conv", "scale", 1, 8, struct.pack("<f", 1e30)),
    # input scale 3.4e38. [(1116, b'\x9e\xc9\x7f\x7f')]
    "huge_input_scale": ("conv", "scale", 0, 0, struct.pack("<f", 3.4e38)),
    # dilation_w_factor 16711681: TFLM keeps strides/dilations/pads in int16 and wraps.
    # [(528, b'\x01\x00\xff\x00')]
    "dilation_beyond_int16": ("conv", "options", 4, 0, struct.pack("<i", 16711681)),
    # the bias constant is_variable: TFLM treats it as state, not as the constant in its buffer.
    # [(723, b'\x01')]
    "variable_bias_tensor": ("conv", "is_variable", 2, 0, b"\x01"),
    # CONV_2D input 0 = -1 (the "omitted optional input" marker). [(560, b'\xff\xff\xff\xff')]
    "omitted_conv_input": ("conv", "io", 2, 0, struct.pack("<i", -1)),
    # RESHAPE reads the 3-element bias constant but outputs 36 elements. [(328, b'\x02\x00\x00\x00')]
    "reshape_constant_wrong_size": ("conv_reshape", "io", 4, 0, struct.pack("<i", 2)),
    # RESHAPE input 0 = -1. [(328, b'\xff\xff\xff\xff')]
    "reshape_omitted_input": ("conv_reshape", "io", 4, 0, struct.pack("<i", -1)),
    # dilation_h_factor 0: TFLM uses 0, the conv geometry silently used 1. [(524, b'\x00\x00\x00\x00')]
    "zero_dilation": ("conv", "options", 5, 0, struct.pack("<i", 0)),
    # input shape [1, 6, 6, 0]. [(1144, b'\x00\x00\x00\x00')]
    "zero_input_channels": ("conv", "shape", 0, 12, struct.pack("<i", 0)),
    # output scale 1e-45 (denormal): 6 / scale overflows to inf in the RELU6 clamp. [(680, b'\x01\x00\x00\x00')]
    "denormal_output_scale": ("conv", "scale", 3, 0, struct.pack("<f", 1e-45)),
    # the init subgraph's VAR_HANDLE container becomes a long string that starts with NUL bytes:
    # TFLM compares it as a C string (empty), so it still names variable 'acc'. [(396, b'\x01')]
    "variable_container_with_nul": ("variables", "options", 8, 0, b"\x01"),
}


@pytest.mark.parametrize("case", sorted(KNOWN_CASES))
def test_known_malformed_cases(case, worker):
    name, kind, which, at, new = KNOWN_CASES[case]
    data = seed_model(name)
    edits = [(Layout(data).regions[kind][which][0] + at, new)]
    tally = Tally(case)
    check_case(mutate(data, edits), f"{case}: mutate(seed_model({name!r}), {_show(edits)})",
               tally, worker)
    tally.report()
    assert tally.counts["rejected"] + tally.counts["matched_tflm"] == 1
