"""Graph passes: fold_pad, fold_constants, prune. Each rewrite must keep the model bit-exact with
TFLite Micro (which runs the unrewritten graph) and must really remove what it claims to."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tinyengine_tf as te
from reference import assert_matches_tflm, compile_and_check, int8_inputs
from tflite_builder import ModelBuilder, bias_scale
from tinyengine_tf.ir import Graph, Op
from tinyengine_tf.kernels.base import KERNELS
from tinyengine_tf.memory import plan_memory
from tinyengine_tf.passes import fold_constants, fold_pad, prune, run_passes

RNG = np.random.default_rng(99)


def _conv(b, x, xs, ic, oc, k, stride, padding, out_hw, act="NONE", ys=0.1, yz=5):
    fs = RNG.uniform(0.002, 0.02, oc)
    w = b.tensor((oc, k, k, ic), scale=fs, zp=[0] * oc, data=RNG.integers(-127, 128, (oc, k, k, ic)), qdim=0)
    bias = b.tensor((oc,), dtype="int32", scale=bias_scale(xs, fs), zp=[0] * oc,
                    data=RNG.integers(-2000, 2000, oc))
    y = b.tensor((1, *out_hw, oc), scale=ys, zp=yz)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding=padding, strideH=stride,
         strideW=stride, fusedActivationFunction=act)
    return y


def _depthwise(b, x, xs, c, mult, k, stride, padding, out_hw):
    oc = c * mult
    fs = RNG.uniform(0.002, 0.02, oc)
    w = b.tensor((1, k, k, oc), scale=fs, zp=[0] * oc, data=RNG.integers(-127, 128, (1, k, k, oc)), qdim=3)
    bias = b.tensor((oc,), dtype="int32", scale=bias_scale(xs, fs), zp=[0] * oc,
                    data=RNG.integers(-2000, 2000, oc))
    y = b.tensor((1, *out_hw, oc), scale=0.08, zp=-4)
    b.op("DEPTHWISE_CONV_2D", [x, w, bias], [y], "DepthwiseConv2DOptions", padding=padding,
         strideH=stride, strideW=stride, depthMultiplier=mult)
    return y


def _valid(size, k, s):
    return (size - k) // s + 1


def _pad_conv_model(hw, ic, pads, k, stride, consumer="CONV_2D", value=None, pad_q=None,
                    padding="VALID", mult=1):
    """x -> PAD/PADV2 -> CONV_2D or DEPTHWISE_CONV_2D; returns (model, padded tensor index)."""
    b = ModelBuilder()
    xs, xz = 0.05, -3
    x = b.tensor((1, hw, hw, ic), scale=xs, zp=xz)
    p = b.tensor((4, 2), dtype="int32", data=pads)
    ph, pw = hw + pads[1][0] + pads[1][1], hw + pads[2][0] + pads[2][1]
    ps_, pz = pad_q or (xs, xz)
    xp = b.tensor((1, ph, pw, ic + pads[3][0] + pads[3][1]), scale=ps_, zp=pz)
    if value is None:
        b.op("PAD", [x, p], [xp])
    else:
        v = b.tensor((), scale=ps_, zp=pz, data=value)
        b.op("PADV2", [x, p, v], [xp])
    c = ic + pads[3][0] + pads[3][1]
    if padding == "SAME":
        out_hw = (math.ceil(ph / stride), math.ceil(pw / stride))
    else:
        out_hw = (_valid(ph, k, stride), _valid(pw, k, stride))
    if consumer == "CONV_2D":
        y = _conv(b, xp, ps_, c, 4, k, stride, padding, out_hw)
    else:
        y = _depthwise(b, xp, ps_, c, mult, k, stride, padding, out_hw)
    return b.build([x], [y]), xp


def _assert_folded(cm, padded):
    assert "PAD" not in cm.graph.op_counts() and "PADV2" not in cm.graph.op_counts()
    assert any(op.kind in ("PAD", "PADV2") for op in cm.source_graph.ops)  # TFLM runs it
    assert padded not in cm.plan.tensor_offset            # no arena bytes for the padded copy
    assert all(padded not in op.inputs for op in cm.graph.ops)
    assert all(padded not in b.tensors for b in cm.plan.buffers)


# -- fold_pad ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, ic, pads, k, stride, padding", [
    (8, 3, [[0, 0], [1, 1], [1, 1], [0, 0]], 3, 1, "VALID"),     # ZeroPadding2D + VALID conv
    (9, 4, [[0, 0], [0, 1], [0, 1], [0, 0]], 3, 2, "VALID"),     # TF-style asymmetric stride-2 pad
    (7, 2, [[0, 0], [2, 1], [0, 3], [0, 0]], 3, 1, "VALID"),
    (6, 3, [[0, 0], [1, 1], [1, 1], [0, 0]], 3, 2, "SAME"),      # explicit pad on top of SAME
])
def test_pad_folds_into_conv(hw, ic, pads, k, stride, padding):
    model, padded = _pad_conv_model(hw, ic, pads, k, stride, padding=padding)
    cm = compile_and_check(model)
    _assert_folded(cm, padded)
    conv = cm.graph.ops[0]
    assert conv.kind == "CONV_2D" and conv.inputs[0] == cm.graph.inputs[0]
    assert conv.options["pad_extra"] == (pads[1][0], pads[1][1], pads[2][0], pads[2][1])


def test_padv2_with_zero_point_fill_folds():
    model, padded = _pad_conv_model(8, 3, [[0, 0], [1, 1], [1, 1], [0, 0]], 3, 1, value=-3)
    _assert_folded(compile_and_check(model), padded)


def test_folded_pad_saves_the_padded_buffer():
    model, padded = _pad_conv_model(16, 8, [[0, 0], [1, 1], [1, 1], [0, 0]], 3, 1)
    cm = te.convert(model)
    # planning the graph as TFLM runs it needs input and padded copy live together
    both = cm.source_graph.t(padded).nbytes + cm.source_graph.t(cm.graph.inputs[0]).nbytes
    assert plan_memory(cm.source_graph).arena_size >= both
    assert cm.peak_sram < both


@pytest.mark.parametrize("hw, c, pads, k, stride, mult", [
    (8, 4, [[0, 0], [1, 1], [1, 1], [0, 0]], 3, 1, 1),
    (9, 3, [[0, 0], [0, 1], [0, 1], [0, 0]], 3, 2, 1),
    (6, 2, [[0, 0], [2, 2], [2, 2], [0, 0]], 5, 1, 2),
])
def test_pad_folds_into_depthwise(hw, c, pads, k, stride, mult):
    if "DEPTHWISE_CONV_2D" not in KERNELS:
        pytest.skip("DEPTHWISE_CONV_2D kernel not available in this checkout")
    model, padded = _pad_conv_model(hw, c, pads, k, stride, consumer="DEPTHWISE_CONV_2D", mult=mult)
    cm = compile_and_check(model)
    _assert_folded(cm, padded)
    assert cm.graph.op_counts() == {"DEPTHWISE_CONV_2D": 1}


@pytest.mark.parametrize("why, kwargs", [
    ("fill differs from the zero point", dict(value=40)),
    ("pad quantization differs from its input", dict(pad_q=(0.07, -3))),
    ("channel padding", dict(pads=[[0, 0], [1, 1], [1, 1], [0, 2]])),
])
def test_pad_that_cannot_fold_still_runs_and_matches(why, kwargs):
    args = dict(hw=7, ic=3, pads=[[0, 0], [1, 1], [1, 1], [0, 0]], k=3, stride=1)
    args.update(kwargs)
    model, padded = _pad_conv_model(**args)
    cm = compile_and_check(model)
    kind = "PADV2" if "value" in kwargs else "PAD"
    assert cm.graph.op_counts().get(kind) == 1, why
    assert padded in cm.plan.tensor_offset


def test_pad_read_by_two_ops_is_not_folded():
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 2), scale=0.05, zp=-3)
    p = b.tensor((4, 2), dtype="int32", data=[[0, 0], [1, 1], [1, 1], [0, 0]])
    xp = b.tensor((1, 8, 8, 2), scale=0.05, zp=-3)
    b.op("PAD", [x, p], [xp])
    y = _conv(b, xp, 0.05, 2, 3, 3, 1, "VALID", (6, 6))
    model = b.build([x], [y, xp])
    cm = compile_and_check(model)
    assert cm.graph.op_counts() == {"PAD": 1, "CONV_2D": 1}


def test_fold_pad_leaves_its_input_graph_alone():
    model, padded = _pad_conv_model(8, 3, [[0, 0], [1, 1], [1, 1], [0, 0]], 3, 1)
    from converters.tflite_reader import read_tflite
    g = read_tflite(model)
    before = [(op.kind, list(op.inputs), dict(op.options)) for op in g.ops]
    folded = fold_pad(g)
    assert [(op.kind, list(op.inputs), dict(op.options)) for op in g.ops] == before
    assert [op.kind for op in folded.ops] == ["CONV_2D"]


# -- fold_constants ---------------------------------------------------------------------------

def _flatten_model(with_batch_stride=False):
    """CONV_2D -> (SHAPE -> STRIDED_SLICE -> PACK) -> RESHAPE -> QUANTIZE, as Keras 3's Flatten."""
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 3), scale=0.05, zp=-3)
    t = _conv(b, x, 0.05, 3, 4, 3, 1, "VALID", (3, 3))
    shp = b.tensor((4,), dtype="int32")
    b.op("SHAPE", [t], [shp], "ShapeOptions", outType=2)  # INT32
    begin = b.tensor((1,), dtype="int32", data=[0])
    end = b.tensor((1,), dtype="int32", data=[1])
    stride = b.tensor((1,), dtype="int32", data=[1])
    batch = b.tensor((), dtype="int32")
    b.op("STRIDED_SLICE", [shp, begin, end, stride], [batch], "StridedSliceOptions", shrinkAxisMask=1)
    minus1 = b.tensor((), dtype="int32", data=-1)
    new_shape = b.tensor((2,), dtype="int32")
    b.op("PACK", [batch, minus1], [new_shape], "PackOptions", valuesCount=2, axis=0)
    flat = b.tensor((1, 36), scale=0.1, zp=5)
    b.op("RESHAPE", [t, new_shape], [flat])
    y = b.tensor((1, 36), scale=0.07, zp=-9)
    b.op("QUANTIZE", [flat], [y])
    return b.build([x], [y])


def test_keras3_flatten_shape_arithmetic_folds_and_matches():
    model = _flatten_model()
    cm = compile_and_check(model)
    assert cm.graph.op_counts() == {"CONV_2D": 1, "RESHAPE": 1, "QUANTIZE": 1}
    reshape = next(op for op in cm.graph.ops if op.kind == "RESHAPE")
    shape_t = cm.graph.t(reshape.inputs[1])
    assert shape_t.is_const and shape_t.data.tolist() == [1, -1]
    # the reshape is a view: the flattened tensor shares the conv output's bytes
    assert cm.plan.tensor_offset[reshape.outputs[0]] == cm.plan.tensor_offset[reshape.inputs[0]]


def test_fold_constants_evaluates_each_op_kind():
    g = Graph(tensors={}, ops=[], inputs=[], outputs=[])
    x = g.new_tensor(name="x", shape=(1, 4, 6, 2), dtype="int8", scale=np.array([0.1], np.float32),
                     zero_point=np.array([0]))
    shp = g.new_tensor(name="shape", shape=(4,), dtype="int32")
    c = [g.new_tensor(name=f"c{k}", shape=(1,), dtype="int32", data=np.array([v], np.int32))
         for k, v in enumerate((1, 3, 1, 10))]
    sl = g.new_tensor(name="slice", shape=(2,), dtype="int32")
    cat = g.new_tensor(name="cat", shape=(3,), dtype="int32")
    mul = g.new_tensor(name="mul", shape=(3,), dtype="int32")
    three = g.new_tensor(name="three", shape=(3,), dtype="int32", data=np.array([2, 2, 2], np.int32))
    g.ops = [Op(0, "SHAPE", [x.index], [shp.index]),
             Op(1, "STRIDED_SLICE", [shp.index, c[0].index, c[1].index, c[2].index], [sl.index]),
             Op(2, "CONCATENATION", [sl.index, c[3].index], [cat.index], {"axis": 0}),
             Op(3, "MUL", [cat.index, three.index], [mul.index])]
    g.inputs, g.outputs = [x.index], [mul.index]
    out = fold_constants(g)
    assert out.ops == []
    assert out.t(sl.index).data.tolist() == [4, 6]
    assert out.t(mul.index).data.tolist() == [8, 12, 20]
    assert g.t(mul.index).data is None  # the pass copies, it does not mutate its input


def test_fold_constants_keeps_activation_math():
    g = Graph(tensors={}, ops=[], inputs=[], outputs=[])
    x = g.new_tensor(name="x", shape=(1, 4), dtype="int8", scale=np.array([0.1], np.float32),
                     zero_point=np.array([0]))
    y = g.new_tensor(name="y", shape=(1, 4), dtype="int8", scale=np.array([0.1], np.float32),
                     zero_point=np.array([0]))
    g.ops = [Op(0, "QUANTIZE", [x.index], [y.index])]
    g.inputs, g.outputs = [x.index], [y.index]
    assert [op.kind for op in fold_constants(g).ops] == ["QUANTIZE"]


# -- prune ------------------------------------------------------------------------------------

def test_dead_branch_is_pruned_and_outputs_still_match():
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 3), scale=0.05, zp=-3)
    y = _conv(b, x, 0.05, 3, 4, 3, 1, "SAME", (5, 5))
    dead1 = b.tensor((1, 5, 5, 3), scale=0.02, zp=1)
    b.op("QUANTIZE", [x], [dead1])
    axes = b.tensor((2,), dtype="int32", data=[1, 2])
    dead2 = b.tensor((1, 1, 1, 3), scale=0.02, zp=1)
    b.op("MEAN", [dead1, axes], [dead2], "ReducerOptions", keepDims=True)
    model = b.build([x], [y])
    cm = compile_and_check(model)
    assert cm.graph.op_counts() == {"CONV_2D": 1}
    assert len(cm.source_graph.ops) == 3
    assert dead1 not in cm.plan.tensor_offset and dead2 not in cm.plan.tensor_offset


def _t(g, name, shape=(4,)):
    return g.new_tensor(name=name, shape=shape, dtype="int8", scale=np.array([0.1], np.float32),
                        zero_point=np.array([0]))


def test_prune_removes_dead_chains_transitively_and_keeps_live_ops():
    g = Graph(tensors={}, ops=[], inputs=[], outputs=[])
    x, a, b_, c, d, e = (_t(g, n) for n in "xabcde")
    g.ops = [Op(0, "QUANTIZE", [x.index], [a.index]),       # live
             Op(1, "QUANTIZE", [a.index], [b_.index]),      # dead -> dead
             Op(2, "QUANTIZE", [b_.index], [c.index]),      # dead end
             Op(3, "SPLIT_V", [a.index], [d.index, e.index])]  # one of two outputs used
    g.inputs, g.outputs = [x.index], [d.index]
    out = prune(g)
    assert [op.index for op in out.ops] == [0, 3]
    assert len(g.ops) == 4


def test_zero_pad_folds_away():
    model, _ = _pad_conv_model(6, 2, [[0, 0], [0, 0], [0, 0], [0, 0]], 3, 1)
    from converters.tflite_reader import read_tflite
    g = read_tflite(model)
    out = run_passes(g)
    assert [op.kind for op in out.ops] == ["CONV_2D"]  # a zero pad folds away as well
    x = int8_inputs((6, 6, 2), 20)
    assert_matches_tflm(te.convert(model), model, x)
