"""CONV_2D 1x1 with a fused residual ADD (passes/fuse_residual.py): y = ADD(conv(x), skip).

Each output element is the conv's int8 value, exactly as CONV_2D stores it (TFLM's per-channel
multiplier, output zero point and fused activation), added to the skip element with TFLM's int8
ADD recipe (kernels/elementwise.py). The output may be the skip buffer itself: element (p, o) of
the output is written once, right after element (p, o) of the skip is read, so no tile may be
recomputed here (the CONV_2D kernels recompute a tile's overlap; this one never does).

Portable form: per pixel and output channel, a dot product over the input channels of
w * (x + 128) from a folded bias (as the conv's dot form). DSP form (``#if TE_DSP``, input
channels a multiple of 4): a pixel's x + 128 is expanded once into halfword pairs on the stack and
every pair of output channels reads it with SMLAD against its filters read in place, two MACs
per instruction. Weights, bias and multipliers are the arrays a CONV_2D of the same shape would
store, so Flash is conv_footprint's.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.base import FIX_QUANTIZE, EmitContext, LayerCode
from tinyengine_tf.kernels.elementwise import add_sub_recipe
from tinyengine_tf.passes.fuse_residual import RESIDUAL

INT32_MAX = 2**31 - 1
DSP_STACK = 2048     # bytes the expanded pixel may take on the stack


def handles(op: Op) -> bool:
    return RESIDUAL in op.options


def emit(op: Op, g, ctx: EmitContext) -> LayerCode:
    order, mid_s, mid_zp, add_act, add_index = op.options[RESIDUAL]
    x, w, y, skip = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op), ctx.t_in(op, 3)
    ctx.require_int8(op, x, w, y, skip)
    ctx.require_per_tensor(op, x, y, skip)
    n, ih, iw, ic = (int(v) for v in x.shape)
    oc = int(w.shape[0])
    if tuple(w.shape) != (oc, 1, 1, ic) or tuple(y.shape) != (n, ih, iw, oc):
        raise ctx.unsupported(op, f"the fused residual conv expects a 1x1 filter over {ic} channels "
                                  f"and an output of {[n, ih, iw, oc]}, got {list(w.shape)} and "
                                  f"{list(y.shape)}")
    if w.per_channel and len(w.scale) != oc:
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales for {oc} output channels",
                              FIX_QUANTIZE)
    bias = np.zeros(oc, np.int64)
    if op.inputs[2] >= 0:
        b = ctx.t_in(op, 2)
        if not b.is_const or b.dtype != "int32" or b.numel != oc:
            raise ctx.unsupported(op, f"bias must be a constant int32 vector of {oc}, got {b.describe()}")
        bias = b.data.astype(np.int64).ravel()
    if int(np.abs(bias).max(initial=0)) + 2 * ic * 128 * 255 > INT32_MAX:
        raise ctx.unsupported(op, f"a 1x1x{ic} window with these biases can overflow the int32 "
                                  "accumulator", "Use fewer input channels per output")

    # The conv's requantization to its own (now internal) output tensor.
    q, shift = quant.channel_multipliers(x.s, w.scale, mid_s, oc)
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), mid_s, mid_zp)
    wdata = w.data.astype(np.int64).reshape(oc, ic)
    abs_sums = np.abs(wdata).sum(axis=1)
    bias, q, shift = dsp.constant_channels(bias, abs_sums, q, shift, mid_zp, lo, hi, w.per_channel)
    if np.any(q < 0) or np.any(q >= 2**31) or np.any(shift > 30):
        raise ctx.unsupported(op, "a requantization multiplier is out of range")
    rq = dsp.Requant(q, shift, mid_zp, lo, hi, dsp.acc_bounds(bias, abs_sums, x.zp))
    shift = rq.shift
    folded = bias - (x.zp + 128) * wdata.sum(axis=1)
    W = ctx.const("w", np.ascontiguousarray(w.data).ravel(), "int8_t")
    B = ctx.const("bias", folded, "int32_t")
    M = S = None
    if w.per_channel:
        M = ctx.const("mult", q, "int32_t")
        S = ctx.const("shift", shift, "int8_t")

    # The ADD, with the conv's output as the input it was in the model.
    mid = SimpleNamespace(s=mid_s, zp=mid_zp)
    ops_in = (mid, skip) if order == 0 else (skip, mid)
    scale_1, scale_2, combine = add_sub_recipe(op, ctx, *ops_in, y, add_act)
    scale_mid, scale_skip = (scale_1, scale_2) if order == 0 else (scale_2, scale_1)

    def add(v: str, s: str) -> str:
        a, b = (scale_mid(v), scale_skip(s)) if order == 0 else (scale_skip(s), scale_mid(v))
        return f"(int8_t)({combine(a, b)})"

    left = bool(np.any(shift > 0))
    fn = "te_conv_rq_any" if left else "te_conv_rq"

    def conv_value(acc: str, o: str) -> str:
        if M is not None:
            m, sh = f"{M}[{o}]", (f"{S}[{o}]" if left else f"-{S}[{o}]")
        else:
            m, sh = str(int(q[0])), str(int(shift[0]) if left else -int(shift[0]))
        return f"te_clamp({fn}({acc}, {m}, {sh}) + {mid_zp}, {lo}, {hi})"

    pixels = n * ih * iw
    portable = f"""
  for (int p = 0; p < {pixels}; ++p) {{
    const int8_t *xp = in0 + p * {ic};
    const int8_t *sp = in3 + p * {oc};
    int8_t *yp = out0 + p * {oc};
    for (int o = 0; o < {oc}; ++o) {{
      const int8_t *wr = {W} + o * {ic};
      int32_t acc = {B}[o];
      for (int c = 0; c < {ic}; ++c) acc += (int32_t)wr[c] * ((int32_t)xp[c] + 128);
      const int32_t v = {conv_value("acc", "o")};
      const int32_t s = sp[o];
      yp[o] = {add("v", "s")};
    }}
  }}"""
    body = portable
    fast = _dsp_body(ic, oc, pixels, W, B, M, S, rq, conv_value, add)
    if fast is not None:
        body = f"\n#if TE_DSP{fast}\n#else{portable}\n#endif"
    in_place = op.options.get("in_place_input") == 3
    return LayerCode(body=body, in_place=in_place, headers=("te_conv.h", "te_dsp.h"))


def _dsp_body(ic, oc, pixels, W, B, M, S, rq, conv_value, add) -> str | None:
    if ic % 4 or 2 * ic > DSP_STACK:
        return None
    words = ic // 4
    per_channel = M is not None

    def value(acc: str, tag: str, o: str) -> str:
        if rq.ok:
            return f"{rq.expr(acc, tag, per_channel)}"
        return conv_value(acc, o)

    def setup(tag: str, o: str) -> str:
        return rq.setup(tag, o, M, S) if rq.ok else ""

    def store(acc: str, tag: str, o: str) -> str:
        return f"""{{
          const int32_t v = {value(acc, tag, o)};
          const int32_t s = sp[{o}];
          yp[{o}] = {add("v", "s")};
        }}"""

    pairs = oc // 2
    tail = ""
    if oc % 2:
        o = oc - 1
        tail = f"""
      {{
        const int8_t *w0 = {W} + {o * ic};
        int32_t a0 = {B}[{o}];
        for (int s_ = 0; s_ < {words}; ++s_) {{
          const uint32_t u0 = te_ld32(w0 + 4 * s_);
          a0 = __smlad(te_sx02(u0), xx[2 * s_], a0);
          a0 = __smlad(te_sx13(u0), xx[2 * s_ + 1], a0);
        }}
        {setup("0", str(o))}
        {store("a0", "0", str(o))}
      }}"""
    return f"""
  int32_t xx[{2 * words}];
  for (int p = 0; p < {pixels}; ++p) {{
    const int8_t *xp = in0 + p * {ic};
    const int8_t *sp = in3 + p * {oc};
    int8_t *yp = out0 + p * {oc};
    for (int s_ = 0; s_ < {words}; ++s_) {{
      const uint32_t v = te_ld32(xp + 4 * s_) ^ 0x80808080u;
      xx[2 * s_] = (int32_t)__uxtb16(v);
      xx[2 * s_ + 1] = te_ux13(v);
    }}
    for (int i_o = 0; i_o < {pairs}; ++i_o) {{
      const int o = 2 * i_o;
      const int8_t *w0 = {W} + o * {ic};
      const int8_t *w1 = w0 + {ic};
      int32_t a0 = {B}[o], a1 = {B}[o + 1];
      for (int s_ = 0; s_ < {words}; ++s_) {{
        const uint32_t u0 = te_ld32(w0 + 4 * s_);
        const uint32_t u1 = te_ld32(w1 + 4 * s_);
        const int32_t e0 = xx[2 * s_], e1 = xx[2 * s_ + 1];
        a0 = __smlad(te_sx02(u0), e0, a0);
        a0 = __smlad(te_sx13(u0), e1, a0);
        a1 = __smlad(te_sx02(u1), e0, a1);
        a1 = __smlad(te_sx13(u1), e1, a1);
      }}
      {setup("0", "o")} {setup("1", "o + 1")}
      {store("a0", "0", "o")}
      {store("a1", "1", "o + 1")}
    }}{tail}
  }}"""
