"""DEPTHWISE_CONV_2D: bit-exact with TFLite Micro over kernel sizes, strides, dilations, paddings
(SAME, VALID, folded explicit PAD), depth multipliers, quantization granularity, biases and
activations; the in-place mode really aliases the output onto the input in a compiled model and is
correct both aliased and not; clean under sanitizers; shape-only footprint equal to what the layer
emits; loud failures for what it cannot do."""
import math

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       explicit_pad_input, filter_and_bias, int8_inputs, out_size, sample_shape,
                       valid_random_specs)
from tflite_builder import ModelBuilder, bias_scale
from tinyengine_tf.kernels import depthwise, depthwise_band
from tinyengine_tf.kernels.base import ALIGN, FOOTPRINTS, EmitContext

N_SAMPLES = 20
ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def spec(**kw):
    """One depthwise configuration; anything not given takes a small, ordinary value."""
    s = dict(h=9, w=9, c=4, mult=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, pad="SAME",
             per_channel=True, bias=True, act="NONE", xzp=-3, yzp=5, xs=0.05, ys=None, batch=1,
             pad_extra=None, wmin=-127, bias_range=3000, seed=0)
    s.update(kw)
    return s


def dw_model(p, filter_zp=None, bias_values=None, option_mult=None, bias_dtype="int32",
             extra_input=False) -> bytes:
    """A .tflite holding one DEPTHWISE_CONV_2D (after an explicit PAD when pad_extra is given)."""
    rng = np.random.default_rng(p["seed"])
    b = ModelBuilder()
    x, dw_in, h, w = explicit_pad_input(b, p, p["c"])
    oc = p["c"] * p["mult"]
    fs = rng.uniform(0.002, 0.02, oc) if p["per_channel"] else np.array([0.01])
    inputs = [dw_in, *filter_and_bias(b, rng, p, (1, p["kh"], p["kw"], oc), oc, fs, 3, filter_zp,
                                      bias_values, (-p["bias_range"], p["bias_range"] + 1),
                                      bias_dtype)]
    oh = out_size(h, p["kh"], p["sh"], p["dh"], p["pad"])
    ow = out_size(w, p["kw"], p["sw"], p["dw"], p["pad"])
    # Output scale that spreads typical accumulators over about +-50 steps: some clamp, most not.
    ys = p["ys"] or p["xs"] * float(np.mean(fs)) * 5400 * math.sqrt(p["kh"] * p["kw"]) / 50
    y = b.tensor((p["batch"], oh, ow, oc), scale=ys, zp=p["yzp"])
    b.op("DEPTHWISE_CONV_2D", inputs, [y], "DepthwiseConv2DOptions", padding=p["pad"],
         strideH=p["sh"], strideW=p["sw"], dilationHFactor=p["dh"], dilationWFactor=p["dw"],
         depthMultiplier=p["mult"] if option_mult is None else option_mult,
         fusedActivationFunction=p["act"])
    return b.build([x], [y])


def samples(p, n=N_SAMPLES, seed=1):
    return int8_inputs(sample_shape((p["batch"], p["h"], p["w"], p["c"])), n, seed=seed)


def check(p):
    m = dw_model(p)
    cm = te.convert(m)
    assert_matches_tflm(cm, m, samples(p))
    return cm


def dw_layer(cm):
    (op, code), = [(op, code) for op, code in cm._gen.layers if op.kind == "DEPTHWISE_CONV_2D"]
    return op, code


# ---------------------------------------------------------------------------------------------
# Hand-picked configurations: each names what it exercises.
CASES = {
    "k3_same": spec(),
    "odd_7x5": spec(h=7, w=5, c=3, act="RELU6"),
    "k1": spec(kh=1, kw=1, c=16),
    "k1_s2_valid": spec(kh=1, kw=1, sh=2, sw=2, pad="VALID", h=7, w=8),
    "k2_same_asym": spec(kh=2, kw=2, h=8, w=7),
    "k4_s3_same_asym": spec(kh=4, kw=4, sh=3, sw=3, h=11, w=10),
    "k5_s2_same": spec(kh=5, kw=5, sh=2, sw=2, h=12, w=12, c=8),
    "k6_s1_same": spec(kh=6, kw=6, h=9, w=10),
    "k7_s1_valid": spec(kh=7, kw=7, pad="VALID", h=10, w=9, c=5),
    "k7_s2_same": spec(kh=7, kw=7, sh=2, sw=2, h=15, w=14, c=3),
    "k3x1": spec(kh=3, kw=1, h=6, w=5),
    "k1x5_s1x2": spec(kh=1, kw=5, sw=2, h=5, w=11),
    "k5x2_s2x1": spec(kh=5, kw=2, sh=2, h=11, w=6),
    "s3_k3_valid": spec(sh=3, sw=3, pad="VALID", h=10, w=11),
    "d2_same": spec(dh=2, dw=2, h=10, w=10),
    "d2_k5_s2": spec(kh=5, kw=5, dh=2, dw=2, sh=2, sw=2, h=13, w=12),
    "d2x1_valid": spec(dh=2, dw=1, pad="VALID", h=9, w=8),
    "d2_bigger_than_input": spec(kh=5, kw=5, dh=2, dw=2, h=5, w=6),
    "mult2": spec(mult=2),
    "mult3_k5_s2": spec(mult=3, kh=5, kw=5, sh=2, sw=2, h=10, w=11, c=5),
    "mult3_valid_d2": spec(mult=3, pad="VALID", dh=2, dw=2, h=9, w=9),
    "mult2_one_channel": spec(mult=2, c=1, h=7, w=7),
    "mult3_per_tensor_no_bias": spec(mult=3, per_channel=False, bias=False, act="RELU"),
    "one_channel": spec(c=1, h=8, w=6),
    "forty_channels": spec(c=40, h=6, w=5, kh=5, kw=5),
    "per_tensor": spec(per_channel=False, c=12),
    "no_bias": spec(bias=False),
    "relu": spec(act="RELU", yzp=-20),
    "relu6": spec(act="RELU6", yzp=-100),
    "relu_n1_to_1": spec(act="RELU_N1_TO_1", ys=0.01),
    "left_shift_multiplier": spec(ys=0.0004, xs=0.5, yzp=0),
    "mixed_shifts_per_channel": spec(ys=0.0015, xs=0.2),
    "huge_bias_saturates": spec(bias_range=10**8),
    "xzp_zero": spec(xzp=0),
    "xzp_min": spec(xzp=-128, yzp=127),
    "xzp_max": spec(xzp=127, yzp=-128, act="RELU"),
    "weights_min_-128": spec(wmin=-128, xzp=127),
    "image_1x1": spec(h=1, w=1),
    "image_smaller_than_kernel": spec(h=2, w=3, kh=5, kw=5),
    "k3_s2_to_1x1": spec(h=2, w=2, sh=2, sw=2),
    "batch2": spec(batch=2, h=6, w=7),
    "batch3_mult2": spec(batch=3, mult=2, h=5, w=4),
    # Long output rows with a column stride: one loop per row instead of one run.
    "rows_wide_s2": spec(h=5, w=52, sh=2, sw=2, c=3),
    # SH*PW not a multiple of SW: one loop per row as well.
    "rows_s1x2_odd_pitch": spec(h=6, w=9, sh=1, sw=2, kh=3, kw=2),
    "run_s3x2_even_pitch": spec(h=9, w=10, sh=3, sw=2),
    "explicit_pad_grows_output": spec(pad_extra=(1, 2, 0, 3), pad="VALID", xzp=-7),
    "explicit_pad_in_place": spec(pad_extra=(1, 0, 2, 0), pad="VALID", xzp=9),
    "explicit_pad_same_s2": spec(pad_extra=(2, 0, 1, 1), sh=2, sw=2, xzp=9, kh=5, kw=5),
    "explicit_pad_mult2": spec(pad_extra=(0, 1, 1, 0), mult=2, pad="VALID"),
    "mult2_xzp_min_border": spec(mult=2, xzp=-128, yzp=-128, act="RELU6", kh=5, kw=5),
    "mult2_xzp_max_border": spec(mult=2, xzp=127, kh=4, kw=4, h=6, w=6),
    "explicit_pad_grows_xzp_min": spec(pad_extra=(2, 2, 2, 2), pad="VALID", xzp=-128),
    "mobilenet_like": spec(h=12, w=12, c=32, act="RELU6", xzp=-128, yzp=-128),
    "mobilenet_like_s2": spec(h=14, w=14, c=24, sh=2, sw=2, act="RELU6", xzp=-128, yzp=-128),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_tflm(name):
    check(CASES[name])


def _random_spec(i):
    rng = np.random.default_rng(2000 + i)
    kh, kw = (int(v) for v in rng.integers(1, 8, 2))
    return spec(
        h=int(rng.integers(1, 15)), w=int(rng.integers(1, 15)), c=int(rng.integers(1, 41)),
        mult=int(rng.choice([1, 1, 2, 3])), kh=kh, kw=kw,
        sh=int(rng.integers(1, 4)), sw=int(rng.integers(1, 4)),
        dh=int(rng.integers(1, 3)), dw=int(rng.integers(1, 3)),
        pad=str(rng.choice(["SAME", "VALID"])), per_channel=bool(rng.integers(0, 2)),
        bias=bool(rng.integers(0, 4)), act=str(rng.choice(ACTS)),
        xzp=int(rng.integers(-128, 128)), yzp=int(rng.integers(-128, 128)),
        xs=float(rng.uniform(0.005, 0.5)), seed=i)


RANDOM = valid_random_specs(_random_spec, 16)


@pytest.mark.parametrize("k", range(len(RANDOM)))
def test_random_configurations_match_tflm(k):
    check(RANDOM[k])


# ---------------------------------------------------------------------------------------------
# In place: the planner puts the output over the input, and the result is still exact.

def _conv(b, rng, x_t, x_shape, oc, xs, ys, k=1):
    """A small CONV_2D on x_t; returns the output tensor."""
    n, h, w, ic = x_shape
    fs = rng.uniform(0.005, 0.02, oc)
    wt = b.tensor((oc, k, k, ic), scale=fs, zp=[0] * oc, data=rng.integers(-127, 128, (oc, k, k, ic)))
    bt = b.tensor((oc,), dtype="int32", scale=bias_scale(xs, fs), zp=[0] * oc,
                  data=rng.integers(-500, 500, oc))
    y = b.tensor((n, h, w, oc), scale=ys, zp=-4)
    b.op("CONV_2D", [x_t, wt, bt], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1,
         fusedActivationFunction="RELU")
    return y


def _dw(b, rng, x_t, x_shape, xs, ys, k, s, act="RELU6"):
    n, h, w, c = x_shape
    fs = rng.uniform(0.005, 0.02, c)
    wt = b.tensor((1, k, k, c), scale=fs, zp=[0] * c, data=rng.integers(-127, 128, (1, k, k, c)), qdim=3)
    bt = b.tensor((c,), dtype="int32", scale=bias_scale(xs, fs), zp=[0] * c,
                  data=rng.integers(-500, 500, c))
    oh, ow = math.ceil(h / s), math.ceil(w / s)
    y = b.tensor((n, oh, ow, c), scale=ys, zp=-128)
    b.op("DEPTHWISE_CONV_2D", [x_t, wt, bt], [y], "DepthwiseConv2DOptions", padding="SAME",
         strideH=s, strideW=s, depthMultiplier=1, fusedActivationFunction=act)
    return y, (n, oh, ow, c)


@pytest.mark.parametrize("k,s", [(3, 1), (5, 2), (7, 1)])
def test_in_place_between_convs_aliases_and_matches_tflm(k, s):
    rng = np.random.default_rng(k * 10 + s)
    b = ModelBuilder()
    shape = (1, 11, 10, 3)
    x = b.tensor(shape, scale=0.04, zp=-2)
    a = _conv(b, rng, x, shape, 24, 0.04, 0.08)
    d, dshape = _dw(b, rng, a, (1, 11, 10, 24), 0.08, 0.05, k, s)
    y = _conv(b, rng, d, dshape, 8, 0.05, 0.1)
    m = b.build([x], [y])
    cm = te.convert(m)
    assert [op.kind for op in cm.graph.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    op, code = dw_layer(cm)
    assert code.in_place and code.scratch_bytes > 0
    assert cm.plan.tensor_offset[op.inputs[0]] == cm.plan.tensor_offset[op.outputs[0]]
    assert_matches_tflm(cm, m, int8_inputs(shape[1:], N_SAMPLES, seed=k))


def test_in_place_kernel_correct_when_input_stays_live():
    """Two depthwise ops read the same tensor: the first cannot overwrite it, the second can."""
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    shape = (1, 9, 8, 6)
    x = b.tensor(shape, scale=0.04, zp=-2)
    a = _conv(b, rng, x, shape, 16, 0.04, 0.08)
    d1, _ = _dw(b, rng, a, (1, 9, 8, 16), 0.08, 0.05, 3, 1)
    d2, _ = _dw(b, rng, a, (1, 9, 8, 16), 0.08, 0.06, 5, 2, act="NONE")
    m = b.build([x], [d1, d2])
    cm = te.convert(m)
    dws = [op for op in cm.graph.ops if op.kind == "DEPTHWISE_CONV_2D"]
    offs = cm.plan.tensor_offset
    assert offs[dws[0].inputs[0]] != offs[dws[0].outputs[0]]
    assert offs[dws[1].inputs[0]] == offs[dws[1].outputs[0]]
    assert_matches_tflm(cm, m, int8_inputs(shape[1:], N_SAMPLES, seed=5))


def test_in_place_only_for_multiplier_one_and_no_growth():
    for name, in_place in [("k3_same", True), ("k5_s2_same", True), ("mult2", False),
                           ("explicit_pad_grows_output", False), ("explicit_pad_in_place", True)]:
        cm = te.convert(dw_model(CASES[name]))
        assert dw_layer(cm)[1].in_place is in_place, name


# ---------------------------------------------------------------------------------------------
# Sanitizers: the layer function alone on exact-size heap buffers (separate, and the same buffer
# for an in-place layer; reference.sanitized_run), so any read outside the input or the scratch
# plane is caught.

SANITIZED = ["k3_same", "odd_7x5", "k7_s2_same", "d2_bigger_than_input", "mult3_k5_s2",
             "image_smaller_than_kernel", "rows_wide_s2", "rows_s1x2_odd_pitch",
             "explicit_pad_grows_output", "explicit_pad_same_s2", "left_shift_multiplier",
             "batch2", "huge_bias_saturates"]


@pytest.mark.parametrize("name", SANITIZED)
def test_layer_clean_under_sanitizers(name):
    p = CASES[name]
    m = dw_model(p)
    cm = te.convert(m)
    assert [op.kind for op in cm.graph.ops] == ["DEPTHWISE_CONV_2D"], "the PAD must fold"
    runs = assert_sanitized_matches_tflm(cm, m, samples(p, n=6, seed=3), layer=0)
    assert len(runs) == (2 if dw_layer(cm)[1].in_place else 1)


# ---------------------------------------------------------------------------------------------
# Footprint: the shape-only prediction equals what the emitted layer references.

FOOTPRINT_CASES = list(CASES.values()) + RANDOM


@pytest.mark.parametrize("k", range(len(FOOTPRINT_CASES)))
def test_footprint_equals_emitted(k):
    cm = te.convert(dw_model(FOOTPRINT_CASES[k]))
    op, code = dw_layer(cm)
    assert FOOTPRINTS["DEPTHWISE_CONV_2D"] is depthwise.footprint
    assert depthwise.footprint(op, cm.graph) == (cm.flash, code.scratch_bytes, code.in_place)


def _constants(cm):
    ctx = EmitContext(cm.graph, "m")
    ctx.layer = "L0"
    depthwise.depthwise_conv_2d(cm.graph.ops[0], cm.graph, ctx)
    return [(s.split("_", 2)[-1], c, np.asarray(v).size) for s, c, v in ctx.constants]


@pytest.mark.parametrize("name", ["k3_same", "mult3_k5_s2", "explicit_pad_grows_output"])
def test_footprint_ignores_values(name):
    """Same shapes, different weights, biases, scales and zero points: same arrays."""
    a = te.convert(dw_model(spec(**{**CASES[name], "seed": 1, "xs": 0.05})))
    b = te.convert(dw_model(spec(**{**CASES[name], "seed": 2, "xs": 0.3, "ys": 0.001, "xzp": 0})))
    assert a.flash == b.flash and sorted(_constants(a)) == sorted(_constants(b))


# ---------------------------------------------------------------------------------------------
# What the kernel refuses, loudly, naming the op.

def test_refuses_asymmetric_filter():
    assert_unsupported(dw_model(spec(per_channel=False), filter_zp=[3]), "DEPTHWISE_CONV_2D", "zero point")


def test_refuses_depth_multiplier_option_mismatch():
    assert_unsupported(dw_model(spec(mult=2), option_mult=1), "DEPTHWISE_CONV_2D", "depth_multiplier")


def test_refuses_accumulator_overflow():
    p = spec(c=2, kh=7, kw=7, h=7, w=7, per_channel=False)
    assert_unsupported(dw_model(p, bias_values=[2**31 - 10, 0]), "DEPTHWISE_CONV_2D", "overflow")


def test_refuses_non_int32_bias():
    assert_unsupported(dw_model(spec(), bias_dtype="int64"), "DEPTHWISE_CONV_2D", "bias")


@pytest.mark.parametrize("act", ["TANH", "SIGN_BIT"])
def test_fused_tanh_and_sign_bit_do_not_clamp_as_in_tflm(act):
    """TFLM's quantized kernels clamp only for the RELU family; TANH/SIGN_BIT run as NONE."""
    from reference import compile_and_check
    compile_and_check(dw_model(spec(act=act)))


def test_refuses_inconsistent_output_shape():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 2), scale=0.05, zp=0)
    w = b.tensor((1, 3, 3, 2), scale=[0.01, 0.02], zp=[0, 0], data=rng.integers(-127, 128, (1, 3, 3, 2)), qdim=3)
    y = b.tensor((1, 5, 6, 2), scale=0.1, zp=0)
    b.op("DEPTHWISE_CONV_2D", [x, w], [y], "DepthwiseConv2DOptions", padding="SAME", strideH=1,
         strideW=1, depthMultiplier=1)
    assert_unsupported(b.build([x], [y]), "DEPTHWISE_CONV_2D", "5x6")


def test_refuses_int16_activations_with_int8_output():
    """int16 in, int8 out is no TFLM configuration (16x8 is int16 in and out: see
    tests/test_kernels_int16x8.py)."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 2), dtype="int16", scale=0.05, zp=0)
    w = b.tensor((1, 3, 3, 2), scale=[0.01, 0.02], zp=[0, 0], data=rng.integers(-127, 128, (1, 3, 3, 2)), qdim=3)
    y = b.tensor((1, 5, 5, 2), dtype="int8", scale=0.1, zp=0)
    b.op("DEPTHWISE_CONV_2D", [x, w], [y], "DepthwiseConv2DOptions", padding="SAME", strideH=1,
         strideW=1, depthMultiplier=1)
    with pytest.raises(te.TinyEngineError) as err:
        te.convert(b.build([x], [y]))
    assert "DEPTHWISE_CONV_2D" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Bands (kernels/depthwise_band.py): the in-place layer holding a band of plane rows as scratch.

def compile_with_band(m: bytes, band, optimize: str = "speed",
                      options: dict | None = None) -> "te.CompiledModel":
    """The model compiled with every depthwise layer's band forced: rows, 0 (the whole plane) or
    "min" (its shortest allowed band); options: more op options for those layers."""
    from converters.tflite_reader import read_tflite
    from tinyengine_tf.codegen import generate
    from tinyengine_tf.compiled import CompiledModel
    from tinyengine_tf.passes import run_passes
    source = read_tflite(m, name="model")
    g = run_passes(source)
    for op in g.ops:
        if op.kind == "DEPTHWISE_CONV_2D":
            rows = band
            if band == "min":
                rows = depthwise_band.band_choices(depthwise.layout(op, g, EmitContext(g, "t")))[0][0]
            op.options[depthwise_band.BAND_OPTION] = rows
            op.options.update(options or {})
    return CompiledModel(g, generate(g, "model", optimize=optimize), m, source)


# (spec, band rows or "min"): edge bands reach the zero-point rows at the image's top and bottom,
# inner ones only the kept halo; odd sizes leave a short last band.
BAND_CASES = {
    "k3_s1_same": (spec(h=13, w=11, c=3), "min"),
    "k3_s1_same_b5": (spec(h=14, w=9, c=4, xzp=-128, yzp=127), 5),
    "k3_s2_same_odd": (spec(h=17, w=15, c=5, sh=2, sw=2, act="RELU6"), "min"),
    "k3_s2_valid_odd": (spec(h=19, w=11, c=2, sh=2, sw=2, pad="VALID", xzp=127), "min"),
    "k5_s1_same": (spec(h=12, w=10, c=3, kh=5, kw=5, xzp=-128), "min"),
    "k5_s2_same": (spec(h=21, w=13, c=3, kh=5, kw=5, sh=2, sw=2), "min"),
    "k5_s1_valid": (spec(h=12, w=12, c=6, kh=5, kw=5, pad="VALID"), "min"),
    "k7_s1_same": (spec(h=12, w=9, c=2, kh=7, kw=7, xzp=127, yzp=-128, act="RELU"), "min"),
    "k7_s2_same": (spec(h=23, w=16, c=3, kh=7, kw=7, sh=2, sw=2), "min"),
    "k7_s2_valid": (spec(h=27, w=14, c=2, kh=7, kw=7, sh=2, sw=2, pad="VALID"), "min"),
    "k4_s1_same_asym": (spec(h=11, w=9, c=3, kh=4, kw=4), "min"),
    "k2_s1_same_asym": (spec(h=10, w=7, c=3, kh=2, kw=2, xzp=-128), "min"),
    "k3x1_s2x1_valid": (spec(h=20, w=9, c=3, kh=3, kw=1, sh=2, pad="VALID"), "min"),
    "k1x5_s1x2": (spec(h=9, w=13, c=3, kh=1, kw=5, sw=2), "min"),
    "d2_k5": (spec(h=11, w=10, kh=5, kw=5, dh=2, dw=2, c=2), "min"),
    "batch2": (spec(h=10, w=8, batch=2, c=3), "min"),
    "per_tensor_relu6": (spec(h=12, w=12, c=8, per_channel=False, act="RELU6", yzp=-100), "min"),
    "weights_min_-128": (spec(h=9, w=9, c=4, wmin=-128, xzp=127), "min"),
    "explicit_pad_in_place": (spec(h=12, w=9, pad_extra=(1, 0, 2, 0), pad="VALID", xzp=9), "min"),
    "width1": (spec(h=12, w=1, c=3), "min"),
    "mobilenet_like": (spec(h=14, w=14, c=32, act="RELU6", xzp=-128, yzp=-128), "min"),
}


@pytest.mark.parametrize("name", list(BAND_CASES))
def test_band_matches_tflm(name):
    p, band = BAND_CASES[name]
    m = dw_model(p)
    cm = compile_with_band(m, band)
    op, code = dw_layer(cm)
    assert op.options[depthwise_band.BAND_OPTION] and code.in_place
    lay = depthwise.layout(op, cm.graph, EmitContext(cm.graph, "t"))
    assert code.scratch_bytes == depthwise_band.window_rows(lay.win, lay.band) * lay.plane[1]
    assert code.scratch_bytes < lay.plane[0] * lay.plane[1]
    assert cm.plan.tensor_offset[op.inputs[0]] == cm.plan.tensor_offset[op.outputs[0]]
    assert_matches_tflm(cm, m, samples(p))


@pytest.mark.parametrize("name", ["k3_s1_same", "k3_s2_valid_odd", "k7_s2_same", "batch2",
                                  "explicit_pad_in_place", "k4_s1_same_asym"])
def test_band_clean_under_sanitizers(name):
    """The layer alone on exact-size buffers, aliased and not: no read outside the band."""
    p, band = BAND_CASES[name]
    m = dw_model(p)
    cm = compile_with_band(m, band)
    assert len(assert_sanitized_matches_tflm(cm, m, samples(p, n=6, seed=3), layer=0)) == 2


@pytest.mark.parametrize("name", ["k3_same", "mobilenet_like", "k7_s2_same"])
def test_whole_plane_forced_matches_tflm(name):
    """Band 0 keeps the whole plane, which single-layer models would otherwise leave."""
    m = dw_model(CASES[name])
    cm = compile_with_band(m, 0)
    op, code = dw_layer(cm)
    lay = depthwise.layout(op, cm.graph, EmitContext(cm.graph, "t"))
    assert code.scratch_bytes == lay.plane[0] * lay.plane[1]
    assert_matches_tflm(cm, m, samples(CASES[name]))


def test_band_chosen_only_where_the_scratch_is_on_the_peak():
    # A single layer: the scratch is part of the only step's live bytes, so a band lowers it.
    p = spec(h=16, w=16, c=8)
    m = dw_model(p)
    auto, whole = te.convert(m), compile_with_band(m, 0)
    op, code = dw_layer(auto)
    assert op.options.get(depthwise_band.BAND_OPTION, 0) > 0
    assert auto.peak_sram < whole.peak_sram
    def aligned(n):
        return -(-n // ALIGN) * ALIGN
    assert auto.peak_sram == (whole.peak_sram - aligned(dw_layer(whole)[1].scratch_bytes)
                              + aligned(code.scratch_bytes))
    assert_matches_tflm(auto, m, samples(p))
    # A wide conv before a narrow depthwise: the conv's step is the peak; the plane stays.
    rng = np.random.default_rng(4)
    b = ModelBuilder()
    x = b.tensor((1, 12, 12, 16), scale=0.04, zp=-2)
    a = _conv(b, rng, x, (1, 12, 12, 16), 4, 0.04, 0.08)
    d, _ = _dw(b, rng, a, (1, 12, 12, 4), 0.08, 0.05, 3, 1)
    m2 = b.build([x], [d])
    cm = te.convert(m2)
    op, code = dw_layer(cm)
    assert depthwise_band.BAND_OPTION not in op.options and code.scratch_bytes == 14 * 14


def test_band_refused_where_outputs_would_overwrite_rows_not_yet_read():
    """A folded top pad of 4 rows over a 3x3 VALID window: output row y lands on input pixels
    that later bands still need, so short bands are refused (and never chosen)."""
    p = spec(h=10, w=10, c=2, pad_extra=(4, 0, 0, 0), pad="VALID")
    m = dw_model(p)
    with pytest.raises(te.UnsupportedOpError, match="bands of 4 output rows"):
        compile_with_band(m, 4)
    cm = te.convert(m)
    op, code = dw_layer(cm)
    lay = depthwise.layout(op, cm.graph, EmitContext(cm.graph, "t"))
    assert lay.in_place and not depthwise_band.band_fits(lay, 4)
    assert_matches_tflm(cm, m, samples(p))
