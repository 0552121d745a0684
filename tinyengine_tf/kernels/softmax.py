"""SOFTMAX int8 -> int8, int8 -> int16 and int16 -> int16 (16x8 models) over the last axis,
bit-exact with TFLite Micro.

TFLM has no table for int8: it rescales each input difference to Q5.26, takes gemmlowp's
fixed-point exp, sums in Q12, inverts the sum with a Newton-Raphson reciprocal and rounds the
product back to 1/256 steps (1/65536 for int16 output). The same steps live in c/te_softmax.h;
here the generation-time constants (input multiplier, left shift, diff_min) are computed
exactly as TFLM's Prepare does and baked in as literals. No constant arrays and no scratch:
the footprint is zero.

int16 -> int16 (reference_ops::SoftmaxInt16) uses two 513-entry int16 tables, exp on [-10, 0]
and 1 / (1 + x) on [0, 1], which TFLM's Prepare fills in float32 (LUTPopulateInt16, expf); they
are built here with the same float32 steps (libm's expf through ctypes, as the interpreter's own
libm computes it) and baked as constants (2052 bytes per layer). Differences are rescaled to
[-65535, 0] = [-10, 0] with in_s * beta / (10 / 65535), looked up with linear interpolation,
summed, normalized with the reciprocal table and rounded.
"""
from __future__ import annotations

import math

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE, FIX_REQUANTIZE

SCALED_DIFF_INTEGER_BITS = 5      # exp input format Q5.26
ACCUM_INTEGER_BITS = 12           # sum of exps format Q12.19
# Each exp contributes at most 2^19 to the Q12 sum: 4095 terms is the most that cannot overflow.
MAX_DEPTH = (1 << 31) // (1 << 19) - 1
# Above 511 terms the sum can reach 2^28, where TFLM's final shift for int8 output exceeds 31
# and it aborts (int16 output shifts 8 bits less and never gets there).
SAFE_SHIFT_DEPTH = 511


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int] | None:
    """(multiplier, left_shift, diff_min) as TFLM's PreprocessSoftmaxScaling computes them.

    None when TFLM's QuantizeMultiplierGreaterThanOne would reject the multiplier (<= 1).
    """
    real = (float(np.float32(beta)) * float(np.float32(input_scale))
            * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)))
    real = min(real, float((1 << 31) - 1))
    if not real > 1.0:
        return None
    q, shift = quant.quantize_multiplier(real)
    if shift < 0:
        return None
    # CalculateInputRadius(5, shift, 31), in double as TFLM does, then floored.
    radius = math.floor(1.0 * ((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                        * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << shift))
    return q, shift, int(-1.0 * radius)


# -- int16 -> int16 --------------------------------------------------------------------------

INT16_TABLE = 513
INT16_MAX_DEPTH = (1 << 31) // 32768 - 1  # the int32 sum of exps cannot overflow


def _expf():
    """libm's expf (what TFLM's std::exp(float) calls); numpy's float32 exp without libm."""
    import ctypes
    import ctypes.util
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        f = lib.expf
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
        return lambda v: np.float32(f(float(v)))
    except (OSError, AttributeError):
        return lambda v: np.float32(np.exp(np.float32(v)))


def _roundf(v) -> np.float32:
    v = np.float32(v)
    return np.float32(math.floor(abs(float(v)) + 0.5) * (1.0 if v >= 0 else -1.0))


def lut_int16(input_scale, input_zp, output_scale, output_zp, fn) -> np.ndarray:
    """detail::LUTPopulateInt16<float>, step by step in float32."""
    f32 = np.float32
    with np.errstate(all="ignore"):
        in_s, out_s = f32(input_scale), f32(output_scale)
        input_min = in_s * f32(-32768 - input_zp)
        input_max = in_s * f32(32767 - input_zp)
        output_min = out_s * f32(-32768 - output_zp)
        output_max = out_s * f32(32767 - output_zp)
        step = (input_max - input_min) / f32(512)
        half = step / f32(2)
        inv = f32(65536) / (output_max - output_min)
        out = []
        for i in range(512):
            val = fn(input_min + f32(i) * step)
            mid = fn(input_min + f32(i) * step + half)
            nxt = fn(input_min + f32(i + 1) * step)
            sample = _roundf(val * inv)
            interp = _roundf((nxt * inv + _roundf(val * inv)) / f32(2))
            midv = _roundf(mid * inv)
            bias = _roundf((interp - midv) / f32(2))
            out.append(min(max(float(sample - bias), -32768.0), 32767.0))
        out.append(min(max(float(_roundf(fn(input_max) * inv)), -32768.0), 32767.0))
    return np.array([int(v) for v in out], np.int64)


_INT16_TABLES: dict = {}


def int16_tables() -> tuple[np.ndarray, np.ndarray]:
    """(exp table, 1 / (1 + x) table) of TFLM's int16 softmax; the same for every model."""
    if not _INT16_TABLES:
        expf = _expf()
        rng = 65535
        f32 = np.float32
        _INT16_TABLES["exp"] = lut_int16(f32(10.0) / f32(rng), 32767, f32(2.0) / f32(rng), 0, expf)
        _INT16_TABLES["inv"] = lut_int16(f32(1.0) / f32(rng), -32768, f32(2.0) / f32(rng), 0,
                                         lambda v: f32(1.0) / (f32(1.0) + f32(v)))
    return _INT16_TABLES["exp"], _INT16_TABLES["inv"]


def _softmax_int16(op: Op, ctx: EmitContext, x, y) -> LayerCode:
    if y.dtype != "int16":
        raise ctx.unsupported(op, f"softmax from int16 to {y.dtype}; TFLite Micro needs int16 out",
                              FIX_QUANTIZE)
    for t in (x, y):
        if not t.quantized:
            raise ctx.unsupported(op, f"tensor {t.describe()} has no quantization parameters",
                                  FIX_QUANTIZE)
    ctx.require_per_tensor(op, x, y)
    if tuple(x.shape) != tuple(y.shape) or len(x.shape) < 1 or x.numel == 0:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} must have the "
                                  "same non-empty shape")
    s = np.float32(y.scale[0])
    if x.zp != 0 or y.zp != 0 or not abs(s - np.float32(1 / 32768)) <= np.float32(0.001 / 32768):
        raise ctx.unsupported(op, "an int16 softmax needs zero points 0 and output scale 1/32768, "
                                  "as TFLite Micro requires", "Re-convert the model")
    depth = int(x.shape[-1])
    if depth > INT16_MAX_DEPTH:
        raise ctx.unsupported(op, f"{depth} entries could overflow the int32 sum of exps",
                              FIX_REQUANTIZE)
    beta = float(op.options.get("beta", 0.0))
    q, shift = quant.quantize_multiplier(float(np.float32(x.s)) * float(np.float32(beta))
                                         / (10.0 / 65535.0))
    if q <= 0 or shift > 30:
        raise ctx.unsupported(op, f"beta {beta:g} with input scale {x.s:g} is outside TFLite "
                                  "Micro's int16 softmax range", "Re-convert the model")
    exp_t, inv_t = int16_tables()
    E = ctx.const("exp_lut", exp_t, "int16_t")
    V = ctx.const("inv_lut", inv_t, "int16_t")
    rows = x.numel // depth
    body = f"""
  for (int r = 0; r < {rows}; ++r) {{
    const int16_t *x = in0 + r * {depth};
    int16_t *y = out0 + r * {depth};
    int32_t max_in_row = -32768;
    for (int c = 0; c < {depth}; ++c) max_in_row = x[c] > max_in_row ? x[c] : max_in_row;
    int32_t sum = 0;
    for (int c = 0; c < {depth}; ++c) {{
      const int32_t d = te_mbqm((int32_t)x[c] - max_in_row, {q}, {shift}) + 32767;
      y[c] = te_lut16((int16_t)te_clamp(d, -32768, 32767), {E});
      sum += y[c];
    }}
    const int head = sum > 0 ? te_clz32((uint32_t)sum) : 32;
    const int32_t shifted = (int32_t)((((int64_t)sum << (head - 1)) + (1 << 13)) >> 14);
    const int16_t recip = te_lut16((int16_t)te_clamp(shifted - ((1 << 15) + (1 << 16)), -32768, 32767), {V});
    const int rs = 31 - head;
    const int64_t round = rs > 0 ? ((int64_t)1 << (rs - 1)) : 0;
    for (int c = 0; c < {depth}; ++c) {{
      const int32_t v = (int32_t)(((int64_t)y[c] * recip + round) >> rs);
      y[c] = (int16_t)te_clamp(v, 0, 32767);
    }}
  }}"""
    return LayerCode(body=body, headers=("te_softmax.h",))


def _check(op: Op, ctx: EmitContext):
    """Validates as TFLM's SoftmaxPrepare does; returns (input, depth, params, output bits)."""
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    if x.dtype != "int8" or y.dtype not in ("int8", "int16"):
        raise ctx.unsupported(op, f"softmax from {x.dtype} to {y.dtype} is not supported; only "
                                  "int8 -> int8 and int8 -> int16 are",
                              "Quantize the model to int8 end to end")
    for t in (x, y):
        if not t.quantized:
            raise ctx.unsupported(op, f"tensor {t.describe()} has no quantization parameters",
                                  "Quantize the model to int8 with a representative dataset")
    ctx.require_per_tensor(op, x, y)
    if tuple(x.shape) != tuple(y.shape) or len(x.shape) < 1 or x.numel == 0:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} must have the "
                                  "same non-empty shape")
    _check_output_quantization(op, ctx, y)
    depth = int(x.shape[-1])
    if depth > MAX_DEPTH:
        raise ctx.unsupported(op, f"the softmax axis has {depth} entries; TFLite Micro's Q12 sum "
                                  f"of exponentials overflows above {MAX_DEPTH}",
                              "Split the softmax or reduce the number of classes")
    # Without SoftmaxOptions TFLM's parser leaves beta at 0 (and the schema's default is 0).
    beta = float(op.options.get("beta", 0.0))
    params = softmax_params(beta, x.s)
    if params is None:
        raise ctx.unsupported(op, f"beta {beta:g} times input scale {x.s:g} is too small (or not "
                                  "positive) for TFLite Micro's int8 softmax, which needs "
                                  "beta * scale * 2^26 > 1",
                              "Use a positive beta and a larger input scale")
    return x, depth, params, 8 if y.dtype == "int8" else 16


def _check_output_quantization(op: Op, ctx: EmitContext, y):
    """TFLM fixes the output grid: int8 at 1/256 from -128, int16 at ~1/65536 from -32768."""
    s = np.float32(y.scale[0])
    if y.dtype == "int8":
        ok, want = y.zp == -128 and s == np.float32(1.0 / 256), "scale 1/256 and zero point -128"
    else:
        tol = np.float32(0.001) * np.float32(1.0 / 65536)
        ok = y.zp == -32768 and abs(s - np.float32(1.0 / 65536)) <= tol
        want = "scale 1/65536 and zero point -32768"
    if not ok:
        raise ctx.unsupported(op, f"the {y.dtype} output is quantized with scale {y.s:g} and zero "
                                  f"point {y.zp}; TFLite Micro's softmax requires {want}",
                              "Re-convert the model with the TFLite converter, which fixes these")


def footprint(op: Op, graph) -> tuple[int, int]:
    if graph.t(op.inputs[0]).dtype == "int16":
        return 2 * INT16_TABLE * 2, 0
    return 0, 0


@kernel("SOFTMAX", footprint=footprint)
def softmax(op: Op, g, ctx: EmitContext) -> LayerCode:
    if op.inputs and op.inputs[0] >= 0 and ctx.t_in(op, 0).dtype == "int16":
        return _softmax_int16(op, ctx, ctx.t_in(op, 0), ctx.t_out(op))
    x, depth, (mult, shift, diff_min), out_bits = _check(op, ctx)
    rows = x.numel // depth
    ctype, lo, hi = ("int8_t", -128, 127) if out_bits == 8 else ("int16_t", -32768, 32767)
    # int8 differences lie in [-255, 0]: when the cut-off is below that, no entry is ever skipped.
    if diff_min <= -255:
        keep = ""
    else:
        keep = f"if (diff >= {diff_min}) "
    exp_call = f"te_softmax_exp(diff, {mult}, {shift})"
    # For int8 output beyond SAFE_SHIFT_DEPTH entries TFLM aborts on sums >= 2^28; there we round
    # as if the shift could exceed 31 (the output is then -128) instead of shifting out of range.
    if depth <= SAFE_SHIFT_DEPTH or out_bits == 16:
        prob = "te_rdbpot(te_srdhm(scale, ex), exponent)"
    else:
        prob = "(exponent > 31 ? 0 : te_rdbpot(te_srdhm(scale, ex), exponent))"
    body = f"""
  for (int r = 0; r < {rows}; ++r) {{
    const int8_t *x = in0 + r * {depth};
    {ctype} *y = out0 + r * {depth};
    int32_t max_in_row = -128;
    for (int c = 0; c < {depth}; ++c) max_in_row = x[c] > max_in_row ? x[c] : max_in_row;
    int32_t sum = 0;
    for (int c = 0; c < {depth}; ++c) {{
      const int32_t diff = (int32_t)x[c] - max_in_row;
      {keep}sum += te_rdbpot({exp_call}, {ACCUM_INTEGER_BITS});
    }}
    int bits_over_unit;
    const int32_t scale = te_softmax_reciprocal_q12(sum, &bits_over_unit);
    const int exponent = bits_over_unit + {31 - out_bits};
    for (int c = 0; c < {depth}; ++c) {{
      const int32_t diff = (int32_t)x[c] - max_in_row;
      int32_t v = {lo};
      {keep}{{
        const int32_t ex = {exp_call};
        v = te_clamp({prob} - {-lo}, {lo}, {hi});
      }}
      y[c] = ({ctype})v;
    }}
  }}"""
    # Not declared in place: the loops would allow it (each row is read before it is written, at
    # the index just read), but only if the planner gives the output exactly the input's offset.
    return LayerCode(body=body, headers=("te_softmax.h",))
