"""TRANSPOSE_CONV on int8 (and 16x8: int16 activations, int8 weights), bit-exact with TFLite
Micro's reference_integer_ops::TransposeConv.

Inputs are (output_shape, filter [OC, KH, KW, IC], input [N, H, W, IC], bias [OC] optional).
TFLM scatters every input pixel times the filter into an int32 image of the whole output, adds the
bias and requantizes per channel. Here each output pixel gathers the input pixels that reach it
(``oy + pad - ky`` a multiple of the stride), so the only scratch is one int32 accumulator per
output channel instead of TFLM's whole-output int32 buffer. The two orders add the same int32
terms; the generator refuses layers whose sums could leave int32, so the results are equal.

TFLM's Prepare, reproduced: the padding is computed from the *output* size as if it were a conv
input (``ComputePaddingHeightWidth`` with dilation 1); the output tensor's shape is used (the
output_shape input is not read by the int8 kernel); filter scales are 1 or one per output
channel (axis 0, PopulateConvolutionQuantizationParams); the int8 kernel ignores the filter zero
point; the bias is read as int32.

16x8 (the int16 overload): no zero points are applied, the accumulator is int64, the bias is
int64 (or int16, widened), and the requantization is TFLM's 64-bit MultiplyByQuantizedMultiplier
(te_mbqm64, tinyengine_tf/kernels/int16x8.py).
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import ALIGN, EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_CONSTANT, FIX_QUANTIZE, FIX_REEXPORT
from tinyengine_tf.kernels.geometry import requant

INT32_MAX = 2**31 - 1


def _geometry(op: Op, g):
    w, x, y = g.t(op.inputs[1]), g.t(op.inputs[2]), g.t(op.outputs[0])
    return w, x, y


def footprint(op: Op, g) -> tuple[int, int]:
    """Filter (int8) + bias (int32 per channel, int64 for 16x8) + per-channel multipliers
    (int32 + int8); scratch: one accumulator (int32, int64 for 16x8) per output channel."""
    w, x, y = _geometry(op, g)
    oc = int(w.shape[0])
    acc = 8 if x.dtype == "int16" else 4
    flash = w.numel + acc * oc + (5 * oc if w.per_channel else 0)
    return flash, -(-acc * oc // ALIGN) * ALIGN


@kernel("TRANSPOSE_CONV", footprint=footprint)
def transpose_conv(op: Op, g, ctx: EmitContext) -> LayerCode:
    if len(op.inputs) not in (3, 4) or len(op.outputs) != 1 or min(op.inputs[:3]) < 0:
        raise ctx.unsupported(op, "expects (output shape, filter, input[, bias]) and one output",
                              FIX_REEXPORT)
    w, x, y = ctx.t_in(op, 1), ctx.t_in(op, 2), ctx.t_out(op)
    wide = x.dtype == "int16"
    if wide:
        if y.dtype != "int16" or w.dtype != "int8" or not all(t.quantized for t in (x, w, y)):
            raise ctx.unsupported(op, "16x8 needs quantized int16 input and output and int8 "
                                      "weights", FIX_QUANTIZE)
    else:
        ctx.require_int8(op, x, w, y)
    ctx.require_per_tensor(op, x, y)
    if not w.is_const:
        raise ctx.unsupported(op, "the filter is not a constant tensor", FIX_CONSTANT)
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise ctx.unsupported(op, "input, filter and output must be 4-D (NHWC / OHWI)",
                              FIX_REEXPORT)
    n, ih, iw, ic = (int(d) for d in x.shape)
    oc, kh, kw, icf = (int(d) for d in w.shape)
    _, oh, ow, occ = (int(d) for d in y.shape)
    if icf != ic or occ != oc or int(y.shape[0]) != n:
        raise ctx.unsupported(op, f"filter {list(w.shape)} does not match input {list(x.shape)} "
                                  f"and output {list(y.shape)}", FIX_REEXPORT)
    qd = w.quantized_dim
    if w.per_channel and (len(w.scale) != oc or not 0 <= qd < 4 or w.shape[qd] != oc):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized dimension "
                                  f"{qd}; TFLite Micro needs 1 or one per output channel ({oc})",
                              FIX_QUANTIZE)
    o = op.options
    sh, sw = int(o.get("stride_h", 0)), int(o.get("stride_w", 0))
    padding = o.get("padding", "SAME")
    if sh < 1 or sw < 1 or padding not in ("SAME", "VALID"):
        raise ctx.unsupported(op, f"strides {sh}x{sw} and padding {padding} are not a valid "
                                  "transposed convolution", "Re-export the model")
    act = o.get("fused_activation_function") or "NONE"
    try:
        lo, hi = (quant.activation_range(act, y.s, y.zp, -32768, 32767) if wide
                  else quant.activation_range(act, y.s, y.zp))
    except ValueError:
        raise ctx.unsupported(op, f"fused activation {act} is not supported", FIX_REEXPORT) from None

    def pad(size, k, s):
        conv_out = quant.conv_output_size(size, k, s, 1, padding)
        return max(0, ((conv_out - 1) * s + k - size)) // 2

    pt, pl = pad(oh, kh, sh), pad(ow, kw, sw)

    bias = np.zeros(oc, np.int64)
    if len(op.inputs) == 4 and op.inputs[3] >= 0:
        b = ctx.t_in(op, 3)
        kinds = ("int64", "int16") if wide else ("int32",)
        if not b.is_const or b.dtype not in kinds or b.numel != oc:
            raise ctx.unsupported(op, f"bias must be a constant {' or '.join(kinds)} vector of {oc} "
                                      f"(how TFLite Micro reads it), got {b.describe()}",
                                  FIX_CONSTANT)
        bias = b.data.astype(np.int64).ravel()
    taps = -(-kh // sh) * -(-kw // sw) * ic
    if wide:
        if int(np.abs(bias).max(initial=0)) + taps * 32768 * 128 >= 2**47:
            raise ctx.unsupported(op, f"{taps} taps per output can leave TFLM's 64-bit "
                                      "requantization range", "Use fewer input channels")
        return _transpose_conv_16(op, ctx, x, w, y, bias, (n, ih, iw, ic, oc, kh, kw, oh, ow),
                                  (sh, sw, pad(oh, kh, sh), pad(ow, kw, sw)), (lo, hi), g)
    if int(np.abs(bias).max(initial=0)) + taps * 255 * 128 > INT32_MAX:
        raise ctx.unsupported(op, f"{taps} taps per output with these biases can overflow the int32 "
                                  "accumulator", "Use fewer input channels")
    q, shift = quant.channel_multipliers(x.s, w.scale, y.s, oc)
    if np.any(shift > 30) or np.any(q < 0):
        raise ctx.unsupported(op, "a requantization multiplier is out of range",
                              "Requantize the model")

    W = ctx.const("w", w.data.ravel(), "int8_t")
    B = ctx.const("bias", bias, "int32_t")
    epi = requant(ctx, "acc[c]", "c", q, shift, w.per_channel, y.zp, lo, hi)
    xoff = -x.zp
    term = f"((int32_t)px[i] + {xoff})" if xoff else "(int32_t)px[i]"
    body = _loops(ctx.operand(op, 2), W, B, (n, ih, iw, ic, oc, kh, kw, oh, ow), (sh, sw, pt, pl),
                  ("int32_t", "int8_t", "int8_t"), term, f"(int8_t){epi}")
    return LayerCode(body=body, scratch_bytes=footprint(op, g)[1])


def _transpose_conv_16(op, ctx, x, w, y, bias, dims, geo, bounds, g) -> LayerCode:
    from tinyengine_tf.kernels import int16x8
    n, ih, iw, ic, oc, kh, kw, oh, ow = dims
    sh, sw, pt, pl = geo
    lo, hi = bounds
    W = ctx.const("w", w.data.ravel(), "int8_t")
    B = ctx.const("bias", bias, "int64_t")
    rq = int16x8._requant_parts(op, ctx, x, w, y, oc, True, w.per_channel)
    body = _loops(ctx.operand(op, 2), W, B, dims, geo, ("int64_t", "int16_t", "int16_t"),
                  "(int32_t)px[i]", f"(int16_t)te_clamp({rq('acc[c]', 'c')}, {lo}, {hi})")
    return LayerCode(body=body, scratch_bytes=footprint(op, g)[1], headers=("te_int16.h",))


def _loops(src, W, B, dims, geo, types, term, store) -> str:
    """The gather form both widths share: each output pixel sums, per output channel, the taps
    whose input position lands on the stride grid. types: (accumulator, input, output) C
    types; term: one input element as the accumulator sees it (px[i]); store: acc[c] -> output."""
    n, ih, iw, ic, oc, kh, kw, oh, ow = dims
    sh, sw, pt, pl = geo
    acc_t, x_t, y_t = types
    return f"""
  {acc_t} *acc = ({acc_t} *)(void *)scratch;
  for (int b = 0; b < {n}; ++b) {{
    for (int oy = 0; oy < {oh}; ++oy) {{
      for (int ox = 0; ox < {ow}; ++ox) {{
        for (int c = 0; c < {oc}; ++c) acc[c] = {B}[c];
        for (int ky = 0; ky < {kh}; ++ky) {{
          const int ty = oy + {pt} - ky;
          if (ty < 0 || ty % {sh} != 0 || ty / {sh} >= {ih}) continue;
          for (int kx = 0; kx < {kw}; ++kx) {{
            const int tx = ox + {pl} - kx;
            if (tx < 0 || tx % {sw} != 0 || tx / {sw} >= {iw}) continue;
            const {x_t} *px = {src} + ((b * {ih} + ty / {sh}) * {iw} + tx / {sw}) * {ic};
            const int8_t *pw = {W} + (ky * {kw} + kx) * {ic};
            for (int c = 0; c < {oc}; ++c, pw += {kh * kw * ic}) {{
              {acc_t} s = 0;
              for (int i = 0; i < {ic}; ++i) s += {term} * pw[i];
              acc[c] += s;
            }}
          }}
        }}
        {y_t} *po = out0 + ((b * {oh} + oy) * {ow} + ox) * {oc};
        for (int c = 0; c < {oc}; ++c) po[c] = {store};
      }}
    }}
  }}"""
