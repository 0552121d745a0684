"""What convert() says when it cannot compile a model: the exception type, and a message that
names what failed (op kind and index) and what to do about it."""
import struct
import zlib

import flatbuffers
import numpy as np
import pytest

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

import tinyengine_tf as te
from tflite_builder import ModelBuilder, bias_scale


def _conv(b, x, oc=4, k=3, rng=None):
    """An int8 3x3 SAME conv on x (1, H, W, C); returns its output tensor."""
    rng = rng or np.random.default_rng(0)
    shape = b.tensors[x].shape
    fs = [0.01] * oc
    w = b.tensor((oc, k, k, shape[3]), scale=fs, zp=[0] * oc, qdim=0,
                 data=rng.integers(-127, 128, (oc, k, k, shape[3])))
    bias = b.tensor((oc,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * oc,
                    data=rng.integers(-100, 100, oc))
    y = b.tensor((1, shape[1], shape[2], oc), scale=0.1, zp=2)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
    return y


def conv_model() -> bytes:
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 3), scale=0.05, zp=-1)
    return b.build([x], [_conv(b, x)])


# -- unsupported ops --------------------------------------------------------------------------
def _gather(b, y):
    idx = b.tensor((2,), dtype="int32", data=[0, 1])
    out = b.tensor((1, 6, 6, 2), scale=0.1, zp=2)
    b.op("GATHER", [y, idx], [out], "GatherOptions", axis=3)
    return out


def _lstm(b, y):
    # Shapes only need to get past the reader: the op must be refused by kind, not by shape.
    seq = b.tensor((1, 6, 24), scale=0.1, zp=2)
    b.op("RESHAPE", [y], [seq])
    out = b.tensor((1, 6, 8), scale=0.1, zp=0)
    b.op("BIDIRECTIONAL_SEQUENCE_LSTM", [seq], [out])  # the unidirectional one is supported
    return out


def _custom(b, y):
    out = b.tensor((1, 6, 6, 4), scale=0.1, zp=2)
    b.op("CUSTOM", [y], [out])
    for oc in b.opcodes:
        if oc.builtinCode == schema.BuiltinOperator.CUSTOM:
            oc.customCode = "TFLite_Detection_PostProcess"
    return out


def _lrn(b, y):
    out = b.tensor((1, 6, 6, 4), scale=0.1, zp=2)
    b.op("LOCAL_RESPONSE_NORMALIZATION", [y], [out])
    return out


UNSUPPORTED = {"GATHER": _gather, "BIDIRECTIONAL_SEQUENCE_LSTM": _lstm,
               "CUSTOM:TFLite_Detection_PostProcess": _custom, "LOCAL_RESPONSE_NORMALIZATION": _lrn}


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_unsupported_op_names_kind_index_and_alternatives(kind):
    if kind in te.supported_ops():
        pytest.skip(f"{kind} became supported; this test needs an op that is not")
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 3), scale=0.05, zp=-1)
    y = _conv(b, x)
    out = UNSUPPORTED[kind](b, y)
    index = len(b.ops) - 1
    model = b.build([x], [out])
    with pytest.raises(te.UnsupportedOpError) as info:
        te.convert(model)
    err, msg = info.value, str(info.value)
    assert err.op_kind == kind and err.op_index == index
    assert kind in msg and f"#{index}" in msg
    for op in te.supported_ops():
        assert op in msg, f"the message should list supported op {op}: {msg}"
    assert isinstance(err, te.TinyEngineError)


# -- quantization ------------------------------------------------------------------------------
def float_model(kind="CONV_2D") -> bytes:
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 2), dtype="float32")
    if kind == "CONV_2D":
        w = b.tensor((3, 3, 3, 2), dtype="float32", data=rng.normal(size=(3, 3, 3, 2)))
        bias = b.tensor((3,), dtype="float32", data=rng.normal(size=3))
        y = b.tensor((1, 5, 5, 3), dtype="float32")
        b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
    else:
        w = b.tensor((4, 50), dtype="float32", data=rng.normal(size=(4, 50)))
        flat = b.tensor((1, 50), dtype="float32")
        shape = b.tensor((2,), dtype="int32", data=[1, 50])
        b.op("RESHAPE", [x, shape], [flat])
        y = b.tensor((1, 4), dtype="float32")
        b.op("FULLY_CONNECTED", [flat, w, -1], [y], "FullyConnectedOptions")
    return b.build([x], [y])


@pytest.mark.parametrize("kind", ["CONV_2D", "FULLY_CONNECTED"])
def test_float_model_is_a_quantization_error_with_the_fix(kind):
    with pytest.raises(te.QuantizationError) as info:
        te.convert(float_model(kind))
    msg = str(info.value)
    assert "float32" in msg and "int8" in msg
    assert "representative_dataset" in msg, "the message must say how to quantize"
    assert "op #" in msg


def test_int8_without_quantization_parameters_is_refused():
    rng = np.random.default_rng(2)
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 2))  # int8 but no scale / zero point
    w = b.tensor((3, 3, 3, 2), scale=[0.01] * 3, zp=[0] * 3, data=rng.integers(-127, 128, (3, 3, 3, 2)))
    bias = b.tensor((3,), dtype="int32", scale=bias_scale(0.05, [0.01] * 3), zp=[0] * 3, data=[1, 2, 3])
    y = b.tensor((1, 5, 5, 3), scale=0.1, zp=0)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
    with pytest.raises((te.QuantizationError, te.UnsupportedOpError)) as info:
        te.convert(b.build([x], [y]))
    assert "CONV_2D (op #0)" in str(info.value) and "quantiz" in str(info.value).lower()


# -- not a model -------------------------------------------------------------------------------
def png_bytes() -> bytes:
    """A real 2x2 grey PNG."""
    def chunk(tag, payload):
        body = tag + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + bytes([128, 64]) for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


NOT_MODELS = {
    "empty": b"",
    "png": png_bytes(),
    "text": b"This is a README, not a model.\nIt has several lines of text in it.\n" * 4,
    "tfl3_header_then_garbage": b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4,
    "zeros": bytes(4096),
}


@pytest.mark.parametrize("what", sorted(NOT_MODELS))
@pytest.mark.parametrize("as_path", [False, True])
def test_not_a_model_is_invalid_model_error(what, as_path, tmp_path):
    data = NOT_MODELS[what]
    arg = data
    if as_path:
        arg = tmp_path / f"{what}.tflite"
        arg.write_bytes(data)
    with pytest.raises(te.InvalidModelError) as info:
        te.convert(arg)
    msg = str(info.value)
    assert "tflite" in msg.lower() or "flatbuffer" in msg.lower(), msg


def test_missing_file_is_invalid_model_error(tmp_path):
    missing = tmp_path / "nowhere" / "model.tflite"
    with pytest.raises(te.InvalidModelError) as info:
        te.convert(missing)
    assert str(missing) in str(info.value) and "no such file" in str(info.value)
    with pytest.raises(te.InvalidModelError):
        te.convert(str(missing))


def test_not_a_model_object_is_a_tinyengine_error():
    with pytest.raises(te.TinyEngineError) as info:
        te.convert(12345)
    assert "int" in str(info.value)


def _repack(model_t) -> bytes:
    fb = flatbuffers.Builder(1024)
    fb.Finish(model_t.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def _object(data):
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))


def test_extra_unreferenced_subgraph_is_ignored_as_tflm_does():
    """TFLM runs subgraph 0; a second subgraph no op calls changes nothing (issue 11)."""
    from reference import compile_and_check
    m = _object(conv_model())
    m.subgraphs = [m.subgraphs[0], _object(conv_model()).subgraphs[0]]
    compile_and_check(_repack(m))


def test_model_without_subgraphs_is_invalid():
    m = _object(conv_model())
    m.subgraphs = []
    with pytest.raises(te.InvalidModelError) as info:
        te.convert(_repack(m))
    assert "no subgraph" in str(info.value)


def test_control_flow_op_is_refused_by_name():
    """A model whose subgraph 0 calls another through IF: refused naming the op."""
    m = _object(conv_model())
    sub = _object(conv_model()).subgraphs[0]
    main = m.subgraphs[0]
    cond = schema.TensorT()
    cond.shape, cond.type, cond.name, cond.buffer = [1], schema.TensorType.BOOL, "cond", 0
    main.tensors.append(cond)
    main.inputs = list(main.inputs) + [len(main.tensors) - 1]
    oc = schema.OperatorCodeT()
    oc.builtinCode = schema.BuiltinOperator.IF
    oc.deprecatedBuiltinCode = schema.BuiltinOperator.IF
    oc.version = 1
    m.operatorCodes.append(oc)
    op = schema.OperatorT()
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.inputs = [len(main.tensors) - 1, main.outputs[0]]
    out = schema.TensorT()
    out.shape, out.type, out.name, out.buffer = list(main.tensors[main.outputs[0]].shape), \
        main.tensors[main.outputs[0]].type, "if_out", 0
    out.quantization = main.tensors[main.outputs[0]].quantization
    main.tensors.append(out)
    op.outputs = [len(main.tensors) - 1]
    opts = schema.IfOptionsT()
    opts.thenSubgraphIndex, opts.elseSubgraphIndex = 1, 1
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.IfOptions, opts
    main.operators.append(op)
    main.outputs = [len(main.tensors) - 1]
    m.subgraphs = [main, sub]
    with pytest.raises(te.UnsupportedOpError) as info:
        te.convert(_repack(m))
    assert "IF (op #1)" in str(info.value)


@pytest.mark.parametrize("version", [0, 2, 4])
def test_schema_version_field_is_not_checked_as_tflm(version):
    """TFLM's interpreter runs a TFL3 file whatever its version field says (issue 11)."""
    from reference import compile_and_check
    m = _object(conv_model())
    m.version = version
    compile_and_check(_repack(m))


def test_the_valid_baseline_converts():
    """The models the error tests mutate are themselves fine (so the errors come from the edits)."""
    assert te.convert(conv_model()).peak_sram > 0
    m = _object(conv_model())
    assert te.convert(_repack(m)).peak_sram > 0


# -- budgets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", ["sram", "flash"])
def test_does_not_fit_names_the_budget(budget):
    cm = te.convert(conv_model())
    need = cm.peak_sram if budget == "sram" else cm.flash
    assert te.convert(conv_model(), **{budget: need}).peak_sram == cm.peak_sram  # exactly fits
    with pytest.raises(te.DoesNotFitError) as info:
        te.convert(conv_model(), **{budget: need - 1})
    msg = str(info.value)
    assert f"{need:,}" in msg and f"{need - 1:,}" in msg
    assert ("SRAM" if budget == "sram" else "Flash") in msg
