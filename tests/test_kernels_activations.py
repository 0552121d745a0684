"""int8 RELU, RELU6, LOGISTIC, TANH, HARD_SWISH: every one of the 256 input codes, under many
quantizations, bit-exact with TFLite Micro; tables, in place, footprint, sanitizers, refusals.
int16 (16x8) LEAKY_RELU, RELU, RELU6, and LOGISTIC, TANH over all 65,536 input codes."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       check_footprints, check_total_footprint, int8_inputs, tflm_run)
from tflite_builder import ModelBuilder
from tinyengine_tf import quant
from tinyengine_tf.kernels import activations

KINDS = ["RELU", "RELU6", "LOGISTIC", "TANH", "HARD_SWISH"]
LUT_KINDS = ["RELU", "LOGISTIC", "TANH", "HARD_SWISH"]
ALL_CODES = np.arange(-128, 128, dtype=np.int8)


def unary_model(kind, shape, qi, qo, dtype="int8"):
    b = ModelBuilder()
    x = b.tensor(shape, dtype=dtype, scale=qi[0], zp=qi[1])
    y = b.tensor(shape, dtype=dtype, scale=qo[0], zp=qo[1])
    b.op(kind, [x], [y])
    return b.build([x], [y])


def valid_output(kind, qi, qo):
    """TFLM's own constraints: LOGISTIC wants zero point -128; HARD_SWISH an output scale no
    finer than input / 128."""
    if kind == "LOGISTIC":
        return qo[0], -128
    if kind == "HARD_SWISH" and qi[0] / qo[0] >= 127.0:
        return qi[0] / 50.0, qo[1]
    return qo


# (input, output) quantizations: typical, equal, zero points at the ends, very coarse and very fine.
QUANTS = [
    ((0.05, 3), (0.05, 3)),
    ((0.1, -128), (0.02, -128)),
    ((0.0235, 127), (0.0471, -17)),
    ((1.7, 40), (0.9, -90)),
    ((0.0004, -5), (0.03, 60)),
    ((0.25, -77), (0.0039, 0)),
    ((8.0, 0), (0.5, 100)),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("qk", range(len(QUANTS)))
def test_every_input_code(kind, qk):
    """All 256 codes in one sample, then 20 random samples (extremes first) on an NHWC shape."""
    qi, qo = QUANTS[qk]
    qo = valid_output(kind, qi, qo)
    model = unary_model(kind, (1, 256), qi, qo)
    cm = te.convert(model)
    assert_matches_tflm(cm, model, ALL_CODES[None])
    check_total_footprint(cm)
    model = unary_model(kind, (1, 5, 7, 3), qi, qo)
    assert_matches_tflm(te.convert(model), model, int8_inputs((5, 7, 3), 20, seed=qk))


@pytest.mark.parametrize("kind", LUT_KINDS)
def test_tables_match_tflm_over_random_quantizations(kind):
    """The Python replay of TFLM's arithmetic, table for table, over 60 random quantizations
    (scales 1e-5 .. 100): the tables the kernel bakes are exactly TFLM's function."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    checked = 0
    while checked < 60:
        qi = (float(np.float32(10 ** rng.uniform(-5, 2))), int(rng.integers(-128, 128)))
        qo = valid_output(kind, qi, (float(np.float32(10 ** rng.uniform(-5, 2))),
                                     int(rng.integers(-128, 128))))
        x = SimpleNamespace(s=qi[0], zp=qi[1])
        y = SimpleNamespace(s=float(np.float32(qo[0])), zp=qo[1])
        table = activations.table_for(kind, x, y)
        ref = tflm_run(unary_model(kind, (1, 256), qi, qo), ALL_CODES[None]).ravel()
        assert np.array_equal(table, ref), (qi, qo, np.flatnonzero(table != ref)[:8])
        checked += 1


def test_tables_are_not_trivial():
    """Guards the table test: the functions really vary with the input."""
    x, y = SimpleNamespace(s=0.02, zp=0), SimpleNamespace(s=1 / 256, zp=-128)
    assert len(set(activations.table_for("LOGISTIC", x, y).tolist())) > 100
    assert len(set(activations.table_for("TANH", x, y).tolist())) > 100
    assert len(set(activations.table_for("HARD_SWISH", x, SimpleNamespace(s=0.02, zp=0)).tolist())) > 100


@pytest.mark.parametrize("kind", LUT_KINDS)
def test_one_table_per_layer(kind):
    qi, qo = QUANTS[2]
    cm = te.convert(unary_model(kind, (1, 9, 9, 4), qi, valid_output(kind, qi, qo)))
    assert cm.flash == 256
    assert "_lut[" in cm.sources["model.c"]


def test_relu6_has_no_table():
    cm = te.convert(unary_model("RELU6", (1, 9, 9, 4), *QUANTS[2]))
    assert cm.flash == 0


def test_hard_swish_edge_exponents():
    """Output exponent 0 (the int16 zero-point add wraps) and large/small reluish shifts."""
    for qi, qo in [((0.9, 3), (0.9 / 127.9, -5)), ((30.0, 3), (0.3, -5)), ((1e-5, 3), (1e-5, -5)),
                   ((100.0, -100), (1.0, 50))]:
        model = unary_model("HARD_SWISH", (1, 256), qi, qo)
        assert_matches_tflm(te.convert(model), model, ALL_CODES[None])


def test_chain_runs_in_place():
    """HARD_SWISH -> RELU6 -> LOGISTIC: the middle ops overwrite their input and stay exact."""
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 8), scale=0.04, zp=-3)
    h = b.tensor((1, 6, 6, 8), scale=0.03, zp=-20)
    r = b.tensor((1, 6, 6, 8), scale=0.03, zp=-20)
    y = b.tensor((1, 6, 6, 8), scale=1 / 256, zp=-128)
    b.op("HARD_SWISH", [x], [h])
    b.op("RELU6", [h], [r])
    b.op("LOGISTIC", [r], [y])
    model = b.build([x], [y])
    cm = te.convert(model)
    assert all(code.in_place for _, code in cm._gen.layers)
    assert cm.plan.tensor_offset[h] == cm.plan.tensor_offset[r]
    assert_matches_tflm(cm, model, int8_inputs((6, 6, 8), 20))


@pytest.mark.parametrize("kind", ["LOGISTIC", "RELU6"])
def test_clean_under_sanitizers(kind):
    qi, qo = QUANTS[1]
    model = unary_model(kind, (1, 4, 4, 16), qi, valid_output(kind, qi, qo))
    assert_sanitized_matches_tflm(te.convert(model), model, int8_inputs((4, 4, 16), 6))


# -- refusals ---------------------------------------------------------------------------------

def test_unsupported_logistic_output_zero_point():
    assert_unsupported(unary_model("LOGISTIC", (1, 8), (0.1, 0), (1 / 256, 0)), "LOGISTIC",
                       "-128")


def test_unsupported_hard_swish_fine_output():
    assert_unsupported(unary_model("HARD_SWISH", (1, 8), (1.0, 0), (0.001, 0)), "HARD_SWISH",
                       "128x")


def test_unsupported_int16_hard_swish():
    """TFLM has int8 and float32 HARD_SWISH only (its Eval rejects int16)."""
    model = unary_model("HARD_SWISH", (1, 8), (0.1, 0), (0.1, 0), dtype="int16")
    with pytest.raises(RuntimeError):
        tflm_run(model, np.zeros((1, 8), np.int16))
    assert_unsupported(model, "HARD_SWISH", "no int16 HARD_SWISH")


@pytest.mark.parametrize("kind", ["TANH", "RELU6"])
def test_unsupported_size_mismatch(kind):
    b = ModelBuilder()
    x = b.tensor((1, 8), scale=0.1, zp=0)
    y = b.tensor((1, 9), scale=0.1, zp=0)
    b.op(kind, [x], [y])
    assert_unsupported(b.build([x], [y]), kind, "size")


@pytest.mark.parametrize("kind", ["RELU", "RELU6", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU"])
def test_per_channel_input_uses_the_first_channel_as_tflm(kind):
    """TFLM reads a per-channel activation's first scale and zero point and runs (issue 11)."""
    b = ModelBuilder()
    x = b.tensor((1, 2, 3), scale=[0.1, 0.2, 0.3], zp=[3, 0, 0], qdim=2)
    y = b.tensor((1, 2, 3), scale=1 / 256 if kind == "LOGISTIC" else 0.05,
                 zp=-128 if kind == "LOGISTIC" else 1)
    b.op(kind, [x], [y])
    model = b.build([x], [y])
    assert_matches_tflm(te.convert(model), model, int8_inputs((2, 3), 20))


# -- LEAKY_RELU and RSQRT -----------------------------------------------------------------------

def leaky_model(shape, qi, qo, alpha):
    b = ModelBuilder()
    x = b.tensor(shape, scale=qi[0], zp=qi[1])
    y = b.tensor(shape, scale=qo[0], zp=qo[1])
    b.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", alpha=alpha)
    return b.build([x], [y])


ALPHAS = [0.2, 0.01, 0.3333, 1.0, 1.7, 0.0, -0.25]


def _random_quant(rng, lo=-4, hi=1):
    return float(np.float32(10 ** rng.uniform(lo, hi))), int(rng.integers(-128, 128))


def test_leaky_relu_tables_match_tflm():
    """Every input code, over 7 alphas (negative and > 1 included) x 10 random quantizations
    (scales 1e-4 .. 10, any zero points): 70 combinations, table by table."""
    rng = np.random.default_rng(71)
    for alpha in ALPHAS:
        for _ in range(10):
            qi, qo = _random_quant(rng), _random_quant(rng)
            table = activations.leaky_relu_table(qi[0], qi[1], qo[0], qo[1], alpha)
            ref = tflm_run(leaky_model((1, 256), qi, qo, alpha), ALL_CODES[None]).ravel()
            assert np.array_equal(table, ref), (alpha, qi, qo, np.flatnonzero(table != ref)[:8])


@pytest.mark.parametrize("qk", [0, 2, 3, 5])
@pytest.mark.parametrize("alpha", [0.2, -0.25])
def test_leaky_relu_compiled(qk, alpha):
    qi, qo = QUANTS[qk]
    model = leaky_model((1, 256), qi, qo, alpha)
    cm = te.convert(model)
    assert_matches_tflm(cm, model, ALL_CODES[None])
    check_total_footprint(cm)
    model = leaky_model((1, 5, 7, 3), qi, qo, alpha)
    assert_matches_tflm(te.convert(model), model, int8_inputs((5, 7, 3), 20, seed=qk))


def rsqrt_model(shape, qi, qo):
    b = ModelBuilder()
    x = b.tensor(shape, scale=qi[0], zp=qi[1])
    y = b.tensor(shape, scale=qo[0], zp=qo[1])
    b.op("RSQRT", [x], [y])
    return b.build([x], [y])


def _codes_from(zp):
    """Every code TFLM's RSQRT accepts (>= the zero point), padded with 127 to 256."""
    codes = np.full(256, 127, np.int8)
    codes[:128 - zp] = np.arange(zp, 128)
    return codes


def test_rsqrt_tables_match_tflm():
    """Every valid input code over 60 random quantizations (input zero points across the int8
    range, scales 1e-4 .. 10): the table equals TFLM's function."""
    rng = np.random.default_rng(72)
    for _ in range(60):
        qi, qo = _random_quant(rng), _random_quant(rng)
        qi = (qi[0], int(rng.integers(-128, 120)))
        codes = _codes_from(qi[1])
        table = activations.rsqrt_table(qi[0], qi[1], qo[0], qo[1])[codes.astype(np.int64) + 128]
        ref = tflm_run(rsqrt_model((1, 256), qi, qo), codes[None]).ravel()
        assert np.array_equal(table, ref), (qi, qo, np.flatnonzero(table != ref)[:8])


@pytest.mark.parametrize("qi,qo", [((0.05, -128), (0.02, -128)), ((1.3, -20), (0.01, 3)),
                                   ((0.0004, 100), (0.9, -128)), ((8.0, 0), (0.004, 127))])
def test_rsqrt_compiled(qi, qo):
    model = rsqrt_model((1, 256), qi, qo)
    codes = _codes_from(qi[1])
    cm = te.convert(model)
    assert_matches_tflm(cm, model, codes[None])
    check_total_footprint(cm)
    # Random valid codes on an NHWC shape, the extremes (zero point and 127) first.
    rng = np.random.default_rng(3)
    x = rng.integers(qi[1], 128, (20, 4, 5, 3)).astype(np.int8)
    x[0], x[1] = qi[1], 127
    assert_matches_tflm(te.convert(rsqrt_model((1, 4, 5, 3), qi, qo)), rsqrt_model((1, 4, 5, 3), qi, qo), x)


def test_rsqrt_below_zero_point():
    """TFLM's Eval checks the elements in order and fails the Invoke at the first one below the
    zero point, those before it written. Ours fails the same invocation: <name>_invoke returns
    the layer's number + 1 and cm.run raises InvalidInputError naming the op and the input."""
    from tflite_micro.python.tflite_micro import runtime
    model = rsqrt_model((1, 4), (0.1, 10), (0.05, 0))
    good = np.array([[10, 11, 12, 127]], np.int8)
    ref = tflm_run(model, good)
    interp = runtime.Interpreter.from_bytes(model)
    interp.set_input(np.array([[10, 11, 9, 12]], np.int8), 0)
    with pytest.raises(RuntimeError):
        interp.invoke()
    assert np.array_equal(interp.get_output(0)[0, :2], ref[0, :2])   # written before the failure
    cm = te.convert(model)
    assert_matches_tflm(cm, model, good)
    with pytest.raises(te.InvalidInputError, match=r"RSQRT \(op #0\): input 1 of the batch .*"
                                                   r"below the layer's input zero point"):
        cm.run(np.array([[10, 11, 12, 13], [10, 11, 12, -128]], np.int8))
    assert "return 1;" in cm.sources[f"{cm.prefix}.c"]
    # The model runs on after a failed invocation, as TFLM's interpreter does.
    assert_matches_tflm(cm, model, good)
    # The firmware's invoke fails the same way; its harness stops with an error exit.
    assert np.array_equal(cm.run(good, target="cortex-m4"), ref)
    with pytest.raises(te.ToolchainError, match="the firmware failed under QEMU"):
        cm.run(np.array([[10, 9, 12, 13]], np.int8), target="cortex-m4")


def test_rsqrt_zero_point_min_never_fails():
    """Input zero point -128: no code lies below it, so the layer has no check to fail."""
    model = rsqrt_model((1, 256), (0.05, -128), (0.02, -128))
    cm = te.convert(model)
    assert "return 1;" not in cm.sources[f"{cm.prefix}.c"]
    assert_matches_tflm(cm, model, np.arange(-128, 128, dtype=np.int8)[None])


def test_rsqrt_constant_input_below_zero_point_refused():
    """A constant input below the zero point would fail every TFLM Invoke: refused."""
    b = ModelBuilder()
    c = b.tensor((1, 4), scale=0.1, zp=10, data=[12, 9, 30, 40])
    x = b.tensor((1, 4), scale=0.05, zp=0)
    r = b.tensor((1, 4), scale=0.05, zp=0)
    y = b.tensor((1, 4), scale=0.1, zp=0)
    b.op("RSQRT", [c], [r])
    b.op("ADD", [x, r], [y], "AddOptions", fusedActivationFunction="NONE")
    assert_unsupported(b.build([x], [y]), "RSQRT", "below the zero point 10", op_index=0)


def test_rsqrt_checked_sanitized():
    """The checked loop (zero point above -128) under ASan + UBSan, on valid codes."""
    model = rsqrt_model((1, 4, 4, 16), (0.05, -20), (0.03, -5))
    rng = np.random.default_rng(5)
    x = rng.integers(-20, 128, (6, 4, 4, 16)).astype(np.int8)
    x[0], x[1] = -20, 127
    assert_sanitized_matches_tflm(te.convert(model), model, x)


@pytest.mark.parametrize("kind", ["LEAKY_RELU", "RSQRT"])
def test_leaky_relu_rsqrt_sanitized(kind):
    qi, qo = (0.05, -128), (0.03, -5)
    model = (leaky_model((1, 4, 4, 16), qi, qo, 0.1) if kind == "LEAKY_RELU"
             else rsqrt_model((1, 4, 4, 16), qi, qo))
    assert_sanitized_matches_tflm(te.convert(model), model, int8_inputs((4, 4, 16), 6, seed=1))


@pytest.mark.parametrize("alpha", [0.2, 0.01, 1.7, -0.25])
@pytest.mark.parametrize("qi,qo", [((1e-4, 0), (1e-4, 0)), ((3e-5, 0), (2e-4, 0)),
                                   ((5e-4, 100), (1e-4, -300)), ((0.01, 0), (1e-5, 0))])
def test_leaky_relu_int16(alpha, qi, qo):
    """16x8 LEAKY_RELU: every 64th int16 code plus both extremes, 16 quantization x alpha cases."""
    b = ModelBuilder()
    x = b.tensor((1, 1025), dtype="int16", scale=qi[0], zp=qi[1])
    y = b.tensor((1, 1025), dtype="int16", scale=qo[0], zp=qo[1])
    b.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", alpha=alpha)
    model = b.build([x], [y])
    codes = np.concatenate([np.arange(-32768, 32768, 64), [32767]]).astype(np.int16)[None]
    rng = np.random.default_rng(2)
    xs = np.concatenate([codes, rng.integers(-32768, 32768, (4, 1025)).astype(np.int16)])
    cm = te.convert(model)
    assert_matches_tflm(cm, model, xs)
    check_total_footprint(cm)
    if alpha == 0.2 and qi[1] == 0 and qo[0] == 1e-4:
        assert_sanitized_matches_tflm(cm, model, xs[:3], layer=0)


def test_leaky_relu_multipliers_are_double_as_the_interpreter_computes():
    """A quantization where float32 multipliers (as TFLM's source reads) give int16 outputs one
    code off the interpreter, and double ones (what the kernel uses) do not."""
    qi, qo, alpha = (3e-5, 0), (2e-4, 0), 1.7
    f32 = np.float32
    m32 = float(f32(f32(f32(qi[0]) * f32(alpha)) / f32(qo[0])))
    (_, _), (qa, sa) = activations.leaky_relu_params(qi[0], qo[0], alpha)
    assert (qa, sa) != quant.quantize_multiplier(m32)
    b = ModelBuilder()
    x = b.tensor((1, 256), dtype="int16", scale=qi[0], zp=0)
    y = b.tensor((1, 256), dtype="int16", scale=qo[0], zp=0)
    b.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", alpha=alpha)
    model = b.build([x], [y])
    codes = np.arange(-32750, -32750 + 200 * 256, 200).astype(np.int16)[None]
    assert_matches_tflm(te.convert(model), model, codes)
    q32, s32 = quant.quantize_multiplier(m32)
    ref = tflm_run(model, codes).ravel()
    f32_out = np.array([quant.mbqm(int(v), q32, s32) for v in codes.ravel()])
    assert np.any(f32_out != ref)



@pytest.mark.parametrize("kind", ["RELU", "RELU6"])
@pytest.mark.parametrize("qi,qo", [((1e-4, 0), (1e-4, 0)), ((3e-5, 0), (2e-4, 0)),
                                   ((2e-3, 0), (1e-5, 0)), ((1e-4, 40), (1e-4, 40))])
def test_relu_relu6_int16(kind, qi, qo):
    """16x8 RELU (zero points 0, requantized) and RELU6 (clamped in the input's codes)."""
    if kind == "RELU" and qi[1]:
        assert_unsupported(unary_model(kind, (1, 8), qi, qo, dtype="int16"), kind, "zero point")
        return
    model = unary_model(kind, (1, 1025), qi, qo, dtype="int16")
    codes = np.concatenate([np.arange(-32768, 32768, 64), [32767]]).astype(np.int16)[None]
    xs = np.concatenate([codes, np.random.default_rng(1).integers(-32768, 32768, (4, 1025)).astype(np.int16)])
    cm = te.convert(model)
    assert_matches_tflm(cm, model, xs)
    check_total_footprint(cm)


# -- int16 LOGISTIC and TANH ------------------------------------------------------------------

CODES16 = np.arange(-32768, 32768, dtype=np.int16)[None]
OUT16 = (1 / 32768, 0)
# Input scales: TFLM's power-of-two multiplier path (2^-12 for both, 2^-11 for TANH only), the
# same within CheckedLog2's 2^+-0.001 tolerance (taken as exact powers of two), other powers of
# two (general path), the shift capped at 31 (1e-9), common 16x8 scales, and multipliers above
# TFLM's 32767 DCHECK that still fit int32 (3.0, 5.3).
SCALES16 = [2**-12, 2**-11, 2**-12 * 1.0005, 2**-11 * 0.9995, 2**-10, 2**-15, 2**-7, 1e-9,
            1.2e-5, 3.05e-4, 1e-3, 0.0123, 0.3, 1.0, 3.0, 5.3]


def parallel16(kind, scales, n=65536):
    """One model, one independent int16 `kind` layer (input and output) per input scale."""
    b = ModelBuilder()
    xs, ys = [], []
    for s in scales:
        xs.append(b.tensor((1, n), dtype="int16", scale=s, zp=0))
        ys.append(b.tensor((1, n), dtype="int16", scale=OUT16[0], zp=0))
        b.op(kind, [xs[-1]], [ys[-1]])
    return b.build(xs, ys)


@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_sigmoid_tanh_int16_every_code(kind):
    """The generated C on all 65,536 int16 codes, for each of the 16 input scales, equals TFLM
    (one compiled model for all the scales; TFLM runs each layer alone, its arena being 1 MiB)."""
    cm = te.convert(parallel16(kind, SCALES16))
    ours = cm.run([CODES16] * len(SCALES16))
    for s, out in zip(SCALES16, ours):
        ref = tflm_run(unary_model(kind, (1, 65536), (s, 0), OUT16, dtype="int16"), CODES16)
        assert np.array_equal(out, ref), (s, np.flatnonzero(out.ravel() != ref.ravel())[:8] - 32768)
    assert cm.flash == 512 * len(SCALES16)
    check_footprints(cm)
    check_total_footprint(cm)


def _scaled16(x, mult: int, shift: int) -> np.ndarray:
    x = np.asarray(x, np.int64)
    return (x * mult + ((1 << (shift - 1)) if shift > 0 else 0)) >> shift


def _logistic16(x, mult: int, shift: int) -> np.ndarray:
    """reference_integer_ops::Logistic (int16) replayed on an array of codes, to check the
    multiplier/shift derivation at many more scales than compiled models would allow."""
    v = _scaled16(x, mult, shift)
    a = np.abs(v)
    uh = a >> 9
    lut = np.array(activations.SIGMOID_U16 + (activations.SIGMOID_U16[-1],), np.int64)
    ua, ub = lut[np.minimum(uh, 255)], lut[np.minimum(uh + 1, 256)]
    r = np.where(uh >= 255, 0x7FFF << 10, (ua << 9) + (a & 0x1FF) * (ub - ua))
    r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return (r >> 10).astype(np.int16)


def _tanh16(x, mult: int, shift: int) -> np.ndarray:
    """reference_integer_ops::Tanh (int16) replayed on an array of codes."""
    v = _scaled16(x, mult, shift)
    a = np.abs(v)
    uh = a >> 8
    lut = np.array(activations.SIGMOID_U16 + (activations.SIGMOID_U16[-1],), np.int64)
    ua, ub = lut[np.minimum(uh, 255)], lut[np.minimum(uh + 1, 256)]
    r = np.where(uh >= 255, 0xFFFF << 8, (ua << 8) + (a & 0xFF) * (ub - ua))
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return (r >> 8).astype(np.int16)


@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_sigmoid_tanh_int16_params_match_tflm(kind):
    """The multiplier / shift derivation over 40 random input scales (1e-8 .. 5), through the
    Python replay of the int16 kernel, every code each time: equal to TFLM's outputs."""
    rng = np.random.default_rng(sum(map(ord, kind)) + 16)
    replay = _logistic16 if kind == "LOGISTIC" else _tanh16
    for s in [float(np.float32(10 ** e)) for e in rng.uniform(-8, np.log10(5.3), 40)]:
        params = activations.sigmoid_tanh16_params(kind, s)
        ref = tflm_run(unary_model(kind, (1, 65536), (s, 0), OUT16, dtype="int16"), CODES16).ravel()
        got = replay(CODES16.ravel(), *params)
        assert np.array_equal(got, ref), (s, params, np.flatnonzero(got != ref)[:8] - 32768)


def test_sigmoid_tanh_int16_pot_tolerance():
    """A scale within 2^+-0.001 of 2^-12 takes TFLM's exact-power multiplier 3, not its own."""
    assert activations.sigmoid_tanh16_params("LOGISTIC", 2**-12 * 1.0005) == (3, 0)
    assert activations.sigmoid_tanh16_params("TANH", 2**-11 * 0.9995) == (6, 0)
    assert activations.sigmoid_tanh16_params("LOGISTIC", 2**-11) != (6, 0)
    assert activations.sigmoid_tanh16_params("LOGISTIC", 2**-12 * 1.002) != (3, 0)


def test_sigmoid_tanh_int16_chain_in_place_and_sanitized():
    """16x8 FC -> TANH -> LOGISTIC: the activations overwrite their inputs, stay exact, and run
    clean under ASan/UBSan (whole model, and the LOGISTIC layer on exact-size buffers)."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.tensor((1, 64), dtype="int16", scale=1e-3, zp=0)
    w = b.tensor((512, 64), scale=[0.01], zp=[0], data=rng.integers(-127, 128, (512, 64)))
    h = b.tensor((1, 512), dtype="int16", scale=4e-4, zp=0)
    t = b.tensor((1, 512), dtype="int16", scale=OUT16[0], zp=0)
    y = b.tensor((1, 512), dtype="int16", scale=OUT16[0], zp=0)
    b.op("FULLY_CONNECTED", [x, w], [h], "FullyConnectedOptions")
    b.op("TANH", [h], [t])
    b.op("LOGISTIC", [t], [y])
    model = b.build([x], [y])
    cm = te.convert(model)
    assert [code.in_place for _, code in cm._gen.layers][1:] == [True, True]
    assert cm.plan.tensor_offset[h] == cm.plan.tensor_offset[t] == cm.plan.tensor_offset[y]
    xs = rng.integers(-32768, 32768, (6, 64)).astype(np.int16)
    xs[0], xs[1] = -32768, 32767
    assert_matches_tflm(cm, model, xs)
    check_total_footprint(cm)
    assert_sanitized_matches_tflm(cm, model, xs[:3])
    one = unary_model("LOGISTIC", (1, 65536), (3.0, 0), OUT16, dtype="int16")
    assert_sanitized_matches_tflm(te.convert(one), one, CODES16, layer=0)


@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_sigmoid_tanh_int16_refusals(kind):
    """TFLM's Prepare checks (zero points 0, output scale 2^-15) and int32 overflow."""
    for qi, qo, words in [((1e-3, 1), OUT16, "zero points 0"), ((1e-3, 0), (1 / 32768, 1), "zero points 0"),
                          ((1e-3, 0), (1 / 16384, 0), "1/32768"), ((1e-3, 0), (1 / 256, 0), "1/32768"),
                          ((6.0, 0), OUT16, "too large")]:
        model = unary_model(kind, (1, 8), qi, qo, dtype="int16")
        if words != "too large":
            with pytest.raises(RuntimeError):
                tflm_run(model, np.zeros((1, 8), np.int16))
        assert_unsupported(model, kind, words)
