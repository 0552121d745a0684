"""converters/tflite_reader.py on the four conformance models and on builder models.

The expected values come from elsewhere than the reader: op counts and I/O signatures from
shared/models/NOTICE.md, tensors and ops from the flatbuffer's generated table accessors (not the
object API the reader itself uses).
"""
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from conftest import ROOT, SHARED_MODELS
from converters.tflite_reader import read_tflite
from tflite_builder import ModelBuilder, bias_scale

MODELS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]
OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def notice_table() -> dict:
    """file stem -> (input signature, output signature, {op: count}) from NOTICE.md."""
    rows = {}
    for line in (SHARED_MODELS / "NOTICE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        stem = cells[0].strip("`").removesuffix(".tflite")
        counts = {k: int(v) for k, v in re.findall(r"([A-Z_0-9]+) (\d+)", cells[4])}
        rows[stem] = (cells[2], cells[3], counts)
    return rows


def signature(t) -> str:
    """'int8 1x96x96x3', the form NOTICE.md uses."""
    return f"{t.dtype} {'x'.join(str(d) for d in t.shape)}"


@pytest.fixture(scope="module", params=MODELS)
def model(request, shared_models):
    data = (shared_models / f"{request.param}.tflite").read_bytes()
    return request.param, data, read_tflite(data, name=request.param)


def test_notice_lists_every_model():
    assert sorted(notice_table()) == sorted(MODELS)


def test_op_counts_match_notice(model):
    stem, _, graph = model
    assert graph.op_counts() == notice_table()[stem][2]


def test_io_signature_matches_notice(model):
    stem, _, graph = model
    want_in, want_out, _ = notice_table()[stem]
    assert [signature(graph.t(i)) for i in graph.inputs] == [want_in]
    assert [signature(graph.t(i)) for i in graph.outputs] == [want_out]


def _fb_subgraph(data):
    fb = schema.Model.GetRootAsModel(data, 0)
    assert fb.SubgraphsLength() == 1
    return fb, fb.Subgraphs(0)


def test_tensors_match_flatbuffer(model):
    _, data, graph = model
    fb, sg = _fb_subgraph(data)
    assert len(graph.tensors) == sg.TensorsLength()
    for i in range(sg.TensorsLength()):
        ft, t = sg.Tensors(i), graph.t(i)
        assert t.index == i
        assert t.name == ft.Name().decode()
        assert t.dtype == TYPE_NAMES[ft.Type()]
        assert t.shape == tuple(int(d) for d in ft.ShapeAsNumpy())
        _check_quantization(ft.Quantization(), t)
        _check_data(fb, ft, t)


def _check_quantization(q, t):
    if q is None or q.ScaleLength() == 0:
        assert not t.quantized
        return
    scale = np.array([q.Scale(k) for k in range(q.ScaleLength())], np.float32)
    zps = np.array([q.ZeroPoint(k) for k in range(q.ZeroPointLength())], np.int64)
    np.testing.assert_array_equal(t.scale, scale)
    np.testing.assert_array_equal(t.zero_point, zps)
    assert t.per_channel == (len(scale) > 1)
    if len(scale) > 1:
        assert t.quantized_dim == q.QuantizedDimension()
        assert t.shape[t.quantized_dim] == len(scale)


def _check_data(fb, ft, t):
    buf = fb.Buffers(ft.Buffer())
    raw = buf.DataAsNumpy() if buf.DataLength() else None
    if raw is None or ft.Buffer() == 0:
        assert not t.is_const
        return
    want = np.frombuffer(raw.tobytes(), dtype=np.dtype(t.dtype)).reshape(t.shape)
    assert t.data.dtype == want.dtype
    np.testing.assert_array_equal(t.data, want)


def test_ops_match_flatbuffer(model):
    _, data, graph = model
    fb, sg = _fb_subgraph(data)
    assert sorted(op.index for op in graph.ops) == list(range(sg.OperatorsLength()))
    for op in graph.ops:
        fop = sg.Operators(op.index)
        oc = fb.OperatorCodes(fop.OpcodeIndex())
        assert op.kind == OP_NAMES[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())]
        assert op.inputs == [int(i) for i in fop.InputsAsNumpy()]
        assert op.outputs == [int(i) for i in fop.OutputsAsNumpy()]
    assert graph.inputs == [int(i) for i in sg.InputsAsNumpy()]
    assert graph.outputs == [int(i) for i in sg.OutputsAsNumpy()]


def test_execution_order_is_valid(model):
    _, _, graph = model
    ready = set(graph.inputs) | {i for i, t in graph.tensors.items() if t.is_const}
    for op in graph.ops:
        assert all(i < 0 or i in ready for i in op.inputs), op.label()
        ready.update(op.outputs)
    assert set(graph.outputs) <= ready


def test_conv_options_read(model):
    """Options as the flatbuffer stores them, enums resolved to names."""
    _, data, graph = model
    _, sg = _fb_subgraph(data)
    pad = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}
    act = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    convs = [op for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    for op in convs:
        table = sg.Operators(op.index).BuiltinOptions()
        cls = schema.Conv2DOptions if op.kind == "CONV_2D" else schema.DepthwiseConv2DOptions
        opt = cls()
        opt.Init(table.Bytes, table.Pos)
        assert op.options["padding"] == pad[opt.Padding()]
        assert op.options["stride_h"] == opt.StrideH() and op.options["stride_w"] == opt.StrideW()
        assert op.options["fused_activation_function"] == act[opt.FusedActivationFunction()]


@pytest.mark.parametrize("form", [bytes, bytearray, memoryview])
def test_accepts_any_bytes_like(form):
    data = _builder_conv()
    graph = read_tflite(form(data))
    assert graph.op_counts() == {"CONV_2D": 1}


def _builder_conv(pad="VALID", stride=2, act="RELU6"):
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.tensor((1, 7, 7, 2), scale=0.05, zp=-3)
    fs = [0.01, 0.02, 0.03]
    w = b.tensor((3, 3, 3, 2), scale=fs, zp=[0] * 3, data=rng.integers(-127, 128, (3, 3, 3, 2)), qdim=0)
    bb = b.tensor((3,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * 3,
                  data=rng.integers(-500, 500, 3))
    oh = (7 - 3) // stride + 1 if pad == "VALID" else -(-7 // stride)
    y = b.tensor((1, oh, oh, 3), scale=0.1, zp=5)
    b.op("CONV_2D", [x, w, bb], [y], "Conv2DOptions", padding=pad, strideH=stride, strideW=stride,
         fusedActivationFunction=act)
    return b.build([x], [y])


@pytest.mark.parametrize("pad,stride,act", [("VALID", 2, "RELU6"), ("SAME", 2, "NONE"),
                                            ("SAME", 1, "RELU")])
def test_builder_options_roundtrip(pad, stride, act):
    op = read_tflite(_builder_conv(pad, stride, act)).ops[0]
    assert op.options["padding"] == pad
    assert op.options["fused_activation_function"] == act
    assert op.options["stride_h"] == stride and op.options["stride_w"] == stride


NO_TF_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import tinyengine_tf as te
    heavy = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
    assert not [m for m in heavy if m in sys.modules], "import tinyengine_tf imported TF"
    cm = te.convert({conv!r}, name="conv")
    cm.run(__import__("numpy").zeros((7, 7, 2), "int8"))
    for path in {shared!r}:
        try:
            te.convert(path)
        except te.UnsupportedOpError:
            pass  # an op family not written yet: the reader and passes still ran
    loaded = [m for m in heavy if m in sys.modules]
    assert not loaded, f"converting a .tflite imported {{loaded}}"
    print("NO-TF-OK")
""")


def test_import_and_convert_do_not_import_tensorflow(tmp_path, shared_models):
    conv = tmp_path / "conv.tflite"
    conv.write_bytes(_builder_conv())
    shared = [str(shared_models / f"{m}.tflite") for m in MODELS]
    script = NO_TF_SCRIPT.format(root=str(ROOT), conv=str(conv), shared=shared)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-TF-OK" in proc.stdout
