"""SOFTMAX int8 -> int8: bit-exact with TFLite Micro over scales, betas, zero points, lengths,
ranks and every class of input row (all equal, one large, ties, extremes, ramps, the diff_min
edge); the unsupported configurations; the shape-only footprint; a sanitized build."""
from __future__ import annotations

import numpy as np
import pytest

from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       check_footprints, int8_inputs, run_c_check, sample_shape)
from tflite_builder import ModelBuilder

import tinyengine_tf as te
from converters.tflite_reader import read_tflite
from tinyengine_tf.codegen import generate
from tinyengine_tf.kernels.base import FOOTPRINTS
from tinyengine_tf.kernels.softmax import softmax_params
from tinyengine_tf.passes import run_passes


def softmax_model(shape, scale, zp, beta, out_scale=1.0 / 256, out_zp=-128, in_dtype="int8",
                  out_dtype="int8") -> bytes:
    b = ModelBuilder()
    x = b.tensor(shape, dtype=in_dtype, scale=scale, zp=zp)
    y = b.tensor(shape, dtype=out_dtype, scale=out_scale, zp=out_zp)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=beta)
    return b.build([x], [y])


def value_classes(shape, diff_min: int, rng) -> np.ndarray:
    """Rows of every kind the fixed-point path treats differently, per row of the last axis."""
    depth = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))

    def fill(make):
        return np.stack([make(r) for r in range(rows)]).reshape(shape).astype(np.int8)

    def one_large(r):
        v = rng.integers(-128, 0, depth)
        v[rng.integers(depth)] = rng.integers(0, 128)
        return v

    def ties(r):
        v = rng.integers(-128, 100, depth)
        top = rng.integers(100, 128)
        v[rng.choice(depth, size=min(depth, 2 + r % 3), replace=False)] = top
        return v

    def near_max(r):
        top = int(rng.integers(-100, 128))
        return np.clip(top - rng.integers(0, 4, depth), -128, 127)

    def cut_edge(r):
        # Differences at diff_min and one either side, where entries start to be dropped.
        v = np.full(depth, 127)
        edge = [127 + diff_min - 1, 127 + diff_min, 127 + diff_min + 1]
        for c in range(1, depth):
            v[c] = edge[(c + r) % 3]
        return np.clip(v, -128, 127)

    out = [
        fill(lambda r: np.full(depth, rng.integers(-128, 128))),           # all equal
        fill(lambda r: np.full(depth, -128)),
        fill(lambda r: np.full(depth, 127)),
        fill(one_large),
        fill(ties),
        fill(near_max),
        fill(cut_edge),
        fill(lambda r: np.linspace(-128, 127, depth).round()),              # ramp up
        fill(lambda r: np.linspace(127, -128, depth).round()),              # ramp down
        fill(lambda r: (np.arange(depth) * (r + 1) * 7) % 256 - 128),       # sawtooth
        fill(lambda r: np.where(np.arange(depth) % 2, 127, -128)),          # alternating extremes
    ]
    noise = int8_inputs(sample_shape(shape), 16, seed=int(rng.integers(1 << 30)))
    return np.concatenate([np.stack(out), noise.reshape((16, *shape))]).reshape(
        (-1, *sample_shape(shape)))


def _configs():
    """(shape, scale, zp, beta): fixed points of interest plus a seeded random spread."""
    fixed = [
        ((1, 1), 0.1, 0, 1.0),                     # one class: always 127
        ((1, 2), 0.05, -128, 1.0),
        ((1, 10), 0.1, 0, 1.0),
        ((1, 10), 0.5, 3, 1.0),                    # diff_min = -31: the cut-off bites
        ((1, 16), 1.0, 0, 40.0),                   # beta * scale * 2^26 capped at 2^31 - 1
        ((1, 16), 2.0 ** -20, 0, 1.0),             # tiny multiplier: every exp near 1
        ((1, 64), 1.0 / 16, 127, 1.0),
        ((3, 7), 0.2, -7, 0.5),                    # rank 2, several rows
        ((1, 2, 3, 5), 0.07, 10, 2.0),             # rank 4
        ((2, 2, 2, 12), 0.03, -100, 1.0),          # rank 4, batch dim not 1
        ((5,), 0.1, 0, 1.0),                       # rank 1
        ((1, 4, 33), 0.25, 0, 1.3),                # rank 3
    ]
    rng = np.random.default_rng(20240611)
    lengths = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64]
    randoms = []
    for k in range(28):
        depth = int(lengths[k % len(lengths)] if k < len(lengths) else rng.integers(1, 65))
        scale = float(np.exp(rng.uniform(np.log(2.0 ** -14), np.log(4.0))))
        beta = float(rng.choice([0.25, 0.5, 1.0, 1.0, 1.0, 1.7, 3.0, 10.0]))
        zp = int(rng.integers(-128, 128))
        rank = int(rng.choice([2, 2, 3, 4]))
        lead = [1] + [int(rng.integers(1, 4)) for _ in range(rank - 2)]
        randoms.append((tuple(lead + [depth]), scale, zp, beta))
    return fixed + randoms


@pytest.mark.parametrize("seed,shape,scale,zp,beta", [(i, *c) for i, c in enumerate(_configs())])
def test_matches_tflm(seed, shape, scale, zp, beta):
    model = softmax_model(shape, scale, zp, beta)
    params = softmax_params(beta, scale)
    assert params is not None
    xs = value_classes(shape, params[2], np.random.default_rng(seed))
    assert len(xs) >= 20
    assert_matches_tflm(te.convert(model), model, xs)


@pytest.mark.parametrize("seed,shape,scale,zp,beta",
                         [(i, *c) for i, c in enumerate(_configs()[:24])])
def test_int16_output_matches_tflm(seed, shape, scale, zp, beta):
    """int8 -> int16 keeps 8 more bits of the fixed-point result: a finer check of the helpers."""
    model = softmax_model(shape, scale, zp, beta, out_scale=1.0 / 65536, out_zp=-32768,
                          out_dtype="int16")
    xs = value_classes(shape, softmax_params(beta, scale)[2], np.random.default_rng(seed))
    out = assert_matches_tflm(te.convert(model), model, xs)
    assert out.dtype == np.int16


def test_diff_min_cut_is_exercised():
    """The cut-off config really drops entries: some outputs sit at -128 next to kept ones."""
    shape, scale, beta = (1, 10), 0.5, 1.0
    q, shift, diff_min = softmax_params(beta, scale)
    assert -255 < diff_min < 0
    model = softmax_model(shape, scale, 0, beta)
    xs = value_classes(shape, diff_min, np.random.default_rng(1))
    out = assert_matches_tflm(te.convert(model), model, xs)
    # In cut-edge rows an entry at diff_min - 1 is dropped (-128) while one at diff_min is kept.
    diffs = xs.astype(np.int32) - xs.max(axis=-1, keepdims=True)
    assert (out[diffs == diff_min - 1] == -128).all()
    assert (diffs == diff_min).any() and (diffs == diff_min - 1).any()


def test_long_rows_beyond_tflm_shift_limit():
    """Above 511 entries TFLM aborts on near-flat rows; ordinary rows must still match it."""
    shape = (1, 600)
    model = softmax_model(shape, 0.05, 0, 1.0)
    xs = int8_inputs((600,), 20, extremes=False)
    xs[0, ::2], xs[0, 1::2] = -128, 127         # 300 maxima: sum stays below TFLM's limit
    xs[1] = -128
    xs[1, 17] = 127
    assert_matches_tflm(te.convert(model), model, xs)


@pytest.mark.parametrize("kwargs,words", [
    (dict(out_zp=0), "zero point"),
    (dict(out_scale=1.0 / 255), "1/256"),
    (dict(out_dtype="int16", out_scale=1.0 / 65536, out_zp=0), "zero point -32768"),
    (dict(out_dtype="int16", out_scale=1.0 / 60000, out_zp=-32768), "1/65536"),
    (dict(in_dtype="int16", out_dtype="int8", out_scale=1.0 / 256, out_zp=-128), "int16"),
    (dict(out_dtype="int32", out_scale=1.0 / 65536, out_zp=0), "int32"),
])
def test_unsupported_quantization(kwargs, words):
    assert_unsupported(softmax_model((1, 10), 0.1, 0, 1.0, **kwargs), "SOFTMAX", words, op_index=0)


@pytest.mark.parametrize("scale,beta", [(2.0 ** -27, 1.0), (0.1, -1.0), (0.1, 0.0)])
def test_unsupported_beta(scale, beta):
    assert_unsupported(softmax_model((1, 10), scale, 0, beta), "SOFTMAX", "beta", op_index=0)


def test_unsupported_long_axis():
    assert_unsupported(softmax_model((1, 4096), 0.1, 0, 1.0), "SOFTMAX", "4095", op_index=0)


def _graph(model):
    return run_passes(read_tflite(model))


@pytest.mark.parametrize("shape", [(1, 10), (3, 64), (1, 2, 3, 17), (1, 600)])
def test_footprint_equals_emitted(shape):
    g = _graph(softmax_model(shape, 0.1, 0, 1.0))
    gen = generate(g)
    (op, code), = gen.layers
    assert FOOTPRINTS["SOFTMAX"](op, g) == (gen.flash_bytes, code.scratch_bytes)
    assert "te_softmax.h" in gen.sources


@pytest.mark.parametrize("shape,scale,beta,out", [((2, 33), 0.5, 1.0, "int8"),
                                                  ((1, 600), 0.05, 1.0, "int8"),
                                                  ((1, 8), 1.0, 40.0, "int8"),
                                                  ((1, 2, 20), 0.1, 1.0, "int16")])
def test_sanitized_build_matches_tflm(shape, scale, beta, out):
    grid = dict(out_dtype="int16", out_scale=1.0 / 65536, out_zp=-32768) if out == "int16" else {}
    model = softmax_model(shape, scale, 5, beta, **grid)
    if shape[-1] > 511:
        xs = int8_inputs(sample_shape(shape), 20, extremes=False)
    else:
        xs = value_classes(shape, softmax_params(beta, scale)[2], np.random.default_rng(7))
    assert_sanitized_matches_tflm(te.convert(model), model, xs)


# -- the fixed-point helpers of c/te_softmax.h, one by one, against a gemmlowp mirror ---------
# The mirror follows gemmlowp's generic templates (any integer-bit count, Rescale as a
# saturating/rounding power-of-two multiply, the barrel shifter as a loop) rather than the
# specialized C, so the C's hand-specialized shifts and bit positions are checked independently.

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
EXP_BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
              (3, 720401), (4, 242)]


def _srdhm(a, b):
    from tinyengine_tf.quant import srdhm
    return srdhm(a, b)


def _rdbpot(x, e):
    from tinyengine_tf.quant import rounding_divide_by_pot
    return rounding_divide_by_pot(x, e)


def _wrap(x):
    return ((x + 2**31) % 2**32) - 2**31


def _mul_pot(x, exponent):
    """gemmlowp SaturatingRoundingMultiplyByPOT."""
    if exponent < 0:
        return _rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return INT32_MAX if x > threshold else INT32_MIN if x < -threshold else x << exponent


def _rescale(x, src_bits, dst_bits):
    return _mul_pot(x, src_bits - dst_bits)


def _fixed(value, integer_bits):
    """gemmlowp FromDouble: the raw int32 nearest value in Q(integer_bits)."""
    return int(max(min(round(value * 2.0 ** (31 - integer_bits)), INT32_MAX), INT32_MIN))


def mirror_exp_quarter(a):
    c, third = 1895147668, 715827883
    x = _wrap(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    tail = _mul_pot(_wrap(_srdhm(_wrap(_mul_pot(x4, -2) + x3), third) + x2), -1)
    return _wrap(c + _srdhm(c, _wrap(x + tail)))


def mirror_exp_on_negative(a, integer_bits=5):
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod = (a & (quarter - 1)) - quarter
    result = mirror_exp_quarter(_rescale(a_mod, integer_bits, 0))
    remainder = a_mod - a
    for exponent, mult in EXP_BARREL:
        if integer_bits > exponent and remainder & (1 << (frac + exponent)):
            result = _srdhm(result, mult)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return INT32_MAX if a == 0 else result


def mirror_one_over_one_plus_x(a):
    s = a + INT32_MAX                  # RoundingHalfSum: halves away from zero
    half = (s + 1) // 2 if s >= 0 else -((1 - s) // 2)
    x = _wrap(1515870810 + _srdhm(half, -1010580540))
    one_q2 = 1 << 29
    for _ in range(3):
        x = _wrap(x + _rescale(_srdhm(x, _wrap(one_q2 - _srdhm(half, x))), 4, 2))
    return _rescale(x, 1, 0)


def mirror_reciprocal_q12(s):
    headroom_plus_one = 32 - s.bit_length()
    shifted = ((s << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return mirror_one_over_one_plus_x(shifted), 12 - headroom_plus_one


def test_fixed_point_constants():
    """Every magic number is gemmlowp's rounding of the real constant it stands for."""
    import math
    for exponent, mult in EXP_BARREL:
        assert mult == _fixed(math.exp(-2.0 ** exponent), 0)
    assert 1895147668 == _fixed(math.exp(-1 / 8), 0)
    assert 715827883 == _fixed(1 / 3, 0)
    assert 1515870810 == _fixed(48 / 17, 2)
    assert -1010580540 == _fixed(-32 / 17, 2)


HELPER_MAIN = r"""
#include <stdio.h>
#include "te_softmax.h"
/* stdin: records of 4 int32 (kind, a, b, c); stdout: 2 int32 per record. */
int main(void) {
  int32_t rec[4];
  while (fread(rec, sizeof rec[0], 4, stdin) == 4) {
    int32_t out[2] = {0, 0};
    int bits = 0;
    switch (rec[0]) {
      case 0: out[0] = te_fp_exp_on_negative_q5(rec[1]); break;
      case 1: out[0] = te_fp_one_over_one_plus_x(rec[1]); break;
      case 2: out[0] = te_softmax_reciprocal_q12(rec[1], &bits); out[1] = bits; break;
      case 3: out[0] = te_softmax_exp(rec[1], rec[2], (int)rec[3]); break;
      default: return 2;
    }
    fwrite(out, sizeof out[0], 2, stdout);
  }
  return 0;
}
"""


def _helper_cases(rng):
    cases = []
    quarter = 1 << 24
    exp_in = [0, -1, -2, INT32_MIN, INT32_MIN + 1, -(31 << 26), -(16 << 26), -(1 << 26)]
    exp_in += [m * quarter + d for m in range(-128, 1) for d in (-1, 0, 1)
               if INT32_MIN <= m * quarter + d <= 0]
    exp_in += [int(v) for v in rng.integers(INT32_MIN, 1, 4000)]
    exp_in += [-int(v) for v in rng.integers(0, 1 << 24, 2000)]
    cases += [(0, a, 0, 0) for a in exp_in]
    recip_in = [0, 1, 2, 1 << 29, 1 << 30, INT32_MAX - 1, INT32_MAX]
    cases += [(1, a, 0, 0) for a in recip_in + [int(v) for v in rng.integers(0, 1 << 31, 3000)]]
    sums = [1 << 19, (1 << 19) + 1, (1 << 28) - 1, 1 << 28, INT32_MAX]
    sums += [(1 << k) + d for k in range(19, 31) for d in (-1, 0, 1)]
    cases += [(2, s, 0, 0) for s in sums + [int(v) for v in rng.integers(1 << 19, 1 << 31, 3000)]]
    for beta, scale in [(1.0, 2.0 ** -20), (1.0, 0.004), (1.0, 0.1), (0.5, 0.2), (1.0, 0.5),
                        (3.0, 1.0), (40.0, 1.0), (1.0, 1.0 / 256), (1.7, 0.0371)]:
        q, shift, diff_min = softmax_params(beta, scale)
        cases += [(3, d, q, shift) for d in range(max(diff_min, -255), 1)]
    return cases


def _mirror(kind, a, b, c):
    if kind == 0:
        return mirror_exp_on_negative(a), 0
    if kind == 1:
        return mirror_one_over_one_plus_x(a), 0
    if kind == 2:
        return mirror_reciprocal_q12(a)
    from tinyengine_tf.quant import wrap32
    return mirror_exp_on_negative(_srdhm(wrap32(a << c), b)), 0


def test_c_helpers_match_gemmlowp_mirror():
    """Each helper, built with ASan + UBSan, equals the mirror raw value for raw value."""
    cases = _helper_cases(np.random.default_rng(5))
    stdout = run_c_check(HELPER_MAIN, ("te_runtime.h", "te_softmax.h"),
                         stdin=np.array(cases, dtype=np.int32).tobytes())
    got = np.frombuffer(stdout, dtype=np.int32).reshape(-1, 2)
    assert len(got) == len(cases)
    bad = [(case, tuple(g), _mirror(*case)) for case, g in zip(cases, got.tolist())
           if tuple(g) != _mirror(*case)]
    assert not bad, f"{len(bad)} of {len(cases)} differ, first (case, C, mirror): {bad[:3]}"


# -- int16 -> int16 (16x8 models) ---------------------------------------------------------------

def softmax16_model(shape, in_scale, beta=1.0, out_scale=1 / 32768):
    b = ModelBuilder()
    x = b.tensor(shape, dtype="int16", scale=in_scale, zp=0)
    y = b.tensor(shape, dtype="int16", scale=out_scale, zp=0)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=beta)
    return b.build([x], [y])


def _int16_rows(shape, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, (n, *shape)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    x[2].flat[::2] = -32768
    x[2].flat[1::2] = 32767
    x[3] = rng.integers(-2000, 2000, shape)       # close values: many entries share the mass
    x[4] = 0
    x[4].flat[::3] = 500
    return x


@pytest.mark.parametrize("in_scale,beta", [(1e-4, 1.0), (3e-4, 1.0), (1e-5, 1.0), (5e-4, 0.5),
                                           (2e-3, 1.0), (1e-4, 2.0), (3.05e-5, 1.0)])
@pytest.mark.parametrize("shape", [(1, 10), (3, 7), (1, 2, 2, 33), (1, 300)])
def test_int16_softmax_matches_tflm(in_scale, beta, shape):
    model = softmax16_model(shape, in_scale, beta)
    cm = te.convert(model)
    assert_matches_tflm(cm, model, _int16_rows(shape[1:] if shape[0] == 1 else shape, 10, len(shape)))
    check_footprints(cm)


def test_int16_softmax_tables_are_tflm_functions():
    """Guards the table builder: exp decreasing to about 0 at -10, 1 / (1 + x) from 1 to 1/2."""
    from tinyengine_tf.kernels.softmax import int16_tables
    exp_t, inv_t = int16_tables()
    assert len(exp_t) == len(inv_t) == 513
    assert np.all(np.diff(exp_t) >= 0) and exp_t[-1] == 32767 and exp_t[0] <= 2
    assert np.all(np.diff(inv_t) <= 0) and inv_t[0] == 32767 and abs(int(inv_t[-1]) - 16384) <= 1


def test_int16_softmax_sanitized_and_refusals():
    model = softmax16_model((1, 2, 12), 2e-4)
    assert_sanitized_matches_tflm(te.convert(model), model, _int16_rows((2, 12), 6, 1), layer=0)
    assert_unsupported(softmax16_model((1, 8), 1e-4, out_scale=1 / 65536), "SOFTMAX", "1/32768")
