"""16x8 quantization (int16 activations, int8 weights): CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED.

The int8 kernel modules hand a layer over to this one when its input is int16 (``handles``).
TFLM's 16x8 recipes (reference_integer_ops::ConvPerChannel for int16, FullyConnected /
FullyConnectedPerChannel with int16 input), reproduced:

- The accumulator is int64 when the bias is int64, or when there is no bias and the op's
  ``quantized_bias_type`` is not INT32; it is int32 with an int32 bias (or no bias and INT32).
- The int64 accumulator is requantized by TFLM's 64-bit MultiplyByQuantizedMultiplier: the
  multiplier reduced to 16 bits, ``(q + 2^15) >> 16`` (0x7FFF from 0x7FFF0000 up), then
  ``(acc * reduced + 2^(14 - shift)) >> (15 - shift)``; the int32 one by the usual double
  rounding (te_mbqm).
- DEPTHWISE_CONV_2D always accumulates in int64 and reads its bias as int64.
- CONV_2D and DEPTHWISE_CONV_2D ignore both zero points (TFLM's int16 kernels use neither);
  FULLY_CONNECTED applies them. Activation bounds are computed in the int16 range with the output zero point.
The C is a plain loop nest with literal shapes; constants: the int8 weights, the bias in its own
width, and the multipliers (per channel, or literals per tensor). On Cortex-M cores with the DSP
extension, FULLY_CONNECTED (input zero point 0) and CONV_2D (one group, >= 4 input channels) add
an ``#if TE_DSP`` branch over the same arrays (c/te_int16_dsp.h): two output units at a time,
SMLALD into int64 (SMLAD into int32 where TFLM accumulates in int32), the same sums exactly.
Depthwise keeps its portable loop (one product per tap and channel: no pairs to load).
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode
from tinyengine_tf.kernels.base import FIX_CONSTANT, FIX_QUANTIZE, FIX_REEXPORT, FIX_REQUANTIZE
from tinyengine_tf.kernels.geometry import Window

INT32 = 2          # schema TensorType.INT32, the value of quantized_bias_type that means int32
INT16_MIN, INT16_MAX = -32768, 32767


def handles(op: Op, g) -> bool:
    """Whether the layer is 16x8 (its input is int16)."""
    return bool(op.inputs) and op.inputs[0] >= 0 and g.t(op.inputs[0]).dtype == "int16"


def _bias_tensor(op: Op, g):
    return g.t(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None


def _wide(op: Op, g) -> bool:
    """int64 accumulation (TFLM's requires_int32_accum is false)."""
    b = _bias_tensor(op, g)
    if b is not None:
        return b.dtype == "int64"
    return int(op.options.get("quantized_bias_type", 0)) != INT32


def footprint(op: Op, g, channel_axis: int = 0) -> tuple[int, int]:
    """int8 weights + the bias in its width + per-channel (int32 multiplier, int8 shift)."""
    w = g.t(op.inputs[1])
    n = int(w.shape[channel_axis])
    b = _bias_tensor(op, g)
    flash = w.numel + (0 if b is None else n * (8 if b.dtype == "int64" else 4))
    if w.per_channel:
        flash += 5 * n
    return flash, 0


def _requant_parts(op, ctx, x, w, y, n, wide, per_channel):
    """C expression builder: acc -> int32, with TFLM's multipliers (per channel or not)."""
    q, shift = quant.channel_multipliers(x.s, w.scale[:n] if per_channel else w.scale, y.s,
                                         n if per_channel else 1)
    if wide:
        if np.any(shift > 7) or np.any(shift < -31):
            raise ctx.unsupported(op, "a multiplier's shift is outside TFLite Micro's 64-bit "
                                      "requantization range (-31..7)", "Requantize the model")
        red = np.where(q < 0x7FFF0000, (q + (1 << 15)) >> 16, 0x7FFF)
        total = 15 - shift
        if per_channel:
            M = ctx.const("mult", red, "int32_t")
            S = ctx.const("shift", total, "int8_t")
            return lambda acc, c: f"te_mbqm64({acc}, {M}[{c}], {S}[{c}])"
        return lambda acc, c: f"te_mbqm64({acc}, {int(red[0])}, {int(total[0])})"
    if np.any(shift > 30):
        raise ctx.unsupported(op, "a multiplier needs a left shift beyond 30 bits",
                              "Requantize the model")
    if per_channel:
        M = ctx.const("mult", q, "int32_t")
        S = ctx.const("shift", shift, "int8_t")
        return lambda acc, c: f"te_mbqm({acc}, {M}[{c}], {S}[{c}])"
    return lambda acc, c: f"te_mbqm({acc}, {int(q[0])}, {int(shift[0])})"


def _bias(op, ctx, n, wide):
    b = ctx.t_in(op, 2) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    if b is None:
        return None
    if not b.is_const or b.dtype not in ("int32", "int64") or b.numel != n:
        raise ctx.unsupported(op, f"bias must be a constant int32 or int64 vector of {n}, got "
                                  f"{b.describe()}", FIX_CONSTANT)
    return ctx.const("bias", b.data.astype(np.int64).ravel(), "int64_t" if wide else "int32_t")


def _check_common(op, ctx):
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    if y.dtype != "int16" or w.dtype != "int8":
        raise ctx.unsupported(op, f"16x8 needs int16 input and output and int8 weights, got "
                                  f"{x.dtype}, {w.dtype} and {y.dtype}", FIX_QUANTIZE)
    for t in (x, w, y):
        if not t.quantized:
            raise ctx.unsupported(op, f"tensor {t.describe()} has no quantization parameters",
                                  FIX_QUANTIZE)
    ctx.require_per_tensor(op, x, y)
    if not w.is_const:
        raise ctx.unsupported(op, "the filter is not a constant tensor", FIX_CONSTANT)
    return x, w, y


def _activation(op, ctx, y):
    act = op.options.get("fused_activation_function") or "NONE"
    try:
        return quant.activation_range(act, y.s, y.zp, INT16_MIN, INT16_MAX)
    except ValueError:
        raise ctx.unsupported(op, f"fused activation {act} is not supported", FIX_REEXPORT) from None


def _acc_bound_ok(terms: int, x_off: int, w_off: int, bias_max: int, wide: bool) -> bool:
    per = (32768 + abs(x_off)) * (128 + abs(w_off))
    limit = 2**47 if wide else 2**31 - 1
    return terms * per + bias_max < limit


def fully_connected(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, w, y = _check_common(op, ctx)
    if len(w.shape) != 2:
        raise ctx.unsupported(op, f"the filter must be 2-D [out, in], got {list(w.shape)}",
                              FIX_REEXPORT)
    if op.options.get("weights_format", 0) not in (0, "DEFAULT"):
        raise ctx.unsupported(op, "shuffled weights formats are not supported", FIX_REEXPORT)
    n, k = int(w.shape[0]), int(w.shape[1])
    if not y.shape or int(y.shape[-1]) != n or n == 0 or k == 0 or (y.numel // n) * k != x.numel:
        raise ctx.unsupported(op, f"input {list(x.shape)}, filter {list(w.shape)} and output "
                                  f"{list(y.shape)} do not agree", FIX_REEXPORT)
    rows = y.numel // n
    qd = w.quantized_dim
    if w.per_channel and (not 0 <= qd < 2 or len(w.scale) != w.shape[qd] or len(w.scale) < n):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized dimension "
                                  f"{qd}; TFLite Micro needs one per output unit ({n})",
                              FIX_QUANTIZE)
    if np.any(w.zero_point != 0):
        raise ctx.unsupported(op, "filter zero points must be 0 (symmetric int8 weights)",
                              FIX_QUANTIZE)
    lo, hi, W, B, rq, acc_t = _layer_constants(
        op, g, ctx, x, w, y, n, k, x.zp,
        (f"{k} inputs per unit could overflow the accumulator", "Split the layer"))
    xin = ctx.operand(op, 0)
    term = f"((int32_t){xin}[r * {k} + d] - {x.zp})" if x.zp else f"(int32_t){xin}[r * {k} + d]"
    body = f"""
  for (int r = 0; r < {rows}; ++r) {{
    for (int c = 0; c < {n}; ++c) {{
      const int8_t *pw = {W} + c * {k};
      {acc_t} acc = {f'{B}[c]' if B else '0'};
      for (int d = 0; d < {k}; ++d) acc += (int32_t)pw[d] * {term};
      out0[r * {n} + c] = (int16_t)te_clamp({rq('acc', 'c')} + {y.zp}, {lo}, {hi});
    }}
  }}"""
    if x.zp == 0 and k >= 4:
        body = f"\n#if TE_DSP{_fc_dsp_body(rows, k, n, xin, W, B, acc_t, rq, y.zp, lo, hi)}\n#else{body}\n#endif"
        return LayerCode(body=body, headers=("te_int16.h", "te_dsp.h", "te_int16_dsp.h"))
    return LayerCode(body=body, headers=("te_int16.h",))


def _fc_dsp_body(rows, k, n, xin, W, B, acc_t, rq, zp, lo, hi) -> str:
    """The #if TE_DSP branch of a 16x8 FULLY_CONNECTED with input zero point 0 (what 16x8
    quantization gives): te16_dot2(_wide) on two units at a time (c/te_int16.h). The sums are
    TFLM's, exactly: the same products, in an int64 (SMLALD) or a bounded int32 (SMLAD)."""
    dot = "te16_dot2_wide" if acc_t == "int64_t" else "te16_dot2"
    init = (lambda c: f"{B}[{c}]") if B else (lambda c: "0")
    out = lambda a, c: f"out0[r * {n} + {c}] = (int16_t)te_clamp({rq(a, c)} + {zp}, {lo}, {hi});"
    odd = ""
    if n % 2:
        c = n - 1
        odd = f"""
    {{
      {acc_t} a0 = {init(c)};
      {dot}(xr, {W} + {c * k}, (const int8_t *)0, {k}, &a0, ({acc_t} *)0);
      {out("a0", c)}
    }}"""
    return f"""
  for (int r = 0; r < {rows}; ++r) {{
    const int16_t *xr = {xin} + r * {k};
    for (int c = 0; c < {n - n % 2}; c += 2) {{
      {acc_t} a0 = {init("c")}, a1 = {init("c + 1")};
      {dot}(xr, {W} + c * {k}, {W} + (c + 1) * {k}, {k}, &a0, &a1);
      {out("a0", "c")}
      {out("a1", "c + 1")}
    }}{odd}
  }}"""


def _layer_constants(op, g, ctx, x, w, y, n_out: int, taps: int, x_zp: int, overflow):
    """(lo, hi, weights, bias, requantization, accumulator C type) of an int16 FC or conv,
    after checking that `taps` products per output fit the accumulator (overflow: the refusal's
    why and fix)."""
    wide = _wide(op, g)
    b = _bias_tensor(op, g)
    bias_max = int(np.abs(b.data.astype(np.int64)).max(initial=0)) if b is not None and b.is_const else 0
    if not _acc_bound_ok(taps, x_zp, 0, bias_max, wide):
        raise ctx.unsupported(op, *overflow)
    lo, hi = _activation(op, ctx, y)
    W = ctx.const("w", w.data.ravel(), "int8_t")
    B = _bias(op, ctx, n_out, wide)
    rq = _requant_parts(op, ctx, x, w, y, n_out, wide, w.per_channel)
    return lo, hi, W, B, rq, ("int64_t" if wide else "int32_t")


def conv_2d(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, w, y = _check_common(op, ctx)
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise ctx.unsupported(op, "input, filter and output must be 4-D (NHWC / OHWI)",
                              FIX_REEXPORT)
    n, ih, iw, ic = (int(d) for d in x.shape)
    oc, kh, kw, icf = (int(d) for d in w.shape)
    if icf < 1 or ic % icf or oc % (ic // icf) or y.shape[3] != oc or y.shape[0] != n:
        raise ctx.unsupported(op, f"filter {list(w.shape)} does not match input {list(x.shape)} "
                                  f"and output {list(y.shape)}", FIX_REEXPORT)
    qd = w.quantized_dim
    if w.per_channel and (len(w.scale) != oc or not 0 <= qd < 4 or w.shape[qd] != oc):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized dimension "
                                  f"{qd}; TFLite Micro needs 1 or one per output channel ({oc})",
                              FIX_QUANTIZE)
    groups = ic // icf
    win = Window.from_op(op, ih, iw, kh, kw, int(y.shape[1]), int(y.shape[2]))
    # TFLM's int16 conv always goes through per-channel multiplier arrays.
    lo, hi, W, B, rq, acc_t = _layer_constants(
        op, g, ctx, x, w, y, oc, kh * kw * icf, 0,
        (f"a {kh}x{kw}x{icf} window could overflow the accumulator",
         "Use fewer input channels per output"))
    ocpg = oc // groups
    xin = ctx.operand(op, 0)
    taps = _window_taps(win, ih, iw, f"""
          const int16_t *px = {xin} + ((b * {ih} + iy) * {iw} + ix) * {ic} + g0;
          const int8_t *pw = {W} + ((c * {kh} + ky) * {kw} + kx) * {icf};
          for (int i = 0; i < {icf}; ++i) acc += (int32_t)pw[i] * (int32_t)px[i];""")
    body = f"""
  for (int b = 0; b < {n}; ++b)
  for (int oy = 0; oy < {win.oh}; ++oy)
  for (int ox = 0; ox < {win.ow}; ++ox) {{
    int16_t *po = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {oc};
    for (int c = 0; c < {oc}; ++c) {{
      const int g0 = (c / {ocpg}) * {icf};
      {acc_t} acc = 0;{taps}
      {f'acc += {B}[c];' if B else ''}
      po[c] = (int16_t)te_clamp({rq('acc', 'c')}, {lo}, {hi});
    }}
  }}"""
    if groups == 1 and icf >= 4:
        fast = _conv_dsp_body(n, ih, iw, ic, oc, kh, kw, win, xin, W, B, acc_t, rq, lo, hi)
        body = f"\n#if TE_DSP{fast}\n#else{body}\n#endif"
        return LayerCode(body=body, headers=("te_int16.h", "te_dsp.h", "te_int16_dsp.h"))
    return LayerCode(body=body, headers=("te_int16.h",))


def _window_taps(win, ih, iw, inner: str) -> str:
    """The loops over an output pixel's (oy, ox) in-bounds taps (ky, kx; iy, ix set) around
    inner: TFLM skips the taps in the padding, so both branches of the conv do too."""
    return f"""
      for (int ky = 0; ky < {win.kh}; ++ky) {{
        const int iy = oy * {win.sh} - {win.pt} + ky * {win.dh};
        if (iy < 0 || iy >= {ih}) continue;
        for (int kx = 0; kx < {win.kw}; ++kx) {{
          const int ix = ox * {win.sw} - {win.pl} + kx * {win.dw};
          if (ix < 0 || ix >= {iw}) continue;{inner}
        }}
      }}"""


def _conv_dsp_body(n, ih, iw, ic, oc, kh, kw, win, xin, W, B, acc_t, rq, lo, hi) -> str:
    """The #if TE_DSP branch of a 16x8 CONV_2D with one group and >= 4 input channels: per
    output pixel, two channels at a time, each in-bounds tap one te16_dot2(_wide) over the
    input channels (c/te_int16_dsp.h). Same products and sums as TFLM's int16 conv."""
    dot = "te16_dot2_wide" if acc_t == "int64_t" else "te16_dot2"
    step = kh * kw * ic

    def unit(c, pair):
        w1 = f"pw + {step}" if pair else "(const int8_t *)0"
        a1 = "&a1" if pair else f"({acc_t} *)0"
        decl = f"{acc_t} a0 = 0{', a1 = 0' if pair else ''};"
        bias = (f"a0 += {B}[{c}];" + (f" a1 += {B}[{c} + 1];" if pair else "")) if B else ""
        outs = f"po[{c}] = (int16_t)te_clamp({rq('a0', c)}, {lo}, {hi});"
        if pair:
            outs += f"\n      po[{c} + 1] = (int16_t)te_clamp({rq('a1', f'{c} + 1')}, {lo}, {hi});"
        taps = _window_taps(win, ih, iw, f"""
          const int16_t *px = {xin} + ((b * {ih} + iy) * {iw} + ix) * {ic};
          const int8_t *pw = {W} + (({c} * {kh} + ky) * {kw} + kx) * {ic};
          {dot}(px, pw, {w1}, {ic}, &a0, {a1});""")
        return f"""
      {decl}{taps}
      {bias}
      {outs}"""
    odd = f"\n    {{{unit(oc - 1, False)}\n    }}" if oc % 2 else ""
    return f"""
  for (int b = 0; b < {n}; ++b)
  for (int oy = 0; oy < {win.oh}; ++oy)
  for (int ox = 0; ox < {win.ow}; ++ox) {{
    int16_t *po = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {oc};
    for (int c = 0; c < {oc - oc % 2}; c += 2) {{{unit("c", True)}
    }}{odd}
  }}"""


def depthwise_conv_2d(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, w, y = _check_common(op, ctx)
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4 or int(w.shape[0]) != 1:
        raise ctx.unsupported(op, "input, filter [1, KH, KW, C*M] and output must be 4-D",
                              FIX_REEXPORT)
    n, ih, iw, ic = (int(d) for d in x.shape)
    _, kh, kw, oc = (int(d) for d in w.shape)
    if oc % ic or int(y.shape[3]) != oc or int(y.shape[0]) != n:
        raise ctx.unsupported(op, f"filter {list(w.shape)} does not match input {list(x.shape)} "
                                  f"and output {list(y.shape)}", FIX_REEXPORT)
    mult = oc // ic
    qd = w.quantized_dim
    if w.per_channel and (len(w.scale) != oc or not 0 <= qd < 4 or w.shape[qd] != oc):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized dimension "
                                  f"{qd}; TFLite Micro needs 1 or one per output channel ({oc})",
                              FIX_QUANTIZE)
    win = Window.from_op(op, ih, iw, kh, kw, int(y.shape[1]), int(y.shape[2]))
    b = _bias_tensor(op, g)
    if b is not None and b.dtype != "int64":
        raise ctx.unsupported(op, f"the bias is {b.dtype}; TFLite Micro's 16x8 depthwise reads it "
                                  "as int64", "Re-convert the model in 16x8 mode")
    bias_max = int(np.abs(b.data.astype(np.int64)).max(initial=0)) if b is not None and b.is_const else 0
    if not _acc_bound_ok(kh * kw, 0, 0, bias_max, True):
        raise ctx.unsupported(op, "the window could overflow the accumulator", FIX_REQUANTIZE)
    lo, hi = _activation(op, ctx, y)
    W = ctx.const("w", w.data.ravel(), "int8_t")
    B = _bias(op, ctx, oc, True)
    rq = _requant_parts(op, ctx, x, w, y, oc, True, w.per_channel)
    xin = ctx.operand(op, 0)
    body = f"""
  for (int b = 0; b < {n}; ++b)
  for (int oy = 0; oy < {win.oh}; ++oy)
  for (int ox = 0; ox < {win.ow}; ++ox) {{
    int16_t *po = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {oc};
    for (int c = 0; c < {oc}; ++c) {{
      const int ci = c / {mult};
      int64_t acc = 0;
      for (int ky = 0; ky < {kh}; ++ky) {{
        const int iy = oy * {win.sh} - {win.pt} + ky * {win.dh};
        if (iy < 0 || iy >= {ih}) continue;
        for (int kx = 0; kx < {kw}; ++kx) {{
          const int ix = ox * {win.sw} - {win.pl} + kx * {win.dw};
          if (ix < 0 || ix >= {iw}) continue;
          acc += (int32_t){W}[(ky * {kw} + kx) * {oc} + c] *
                 (int32_t){xin}[((b * {ih} + iy) * {iw} + ix) * {ic} + ci];
        }}
      }}
      {f'acc += {B}[c];' if B else ''}
      po[c] = (int16_t)te_clamp({rq('acc', 'c')}, {lo}, {hi});
    }}
  }}"""
    return LayerCode(body=body, headers=("te_int16.h",))
