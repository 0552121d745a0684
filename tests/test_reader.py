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


# -- what TFLM accepts, the reader accepts (issue 11, item 1) ----------------------------------
# Each relaxed rule: a hand-built model that the TFLM interpreter runs, now converted and
# bit-exact with it (compile_and_check: >= 20 inputs, extremes first). Each kept rule next to a
# relaxed one: a model TFLM refuses, which we refuse too.

def _conv_with(bias_q=None, w_qdim=0, w_zp=None, bias_extra=0, bias_zp=True, kind="CONV_2D",
               options=None, bias_zps=None):
    """A per-channel 3x3 conv (or depthwise: filter [1, 3, 3, 4], qdim 3) of 4 channels whose
    filter / bias quantization is edited as the TFLite files in the wild carry it.
    bias_q: (scales, quantized_dimension) of the bias; w_zp: the filter's zero-point list."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 4), scale=0.05, zp=-3)
    fs = [0.011, 0.02, 0.007, 0.015]
    shape = (4, 3, 3, 4) if kind == "CONV_2D" else (1, 3, 3, 4)
    w = b.tensor(shape, scale=fs, zp=[0] * 4, data=rng.integers(-127, 128, shape), qdim=w_qdim)
    if w_zp is not None:
        b.tensors[w].quantization.zeroPoint = list(w_zp)
    bs, bq = bias_q if bias_q is not None else (bias_scale(0.05, fs), 0)
    bvals = rng.integers(-800, 800, 4 + bias_extra)
    bias = b.tensor((4 + bias_extra,), dtype="int32", scale=bs, zp=[0] * (bias_zps or len(bs)), data=bvals,
                    qdim=bq)
    if bias_extra:  # the same tensor, declared with 4 elements: its buffer is longer
        b.tensors[bias].shape = [4]
    if not bias_zp:
        b.tensors[bias].quantization.zeroPoint = None
    y = b.tensor((1, 6, 6, 4), scale=0.08, zp=4)
    opts = "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions"
    extra = {} if kind == "CONV_2D" else {"depthMultiplier": 1}
    b.op(kind, [x, w, bias], [y], opts, padding="SAME", strideH=1, strideW=1,
         fusedActivationFunction="RELU6", **extra, **(options or {}))
    return b.build([x], [y])


RELAXED = {
    # The vision model: a 1-D bias quantized per channel with quantized_dimension 3.
    "bias_qdim_out_of_range": dict(bias_q=(bias_scale(0.05, [0.011, 0.02, 0.007, 0.015]), 3)),
    "depthwise_bias_qdim_3": dict(kind="DEPTHWISE_CONV_2D", w_qdim=3,
                                  bias_q=(bias_scale(0.05, [0.011, 0.02, 0.007, 0.015]), 3)),
    # A bias whose scales are not one per channel at all (TFLM never reads them for conv).
    "bias_scale_count_mismatch": dict(bias_q=([1e-3, 2e-3], 0)),
    # Bias scales TFLM's conv ignores: zero and negative.
    "bias_scale_zero": dict(bias_q=([0.0] * 4, 0)),
    "bias_scale_negative": dict(bias_q=([-1.0] * 4, 0)),
    # A bias with scales and no zero points: unquantized for TFLM, unread by conv.
    "bias_without_zero_points": dict(bias_zp=False),
    # Conv filter [4, 3, 3, 4] with scales along quantized_dimension 3: TFLM checks only that
    # axis's size and reads the scales by output channel.
    "conv_filter_qdim_3": dict(w_qdim=3),
    # Depthwise filter [1, 4, 3, 4] with scales along quantized_dimension 1 (also of size 4).
    "depthwise_filter_qdim_1_of_size_4": None,
    # One zero point for four scales: TFLM broadcasts it.
    "filter_single_zero_point": dict(w_zp=[0]),
    # More zero points than scales (a per-tensor bias with one zero point per channel): TFLM
    # reads one channel and takes the first zero point.
    "bias_more_zero_points_than_scales": dict(bias_q=([0.05 * 0.011], 0), bias_zps=4),
    # A constant buffer longer than its shape needs: TFLM reads the first bytes.
    "bias_buffer_longer_than_shape": dict(bias_extra=3),
}


@pytest.mark.parametrize("case", sorted(RELAXED))
def test_relaxed_rule_accepts_what_tflm_runs(case):
    from reference import compile_and_check
    if RELAXED[case] is None:
        model = _depthwise_qdim1()
    else:
        model = _conv_with(**RELAXED[case])
    compile_and_check(model, n=20, seed=len(case))


def _depthwise_qdim1(kh=4):
    """Depthwise, multiplier 4 over 1 channel, filter [1, kh, 3, 4] quantized along axis 1."""
    rng = np.random.default_rng(6)
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 1), scale=0.05, zp=-3)
    fs = [0.011, 0.02, 0.007, 0.015]
    shape = (1, kh, 3, 4)
    w = b.tensor(shape, scale=fs, zp=[0] * 4, data=rng.integers(-127, 128, shape), qdim=1)
    y = b.tensor((1, 5, 5, 4), scale=0.08, zp=4)
    b.op("DEPTHWISE_CONV_2D", [x, w], [y], "DepthwiseConv2DOptions", padding="SAME", strideH=1,
         strideW=1, depthMultiplier=4)
    return b.build([x], [y])


def _fc(bias=None, w_qdim=0, w_scales=(0.01,), w_shape=(4, 8), options_type="FullyConnectedOptions",
        options=None, kind="FULLY_CONNECTED"):
    rng = np.random.default_rng(8)
    b = ModelBuilder()
    x = b.tensor((1, w_shape[1]), scale=0.05, zp=-7)
    w = b.tensor(w_shape, scale=list(w_scales), zp=[0] * len(w_scales), qdim=w_qdim,
                 data=rng.integers(-127, 128, w_shape))
    ins = [x, w]
    if bias is not None:
        scale, zp = bias
        ins.append(b.tensor((w_shape[0],), dtype="int32", scale=scale, zp=zp,
                            data=rng.integers(-300, 300, w_shape[0])))
        if zp is None:
            b.tensors[ins[-1]].quantization.zeroPoint = None
    y = b.tensor((1, w_shape[0]), scale=0.1, zp=3)
    b.op(kind, ins, [y], options_type, **(options or {}))
    return b.build([x], [y])


def test_fc_per_channel_along_dimension_1():
    """TFLM's FC takes the scale count from the filter axis quantized_dimension names (here 1,
    8 scales on a [4, 8] filter) and uses the first 4: accepted, bit-exact."""
    from reference import compile_and_check
    compile_and_check(_fc(w_qdim=1, w_scales=[0.01 + 0.002 * k for k in range(8)]))
    compile_and_check(_fc(w_qdim=1, w_shape=(6, 6), w_scales=[0.01 + 0.003 * k for k in range(6)]))


def test_fc_bias_scale_without_zero_points_is_unquantized():
    """Scales without zero points leave a tensor unquantized in TFLM: FULLY_CONNECTED then
    compares input x filter scale with 0, not with the (100x off) stored bias scale."""
    from reference import compile_and_check
    compile_and_check(_fc(bias=(0.05 * 0.01 * 100, None)))


def test_mismatched_options_table_means_defaults():
    """An op carrying another op's options table: TFLM's parser sees no options and runs with
    defaults (here: no fused RELU6 on the FC), so do we."""
    from reference import compile_and_check
    model = _fc(bias=(0.05 * 0.01, 0), options_type="Conv2DOptions",
                options={"fusedActivationFunction": "RELU6", "strideH": 1, "strideW": 1})
    cm = compile_and_check(model)
    assert cm.graph.ops[0].options == {}


def _tflm_accepts(model: bytes) -> bool:
    """Whether the TFLM interpreter runs the model, in a subprocess (some refusals abort)."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from reference import tflm_run
        from converters.tflite_reader import read_tflite
        data = open(sys.argv[1], "rb").read()
        g = read_tflite(data)
        tflm_run(data, np.zeros((1, *g.t(g.inputs[0]).shape[1:]), np.int8))
        print("TFLM-RAN")
    """)
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        proc = subprocess.run([sys.executable, "-c", script, f.name], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    return "TFLM-RAN" in proc.stdout


KEPT = {
    # FULLY_CONNECTED per tensor compares the bias scale with input x filter scale.
    "fc_bias_scale_100x_product": lambda: _fc(bias=(0.05 * 0.01 * 100, 0)),
    "fc_bias_scale_nan": lambda: _fc(bias=(float("nan"), 0)),
    # Scales along quantized dimension 1 that do not fill it.
    "fc_scales_do_not_fill_dimension": lambda: _fc(w_qdim=1, w_scales=[0.01] * 4),
    # Conv filter scales along an axis whose size is not the output channel count.
    "conv_filter_qdim_of_other_size": lambda: _conv_with(w_qdim=1),
    "depthwise_filter_qdim_of_other_size": lambda: _depthwise_qdim1(kh=3),
    # SOFTMAX without options: beta 0, which TFLM's Prepare aborts on.
    "softmax_without_options": None,
}


def _softmax_without_options():
    b = ModelBuilder()
    x = b.tensor((1, 5), scale=0.1, zp=0)
    y = b.tensor((1, 5), scale=1 / 256, zp=-128)
    b.op("SOFTMAX", [x], [y])
    return b.build([x], [y])


@pytest.mark.parametrize("case", sorted(KEPT))
def test_kept_rule_refuses_what_tflm_refuses(case):
    import tinyengine_tf as te
    model = _softmax_without_options() if KEPT[case] is None else KEPT[case]()
    assert not _tflm_accepts(model)
    with pytest.raises(te.TinyEngineError):
        te.convert(model)


def test_tflm_accepts_helper_sees_a_valid_model():
    assert _tflm_accepts(_fc(bias=(0.05 * 0.01, 0)))


def _int4_model(kind, odd=False, seed=3):
    """A conv / depthwise / FC layer whose filter is packed int4 (low nibble first)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    if kind == "FULLY_CONNECTED":
        k = 9 if odd else 8
        x = b.tensor((1, k), scale=0.05, zp=-3)
        wshape, fs, y_shape, opts = (5, k), [0.1], (1, 5), "FullyConnectedOptions"
    elif kind == "CONV_2D":
        x = b.tensor((1, 5, 5, 3), scale=0.05, zp=-3)
        wshape, fs, y_shape, opts = (3, 3, 3, 3), [0.1, 0.2, 0.15], (1, 5, 5, 3), "Conv2DOptions"
    else:
        x = b.tensor((1, 5, 5, 3), scale=0.05, zp=-3)
        wshape, fs, y_shape, opts = (1, 3, 3, 3), [0.1, 0.2, 0.15], (1, 5, 5, 3), "DepthwiseConv2DOptions"
    vals = rng.integers(-8, 8, wshape).astype(np.int8)
    vals.flat[0], vals.flat[1] = -8, 7
    flat = vals.ravel()
    if flat.size % 2:
        flat = np.concatenate([flat, [0]])
    packed = ((flat[0::2].astype(np.uint8) & 0x0F) | ((flat[1::2].astype(np.uint8) & 0x0F) << 4))
    w = b.tensor(wshape, scale=fs, zp=[0] * len(fs), qdim=3 if kind == "DEPTHWISE_CONV_2D" else 0,
                 data=np.zeros(wshape))
    buf = schema.BufferT()
    buf.data = packed.astype(np.uint8)
    b.buffers[b.tensors[w].buffer] = buf
    b.tensors[w].type = schema.TensorType.INT4
    y = b.tensor(y_shape, scale=0.3, zp=2)
    extra = {} if kind != "DEPTHWISE_CONV_2D" else {"depthMultiplier": 1}
    if kind == "FULLY_CONNECTED":
        b.op(kind, [x, w], [y], opts)
    else:
        b.op(kind, [x, w], [y], opts, padding="SAME", strideH=1, strideW=1, **extra)
    return b.build([x], [y]), vals


@pytest.mark.parametrize("kind,odd", [("CONV_2D", False), ("DEPTHWISE_CONV_2D", False),
                                      ("FULLY_CONNECTED", False), ("FULLY_CONNECTED", True)])
def test_int4_weights_accepted_as_tflm_unpacks_them(kind, odd):
    """TFLM runs int4 (packed) filters by unpacking them to int8; the reader does the same."""
    from reference import compile_and_check
    model, vals = _int4_model(kind, odd)
    g = read_tflite(model)
    w = g.t(g.ops[0].inputs[1])
    assert w.dtype == "int8" and np.array_equal(w.data, vals)
    compile_and_check(model)


def test_float_tensor_quantization_is_not_read_as_tflm():
    """A float model input carrying a zero quantization scale: TFLM's QUANTIZE reads only its
    int8 output's parameters and runs; so does the reader."""
    import tinyengine_tf as te
    from reference import assert_matches_tflm
    b = ModelBuilder()
    x = b.tensor((1, 8), dtype="float32", scale=0.0, zp=0)
    y = b.tensor((1, 8), scale=0.05, zp=-3)
    b.op("QUANTIZE", [x], [y])
    model = b.build([x], [y])
    xs = np.linspace(-8, 8, 5 * 8, dtype=np.float32).reshape(5, 8)
    assert_matches_tflm(te.convert(model), model, xs)


def _per_channel_activation_model(kind):
    """`kind` reading an activation quantized per channel (3 scales, zero points 2, 0, 0)."""
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 3), scale=[0.1, 0.2, 0.3], zp=[2, 0, 0], qdim=3)
    same = dict(scale=[0.1, 0.2, 0.3], zp=[2, 0, 0], qdim=3)
    if kind == "AVERAGE_POOL_2D":
        y = b.tensor((1, 2, 2, 3), **same)
        b.op(kind, [x], [y], "Pool2DOptions", padding="VALID", strideH=2, strideW=2,
             filterHeight=2, filterWidth=2)
    elif kind == "MEAN":
        ax = b.tensor((2,), dtype="int32", data=[1, 2])
        y = b.tensor((1, 1, 1, 3), scale=0.05, zp=3)
        b.op(kind, [x, ax], [y], "ReducerOptions", keepDims=True)
    elif kind == "SOFTMAX":
        y = b.tensor((1, 4, 4, 3), scale=1 / 256, zp=-128)
        b.op(kind, [x], [y], "SoftmaxOptions", beta=1.0)
    elif kind == "TRANSPOSE":
        perm = b.tensor((4,), dtype="int32", data=[0, 2, 1, 3])
        y = b.tensor((1, 4, 4, 3), **same)
        b.op(kind, [x, perm], [y], "TransposeOptions")
    else:  # CONV_2D with a per-channel input and output
        rng = np.random.default_rng(2)
        w = b.tensor((3, 3, 3, 3), scale=[0.01, 0.02, 0.03], zp=[0] * 3,
                     data=rng.integers(-127, 128, (3, 3, 3, 3)))
        y = b.tensor((1, 4, 4, 3), scale=[0.3, 0.1, 0.2], zp=[-4, 0, 0], qdim=3)
        b.op(kind, [x, w], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
    return b.build([x], [y])


@pytest.mark.parametrize("kind", ["AVERAGE_POOL_2D", "MEAN", "SOFTMAX", "TRANSPOSE", "CONV_2D"])
def test_per_channel_activations_read_through_the_first_channel(kind):
    """TFLM's kernels read an activation's params (its first scale and zero point) and never
    check the scale count (except QUANTIZE's output): accepted, bit-exact."""
    from reference import compile_and_check
    compile_and_check(_per_channel_activation_model(kind))
