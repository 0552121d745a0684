"""TFLite Micro's integer recipes, in one place (see shared/docs/tflm-arithmetic.md).

These run at compile time to produce the constants baked into the C; the C side of the same
arithmetic lives in tinyengine_tf/c/te_runtime.h. Python ints are exact, so the helpers double as the
reference the unit tests check the C against.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def round_away(x: float) -> int:
    """C's std::round: halves go away from zero (Python's round() goes to even)."""
    if not math.isfinite(x):
        from tinyengine_tf.errors import QuantizationError
        raise QuantizationError(f"a quantization parameter computation overflowed ({x}); the "
                                "model's scales are out of range")
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLM QuantizeMultiplier: m ~= q * 2^(shift - 31), q in [2^30, 2^31)."""
    if m == 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = round_away(frac * (1 << 31))
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul on int32 values."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    q = abs(v) >> 31  # C's truncating division by 2^31
    return q if v >= 0 else -q


def rounding_divide_by_pot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def wrap32(x: int) -> int:
    return ((x + 2**31) % 2**32) - 2**31


def mbqm(x: int, q: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier with TFLM's default double rounding."""
    left = max(shift, 0)
    right = max(-shift, 0)
    return rounding_divide_by_pot(srdhm(wrap32(x * (1 << left)), q), right)


def quantize_float(value: float, scale: float, zero_point: int) -> int:
    """zp + round(value / scale) with float32 division, as CalculateActivationRangeQuantized."""
    with np.errstate(over="ignore"):  # an overflow becomes inf, which round_away reports
        return zero_point + round_away(float(np.float32(value) / np.float32(scale)))


# Fused activations TFLM's quantized kernels do not clamp for: CalculateActivationRangeQuantized
# handles RELU, RELU6 and RELU_N1_TO_1 and leaves the full range for anything else.
FULL_RANGE_ACTIVATIONS = ("NONE", "TANH", "SIGN_BIT")


def activation_range(activation: str, scale: float, zero_point: int, qmin=-128, qmax=127):
    """[lo, hi] for a fused activation on a quantized (int8 by default) output."""
    activation = activation or "NONE"
    if activation in FULL_RANGE_ACTIVATIONS:
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize_float(0.0, scale, zero_point)), qmax
    if activation == "RELU6":
        return (max(qmin, quantize_float(0.0, scale, zero_point)),
                min(qmax, quantize_float(6.0, scale, zero_point)))
    if activation == "RELU_N1_TO_1":
        return (max(qmin, quantize_float(-1.0, scale, zero_point)),
                min(qmax, quantize_float(1.0, scale, zero_point)))
    if activation == "RELU_0_TO_1":
        return (max(qmin, quantize_float(0.0, scale, zero_point)),
                min(qmax, quantize_float(1.0, scale, zero_point)))
    raise ValueError(activation)


def channel_multipliers(input_scale: float, filter_scales, output_scale: float, n: int):
    """Per-channel (q, shift) arrays for conv/depthwise/per-channel FC, computed in double."""
    fs = np.asarray(filter_scales, dtype=np.float32)
    if len(fs) == 1:
        fs = np.repeat(fs, n)
    qs, shifts = [], []
    for s in fs:
        q, sh = quantize_multiplier(float(np.float32(input_scale)) * float(s) / float(np.float32(output_scale)))
        qs.append(q)
        shifts.append(sh)
    return np.array(qs, dtype=np.int64), np.array(shifts, dtype=np.int64)


def same_padding(in_size: int, kernel: int, stride: int, dilation: int, out_size: int) -> int:
    """Leading pad for SAME; the odd extra goes after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    total = max(0, (out_size - 1) * stride + effective - in_size)
    return total // 2


def conv_output_size(in_size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return (in_size + stride - 1) // stride
    return (in_size - effective + stride) // stride
