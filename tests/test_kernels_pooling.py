"""AVERAGE_POOL_2D and MAX_POOL_2D: bit-exact with TFLite Micro over filter sizes (unrolled and
looped), strides, SAME/VALID, activations, channel counts and batches; clean under sanitizers;
footprint (0, 0) as emitted; refusals of what TFLite Micro refuses, naming the op."""
import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       int8_inputs, out_size, sample_shape, tflm_run, valid_random_specs)
from tflite_builder import ModelBuilder
from tinyengine_tf.kernels import pooling
from tinyengine_tf.kernels.base import FOOTPRINTS

KINDS = ["AVERAGE_POOL_2D", "MAX_POOL_2D"]
N_SAMPLES = 20


def spec(**kw):
    s = dict(h=8, w=8, c=4, fh=2, fw=2, sh=2, sw=2, pad="VALID", act="NONE", zp=-3, xs=0.05,
             ys=None, yzp=None, batch=1)
    s.update(kw)
    return s


def pool_model(kind, p) -> bytes:
    b = ModelBuilder()
    x = b.tensor((p["batch"], p["h"], p["w"], p["c"]), scale=p["xs"], zp=p["zp"])
    oh = out_size(p["h"], p["fh"], p["sh"], 1, p["pad"])
    ow = out_size(p["w"], p["fw"], p["sw"], 1, p["pad"])
    y = b.tensor((p["batch"], oh, ow, p["c"]), scale=p["ys"] or p["xs"],
                 zp=p["zp"] if p["yzp"] is None else p["yzp"])
    b.op(kind, [x], [y], "Pool2DOptions", padding=p["pad"], strideH=p["sh"], strideW=p["sw"],
         filterHeight=p["fh"], filterWidth=p["fw"], fusedActivationFunction=p["act"])
    return b.build([x], [y])


def samples(p, n=N_SAMPLES, seed=1):
    return int8_inputs(sample_shape((p["batch"], p["h"], p["w"], p["c"])), n, seed=seed)


CASES = {
    "2x2_s2_valid": spec(),
    "3x3_s2_same": spec(fh=3, fw=3, pad="SAME", h=9, w=10),
    "3x3_s1_same_relu": spec(fh=3, fw=3, sh=1, sw=1, pad="SAME", act="RELU", zp=10),
    "odd_7x5_same": spec(h=7, w=5, c=3, fh=3, fw=3, sh=1, sw=1, pad="SAME", act="RELU6"),
    "1x1_s3": spec(fh=1, fw=1, sh=3, sw=3, h=10, w=9),
    "2x3_s1x2_same": spec(fh=2, fw=3, sh=1, sw=2, pad="SAME", h=7, w=9),
    "even_filter_same_asym": spec(fh=4, fw=4, sh=1, sw=1, pad="SAME", h=6, w=6),
    "global_7x7": spec(h=7, w=7, c=40, fh=7, fw=7, sh=1, sw=1),
    "global_10x10_looped": spec(h=10, w=10, c=5, fh=10, fw=10, sh=1, sw=1),
    "9x9_s2_same_looped": spec(h=12, w=11, c=70, fh=9, fw=9, sh=2, sw=2, pad="SAME"),
    "filter_bigger_than_input_same": spec(h=3, w=2, fh=5, fw=5, sh=1, sw=1, pad="SAME"),
    "stride_bigger_than_filter": spec(h=11, w=11, fh=2, fw=2, sh=3, sw=3, pad="SAME"),
    "one_channel": spec(c=1, h=9, w=9, fh=3, fw=3, pad="SAME"),
    "many_channels_block_tail": spec(c=67, h=5, w=5, fh=3, fw=3, sh=1, sw=1, pad="SAME"),
    "zp_min": spec(zp=-128, fh=3, fw=3, pad="SAME", act="RELU"),
    "zp_max": spec(zp=127, fh=3, fw=3, pad="SAME"),
    "relu_n1_to_1": spec(act="RELU_N1_TO_1", xs=0.01, zp=0),
    "tanh_fused_no_clamp": spec(act="TANH", xs=0.01, zp=3),
    "relu6_small_scale": spec(act="RELU6", xs=0.03, zp=-100, fh=3, fw=3, sh=1, sw=1, pad="SAME"),
    "scale_within_tolerance": spec(xs=0.05, ys=0.0500004),
    "batch2": spec(batch=2, h=6, w=7, fh=3, fw=3, pad="SAME"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_tflm(kind, name):
    p = CASES[name]
    m = pool_model(kind, p)
    assert_matches_tflm(te.convert(m), m, samples(p))


def _random_spec(i):
    rng = np.random.default_rng(3000 + i)
    return spec(h=int(rng.integers(1, 14)), w=int(rng.integers(1, 14)), c=int(rng.integers(1, 41)),
                fh=int(rng.integers(1, 8)), fw=int(rng.integers(1, 8)),
                sh=int(rng.integers(1, 4)), sw=int(rng.integers(1, 4)),
                pad=str(rng.choice(["SAME", "VALID"])),
                act=str(rng.choice(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])),
                zp=int(rng.integers(-128, 128)), xs=float(rng.uniform(0.005, 0.5)))


RANDOM = valid_random_specs(_random_spec, 10, window=("fh", "fw"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", range(len(RANDOM)))
def test_random_configurations_match_tflm(kind, k):
    p = RANDOM[k]
    m = pool_model(kind, p)
    assert_matches_tflm(te.convert(m), m, samples(p))


def test_average_rounds_half_away_from_zero():
    """Window sums of +-1 and +-3 over 2 taps sit exactly on .5: TFLM rounds them away from 0."""
    p = spec(h=2, w=2, c=4, fh=1, fw=2, sh=1, sw=2, zp=0)
    m = pool_model("AVERAGE_POOL_2D", p)
    x = np.array([[[[0, 1, -1, 3], [1, 0, 0, 0]], [[-1, -3, 2, 5], [0, 0, -1, -2]]]], np.int8)
    x = np.concatenate([x, samples(p)])
    ours = assert_matches_tflm(te.convert(m), m, x)
    assert ours[0].ravel().tolist() == [1, 1, -1, 2, -1, -2, 1, 2]


# ---------------------------------------------------------------------------------------------
# Sanitizers: the layer function alone on exact-size heap buffers (reference.sanitized_run)
# catches any read outside the input.

SANITIZED = ["3x3_s2_same", "even_filter_same_asym", "9x9_s2_same_looped",
             "filter_bigger_than_input_same", "many_channels_block_tail", "batch2"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SANITIZED)
def test_layer_clean_under_sanitizers(kind, name):
    p = CASES[name]
    m = pool_model(kind, p)
    assert_sanitized_matches_tflm(te.convert(m), m, samples(p, n=5, seed=3), layer=0)


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["2x2_s2_valid", "9x9_s2_same_looped", "batch2"])
def test_footprint_equals_emitted(kind, name):
    cm = te.convert(pool_model(kind, CASES[name]))
    (op, code), = cm._gen.layers
    assert FOOTPRINTS[kind] is pooling.footprint
    assert pooling.footprint(op, cm.graph) == (cm.flash, code.scratch_bytes) == (0, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_requantizing_scale(kind):
    assert_unsupported(pool_model(kind, spec(xs=0.05, ys=0.1)), kind, "quantization")


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_different_zero_points(kind):
    assert_unsupported(pool_model(kind, spec(zp=-3, yzp=4)), kind, "zero point")


@pytest.mark.parametrize("kind", KINDS)
def test_fused_sign_bit_does_not_clamp_as_in_tflm(kind):
    """TFLM's quantized pools clamp only for the RELU family (TANH: see CASES)."""
    model = pool_model(kind, spec(act="SIGN_BIT"))
    assert_matches_tflm(te.convert(model), model, samples(spec(act="SIGN_BIT")))


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_inconsistent_output_shape(kind):
    b = ModelBuilder()
    x = b.tensor((1, 8, 8, 2), scale=0.05, zp=0)
    y = b.tensor((1, 3, 4, 2), scale=0.05, zp=0)
    b.op(kind, [x], [y], "Pool2DOptions", padding="VALID", strideH=2, strideW=2, filterHeight=2,
         filterWidth=2)
    assert_unsupported(b.build([x], [y]), kind, "3x4")


@pytest.mark.parametrize("kind", KINDS)
def test_tflm_refuses_what_we_refuse(kind):
    """The refusals mirror TFLite Micro's own Prepare checks, not a limitation of ours."""
    with pytest.raises(RuntimeError):
        tflm_run(pool_model(kind, spec(xs=0.05, ys=0.1)), samples(spec(), n=1))


# -- int16 (16x8 models) ----------------------------------------------------------------------

def pool_model_16(kind, p) -> bytes:
    b = ModelBuilder()
    x = b.tensor((p["batch"], p["h"], p["w"], p["c"]), dtype="int16", scale=p["xs"], zp=p["zp"])
    oh = out_size(p["h"], p["fh"], p["sh"], 1, p["pad"])
    ow = out_size(p["w"], p["fw"], p["sw"], 1, p["pad"])
    y = b.tensor((p["batch"], oh, ow, p["c"]), dtype="int16", scale=p["xs"], zp=p["zp"])
    b.op(kind, [x], [y], "Pool2DOptions", padding=p["pad"], strideH=p["sh"], strideW=p["sw"],
         filterHeight=p["fh"], filterWidth=p["fw"], fusedActivationFunction=p["act"])
    return b.build([x], [y])


CASES_16 = ["2x2_s2_valid", "3x3_s2_same", "3x3_s1_same_relu", "global_10x10_looped",
            "9x9_s2_same_looped", "filter_bigger_than_input_same", "relu6_small_scale"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES_16)
def test_int16_pooling_matches_tflm(kind, case):
    p = dict(CASES[case], xs=CASES[case]["xs"] / 200, zp=0 if case != "3x3_s1_same_relu" else 40)
    model = pool_model_16(kind, p)
    rng = np.random.default_rng(5)
    shape = sample_shape((p["batch"], p["h"], p["w"], p["c"]))
    x = rng.integers(-32768, 32768, (12, *shape)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    x[2].flat[::2] = -32768
    x[2].flat[1::2] = 32767
    cm = te.convert(model)
    assert_matches_tflm(cm, model, x)
    if case == "3x3_s2_same":
        assert_sanitized_matches_tflm(cm, model, x[:4], layer=0)
