"""FULLY_CONNECTED int8: bit-exact with TFLite Micro over shapes (K 1..300, N 1..40, rows 1..4,
input ranks 2..4), per-tensor and per-channel filters, activations, keep_num_dims, zero points
and bias; the float32 scale product of the per-tensor multiplier; unsupported configurations;
the shape-only footprint; a sanitized build; the repacked forms of kernels/fc_tiled.py (the pair
form at its accumulator limit, the int16 filters a Flash budget buys and the order the planner
widens layers in)."""
from __future__ import annotations

import numpy as np
import pytest

from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       int8_inputs, sample_shape, tflm_run)
from tflite_builder import ModelBuilder, bias_scale

import tinyengine_tf as te
from converters.tflite_reader import read_tflite
from tinyengine_tf import quant
from tinyengine_tf.api import WIDEN_CODE_ROOM
from tinyengine_tf.codegen import generate
from tinyengine_tf.kernels.base import FOOTPRINTS
from tinyengine_tf.passes import run_passes


def fc_model(in_shape, k, n, rng, *, per_channel=False, act="NONE", keep_num_dims=False,
             in_scale=0.05, in_zp=0, out_scale=None, out_zp=0, bias=True, w_range=(-127, 127),
             weights=None, bias_values=None, w_scale=None) -> bytes:
    """One FULLY_CONNECTED op; the input's values are read as rows of k."""
    numel = int(np.prod(in_shape))
    rows = numel // k
    assert rows * k == numel
    if w_scale is None:
        w_scale = rng.uniform(0.002, 0.02, n if per_channel else 1)
    w_scale = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
    if weights is None:
        weights = rng.integers(w_range[0], w_range[1] + 1, (n, k))
    if out_scale is None:
        # Puts typical outputs a few dozen steps from the zero point, with some saturating.
        out_scale = in_scale * float(w_scale.mean()) * np.sqrt(k) * 100 * rng.uniform(0.3, 3)
    out_shape = tuple(in_shape[:-1]) + (n,) if keep_num_dims else (rows, n)
    b = ModelBuilder()
    x = b.tensor(in_shape, scale=in_scale, zp=in_zp)
    w = b.tensor((n, k), scale=w_scale, zp=[0] * len(w_scale), data=weights, qdim=0)
    inputs = [x, w]
    if bias:
        if bias_values is None:
            spread = int(np.sqrt(k) * 5000)
            bias_values = rng.integers(-spread, spread + 1, n)
        bscale = bias_scale(in_scale, w_scale if per_channel else np.repeat(w_scale, n))
        inputs.append(b.tensor((n,), dtype="int32", scale=bscale, zp=[0] * n, data=bias_values))
    else:
        inputs.append(-1)
    y = b.tensor(out_shape, scale=out_scale, zp=out_zp)
    b.op("FULLY_CONNECTED", inputs, [y], "FullyConnectedOptions", fusedActivationFunction=act,
         keepNumDims=keep_num_dims)
    return b.build([x], [y])


def _configs():
    """(in_shape, k, n, per_channel, act, keep_num_dims, in_zp, bias) cases."""
    fixed = [
        ((1, 1), 1, 1, False, "NONE", False, 0, True),
        ((1, 1), 1, 1, True, "NONE", False, -128, False),
        ((1, 300), 300, 40, True, "RELU6", False, 127, True),
        ((1, 300), 300, 40, False, "RELU", False, -128, True),
        ((4, 17), 17, 3, True, "NONE", False, 5, True),
        ((1, 4, 9), 9, 6, False, "RELU_N1_TO_1", True, -20, True),   # keep_num_dims, rank 3
        ((1, 2, 2, 8), 8, 5, True, "RELU", True, 0, False),          # keep_num_dims, rank 4
        ((1, 2, 2, 8), 8, 5, True, "RELU", False, 0, True),          # rank 4 -> [4, 5]
        ((1, 4, 4, 3), 48, 10, True, "NONE", False, -3, True),       # flatten: K spans H*W*C
        ((1, 3, 5, 2), 10, 7, False, "NONE", False, 9, True),        # rows of 10 across dims
        ((2, 64), 64, 1, False, "RELU6", False, -1, True),
        ((3, 1), 1, 40, True, "NONE", False, 100, True),
    ]
    rng = np.random.default_rng(20240612)
    acts = ["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
    randoms = []
    for i in range(36):
        k = int(rng.choice([int(rng.integers(1, 33)), int(rng.integers(1, 301))]))
        n = int(rng.integers(1, 41))
        rows = int(rng.integers(1, 5))
        rank = int(rng.choice([2, 3, 4]))
        keep = bool(rng.integers(2)) and rank > 2
        in_shape = (rows, k) if rank == 2 else (1, rows, k) if rank == 3 else (1, 1, rows, k)
        zp = int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))
        randoms.append((in_shape, k, n, i % 2 == 0, acts[i % len(acts)], keep, zp, i % 5 != 4))
    return fixed + randoms


@pytest.mark.parametrize("seed,in_shape,k,n,per_channel,act,keep,in_zp,bias",
                         [(i, *c) for i, c in enumerate(_configs())])
def test_matches_tflm(seed, in_shape, k, n, per_channel, act, keep, in_zp, bias):
    rng = np.random.default_rng(seed)
    w_range = (-128, 127) if seed % 7 == 3 else (-127, 127)
    model = fc_model(in_shape, k, n, rng, per_channel=per_channel, act=act, keep_num_dims=keep,
                     in_scale=float(rng.uniform(0.005, 0.2)), in_zp=in_zp,
                     out_zp=int(rng.integers(-20, 21)), bias=bias, w_range=w_range)
    xs = int8_inputs(sample_shape(in_shape), 24, seed=seed)
    out = assert_matches_tflm(te.convert(model), model, xs)
    assert out.shape[1:] == sample_shape(tflm_output_shape(model))


def tflm_output_shape(model) -> tuple:
    g = read_tflite(model)
    return tuple(g.t(g.outputs[0]).shape)


@pytest.mark.parametrize("per_channel", [False, True])
def test_multiplier_above_one(per_channel):
    """A tiny output scale makes the multiplier > 1: the left-shift path of requantization."""
    rng = np.random.default_rng(3)
    model = fc_model((1, 6), 6, 4, rng, per_channel=per_channel, in_scale=0.5, out_scale=1e-4,
                     w_range=(-3, 3), bias_values=rng.integers(-20, 21, 4))
    assert quant.quantize_multiplier(0.5 * 0.002 / 1e-4)[1] > 0
    assert_matches_tflm(te.convert(model), model, int8_inputs((6,), 24, seed=3))


def _mbqm_vec(acc: np.ndarray, q: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier for shift <= 0 over many accumulators at once."""
    v = acc * q + np.where(acc * q >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))
    mask = (1 << -shift) - 1
    return (high >> -shift) + ((high & mask) > (mask >> 1) + (high < 0))


def test_per_tensor_multiplier_uses_double_product():
    """Scales whose float32 and double products give different multipliers, and an accumulator
    where that changes the output. TFLM's source reads as if the product were taken in float32;
    the interpreter (the judge) takes it in double, and so must the generated C."""
    xs_, ws_, ys_ = np.float32(0.002636236), np.float32(0.0008151375), np.float32(0.46074)
    q32, s32 = quant.quantize_multiplier(float(np.float32(xs_ * ws_)) / float(ys_))
    q64, s64 = quant.quantize_multiplier(float(xs_) * float(ws_) / float(ys_))
    assert (q32, s32) != (q64, s64) and s32 == s64 < 0
    lim = int(100 / (float(xs_) * float(ws_) / float(ys_)))
    acc = np.arange(-lim, lim, dtype=np.int64)
    differ = acc[_mbqm_vec(acc, q32, s32) != _mbqm_vec(acc, q64, s64)]
    assert len(differ)
    target = int(differ[0])
    # K = 1, w = 1, input zero point 0: acc = bias + x, so input 0 lands on the target.
    model = fc_model((1, 1), 1, 1, np.random.default_rng(0), in_scale=float(xs_), w_scale=[ws_],
                     out_scale=float(ys_), weights=[[1]], bias_values=[target])
    x = int8_inputs((1,), 24, seed=1)
    x[3] = 0
    out = assert_matches_tflm(te.convert(model), model, x).ravel()
    assert out[3] == quant.mbqm(target, q64, s64) != quant.mbqm(target, q32, s32)


def _custom(x_shape=(1, 8), w_shape=(4, 8), y_shape=(1, 4), x_dtype="int8", w_zp=0, w_qdim=0,
            w_scales=(0.01,), w_const=True, bias=None, options=None) -> bytes:
    b = ModelBuilder()
    x = b.tensor(x_shape, dtype=x_dtype, scale=0.05, zp=0)
    wdata = np.ones(w_shape, np.int64) if w_const else None
    w = b.tensor(w_shape, scale=list(w_scales), zp=[w_zp] * len(w_scales), data=wdata, qdim=w_qdim)
    ins = [x, w]
    if bias is not None:
        dtype, length, scale = bias
        ins.append(b.tensor((length,), dtype=dtype, scale=scale, zp=0, data=np.zeros(length)))
    y = b.tensor(y_shape, dtype=x_dtype, scale=0.1, zp=0)
    b.op("FULLY_CONNECTED", ins, [y], "FullyConnectedOptions", **(options or {}))
    return b.build([x] if w_const else [x, w], [y])


@pytest.mark.parametrize("kwargs,words", [
    (dict(w_zp=3), "zero point"),
    (dict(w_qdim=1, w_scales=[0.01] * 4), "quantized dimension"),
    (dict(w_qdim=2, w_scales=[0.01] * 4), "quantized dimension"),
    (dict(w_const=False), "constant"),
    (dict(w_shape=(4, 2, 4)), "2-D"),
    (dict(y_shape=(1, 5)), "units"),
    (dict(x_shape=(1, 9)), "rows of 8"),
    (dict(bias=("int32", 3, 0.05 * 0.01)), "bias must be"),
    (dict(bias=("int64", 4, 0.05 * 0.01)), "bias must be"),
    (dict(options={"weightsFormat": 1}), "weights format"),
])
def test_unsupported(kwargs, words):
    assert_unsupported(_custom(**kwargs), "FULLY_CONNECTED", words, op_index=0)


@pytest.mark.parametrize("ratio", [1.0, 2.0, 4.95, 5.05, 10.0])
def test_bias_scale_check_agrees_with_tflm(ratio):
    """Per-tensor: TFLM refuses a bias scale off by more than 2% of the output scale; so do we."""
    # |s_b - s_x * s_w| / s_y <= 0.02 with s_x * s_w = 5e-4 and s_y = 0.1: the limit is ratio 5.
    model = _custom(bias=("int32", 4, 0.05 * 0.01 * ratio))
    try:
        tflm_run(model, np.ones((1, 8), np.int8))
        tflm_ok = True
    except RuntimeError:
        tflm_ok = False
    if tflm_ok:
        te.convert(model)
    else:
        assert_unsupported(model, "FULLY_CONNECTED", "bias scale", op_index=0)
    assert tflm_ok == (ratio < 5)


@pytest.mark.parametrize("in_shape,k,n,per_channel,bias", [
    ((1, 10), 10, 5, False, True), ((1, 10), 10, 5, True, True), ((3, 7), 7, 1, False, False),
    ((1, 4, 4, 3), 48, 12, True, False), ((2, 300), 300, 40, True, True)])
def test_footprint_equals_emitted(in_shape, k, n, per_channel, bias):
    model = fc_model(in_shape, k, n, np.random.default_rng(0), per_channel=per_channel, bias=bias)
    g = run_passes(read_tflite(model))
    gen = generate(g)
    (op, code), = gen.layers
    assert FOOTPRINTS["FULLY_CONNECTED"](op, g) == (gen.flash_bytes, code.scratch_bytes)


@pytest.mark.parametrize("per_channel,in_zp,k,n", [(True, -128, 300, 9), (False, 127, 33, 9),
                                                   (True, 5, 300, 12)])   # the last: pair form
def test_sanitized_build_matches_tflm(per_channel, in_zp, k, n):
    rng = np.random.default_rng(11)
    model = fc_model((3, k), k, n, rng, per_channel=per_channel, in_zp=in_zp, act="RELU")
    cm = te.convert(model)
    assert ("uxtb16 r4, r4" in cm.sources["model.c"]) == (n == 12)
    assert_sanitized_matches_tflm(cm, model, int8_inputs((3, k), 20, seed=2))


@pytest.mark.parametrize("act", ["TANH", "SIGN_BIT"])
def test_fused_tanh_and_sign_bit_do_not_clamp_as_in_tflm(act):
    """TFLM's quantized FC clamps only for the RELU family; TANH/SIGN_BIT run as NONE."""
    from reference import compile_and_check
    compile_and_check(fc_model((2, 24), 24, 7, np.random.default_rng(5), act=act, out_scale=0.05))


# -- the tiled forms (kernels/fc_tiled.py) and the Flash planner (api._widen_in_flash) ----------

BIG_FLASH = 1 << 26     # room to widen every FULLY_CONNECTED filter


@pytest.mark.parametrize("seed,in_shape,k,n,per_channel,act,keep,in_zp,bias",
                         [(i, *c) for i, c in enumerate(_configs()) if i % 3 == 0])
def test_widened_matches_tflm(seed, in_shape, k, n, per_channel, act, keep, in_zp, bias):
    """Given the Flash, the int16 filters of the "w16" form (n >= 4) give TFLM's outputs too."""
    rng = np.random.default_rng(seed)
    model = fc_model(in_shape, k, n, rng, per_channel=per_channel, act=act, keep_num_dims=keep,
                     in_scale=float(rng.uniform(0.005, 0.2)), in_zp=in_zp,
                     out_zp=int(rng.integers(-20, 21)), bias=bias,
                     w_range=(-128, 127) if seed % 2 else (-127, 127))
    cm = te.convert(model, flash=BIG_FLASH)
    assert ("_w16[" in cm.sources["model.c"]) == (n >= 4)
    assert_matches_tflm(cm, model, int8_inputs(sample_shape(in_shape), 24, seed=seed))


@pytest.mark.parametrize("k,limit_ok", [(516, True), (520, False)])
def test_pair_form_at_its_accumulator_limit(k, limit_ok):
    """Filters of +-127 throughout: sum |A| = 127 k, and 128 times that is the largest |SA| the
    pair form's 256 SA must hold in int32 (k = 516 just fits, 520 falls back)."""
    rng = np.random.default_rng(k)
    weights = rng.choice([-127, 127], (8, k))
    model = fc_model((1, k), k, 8, rng, per_channel=True, weights=weights, in_zp=0,
                     out_scale=50.0)
    cm = te.convert(model)
    assert ("uxtb16 r4, r4" in cm.sources["model.c"]) == limit_ok
    x = int8_inputs((k,), 24, seed=1)
    x[4] = np.where(weights[0] > 0, 127, -128)      # SA at its extremes for unit 0
    x[5] = np.where(weights[0] > 0, -128, 127)
    assert_matches_tflm(cm, model, x)


def _two_fc_model(rng) -> bytes:
    """FC 64 -> 64 on one row, then FC 16 -> 16 on its output read as four rows."""
    b = ModelBuilder()
    x = b.tensor((1, 64), scale=0.05, zp=-3)
    h = b.tensor((1, 64), scale=0.3, zp=2)
    y = b.tensor((4, 16), scale=0.4, zp=-1)
    for src, dst, k, n in ((x, h, 64, 64), (h, y, 16, 16)):
        w = b.tensor((n, k), scale=[0.01], zp=[0], data=rng.integers(-127, 128, (n, k)))
        bias = b.tensor((n,), dtype="int32", scale=bias_scale(0.05 if src == x else 0.3, [0.01] * n),
                        zp=[0] * n, data=rng.integers(-3000, 3000, n))
        b.op("FULLY_CONNECTED", [src, w, bias], [dst], "FullyConnectedOptions",
             fusedActivationFunction="NONE")
    return b.build([x], [y])


def test_flash_budget_widens_most_saved_per_byte_first():
    """The four-row layer saves four times the instructions per extra byte: it is widened first,
    the other only when the budget holds both; cm.flash and the memory report count the widened
    bytes; flash=None widens nothing."""
    model = _two_fc_model(np.random.default_rng(7))
    base = te.convert(model)
    room = WIDEN_CODE_ROOM     # the budget counts constants: widening leaves this to the code
    assert "_w16[" not in base.sources["model.c"]
    extra = {"L0": 16 * 4 * 64, "L1": 4 * 4 * 16}       # int16 minus int8 filter bytes
    x = int8_inputs((64,), 24, seed=4)
    for budget, wide in ((base.flash + room + extra["L1"] - 1, set()),
                         (base.flash + room + extra["L1"], {"L1"}),
                         (base.flash + room + extra["L0"] + extra["L1"] - 1, {"L1"}),
                         (base.flash + room + extra["L0"] + extra["L1"], {"L0", "L1"})):
        cm = te.convert(model, flash=budget)
        src = cm.sources["model.c"]
        assert {s for s in extra if f"model_{s}_w16[" in src} == wide, budget
        assert cm.flash == base.flash + sum(extra[s] for s in wide) <= budget
        report = cm.memory_report(measure_tflm=False)
        assert report.tinyengine.widened_bytes == sum(extra[s] for s in wide)
        assert ("of which widened filters" in report.to_markdown()) == bool(wide)
        assert_matches_tflm(cm, model, x)
    small = te.convert(model, flash=BIG_FLASH, optimize="size")
    assert "_w16[" not in small.sources["model.c"]


def test_widened_footprint_equals_emitted():
    model = fc_model((2, 30), 30, 10, np.random.default_rng(0), per_channel=True)
    cm = te.convert(model, flash=BIG_FLASH)
    (op, code), = cm._gen.layers
    assert "_w16[" in cm.sources["model.c"]
    assert FOOTPRINTS["FULLY_CONNECTED"](op, cm.graph) == (cm.flash, code.scratch_bytes)


def test_widened_sanitized_build_matches_tflm():
    rng = np.random.default_rng(12)
    model = fc_model((3, 33), 33, 9, rng, per_channel=False, in_zp=127, act="RELU")
    cm = te.convert(model, flash=BIG_FLASH)
    assert_sanitized_matches_tflm(cm, model, int8_inputs((3, 33), 20, seed=2))
