"""CONV_2D: any kernel size, stride, dilation and group count; SAME, VALID or folded explicit pad.

Specialization: all sizes are literals; taps that fall outside the input are skipped (TFLM's
zero-point padding) only on border pixels, while interior pixels run a branch-free loop whose
input zero point has been folded into the bias at generation time.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.geometry import Window, requant
from tinyengine_tf.ir import Op


@kernel("CONV_2D")
def conv_2d(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    ctx.require_int8(op, x, w, y)
    ctx.require_per_tensor(op, x, y)
    if not w.is_const:
        raise ctx.unsupported(op, "the filter is not a constant tensor")
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise ctx.unsupported(op, "input, filter and output must be 4-D (NHWC / OHWI)")
    n, ih, iw, ic = x.shape
    oc, kh, kw, icf = w.shape
    if ic % icf or oc % (ic // icf) or y.shape[3] != oc or y.shape[0] != n:
        raise ctx.unsupported(op, f"filter {list(w.shape)} does not match input {list(x.shape)} "
                                  f"and output {list(y.shape)}")
    if np.any(w.zero_point != 0):
        raise ctx.unsupported(op, "filter zero points must be 0 (symmetric int8 weights)")
    if w.per_channel and (w.quantized_dim != 0 or len(w.scale) != oc):
        raise ctx.unsupported(op, "per-channel filter scales must run along the output channel")
    groups = ic // icf
    win = Window.from_op(op, ih, iw, kh, kw, y.shape[1], y.shape[2])

    bias = np.zeros(oc, np.int64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = ctx.t_in(op, 2)
        if not b.is_const or b.dtype != "int32" or b.numel != oc:
            raise ctx.unsupported(op, f"bias must be a constant int32 vector of {oc}, got {b.describe()}")
        bias = b.data.astype(np.int64).ravel()

    q, shift = quant.channel_multipliers(x.s, w.scale, y.s, oc)
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)
    weights = w.data.reshape(oc, kh * kw * icf).astype(np.int64)
    # Interior pixels use bias + in_offset * sum(w), so their inner loop is a plain dot product.
    in_off = -x.zp
    folded = bias + in_off * weights.sum(axis=1)

    W = ctx.const("w", w.data.ravel(), "int8_t")
    B = ctx.const("bias", bias, "int32_t")
    BF = ctx.const("bias_folded", folded, "int32_t")
    epilogue = requant(ctx, "acc", "oc", q, shift, w.per_channel, y.zp, lo, hi)
    ocpg = oc // groups
    g_off = f"(oc / {ocpg}) * {icf}" if groups > 1 else "0"

    def pixel(interior: bool) -> str:
        if interior:
            taps = f"""
        for (int ky = 0; ky < {kh}; ++ky) {{
          const int8_t *xr = in0 + ((b * {ih} + iy0 + ky * {win.dh}) * {iw} + ix0) * {ic} + {g_off};
          const int8_t *wr = w + ky * {kw * icf};
          for (int kx = 0; kx < {kw}; ++kx) {{
            const int8_t *xp = xr + kx * {win.dw * ic};
            const int8_t *wp = wr + kx * {icf};
            for (int c = 0; c < {icf}; ++c) acc += (int32_t)wp[c] * (int32_t)xp[c];
          }}
        }}"""
            init = f"{BF}[oc]"
        else:
            taps = f"""
        for (int ky = 0; ky < {kh}; ++ky) {{
          const int iy = iy0 + ky * {win.dh};
          if (iy < 0 || iy >= {ih}) continue;
          for (int kx = 0; kx < {kw}; ++kx) {{
            const int ix = ix0 + kx * {win.dw};
            if (ix < 0 || ix >= {iw}) continue;
            const int8_t *xp = in0 + ((b * {ih} + iy) * {iw} + ix) * {ic} + {g_off};
            const int8_t *wp = w + (ky * {kw} + kx) * {icf};
            for (int c = 0; c < {icf}; ++c) acc += (int32_t)wp[c] * ((int32_t)xp[c] + {in_off});
          }}
        }}"""
            init = f"{B}[oc]"
        return f"""
      int8_t *o = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {oc};
      for (int oc = 0; oc < {oc}; ++oc) {{
        const int8_t *w = {W} + oc * {kh * kw * icf};
        int32_t acc = {init};{taps}
        o[oc] = (int8_t){epilogue};
      }}"""

    body = win.loops(n, pixel(True), pixel(False))
    return LayerCode(body=body)
