"""CONV_2D: bit-exact with TFLite Micro over kernel sizes, strides, dilations, paddings, groups,
quantization granularity, activations and every register-tile remainder; clean under sanitizers;
shape-only footprint equal to what the layer emits; loud failures for what it cannot do."""
import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       explicit_pad_input, filter_and_bias, int8_inputs, out_size, sample_shape,
                       valid_random_specs)
from tflite_builder import ModelBuilder
from tinyengine_tf.kernels import conv
from tinyengine_tf.kernels.base import FOOTPRINTS

N_SAMPLES = 20
ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def spec(**kw):
    """One conv configuration; anything not given takes a small, ordinary value."""
    s = dict(h=9, w=9, ic=4, oc=8, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, pad="SAME", groups=1,
             per_channel=True, bias=True, act="NONE", xzp=-3, yzp=5, xs=0.05, ys=0.1, batch=1,
             pad_extra=None, wmin=-127, seed=0)
    s.update(kw)
    return s


def conv_model(p, filter_zp=None, filter_qdim=0, out_shape=None, bias_values=None) -> bytes:
    """A .tflite holding one CONV_2D (after an explicit PAD when pad_extra is given)."""
    rng = np.random.default_rng(p["seed"])
    b = ModelBuilder()
    x, conv_in, h, w = explicit_pad_input(b, p, p["ic"])
    oc = p["oc"]
    fs = rng.uniform(0.002, 0.02, oc) if p["per_channel"] else [0.01]
    inputs = [conv_in, *filter_and_bias(b, rng, p, (oc, p["kh"], p["kw"], p["ic"] // p["groups"]), oc,
                                        fs, filter_qdim, filter_zp, bias_values)]
    oh = out_size(h, p["kh"], p["sh"], p["dh"], p["pad"])
    ow = out_size(w, p["kw"], p["sw"], p["dw"], p["pad"])
    y = b.tensor(out_shape or (p["batch"], oh, ow, oc), scale=p["ys"], zp=p["yzp"])
    b.op("CONV_2D", inputs, [y], "Conv2DOptions", padding=p["pad"], strideH=p["sh"],
         strideW=p["sw"], dilationHFactor=p["dh"], dilationWFactor=p["dw"],
         fusedActivationFunction=p["act"])
    return b.build([x], [y])


def samples(p, n=N_SAMPLES, seed=1):
    return int8_inputs(sample_shape((p["batch"], p["h"], p["w"], p["ic"])), n, seed=seed)


def check(p):
    m = conv_model(p)
    cm = te.convert(m)
    assert_matches_tflm(cm, m, samples(p))
    return cm


# ---------------------------------------------------------------------------------------------
# Hand-picked configurations: each names what it exercises.
CASES = {
    "k1_flat": spec(kh=1, kw=1, oc=16),
    "k2_even": spec(kh=2, kw=2),
    "k3_same": spec(),
    "k4x2_same_asym": spec(kh=4, kw=2, h=10, w=7),
    "k5_valid": spec(kh=5, kw=5, pad="VALID", h=11, w=12),
    "k6_s2": spec(kh=6, kw=6, sh=2, sw=2, h=13, w=13),
    "k7_s2_ic3": spec(kh=7, kw=7, sh=2, sw=2, h=15, w=14, ic=3, oc=5),
    "k10x4_kws_first": spec(kh=10, kw=4, sh=2, sw=2, h=49, w=10, ic=1, oc=64, act="RELU",
                            xzp=83, yzp=-128),
    "s3_same": spec(sh=3, sw=3, h=10, w=11),
    "s2x3_valid": spec(sh=2, sw=3, pad="VALID", h=12, w=13),
    "s3_k1": spec(kh=1, kw=1, sh=3, sw=3, h=10, w=10, oc=12),
    "d2_same": spec(dh=2, dw=2, h=10, w=10),
    "d3_valid": spec(dh=3, dw=3, pad="VALID", h=12, w=11),
    "d2x3_s2": spec(dh=2, dw=3, sh=2, sw=2, h=14, w=15),
    "d3_k5_bigger_than_input": spec(kh=5, kw=5, dh=3, dw=3, h=6, w=7),
    "groups2": spec(ic=8, oc=6, groups=2),
    "groups4_d2_s2": spec(ic=8, oc=8, groups=4, dh=2, dw=2, sh=2, sw=2, h=11, w=11),
    "groups3_k1": spec(ic=6, oc=9, groups=3, kh=1, kw=1),
    "groups2_wide": spec(ic=8, oc=80, groups=2, kh=1, kw=3, h=5, w=9),
    "per_tensor": spec(per_channel=False, oc=12),
    "per_tensor_k1": spec(per_channel=False, kh=1, kw=1, oc=40),
    "no_bias": spec(bias=False),
    "relu": spec(act="RELU", yzp=-20),
    "relu6": spec(act="RELU6", ys=0.03, yzp=-100),
    "relu_n1_to_1": spec(act="RELU_N1_TO_1", ys=0.01),
    "tanh_fused_no_clamp": spec(act="TANH", ys=0.02),   # TFLM clamps only the RELU family
    "left_shift_multiplier": spec(ys=0.0004, xs=0.5, yzp=0),
    "mixed_shifts_per_channel": spec(ys=0.0015, xs=0.2),
    "xzp_zero": spec(xzp=0),
    "xzp_min": spec(xzp=-128),
    "xzp_max": spec(xzp=127, act="RELU"),
    "weights_min_-128": spec(wmin=-128, xzp=127),
    "image_1x1": spec(h=1, w=1),
    "image_1xw": spec(h=1, w=13, kh=3, kw=3),
    "image_hx1_valid": spec(h=11, w=1, kh=3, kw=1, pad="VALID"),
    "image_smaller_than_kernel": spec(h=2, w=3, kh=5, kw=5),
    "batch2": spec(batch=2, h=6, w=7),
    "batch3_flat": spec(batch=3, h=3, w=5, kh=1, kw=1, oc=24),
    "explicit_pad": spec(pad_extra=(1, 2, 0, 3), pad="VALID", xzp=-7),
    "explicit_pad_same_s2": spec(pad_extra=(2, 0, 1, 1), sh=2, sw=2, xzp=9),
    "resnet_like": spec(h=8, w=8, ic=16, oc=16, act="RELU", xzp=-128, yzp=-128),
    "vww_first": spec(h=20, w=20, ic=3, oc=8, sh=2, sw=2, act="RELU", xzp=-128, yzp=-128),
}

# Dot-form layers (contiguous runs of at least conv.DOT_MIN_RUN input bytes): merged kernel rows,
# per-tap runs (dilation, groups), borders with and without the zero-point correction (zp == -128
# needs none), channel counts that are not multiples of the tile, flat 1x1 runs.
DOT_CASES = {
    "dot_k3_ic16": spec(ic=16, oc=16, h=8, w=9, act="RELU"),
    "dot_k3_ic16_zpmin": spec(ic=16, oc=10, h=7, w=6, xzp=-128),
    "dot_k3_s2_ic32": spec(ic=32, oc=7, sh=2, sw=2, h=9, w=10),
    "dot_k5_valid_ic8": spec(ic=8, oc=5, kh=5, kw=5, pad="VALID", h=9, w=9),
    "dot_k4x2_asym_ic24": spec(ic=24, oc=9, kh=4, kw=2, h=7, w=6, xzp=100),
    "dot_d2_ic32": spec(ic=32, oc=6, dh=2, dw=2, h=9, w=9, xzp=-1),
    "dot_d3_s2_ic40_zpmin": spec(ic=40, oc=3, dh=3, dw=3, sh=2, sw=2, h=11, w=12, xzp=-128),
    "dot_groups2_icf32": spec(ic=64, oc=10, groups=2, h=5, w=6),
    "dot_per_tensor_no_bias": spec(ic=16, oc=12, per_channel=False, bias=False, h=6, w=7),
    "dot_left_shift": spec(ic=16, oc=8, ys=0.0008, xs=0.5, yzp=-3),
    "dot_weights_min": spec(ic=16, oc=8, wmin=-128, xzp=127),
    "dot_xzp_zero": spec(ic=32, oc=8, xzp=0, kh=2, kw=2),
    "dot_explicit_pad": spec(ic=16, oc=6, pad_extra=(2, 1, 0, 2), pad="VALID", xzp=11),
    "dot_image_smaller_than_kernel": spec(ic=16, oc=5, h=2, w=2, kh=3, kw=3),
    "dot_batch2": spec(ic=16, oc=9, batch=2, h=5, w=5),
    "dot_flat_ic32": spec(ic=32, oc=13, kh=1, kw=1, h=3, w=5),
    "dot_flat_ic64_oc3": spec(ic=64, oc=3, kh=1, kw=1, h=1, w=7, act="RELU6", ys=0.03),
    "dot_flat_ic100": spec(ic=100, oc=21, kh=1, kw=1, h=2, w=3, xzp=-128),
    "dot_1x1_s2_ic48": spec(ic=48, oc=17, kh=1, kw=1, sh=2, sw=2, h=7, w=7),
    "dot_kws_like": spec(ic=64, oc=64, kh=1, kw=1, h=25, w=5, act="RELU", xzp=-128, yzp=-128),
}


def _dot_form(cm) -> bool:
    """The dot form reads x + 128; the broadcast form subtracts the zero point."""
    return "] + 128;" in cm.sources[f"{cm.prefix}.c"]


@pytest.mark.parametrize("name", list(DOT_CASES))
def test_dot_form_matches_tflm(name):
    cm = check(DOT_CASES[name])
    assert _dot_form(cm)


def test_short_runs_use_the_broadcast_form():
    for name in ("k7_s2_ic3", "k10x4_kws_first", "vww_first", "groups2"):
        assert not _dot_form(te.convert(conv_model(CASES[name]))), name


# 1x1 layers whose output channels and pixel counts hit every tile remainder: OB is min(oc, 32),
# PB depends on OB, and both the channel blocks and the pixel run end in a partial tile.
FLAT = [(oc, h, w) for oc, h, w in [
    (1, 3, 3), (2, 5, 1), (7, 3, 5), (8, 1, 9), (9, 4, 3), (16, 3, 3), (17, 2, 7), (24, 5, 1),
    (31, 3, 3), (32, 2, 5), (33, 3, 3), (40, 1, 7), (64, 3, 1), (70, 2, 3), (96, 1, 5),
]]


@pytest.mark.parametrize("name", list(CASES))
def test_matches_tflm(name):
    check(CASES[name])


@pytest.mark.parametrize("oc,h,w", FLAT)
def test_1x1_tile_remainders_match_tflm(oc, h, w):
    check(spec(kh=1, kw=1, oc=oc, h=h, w=w, ic=5 + oc % 7, seed=oc))


def _random_spec(i):
    rng = np.random.default_rng(1000 + i)
    groups = int(rng.choice([1, 1, 1, 2, 3]))
    kh, kw = (int(v) for v in rng.integers(1, 8, 2))
    return spec(
        h=int(rng.integers(1, 14)), w=int(rng.integers(1, 14)),
        ic=groups * int(rng.integers(1, 9) if rng.integers(0, 2) else rng.integers(12, 49)),
        oc=groups * int(rng.integers(1, 14)), groups=groups,
        kh=kh, kw=kw, sh=int(rng.integers(1, 4)), sw=int(rng.integers(1, 4)),
        dh=int(rng.integers(1, 4)), dw=int(rng.integers(1, 4)),
        pad=str(rng.choice(["SAME", "VALID"])), per_channel=bool(rng.integers(0, 2)),
        bias=bool(rng.integers(0, 4)), act=str(rng.choice(ACTS)),
        xzp=int(rng.integers(-128, 128)), yzp=int(rng.integers(-128, 128)),
        xs=float(rng.uniform(0.005, 0.5)), ys=float(rng.uniform(0.005, 0.5)), seed=i)


RANDOM = valid_random_specs(_random_spec, 16)


@pytest.mark.parametrize("k", range(len(RANDOM)))
def test_random_configurations_match_tflm(k):
    check(RANDOM[k])


@pytest.mark.parametrize("p", [spec(oc=4, xzp=7), spec(ic=16, oc=4, xzp=7), spec(ic=16, oc=4, xzp=-128)],
                         ids=["broadcast", "dot", "dot_zpmin"])
def test_large_biases_match_tflm(p):
    """Biases far from zero (the folded bias moves further): still exact, outputs saturate."""
    m = conv_model(p, bias_values=[2**30, -(2**30), 123456789, -987654])
    cm = te.convert(m)
    assert_matches_tflm(cm, m, samples(p))


# ---------------------------------------------------------------------------------------------
# Sanitizers: the layer function alone on exact-size heap buffers (reference.sanitized_run), so a
# read outside the input (padding, border tiles) or a write outside the output is caught.

SANITIZED = ["k3_same", "k7_s2_ic3", "d3_k5_bigger_than_input", "groups4_d2_s2", "explicit_pad",
             "k10x4_kws_first", "dot_k3_s2_ic32", "dot_d3_s2_ic40_zpmin", "dot_groups2_icf32",
             "dot_explicit_pad", "dot_image_smaller_than_kernel", "dot_flat_ic100"]


@pytest.mark.parametrize("name", SANITIZED)
def test_layer_clean_under_sanitizers(name):
    p = {**CASES, **DOT_CASES}[name]
    m = conv_model(p)
    cm = te.convert(m)
    assert [op.kind for op in cm.graph.ops] == ["CONV_2D"], "the PAD must fold into the conv"
    assert_sanitized_matches_tflm(cm, m, samples(p, n=6, seed=3), layer=0)


# ---------------------------------------------------------------------------------------------
# Footprint: the shape-only prediction equals what the emitted layer references.

FOOTPRINT_CASES = (list(CASES.values()) + list(DOT_CASES.values()) + RANDOM
                   + [spec(kh=1, kw=1, oc=oc, h=h, w=w) for oc, h, w in FLAT])


@pytest.mark.parametrize("k", range(len(FOOTPRINT_CASES)))
def test_footprint_equals_emitted(k):
    cm = te.convert(conv_model(FOOTPRINT_CASES[k]))
    (op, code), = [(op, code) for op, code in cm._gen.layers if op.kind == "CONV_2D"]
    assert FOOTPRINTS["CONV_2D"] is conv.conv_footprint
    assert conv.conv_footprint(op, cm.graph) == (cm.flash, code.scratch_bytes)


@pytest.mark.parametrize("name", ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant"])
def test_footprint_of_real_layers(shared_models, name):
    """Every CONV_2D of the MLPerf Tiny CNNs: prediction == bytes the emitted layer declares."""
    from converters.tflite_reader import read_tflite
    from tinyengine_tf.kernels.base import EmitContext
    from tinyengine_tf.passes import run_passes
    g = run_passes(read_tflite((shared_models / f"{name}.tflite").read_bytes(), name=name))
    convs = [op for op in g.ops if op.kind == "CONV_2D"]
    assert convs
    for pos, op in enumerate(convs):
        ctx = EmitContext(g, "m")
        ctx.layer = f"L{pos}"
        code = conv.conv_2d(op, g, ctx)
        assert all(sym in code.body for sym, _, _ in ctx.constants), "declared but unused"
        assert conv.conv_footprint(op, g) == (ctx.flash_bytes, code.scratch_bytes), op.label()


def test_footprint_ignores_values():
    """Same shapes, different weights, biases and scales: same footprint and same arrays."""
    a = te.convert(conv_model(spec(seed=1, xs=0.05)))
    b = te.convert(conv_model(spec(seed=2, xs=0.3, ys=0.001)))
    assert a.flash == b.flash
    sym = sorted(s.split("_", 2)[-1] for s, _, _ in _constants(a))
    assert sym == sorted(s.split("_", 2)[-1] for s, _, _ in _constants(b))


def _constants(cm):
    from tinyengine_tf.kernels.base import EmitContext
    ctx = EmitContext(cm.graph, "m")
    ctx.layer = "L0"
    conv.conv_2d(cm.graph.ops[0], cm.graph, ctx)
    return ctx.constants


# ---------------------------------------------------------------------------------------------
# What the kernel refuses, loudly, naming the op.

def test_refuses_asymmetric_filter():
    p = spec(per_channel=False)
    assert_unsupported(conv_model(p, filter_zp=[3]), "CONV_2D", "zero point")


def _model_with(x_dtype="int8", qdim=0, n_scales=4):
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor((1, 5, 5, 4), dtype=x_dtype, scale=0.05, zp=0)
    w = b.tensor((4, 3, 3, 4), scale=rng.uniform(0.01, 0.02, n_scales), zp=[0] * n_scales,
                 data=rng.integers(-127, 128, (4, 3, 3, 4)), qdim=qdim)
    y = b.tensor((1, 5, 5, 4), dtype=x_dtype, scale=0.1, zp=0)
    b.op("CONV_2D", [x, w], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
    return b.build([x], [y])


def test_per_channel_quantized_dimension_as_tflm_checks_it():
    """TFLM reads conv filter scales by output channel and only checks that quantized_dimension
    names an axis of that size: axis 3 of a [4, 3, 3, 4] filter runs, axis 1 (size 3) does not."""
    from reference import compile_and_check
    compile_and_check(_model_with(qdim=3))
    assert_unsupported(_model_with(qdim=1), "CONV_2D", "output channel")


def test_refuses_inconsistent_output_shape():
    p = spec(h=9, w=9)
    assert_unsupported(conv_model(p, out_shape=(1, 8, 9, 8)), "CONV_2D", "8x9")


def test_refuses_accumulator_overflow():
    p = spec(ic=64, kh=7, kw=7, oc=2, h=7, w=7, per_channel=False)
    assert_unsupported(conv_model(p, bias_values=[2**31 - 10, 0]), "CONV_2D", "overflow")


def test_int16_activations_go_to_the_16x8_kernel():
    """int16 input and output with int8 weights is 16x8 (tests/test_kernels_int16x8.py)."""
    from tinyengine_tf.kernels import int16x8
    from converters.tflite_reader import read_tflite
    g = read_tflite(_model_with(x_dtype="int16"))
    assert int16x8.handles(g.ops[0], g)
