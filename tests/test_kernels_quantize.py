"""QUANTIZE / DEQUANTIZE against TFLite Micro: float inputs at the model boundary (rounding ties,
huge values, infinities, NaN, negative zero), int8 <-> int8/int16 requantization."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_unsupported, check_footprints, compile_and_check,
                       int8_inputs, sanitized_run, tflm_run)
from tflite_builder import ModelBuilder

RNG_SEED = 4242
F32 = np.float32


def _float_model(shape, scale, zp, mid=None, dequant=True, qtype="int8"):
    """float32 -> QUANTIZE -> [QUANTIZE to `mid` quantization] -> [DEQUANTIZE -> float32]."""
    b = ModelBuilder()
    x = b.tensor(shape, dtype="float32")
    q = b.tensor(shape, dtype=qtype, scale=scale, zp=zp)
    b.op("QUANTIZE", [x], [q])
    last = q
    if mid is not None:
        r = b.tensor(shape, dtype=mid[2] if len(mid) > 2 else "int8", scale=mid[0], zp=mid[1])
        b.op("QUANTIZE", [last], [r])
        last = r
    if dequant:
        y = b.tensor(shape, dtype="float32")
        b.op("DEQUANTIZE", [last], [y])
        last = y
    return b.build([x], [last])


def _ties(scale, ks):
    """float32 x with float32(x) / float32(scale) == k + 0.5 exactly (TFLM's division), per k."""
    s = F32(scale)
    out = []
    for k in ks:
        target = F32(k + 0.5)
        x = F32((k + 0.5) * float(s))
        for _ in range(8):
            q = x / s
            if q == target:
                out.append(x)
                break
            x = np.nextafter(x, F32(np.inf) if q < target else F32(-np.inf), dtype=F32)
    return np.array(out, F32)


def _specials(scale):
    s = float(F32(scale))
    big = [np.inf, -np.inf, np.nan, 1e9, -1e9, 1e20, -1e20, 3.4e38, -3.4e38, 2.0**31 * s,
           -(2.0**31) * s, 2.0**31 * s * (1 - 2**-23), -(2.0**31) * s * (1 + 2**-23),
           (2.0**31 - 128) * s, 1e6 * s, -1e6 * s, 129 * s, -129 * s, 127.5 * s, -128.5 * s]
    small = [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 0.49999997 * s, -0.49999997 * s, 0.5 * s,
             -0.5 * s, s, -s, 1.5 * s, -1.5 * s, 2.5 * s, -2.5 * s]
    return np.array(big + small, F32)


def float_samples(shape, scale, zp, n=24, seed=0):
    """n float32 samples: rounding ties around every output code, specials, then random values."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    lo, hi = -140 - zp, 140 - zp
    ties = _ties(scale, range(lo, hi))
    pool = np.concatenate([ties, _specials(scale)])
    xs = (rng.standard_normal((n, size)) * 90 * scale).astype(F32)
    flat_pool = np.resize(pool, (len(pool) + size - 1) // size * size).reshape(-1, size)
    k = min(len(flat_pool), n - 4)
    xs[:k] = flat_pool[:k]
    return xs.reshape((n, *shape))


def assert_same_floats(a, b):
    a, b = np.asarray(a, F32), np.asarray(b, F32).reshape(np.shape(a))
    assert np.array_equal(a, b), f"{np.sum(a != b)} floats differ; first {a[a != b][:4]} vs {b[a != b][:4]}"
    assert np.array_equal(a.view(np.int32), b.view(np.int32)), "sign of zero or NaN bits differ"


def _quant_cases():
    rng = np.random.default_rng(RNG_SEED)
    cases = [(0.5, 3), (0.5, -5), (2.0**-7, 0), (1 / 255, -128), (0.1, 127), (0.0235294, -1)]
    for _ in range(4):
        cases.append((float(rng.uniform(0.001, 2.0)), int(rng.integers(-128, 128))))
    return cases


@pytest.mark.parametrize("scale, zp", _quant_cases())
def test_float_to_int8_matches_tflm(scale, zp):
    model = _float_model((1, 40), scale, zp, dequant=False)
    cm = te.convert(model)
    xs = float_samples((40,), scale, zp)
    ours, ref = cm.run(xs), tflm_run(model, xs)
    assert np.array_equal(ours.reshape(ref.shape), ref), np.argwhere(ours.reshape(ref.shape) != ref)[:4]
    check_footprints(cm)


@pytest.mark.parametrize("scale, zp", _quant_cases()[:6])
def test_float_roundtrip_with_requantize_matches_tflm(scale, zp):
    rng = np.random.default_rng(int(zp) + 500)
    mid = (float(scale * rng.uniform(0.3, 3.0)), int(rng.integers(-128, 128)))
    model = _float_model((1, 4, 10), scale, zp, mid=mid)
    cm = te.convert(model)
    xs = float_samples((4, 10), scale, zp, seed=1)
    assert_same_floats(cm.run(xs), tflm_run(model, xs))
    assert cm.graph.op_counts() == {"QUANTIZE": 2, "DEQUANTIZE": 1}
    # the float tensors stay with the caller: only the int8 tensors take arena bytes
    assert cm.peak_sram <= 2 * 48


def test_float_boundary_is_clean_under_sanitizers():
    model = _float_model((1, 40), 0.5, -5, mid=(0.21, 9))
    cm = te.convert(model)
    xs = float_samples((40,), 0.5, -5, n=6)
    assert_same_floats(sanitized_run(cm, xs)[0], tflm_run(model, xs))


def _requant_model(in_q, out_q, shape=(1, 6, 7), out_dtype="int8", back=None):
    b = ModelBuilder()
    x = b.tensor(shape, scale=in_q[0], zp=in_q[1])
    y = b.tensor(shape, dtype=out_dtype, scale=out_q[0], zp=out_q[1])
    b.op("QUANTIZE", [x], [y])
    last = y
    if back is not None:
        z = b.tensor(shape, scale=back[0], zp=back[1])
        b.op("QUANTIZE", [y], [z])
        last = z
    return b.build([x], [last])


def _requant_cases():
    rng = np.random.default_rng(RNG_SEED + 1)
    cases = [((0.05, -3), (0.05, -3)), ((0.05, -3), (0.05, 10)), ((0.5, 0), (0.01, 0)),
             ((0.01, 100), (0.7, -100)), ((0.02, -128), (0.02 * 3, 127))]
    for _ in range(5):
        cases.append(((float(rng.uniform(0.001, 0.5)), int(rng.integers(-128, 128))),
                      (float(rng.uniform(0.001, 0.5)), int(rng.integers(-128, 128)))))
    return cases


@pytest.mark.parametrize("in_q, out_q", _requant_cases())
def test_int8_requantize_matches_tflm(in_q, out_q):
    compile_and_check(_requant_model(in_q, out_q))


def test_identity_requantize_may_run_in_place():
    b = ModelBuilder()
    x = b.tensor((1, 64), scale=0.05, zp=1)
    y = b.tensor((1, 64), scale=0.05, zp=1)
    b.op("QUANTIZE", [x], [y])
    z = b.tensor((1, 64), scale=0.05, zp=1)
    b.op("QUANTIZE", [y], [z])
    w = b.tensor((1, 64), scale=0.2, zp=-3)
    b.op("QUANTIZE", [z], [w])
    cm = compile_and_check(b.build([x], [w]))
    # element-wise requantization runs in place: input, y, z and the output share one buffer
    assert cm.peak_sram == 64


@pytest.mark.parametrize("in_q, mid, back", [((0.05, -3), (0.0004, 0), (0.07, 5)),
                                             ((0.5, 10), (0.001, 0), (0.3, -20))])
def test_int8_int16_requantize_matches_tflm(in_q, mid, back):
    compile_and_check(_requant_model(in_q, mid, out_dtype="int16", back=back))
    model = _requant_model(in_q, mid, out_dtype="int16")
    cm = te.convert(model)
    xs = int8_inputs((6, 7), 20)
    out = assert_matches_tflm(cm, model, xs)
    assert out.dtype == np.int16


def test_float_to_int16_and_back_matches_tflm():
    model = _float_model((1, 40), 0.001, 0, qtype="int16")
    cm = te.convert(model)
    xs = float_samples((40,), 0.001, 0)
    assert_same_floats(cm.run(xs), tflm_run(model, xs))


def test_quantize_rejects_what_tflm_rejects():
    b = ModelBuilder()
    x = b.tensor((1, 4), dtype="float32")
    y = b.tensor((1, 4), scale=[0.1, 0.2, 0.3, 0.4], zp=0, qdim=1)
    b.op("QUANTIZE", [x], [y])
    assert_unsupported(b.build([x], [y]), "QUANTIZE", "per channel")
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.1, zp=0)
    y = b.tensor((1, 4), dtype="int32", scale=0.1, zp=0)
    b.op("QUANTIZE", [x], [y])
    assert_unsupported(b.build([x], [y]), "QUANTIZE", "int32")
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.1, zp=0)
    y = b.tensor((1, 4), dtype="int16")
    b.op("DEQUANTIZE", [x], [y])
    assert_unsupported(b.build([x], [y]), "DEQUANTIZE", "float32")


@pytest.mark.parametrize("kind", ["QUANTIZE", "DEQUANTIZE"])
def test_per_channel_input_uses_the_first_channel_as_tflm(kind):
    """TFLM checks only QUANTIZE's output scale count; a per-channel input is read through its
    first scale and zero point (issue 11)."""
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=[0.1, 0.2, 0.3, 0.4], zp=[3, 0, 0, 0], qdim=1)
    y = (b.tensor((1, 4), scale=0.07, zp=-2) if kind == "QUANTIZE"
         else b.tensor((1, 4), dtype="float32"))
    b.op(kind, [x], [y])
    model = b.build([x], [y])
    xs = int8_inputs((4,), 20)
    cm = te.convert(model)
    if kind == "QUANTIZE":
        assert_matches_tflm(cm, model, xs)
    else:
        np.testing.assert_array_equal(cm.run(xs), tflm_run(model, xs))
