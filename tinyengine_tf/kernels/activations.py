"""int8 activations and other one-input functions: RELU, RELU6, LOGISTIC, TANH, HARD_SWISH,
LEAKY_RELU, RSQRT.

An int8 -> int8 function of one element has only 256 possible inputs, so RELU, LOGISTIC, TANH and
HARD_SWISH become a 256-byte lookup table computed here, at generation time, by Python functions
that replay TFLite Micro's integer arithmetic step by step (int32/int16 wrap-around included);
the generated loop is a byte gather. The tests check every one of the 256 entries against the
TFLM interpreter. RELU6 needs no table: TFLM clamps the input codes to [zp, q(6)] in the input's
own quantization (it does not requantize), which is a branch-free clamp.

Which table a layer gets never depends on scale values: always one 256-byte table per
LUT-kind layer, none for RELU6 (the NAS predicts Flash from shapes).

Quirks of TFLM reproduced on purpose (the interpreter is the judge):
- RELU requantizes with MultiplyByQuantizedMultiplier(in_s / out_s), then clamps to [out_zp, 127].
- RELU6 ignores the output tensor's quantization.
- LOGISTIC requires output zero point -128 but ignores the output scale (assumes 1/256).
- TANH ignores the output quantization (assumes zero point 0, scale 1/128).
- HARD_SWISH computes its multipliers in float32 and runs a 16-bit fixed-point pipeline.
- LEAKY_RELU computes both multipliers (in_s * alpha / out_s and in_s / out_s) in double
  (the interpreter does, although its source reads as float32); a negative alpha multiplies by
  |q| and negates (leaky_relu.h). int16 LEAKY_RELU runs the same recipe per element.
- RSQRT (elementwise.cc) finds 1/sqrt(x - zp) with gemmlowp's Newton-Raphson inverse square
  root (GetInvSqrtQuantizedMultiplierExp) and rescales by 1 / (sqrtf(in_s) * out_s); x == zp
  gives 127. On an input below the zero point (a negative real) TFLM's Eval returns an error
  ("Rsqrt is only defined for positive values", elements before it already written) and its
  Invoke stops; the generated layer does the same: it returns 1, <name>_invoke returns the
  layer's number + 1 and skips the rest, and cm.run raises InvalidInputError.

int16 (16x8) LOGISTIC and TANH run TFLM's reference_integer_ops int16 Logistic / Tanh per
element (a table of every input would take 128 KiB): the input is rescaled to 1/(3 * 4096)
(kernels/logistic_common.cc, tanh.cc Prepare) and interpolated in TFLite's 256-entry
sigmoid_table_uint16 (SIGMOID_U16, 512 bytes of Flash per layer), with the same C helpers as the
LSTM's gates (c/te_lstm.h). Both require zero points 0 and an output scale of 2^-15, as TFLM
does. A power-of-two input scale (CheckedLog2: within 2^+-0.001) of 2^-12 (LOGISTIC) or 2^-12,
2^-11 (TANH) takes TFLM's exact multiplier 3 << shift, even when the scale is not exactly a
power of two; every other scale gets a multiplier doubled in double up to (16383.5, 32767],
then truncated, with a right shift of at most 31. Input scales from 5.33 up make TFLM's int32
product x * multiplier overflow (undefined behaviour; the pip interpreter wraps): refused. TFLM
has no int16 HARD_SWISH: refused.
"""
from __future__ import annotations

import math

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Graph, Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE, FIX_REEXPORT, FIX_REQUANTIZE
from tinyengine_tf.kernels.lstm import SIGMOID_U16

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
LUT_KINDS = ("RELU", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "RSQRT")
INPUTS = range(-128, 128)


# -- C-semantics helpers (exact integer emulation) ---------------------------------------------

def _wrap32(x: int) -> int:
    return ((x + 2**31) % 2**32) - 2**31


def _wrap16(x: int) -> int:
    return ((x + 2**15) % 2**16) - 2**15


def _cdiv(a: int, b: int) -> int:
    """C's truncating integer division."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _clamp(x: int, lo: int, hi: int) -> int:
    return lo if x < lo else hi if x > hi else x


srdhm = quant.srdhm
rdbpot = quant.rounding_divide_by_pot
mbqm = quant.mbqm


# -- gemmlowp fixed point, int32 raw values ---------------------------------------------------

def _sat_mul_pot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent> on int32."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def _rescale(x: int, src_int_bits: int, dst_int_bits: int) -> int:
    return _sat_mul_pot(x, src_int_bits - dst_int_bits)


def _rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    return _cdiv(s + (1 if s >= 0 else -1), 2)


def _exp_quarter_interval(a: int) -> int:
    """exp(x) for x in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term, one_third = 1895147668, 715827883
    x = _wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(_wrap32(srdhm(_wrap32(x4_over_4 + x3), one_third) + x2), 1)
    return _wrap32(constant_term + srdhm(constant_term, _wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: int, int_bits: int) -> int:
    """gemmlowp exp_on_negative_values: Q(int_bits) input <= 0, Q0.31 output."""
    frac_bits = 31 - int_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod = _wrap32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_quarter_interval(_rescale(a_mod, int_bits, 0))
    remainder = _wrap32(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if int_bits > exponent and remainder & (1 << (frac_bits + exponent)):
            result = srdhm(result, multiplier)
    if int_bits > 5 and a < -(1 << (36 - int_bits)):
        result = 0
    return INT32_MAX if a == 0 else result


def _newton_reciprocal_iterations(half_denominator: int) -> int:
    """Q2.29 approximation of 1 / half_denominator (three Newton-Raphson steps)."""
    x = _wrap32(1515870810 + srdhm(half_denominator, -1010580540))
    for _ in range(3):
        one_minus = _wrap32((1 << 29) - srdhm(half_denominator, x))
        x = _wrap32(x + _rescale(srdhm(x, one_minus), 4, 2))
    return x


def logistic_q(a: int, int_bits: int) -> int:
    """gemmlowp logistic: Q(int_bits) in, Q0.31 out."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else _wrap32(-a)
    exp_neg = exp_on_negative_values(_wrap32(-abs_a), int_bits)
    half_denominator = _rounding_half_sum(exp_neg, INT32_MAX)
    positive = _rescale(_newton_reciprocal_iterations(half_denominator), 1, 0)
    return positive if a > 0 else _wrap32(INT32_MAX - positive)


def tanh_q(a: int, int_bits: int) -> int:
    """gemmlowp tanh: Q(int_bits) in, Q0.31 out."""
    if a == 0:
        return 0
    n = a if a < 0 else _wrap32(-a)
    exp_neg = exp_on_negative_values(n, int_bits + 1)  # exp(2n): same raw, one more int bit
    half_denominator = _rounding_half_sum(exp_neg, INT32_MAX)
    x = _newton_reciprocal_iterations(half_denominator)
    t = _rescale(_wrap32(x - (1 << 29)), 2, 0)
    return _wrap32(-t) if a < 0 else t


# -- per-op parameters and element functions --------------------------------------------------

def _sigmoid_tanh_params(input_scale: float) -> tuple[int, int, int]:
    """(multiplier, left shift, radius) of TFLM's int8 LOGISTIC/TANH Prepare (4 integer bits)."""
    real = float(np.float32(input_scale)) * float(1 << 27)
    frac, shift = math.frexp(real)
    q = quant.round_away(frac * (1 << 31))
    if q > INT32_MAX or shift < 0:
        raise ValueError(f"input scale {input_scale:g} is outside the range TFLite Micro's "
                         "fixed-point logistic/tanh handles")
    radius = math.floor(15.0 * (1 << 27) / float(1 << shift))
    return q, shift, radius


def logistic_element(x: int, zp: int, q: int, shift: int, radius: int) -> int:
    d = x - zp
    if d <= -radius:
        return -128
    if d >= radius:
        return 127
    out = rdbpot(logistic_q(mbqm(d, q, shift), 4), 23)
    return _clamp(out - 128, -128, 127)


def tanh_element(x: int, zp: int, q: int, shift: int, radius: int) -> int:
    d = x - zp
    if d <= -radius:
        return -128
    if d >= radius:
        return 127
    return _clamp(rdbpot(tanh_q(mbqm(d, q, shift), 4), 24), -128, 127)


def logistic_table(in_scale: float, in_zp: int) -> np.ndarray:
    params = _sigmoid_tanh_params(in_scale)
    return np.array([logistic_element(x, in_zp, *params) for x in INPUTS], np.int8)


def tanh_table(in_scale: float, in_zp: int) -> np.ndarray:
    params = _sigmoid_tanh_params(in_scale)
    return np.array([tanh_element(x, in_zp, *params) for x in INPUTS], np.int8)


def relu_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    q, shift = quant.quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    lo = max(-128, out_zp)
    return np.array([_clamp(out_zp + mbqm(x - in_zp, q, shift), lo, 127) for x in INPUTS], np.int8)


def relu6_bounds(in_scale: float, in_zp: int, qmax: int = 127) -> tuple[int, int]:
    """TFLM Relu6Prepare: [zp, FloatToQuantizedType(6.0f)] in the input's quantization."""
    six = float(np.float32(6.0) / np.float32(in_scale))
    if not abs(six) < 2**30:
        raise ValueError(f"6.0 / input scale {in_scale:g} overflows int32")
    return in_zp, _clamp(quant.round_away(six) + in_zp, -qmax - 1, qmax)


# 16-bit fixed point of TFLM's reference HardSwish.

def _srdhm16(a: int, b: int) -> int:
    if a == b == -32768:
        return 32767
    ab = a * b
    return _wrap16(_cdiv(ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14)), 1 << 15))


def _sdhm16(a: int, b: int) -> int:
    """SaturatingDoublingHighMul: like _srdhm16 but truncating toward zero."""
    if a == b == -32768:
        return 32767
    return _wrap16(_cdiv(a * b, 1 << 15))


def _rdbpot16(x: int, e: int) -> int:
    """gemmlowp RoundingDivideByPOT instantiated for int16_t (mask truncated to 16 bits)."""
    mask = _wrap16((1 << e) - 1)
    remainder = _wrap16(x & mask)
    threshold = _wrap16((mask >> 1) + (1 if x < 0 else 0))
    return _wrap16((x >> e) + (1 if remainder > threshold else 0))


def _sat_lshift16(x: int, amount: int) -> int:
    return _clamp(x * (1 << amount), -32768, 32767)


def _downscale_to_int16(q: int) -> int:
    if q >= INT32_MAX - (1 << 15):
        return 32767
    return (q + (1 << 15)) >> 16


def hard_swish_params(in_scale: float, out_scale: float) -> tuple[int, int, int, int]:
    """(output mult16, output exponent, reluish mult16, reluish exponent), float32 math as TFLM."""
    hires = np.float32(1.0 / 128.0) * np.float32(in_scale)
    reluish_scale = np.float32(3.0) / np.float32(32768.0)
    q_out, e_out = quant.quantize_multiplier(float(np.float32(hires / np.float32(out_scale))))
    q_rel, e_rel = quant.quantize_multiplier(float(np.float32(hires / reluish_scale)))
    if e_out > 0:
        raise ValueError("the output scale is more than 128x smaller than the input scale, "
                         "which TFLite Micro's HARD_SWISH rejects")
    if e_out < -31 or not -31 <= e_rel <= 31:
        raise ValueError("the input/output scales put HARD_SWISH's shifts out of range")
    return _downscale_to_int16(q_out), e_out, _downscale_to_int16(q_rel), e_rel


def hard_swish_element(x: int, in_zp: int, out_zp: int, m_out: int, e_out: int, m_rel: int,
                       e_rel: int) -> int:
    hires = _wrap16(_wrap16(x - in_zp) * 128)
    preshift_out = _srdhm16(hires, m_out)
    reluish = hires
    if e_rel > 0:
        reluish = _sat_lshift16(reluish, e_rel - 1)
    reluish = _srdhm16(reluish, m_rel)
    if e_rel > 0:
        reluish = _sat_lshift16(reluish, 1)
    if e_rel < 0:
        reluish = _rdbpot16(reluish, -e_rel)
    reluish = (reluish + (1 << 15)) >> 1
    out = _rdbpot16(_sdhm16(reluish, preshift_out), -e_out)
    return _clamp(_wrap16(out + out_zp), -128, 127)


def hard_swish_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    params = hard_swish_params(in_scale, out_scale)
    return np.array([hard_swish_element(x, in_zp, out_zp, *params) for x in INPUTS], np.int8)


def leaky_relu_params(in_scale: float, out_scale: float, alpha: float):
    """((q, shift) of the identity branch, (q, shift) of the alpha branch).

    TFLM's source reads as float32 products, but the interpreter computes both in double from
    the float32 scale and alpha (measured on int16 inputs, where a float32 multiplier gives
    outputs one code off: tests/test_kernels_activations.py)."""
    f32 = np.float32
    m_alpha = float(f32(in_scale)) * float(f32(alpha)) / float(f32(out_scale))
    m_id = float(f32(in_scale)) / float(f32(out_scale))
    if not (math.isfinite(m_alpha) and math.isfinite(m_id)):
        raise ValueError(f"alpha {alpha:g} and the scales overflow float32")
    q_id, s_id = quant.quantize_multiplier(m_id)
    q_a, s_a = quant.quantize_multiplier(m_alpha)
    if s_id > 30 or s_a > 30:
        raise ValueError("the input/output scale ratio puts LEAKY_RELU's shift beyond 30 bits")
    return (q_id, s_id), (q_a, s_a)


def leaky_relu_table(in_scale, in_zp, out_scale, out_zp, alpha, lo=-128, hi=127, codes=INPUTS):
    (q_id, s_id), (q_a, s_a) = leaky_relu_params(in_scale, out_scale, alpha)
    out = []
    for x in codes:
        v = x - in_zp
        if v >= 0:
            r = out_zp + mbqm(v, q_id, s_id)
        else:
            t = mbqm(v, abs(q_a), s_a)
            r = out_zp + (-t if q_a < 0 else t)
        out.append(_clamp(_wrap32(r), lo, hi))
    return np.array(out, np.int64)


def _inv_sqrt_multiplier_exp(value: int) -> tuple[int, int]:
    """GetInvSqrtQuantizedMultiplierExp(value, kReverseShift): (q, left shift), value > 0."""
    if value <= 1:
        return INT32_MAX, 0
    shift = 11
    while value >= (1 << 29):
        value //= 4
        shift += 1
    max_left_shift_bits = (32 - value.bit_length()) - 1
    pairs = max_left_shift_bits // 2 - 1
    shift -= pairs
    value <<= 2 * pairs
    # FixedPoint<int32, 3> Newton-Raphson, 5 steps from x = 1.
    f_in = value >> 1
    f_half_in = rdbpot(f_in, 1)
    half_three = (1 << 28) + (1 << 27)
    x = 1 << 28
    for _ in range(5):
        x3 = _sat_mul_pot(srdhm(srdhm(x, x), x), 6)             # F9 -> F3
        x = _sat_mul_pot(_wrap32(srdhm(half_three, x) - srdhm(f_half_in, x3)), 3)  # F6 -> F3
    x = srdhm(x, 1518500250)                                     # * sqrt(2)/2
    if shift < 0:
        x = _wrap32(x << -shift)
        shift = 0
    return x, -shift


def rsqrt_params(in_scale: float, out_scale: float) -> tuple[int, int]:
    f32 = np.float32
    with np.errstate(over="ignore", under="ignore"):
        denom = float(f32(np.sqrt(f32(in_scale)) * f32(out_scale)))
    if not (math.isfinite(denom) and denom > 0):
        raise ValueError("sqrt(input scale) x output scale is out of float32 range")
    return quant.quantize_multiplier(1.0 / denom)


def rsqrt_table(in_scale, in_zp, out_scale, out_zp, lo=-128, hi=127, codes=INPUTS):
    q, shift = rsqrt_params(in_scale, out_scale)
    out = []
    for x in codes:
        v = x - in_zp
        if v <= 0:  # 0: TFLM's max output; < 0: never read (the C fails the invoke first)
            out.append(hi)
            continue
        q_inv, s_inv = _inv_sqrt_multiplier_exp(v)
        data = mbqm(1, q_inv, s_inv + 20)
        out.append(_clamp(_wrap32(mbqm(data, q, shift - 20) + out_zp), lo, hi))
    return np.array(out, np.int64)


# -- int16 LOGISTIC / TANH ------------------------------------------------------------------

def checked_log2(x: float) -> tuple[int, bool]:
    """TFLite's CheckedLog2 in float32: (round(log2 x), |fraction| < 1e-3)."""
    f32 = np.float32
    with np.errstate(divide="ignore", invalid="ignore"):
        v = f32(np.log(f32(x))) * (f32(1.0) / f32(np.log(f32(2.0))))
    if not np.isfinite(v):
        return 0, False
    rounded = f32(quant.round_away(float(v)))
    return int(rounded), bool(abs(f32(v - rounded)) < f32(1e-3))


def sigmoid_tanh16_params(kind: str, in_scale: float) -> tuple[int, int]:
    """(multiplier, right shift) that TFLM's int16 Logistic / Tanh apply to every input code,
    the power-of-two case resolved as its Eval does. ValueError where the int32 product
    x * multiplier could overflow (TFLM's DCHECK allows 32767; up to 65535 it still fits)."""
    log2, pot = checked_log2(in_scale)
    shift = 12 + log2
    pot &= shift in ((0,) if kind == "LOGISTIC" else (0, 1))
    if pot:
        return 3 << shift, 0
    multiplier = float(np.float32(in_scale)) * 4096.0 * 3.0
    shift = 0
    while multiplier <= 32767.0 / 2.0 and shift <= 30:
        shift += 1
        multiplier *= 2.0
    if multiplier >= 65536.0:
        raise ValueError(f"input scale {in_scale:g} is too large for TFLite Micro's int16 "
                         f"{kind.lower()}: code x multiplier {int(multiplier)} overflows its int32 "
                         "arithmetic (TFLM's own check allows multipliers up to 32767)")
    return int(multiplier), shift


def table_for(kind: str, x, y, options=None) -> np.ndarray:
    """The 256-entry table of a LUT kind, indexed by input code + 128. ValueError if TFLM
    would refuse the quantization."""
    if kind == "RELU":
        return relu_table(x.s, x.zp, y.s, y.zp)
    if kind == "LOGISTIC":
        if y.zp != -128:
            raise ValueError(f"output zero point is {y.zp}; TFLite Micro's int8 LOGISTIC requires "
                             "-128 (scale 1/256)")
        return logistic_table(x.s, x.zp)
    if kind == "TANH":
        return tanh_table(x.s, x.zp)
    if kind == "HARD_SWISH":
        return hard_swish_table(x.s, x.zp, y.s, y.zp)
    if kind == "LEAKY_RELU":
        alpha = float((options or {}).get("alpha", 0.0))
        return leaky_relu_table(x.s, x.zp, y.s, y.zp, alpha).astype(np.int8)
    if kind == "RSQRT":
        return rsqrt_table(x.s, x.zp, y.s, y.zp).astype(np.int8)
    raise KeyError(kind)


# -- kernels ----------------------------------------------------------------------------------

def _check_unary(op: Op, ctx: EmitContext):
    if len(op.inputs) != 1 or len(op.outputs) != 1 or op.inputs[0] < 0:
        raise ctx.unsupported(op, f"expects 1 input and 1 output, got {len(op.inputs)} and "
                                  f"{len(op.outputs)}")
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    ctx.require_int8(op, x, y)
    ctx.require_per_tensor(op, x, y)
    if x.numel != y.numel:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} differ in size")
    return x, y


INT16_TABLE_KINDS = ("LOGISTIC", "TANH")


def _footprint(op: Op, g: Graph) -> tuple[int, int]:
    """256 bytes of table for an int8 LUT kind, 512 (the uint16 sigmoid table) for an int16
    LOGISTIC or TANH, none for an empty tensor; plus a constant input."""
    y = g.t(op.outputs[0])
    if y.numel == 0:
        return 0, 0
    x = g.t(op.inputs[0])
    if x.dtype == "int16":
        table = 2 * len(SIGMOID_U16) if op.kind in INT16_TABLE_KINDS else 0
    else:
        table = 256 if op.kind in LUT_KINDS else 0
    return table + (x.nbytes if x.is_const else 0), 0


def _leaky_relu_int16(op: Op, ctx: EmitContext) -> LayerCode:
    """int16 LEAKY_RELU (16x8 models): TFLM's same QuantizeLeakyRelu in the int16 range, computed
    per element (a table would take 128 KiB)."""
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        raise ctx.unsupported(op, "expects 1 input and 1 output", FIX_REEXPORT)
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    if y.dtype != "int16" or not x.quantized or not y.quantized:
        raise ctx.unsupported(op, "an int16 LEAKY_RELU needs quantized int16 input and output",
                              FIX_QUANTIZE)
    ctx.require_per_tensor(op, x, y)
    if x.numel != y.numel:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} differ in size")
    alpha = float(op.options.get("alpha", 0.0))
    try:
        (q_id, s_id), (q_a, s_a) = leaky_relu_params(x.s, y.s, alpha)
    except ValueError as exc:
        raise ctx.unsupported(op, str(exc), "Requantize the model") from None
    if y.numel == 0:
        return LayerCode(body="", in_place=True)

    def mbqm_c(v, q, shift):
        return f"te_mbqm({v}, {q}, {shift})" if shift > 0 else f"te_mbqm_r({v}, {q}, {-shift})"

    neg = mbqm_c("v", abs(q_a), s_a)
    neg = f"-{neg}" if q_a < 0 else neg
    src = ctx.operand(op, 0)
    body = f"""
  for (int i = 0; i < {y.numel}; ++i) {{
    const int32_t v = (int32_t){src}[i] - {x.zp};
    const int32_t r = v >= 0 ? {mbqm_c("v", q_id, s_id)} : {neg};
    out0[i] = (int16_t)te_clamp(r + {y.zp}, -32768, 32767);
  }}"""
    return LayerCode(body=body, in_place=not x.is_const)


def _check_unary_int16(op: Op, ctx: EmitContext):
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        raise ctx.unsupported(op, "expects 1 input and 1 output", FIX_REEXPORT)
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    if y.dtype != "int16" or not x.quantized or not y.quantized:
        raise ctx.unsupported(op, f"an int16 {op.kind} needs quantized int16 input and output",
                              FIX_QUANTIZE)
    ctx.require_per_tensor(op, x, y)
    if x.numel != y.numel:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} differ in size")
    return x, y


def _relu_int16(op: Op, ctx: EmitContext) -> LayerCode:
    """int16 RELU (activations_common.cc): zero points 0, then TFLM's int8 recipe per element."""
    x, y = _check_unary_int16(op, ctx)
    if x.zp or y.zp:
        raise ctx.unsupported(op, "int16 RELU needs zero points 0, as TFLite Micro requires",
                              FIX_QUANTIZE)
    q, shift = quant.quantize_multiplier(float(np.float32(x.s)) / float(np.float32(y.s)))
    if shift > 30:
        raise ctx.unsupported(op, "the input/output scale ratio needs a shift beyond 30 bits",
                              FIX_REQUANTIZE)
    if y.numel == 0:
        return LayerCode(body="", in_place=True)
    src = ctx.operand(op, 0)
    body = (f"\n  for (int i = 0; i < {y.numel}; ++i) "
            f"out0[i] = (int16_t)te_clamp(te_mbqm((int32_t){src}[i], {q}, {shift}), 0, 32767);")
    return LayerCode(body=body, in_place=not x.is_const)


def _sigmoid_tanh_int16(op: Op, ctx: EmitContext) -> LayerCode:
    """int16 LOGISTIC / TANH (16x8 models): TFLM's reference int16 kernels per element."""
    x, y = _check_unary_int16(op, ctx)
    if x.zp or y.zp:
        raise ctx.unsupported(op, f"int16 {op.kind} needs input and output zero points 0 (got "
                                  f"{x.zp} and {y.zp}), as TFLite Micro requires", FIX_QUANTIZE)
    log2, pot = checked_log2(y.s)
    if not pot or log2 != -15:
        raise ctx.unsupported(op, f"int16 {op.kind} needs output scale 1/32768 (2^-15), as TFLite "
                                  f"Micro requires; got {y.s:g}", FIX_QUANTIZE)
    try:
        mult, shift = sigmoid_tanh16_params(op.kind, x.s)
    except ValueError as exc:
        raise ctx.unsupported(op, str(exc), FIX_REQUANTIZE) from None
    if y.numel == 0:
        return LayerCode(body="", in_place=True)
    lut = ctx.const("sigmoid_u16", np.array(SIGMOID_U16, dtype=np.uint16), "uint16_t")
    fn = "te_lstm_logistic" if op.kind == "LOGISTIC" else "te_lstm_tanh"
    body = f"\n  {fn}({ctx.operand(op, 0)}, out0, {y.numel}, {mult}, {shift}, {lut});"
    return LayerCode(body=body, in_place=not x.is_const, headers=("te_lstm.h",))


@kernel(*LUT_KINDS, footprint=_footprint)
def lut_activation(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    if op.inputs and op.inputs[0] >= 0 and ctx.t_in(op, 0).dtype == "int16":
        if op.kind == "LEAKY_RELU":
            return _leaky_relu_int16(op, ctx)
        if op.kind == "RELU":
            return _relu_int16(op, ctx)
        if op.kind in INT16_TABLE_KINDS:
            return _sigmoid_tanh_int16(op, ctx)
        if op.kind == "HARD_SWISH":
            raise ctx.unsupported(op, "TFLite Micro has no int16 HARD_SWISH kernel (int8 and "
                                      "float32 only)", "Quantize the model to int8")
    x, y = _check_unary(op, ctx)
    try:
        table = table_for(op.kind, x, y, op.options)
    except ValueError as exc:
        raise ctx.unsupported(op, str(exc), "Requantize the model") from None
    if y.numel == 0:
        return LayerCode(body="", in_place=True)
    if op.kind == "RSQRT" and x.zp > -128:
        return _rsqrt_checked(op, ctx, x, y, table)
    lut = ctx.const("lut", table, "int8_t")
    src = ctx.operand(op, 0)
    body = f"\n  for (int i = 0; i < {y.numel}; ++i) out0[i] = {lut}[(int32_t){src}[i] + 128];"
    return LayerCode(body=body, in_place=not x.is_const)


def _rsqrt_checked(op: Op, ctx: EmitContext, x, y, table) -> LayerCode:
    """RSQRT whose input can go below its zero point: TFLM's Eval checks each element in order
    (validate_input_func) and fails the Invoke at the first negative one, the elements before
    it written. The C does the same and returns 1, so <name>_invoke fails (LayerCode.fails); a
    constant input that would always fail is refused here."""
    if x.is_const and np.any(np.asarray(x.data).astype(np.int64) < x.zp):
        raise ctx.unsupported(op, f"its constant input holds codes below the zero point {x.zp} "
                                  "(negative reals), so TFLite Micro's Invoke would always fail",
                              "Fix the constant or remove the RSQRT")
    lut = ctx.const("lut", table, "int8_t")
    src = ctx.operand(op, 0)
    body = f"""
  for (int i = 0; i < {y.numel}; ++i) {{
    const int32_t v = (int32_t){src}[i];
    if (v < {x.zp}) return 1;
    out0[i] = {lut}[v + 128];
  }}"""
    return LayerCode(body=body, in_place=not x.is_const, fails=True)


@kernel("RELU6", footprint=_footprint)
def relu6(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    wide = bool(op.inputs) and op.inputs[0] >= 0 and ctx.t_in(op, 0).dtype == "int16"
    x, y = _check_unary_int16(op, ctx) if wide else _check_unary(op, ctx)
    try:
        lo, hi = relu6_bounds(x.s, x.zp, 32767 if wide else 127)
    except ValueError as exc:
        raise ctx.unsupported(op, str(exc), "Requantize the model") from None
    if y.numel == 0:
        return LayerCode(body="", in_place=True)
    src = ctx.operand(op, 0)
    ct = "int16_t" if wide else "int8_t"
    body = (f"\n  for (int i = 0; i < {y.numel}; ++i) "
            f"out0[i] = ({ct})te_clamp({src}[i], {lo}, {hi});")
    return LayerCode(body=body, in_place=not x.is_const)
