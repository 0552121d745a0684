"""Persistent state: resource variables (VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE, CALL_ONCE
initialization), the state buffer outside the arena, <name>_reset(), and their refusals.

The variable model is built by hand the way TFLiteConverter lays out a tf.Module with
tf.Variables (experimental_enable_resource_variables): CALL_ONCE first, running an init subgraph
of VAR_HANDLE + ASSIGN_VARIABLE(constant); in subgraph 0 one int8 variable with an initializer,
one int8 variable without (it starts at its zero-point fill), one float32 variable between
QUANTIZE and DEQUANTIZE (what the converter leaves without variable quantization), and a read
after an assignment in the same invocation. Compared with one TFLM interpreter over 30 steps,
then across reset() (after which TFLM does not run CALL_ONCE again).
"""
from __future__ import annotations

import flatbuffers
import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_carries_state_and_resets, int8_inputs, sanitized_run, TFLMSequence,
                       _as_list, _assert_same)
from tflite_builder import ModelBuilder
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

N_STEPS = 30
ACC_INIT = np.array([5, -7, 20, 0, 127, -128, 33, -1], dtype=np.int8)
F_INIT = np.linspace(-0.3, 0.4, 8).astype(np.float32)


def _resource(b) -> int:
    r = b.tensor((), dtype="int32")
    b.tensors[r].type = schema.TensorType.RESOURCE
    b.tensors[r].shape = []
    return r


def _handle(b, name: str) -> int:
    r = _resource(b)
    b.op("VAR_HANDLE", [], [r], "VarHandleOptions", container="", sharedName=name)
    return r


def _with_init_subgraph(data: bytes, inits) -> bytes:
    """Append subgraph 1: VAR_HANDLE + ASSIGN_VARIABLE of each (name, array, dtype, scale, zp)."""
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    sg = schema.SubGraphT()
    sg.name = "init"
    sg.tensors, sg.operators, sg.inputs, sg.outputs = [], [], [], []
    codes = {max(oc.builtinCode, oc.deprecatedBuiltinCode): i for i, oc in enumerate(m.operatorCodes)}
    types = {"int8": schema.TensorType.INT8, "float32": schema.TensorType.FLOAT32}
    for name, values, dtype, scale, zp in inits:
        r = schema.TensorT()
        r.name, r.type, r.shape, r.buffer = f"{name}_h", schema.TensorType.RESOURCE, [], 0
        v = schema.TensorT()
        v.name, v.type, v.shape = f"{name}_init", types[dtype], list(values.shape)
        buf = schema.BufferT()
        buf.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        m.buffers.append(buf)
        v.buffer = len(m.buffers) - 1
        if scale is not None:
            q = schema.QuantizationParametersT()
            q.scale, q.zeroPoint = [scale], [zp]
            v.quantization = q
        sg.tensors += [r, v]
        ri, vi = len(sg.tensors) - 2, len(sg.tensors) - 1
        h = schema.OperatorT()
        h.opcodeIndex, h.inputs, h.outputs = codes[schema.BuiltinOperator.VAR_HANDLE], [], [ri]
        h.builtinOptionsType = schema.BuiltinOptions.VarHandleOptions
        h.builtinOptions = schema.VarHandleOptionsT()
        h.builtinOptions.container, h.builtinOptions.sharedName = "", name
        a = schema.OperatorT()
        a.opcodeIndex, a.inputs, a.outputs = codes[schema.BuiltinOperator.ASSIGN_VARIABLE], [ri, vi], []
        sg.operators += [h, a]
    m.subgraphs.append(sg)
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def variable_model(init: bool = True) -> bytes:
    b = ModelBuilder()
    x = b.tensor((1, 8), scale=0.05, zp=-2)
    if init:
        b.op("CALL_ONCE", [], [], "CallOnceOptions", initSubgraphIndex=1)
    r_acc, r_cnt, r_f = _handle(b, "acc"), _handle(b, "cnt"), _handle(b, "f")
    # acc (int8, initialized): y1 = acc + x; acc = y1; y3 = acc read back after the assignment.
    a0 = b.tensor((1, 8), scale=0.06, zp=1)
    b.op("READ_VARIABLE", [r_acc], [a0])
    y1 = b.tensor((1, 8), scale=0.06, zp=1)
    b.op("ADD", [a0, x], [y1], "AddOptions")
    b.op("ASSIGN_VARIABLE", [r_acc, y1], [])
    y3 = b.tensor((1, 8), scale=0.06, zp=1)
    b.op("READ_VARIABLE", [r_acc], [y3])
    # cnt (int8, no initializer: starts at its zero point -20 byte fill): cnt = cnt + x / 2.
    c0 = b.tensor((1, 8), scale=0.05, zp=-20)
    b.op("READ_VARIABLE", [r_cnt], [c0])
    half = b.tensor((1, 8), scale=0.025, zp=3)
    b.op("MUL", [x, b.tensor((1,), scale=0.5 / 127, zp=0, data=[127])], [half], "MulOptions")
    y2 = b.tensor((1, 8), scale=0.05, zp=-20)
    b.op("ADD", [c0, half], [y2], "AddOptions", fusedActivationFunction="RELU")
    b.op("ASSIGN_VARIABLE", [r_cnt, y2], [])
    # f (float32, initialized): q = quantize(f); y4 = q + x; f = dequantize(y4).
    f0 = b.tensor((1, 8), dtype="float32")
    b.op("READ_VARIABLE", [r_f], [f0])
    q0 = b.tensor((1, 8), scale=0.04, zp=0)
    b.op("QUANTIZE", [f0], [q0])
    y4 = b.tensor((1, 8), scale=0.04, zp=0)
    b.op("ADD", [q0, x], [y4], "AddOptions")
    d = b.tensor((1, 8), dtype="float32")
    b.op("DEQUANTIZE", [y4], [d])
    b.op("ASSIGN_VARIABLE", [r_f, d], [])
    data = b.build(inputs=[x], outputs=[y1, y2, y3, y4])
    if init:
        data = _with_init_subgraph(data, [("acc", ACC_INIT.reshape(1, 8), "int8", 0.06, 1),
                                          ("f", F_INIT.reshape(1, 8), "float32", None, None)])
    return data


NAMES = ["acc + x", "cnt (no initializer)", "acc read after assign", "float variable"]


@pytest.fixture(scope="module")
def model():
    data = variable_model()
    return data, te.convert(data, name="vars")


def test_variables_match_tflm_over_a_sequence(model):
    data, cm = model
    assert_carries_state_and_resets(cm, data, int8_inputs((8,), N_STEPS, seed=4),
                                    int8_inputs((8,), 6, seed=9, extremes=False), NAMES)
    # The first step sees the initializer: acc + 0 with x = its zero point.
    cm2 = te.convert(data, name="vars")     # same sources, but its own state
    first = cm2.run(np.full((1, 8), -2, np.int8))
    assert np.array_equal(first[2][0], ACC_INIT)


def test_state_buffer_outside_the_arena(model):
    _, cm = model
    assert cm.state_bytes == 16 + 16 + 32     # int8[8], int8[8], float32[8], 16-byte aligned
    h, c = cm.sources["vars.h"], cm.sources["vars.c"]
    assert "void vars_reset(void);" in h and "#define VARS_STATE_BYTES 64" in h
    assert "static int32_t vars_state[16]" in c
    rep = cm.memory_report(measure_tflm=False)
    md = rep.to_markdown()
    assert "| state (persistent, outside the arena) | 64 |" in md
    assert rep.tinyengine.state_bytes == 64 and rep.tinyengine.peak_sram == cm.peak_sram


def test_only_arena_and_state_are_mutable():
    """No heap, and no mutable global but the arena and the state, in every stateful model."""
    import re
    from test_kernels_lstm import hand_lstm_model
    from test_kernels_svdf import svdf_model
    for name, data in (("vars", variable_model()), ("svdf", svdf_model()), ("lstm", hand_lstm_model())):
        cm = te.convert(data, name=name)
        text = "\n".join(v for k, v in cm.sources.items() if k.endswith((".c", ".h")))
        mutable = [m.group(1) for m in re.finditer(r"^static (?!const)(?!inline)[\w ]*?\b(\w+)\s*\[", text, re.M)]
        assert sorted(mutable) == sorted([f"{name}_arena", f"{name}_state"]), mutable
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", text)


def test_variables_sanitized(model):
    data, cm = model
    xs = int8_inputs((8,), 20, seed=2)
    _assert_same(sanitized_run(cm, xs), _as_list(TFLMSequence(data).run(xs)), NAMES)


@pytest.mark.parametrize("name", ["var_float", "var_int8"])
def test_tf_variable_models_match_tflm(name):
    """tf.Module with a tf.Variable through TFLiteConverter (resource variables on; the variable
    left in float32, or quantized to int8 with _experimental_variable_quantization)."""
    from test_kernels_lstm import tf_state_models
    data = tf_state_models()[name]
    cm = te.convert(data, name=name)
    assert cm.stateful and "READ_VARIABLE" in cm.graph.op_counts()
    judge = TFLMSequence(data)
    xs = int8_inputs((8,), 25, seed=6)
    _assert_same(_as_list(cm.run(xs)), _as_list(judge.run(xs)))
    cm.reset()
    judge.reset()
    _assert_same(_as_list(cm.run(xs[:5])), _as_list(judge.run(xs[:5])))


def test_stateless_model_unchanged():
    b = ModelBuilder()
    x = b.tensor((1, 8), scale=0.05, zp=-2)
    y = b.tensor((1, 8), scale=0.05, zp=-2)
    b.op("RELU", [x], [y])
    cm = te.convert(b.build([x], [y]), name="plain")
    assert cm.state_bytes == 0 and not cm.stateful
    assert "_reset" not in cm.sources["plain.h"] and "plain_state" not in cm.sources["plain.c"]
    cm.reset()  # a no-op


def _never_assigned() -> bytes:
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.05, zp=0)
    r = _handle(b, "ghost")
    v = b.tensor((1, 4), scale=0.05, zp=0)
    b.op("READ_VARIABLE", [r], [v])
    y = b.tensor((1, 4), scale=0.05, zp=0)
    b.op("ADD", [v, x], [y], "AddOptions")
    return b.build([x], [y])


def _size_mismatch() -> bytes:
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.05, zp=0)
    r = _handle(b, "v")
    b.op("ASSIGN_VARIABLE", [r, x], [])
    v = b.tensor((1, 8), scale=0.05, zp=0)
    b.op("READ_VARIABLE", [r], [v])
    return b.build([x], [v])


def _variable_into_add() -> bytes:
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.05, zp=0)
    s = b.tensor((1, 4), scale=0.05, zp=0)
    b.tensors[s].isVariable = True
    y = b.tensor((1, 4), scale=0.05, zp=0)
    b.op("ADD", [s, x], [y], "AddOptions")
    return b.build([x], [y])


@pytest.mark.parametrize("build, kind, words", [
    (_never_assigned, "READ_VARIABLE", "no ASSIGN_VARIABLE ever writes"),
    (_size_mismatch, "READ_VARIABLE", "holds 4"),
    (_variable_into_add, "ADD", "variable (persistent state)"),
])
def test_state_refusals(build, kind, words):
    with pytest.raises(te.UnsupportedOpError) as info:
        te.convert(build())
    err = info.value
    assert err.op_kind == kind and f"{kind} (op #" in str(err) and words in str(err), str(err)


def test_variables_cortex_m4_sequence(model):
    """Under QEMU the firmware boots with the initializer in its state image and carries the
    variables across its 20 invocations, as TFLM does."""
    data, cm = model
    xs = int8_inputs((8,), 20, seed=12)
    _assert_same(_as_list(cm.run(xs, target="cortex-m4")), _as_list(TFLMSequence(data).run(xs)), NAMES)
