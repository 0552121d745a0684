"""QUANTIZE (float32 -> int8/int16, int8/int16 -> int8/int16) and DEQUANTIZE (int8/int16 -> float32).

float -> int follows TFLM's AffineQuantize (reference quantize.h, quantize_common.cc):
``static_cast<int32_t>(TfLiteRound(x / static_cast<float>(scale))) + zero_point``, clamped: a
float32 division, rounding half away from zero, then the float -> int32 conversion. For a
quotient outside int32 (huge inputs, +-inf, NaN) that conversion is undefined in C++; the TFLM
build we are judged against (x86-64) yields INT32_MIN there (cvttss2si) and the zero-point add
wraps. The generated C reproduces exactly that, with defined arithmetic only.

int -> int is TFLM's Requantize: ``clamp(MBQM(x - in_zp, q, shift) + out_zp)`` with (q, shift)
from ``double(in_s) / double(out_s)``.

DEQUANTIZE is ``(float)scale * (float)(x - zp)`` in float32, as reference dequantize.h.
Float tensors at the model boundary are the caller's buffers (memory.py: external), so a float
input arrives here as ``in0`` of type ``const float *`` and a float output is written in place.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel

_RANGE = {"int8": (-128, 127), "int16": (-32768, 32767)}
_INTS = tuple(_RANGE)


def float_literal(value: float) -> str:
    """An exact C float literal (hex), so the baked scale is the float32 TFLM reads."""
    return float(np.float32(value)).hex() + "f"


def _no_footprint(op, g):
    return 0, 0


def _check_per_tensor(op, ctx, t, role, first_channel=False):
    """Quantized, and per tensor where TFLM checks it: QUANTIZE's output (quantize_common.cc,
    scale count 1). An input quantized per channel is read through its first scale and zero
    point (first_channel=True), as TFLM's params are."""
    if not t.quantized:
        raise ctx.unsupported(op, f"the {role} {t.describe()} has no quantization parameters")
    if t.per_channel and not first_channel:
        raise ctx.unsupported(op, f"the {role} {t.describe()} is quantized per channel; TFLite Micro "
                                  "only (de)quantizes per tensor")


def _check_arity(op, ctx, x, y):
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        raise ctx.unsupported(op, "expects exactly one input and one output")
    if x.numel != y.numel:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} differ in size")


@kernel("QUANTIZE", footprint=_no_footprint)
def quantize(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    _check_arity(op, ctx, x, y)
    if y.dtype not in _INTS:
        raise ctx.unsupported(op, f"output type {y.dtype}; supported outputs are int8 and int16")
    _check_per_tensor(op, ctx, y, "output")
    if x.dtype == "float32":
        return LayerCode(body=_from_float(ctx.operand(op, 0), x.numel, y))
    if x.dtype not in _INTS:
        raise ctx.unsupported(op, f"input type {x.dtype}; supported inputs are float32, int8, int16")
    _check_per_tensor(op, ctx, x, "input", first_channel=True)
    return _requantize(ctx.operand(op, 0), x, y)


def _from_float(src: str, n: int, y) -> str:
    lo, hi = _RANGE[y.dtype]
    ctype = "int8_t" if y.dtype == "int8" else "int16_t"
    return f"""
  for (int i = 0; i < {n}; ++i) {{
    const float v = {src}[i] / {float_literal(y.s)};
    /* NaN and quotients outside int32 convert to INT32_MIN, as TFLM's cast does on x86-64 */
    int32_t r = INT32_MIN;
    if (v >= -2147483648.0f && v < 2147483648.0f) {{
      r = (int32_t)v;                     /* truncation toward zero */
      const float frac = v - (float)r;    /* exact: |v| < 2^31 and |frac| < 1 */
      r += (frac >= 0.5f) - (frac <= -0.5f);  /* round half away from zero */
    }}
    const int32_t z = (int32_t)((uint32_t)r + (uint32_t)({y.zp}));  /* TFLM's add wraps */
    out0[i] = ({ctype})te_clamp(z, {lo}, {hi});
  }}"""


def _requantize(src: str, x, y) -> LayerCode:
    q, shift = quant.quantize_multiplier(float(np.float32(x.s)) / float(np.float32(y.s)))
    lo, hi = _RANGE[y.dtype]
    ctype = "int8_t" if y.dtype == "int8" else "int16_t"
    same_size = x.dtype == y.dtype
    if same_size and q == 1 << 30 and shift == 1 and x.zp == y.zp:
        # TFLM's multiply by exactly 1.0 returns x: a copy (memmove: may run in place)
        return LayerCode(body=f"\n  memmove(out0, {src}, {y.nbytes});", in_place=True)
    mbqm = f"te_mbqm_r(d, {q}, {-shift})" if shift <= 0 else f"te_mbqm(d, {q}, {shift})"
    body = f"""
  for (int i = 0; i < {x.numel}; ++i) {{
    const int32_t d = (int32_t){src}[i] - ({x.zp});
    out0[i] = ({ctype})te_clamp({mbqm} + ({y.zp}), {lo}, {hi});
  }}"""
    # element i is read before it is written, so the output may overwrite a same-sized input
    return LayerCode(body=body, in_place=same_size)


@kernel("DEQUANTIZE", footprint=_no_footprint)
def dequantize(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    _check_arity(op, ctx, x, y)
    if x.dtype not in _INTS or y.dtype != "float32":
        raise ctx.unsupported(op, f"{x.dtype} -> {y.dtype}; supported is int8/int16 -> float32")
    _check_per_tensor(op, ctx, x, "input", first_channel=True)
    body = f"""
  for (int i = 0; i < {x.numel}; ++i)
    out0[i] = {float_literal(x.s)} * (float)((int32_t){ctx.operand(op, 0)}[i] - ({x.zp}));"""
    return LayerCode(body=body)
