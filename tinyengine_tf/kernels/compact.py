"""convert(..., optimize="size"): shared, table-driven kernels (c/te_compact.h).

The default ("speed") emits one specialized function per layer, every size a literal and the
inner loops unrolled for that layer's shape; on VWW that is most of the code beyond the weights.
In size mode every CONV_2D with one group, every FULLY_CONNECTED (a 1x1 conv over its rows) and
every in-place DEPTHWISE_CONV_2D of the model calls one function of its family, te_c_conv /
te_c_dw, with the layer's parameters in a const descriptor (about 40 bytes a layer) next to its
arrays. The requantization is TFLM's te_mbqm, or te_dsp_rq on the DSP path where dsp.Requant
says it is exact for the layer (after the rewrites of bias, multiplier and shift the specialized
kernels make too); where the short form's value needs only a saturation to int8 (fast == 2),
te_c_dw runs 3x3 layers at stride 1 or 2 across in asm steps of two outputs (VWW's depthwise
layers: 9.3 -> 3.7 instructions per MAC, 504 B more code). The layer function that remains is a
single call, so per-layer profiles are unchanged in form.

What stays the same in both modes, so the NAS cost model and the memory plan hold for either:
the constant arrays (the same hints and sizes as the specialized kernel declares; the depthwise
weights' order inside a channel and the bias folding of conv and FC differ), each layer's
scratch bytes and whether it may run in place. A layer this module does not cover (grouped or dilated convs, batches, the int16x8
and residual forms, depthwise with a depth multiplier or a scratch layout other than one padded
plane) returns None and keeps its specialized code: size mode never refuses what speed mode takes.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Graph, Op
from tinyengine_tf.kernels import conv_residual, dsp, int16x8
from tinyengine_tf.kernels.base import EmitContext, LayerCode
from tinyengine_tf.kernels.geometry import Window

INT32_MAX = 2**31 - 1
HEADERS = ("te_compact.h", "te_dsp.h")
# Fused activations with a clamp TFLM applies (TANH and SIGN_BIT fused are left to the
# specialized kernels, which refuse them with a message).
CLAMPED = (None, "NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def emit(op: Op, g: Graph, ctx: EmitContext) -> LayerCode | None:
    """The layer as a call of a shared kernel, or None where its specialized code is kept."""
    try:
        if op.kind == "CONV_2D":
            return _conv(op, g, ctx)
        if op.kind == "DEPTHWISE_CONV_2D":
            return _depthwise(op, g, ctx)
        if op.kind == "FULLY_CONNECTED":
            return _fully_connected(op, g, ctx)
    except _Keep:
        pass
    return None


class _Keep(Exception):
    """This layer keeps its specialized code (which also validates it and explains refusals)."""


def _need(cond: bool):
    if not cond:
        raise _Keep


def _common(op: Op, g: Graph, ctx: EmitContext, oc: int):
    """(x, w, y, bias, q, shift, lo, hi) of a conv-like layer, or _Keep."""
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    _need(all(t.dtype == "int8" and t.quantized for t in (x, w, y)) and w.is_const)
    _need(len(x.shape) == len(w.shape) == len(y.shape) == 4 and x.shape[0] == 1)
    _need(not np.any(w.zero_point != 0) and len(w.scale) in (1, oc))
    _need(op.options.get("fused_activation_function") in CLAMPED)
    bias = np.zeros(oc, np.int64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = ctx.t_in(op, 2)
        _need(b.is_const and b.dtype == "int32" and b.numel == oc)
        bias = b.data.astype(np.int64).ravel()
    q, shift = quant.channel_multipliers(x.s, w.scale, y.s, oc)
    _need(bool(np.all(q >= 0) and np.all(q < 2**31) and np.all(shift <= 30)))
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)
    return x, w, y, bias, q, shift, lo, hi


def _window(op: Op, x, w_hw, y) -> Window:
    win = Window.from_op(op, x.shape[1], x.shape[2], *w_hw, y.shape[1], y.shape[2])
    _need(win.dh == win.dw == 1)
    _need(max(win.ih, win.iw, win.oh, win.ow) < 65536 and max(win.kh, win.kw, win.sh, win.sw,
                                                              win.pt, win.pl) < 256)
    return win


def _requant(bias, abs_sums, q, shift, x, y, lo, hi, per_channel):
    """(bias, q, shift, fast) as the specialized kernels rewrite them (dsp.constant_channels,
    dsp.Requant's shift clamp: equal to TFLM for every input) and whether the DSP path may use
    te_dsp_rq (a few instructions) instead of te_mbqm."""
    bias, q, shift = dsp.constant_channels(bias, abs_sums, q, shift, y.zp, lo, hi, per_channel)
    rq = dsp.Requant(q, shift, y.zp, lo, hi, dsp.acc_bounds(bias, abs_sums, x.zp))
    fast = int(rq.doubled)
    if fast and rq.finish("v") == "__ssat(v, 8)":
        fast = 2    # te_c_dw's asm steps: doubled sums, the zero point in h, then SSAT
    return bias, q, rq.shift, fast


def _tables(ctx: EmitContext, P: str, w, q, shift) -> tuple[str, str, int, str]:
    """(mult, shift, s, extra C) of the descriptor: the arrays the specialized kernels declare
    for a per-channel layer; for a per-tensor one its multiplier in a one-entry array next to
    the descriptor (not a model constant: the specialized code has it as a literal)."""
    if w.per_channel:
        return ctx.const("mult", q, "int32_t"), ctx.const("shift", shift, "int8_t"), 0, ""
    return f"{P}_q", "NULL", int(shift[0]), f"static const int32_t {P}_q[1] = {{{int(q[0])}}};\n"


def _descriptor(ctype: str, name: str, fields: list, rq: tuple) -> str:
    """A layer's const descriptor; rq: its te_rq_p (output zero point, clamp, fast)."""
    inner = ", ".join(str(f) for f in rq)
    return f"static const {ctype} {name} = {{{', '.join(str(f) for f in fields)}, {{{inner}}}}};\n"


def _conv(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    _need(not conv_residual.handles(op) and not int16x8.handles(op, g))
    w = ctx.t_in(op, 1)
    _need(len(w.shape) == 4)
    oc, kh, kw, icf = (int(v) for v in w.shape)
    x, w, y, bias, q, shift, lo, hi = _common(op, g, ctx, oc)
    ic = int(x.shape[3])
    _need(icf == ic and int(y.shape[3]) == oc and oc < 65536 and ic < 65536)
    _need(not w.per_channel or (w.quantized_dim == 0 and len(w.scale) == oc))
    # Partial sums in any order: |bias| plus the whole window at its largest.
    _need(int(np.abs(bias).max(initial=0)) + kh * kw * ic * 128 * 255 <= INT32_MAX)
    win = _window(op, x, (kh, kw), y)
    abs_sums = np.abs(w.data.astype(np.int64)).reshape(oc, -1).sum(axis=1)
    bias, q, shift, fast = _requant(bias, abs_sums, q, shift, x, y, lo, hi, w.per_channel)
    W = ctx.const("w", np.ascontiguousarray(w.data).ravel(), "int8_t")
    B = ctx.const("bias", bias, "int32_t")
    P = f"{ctx.prefix}_{ctx.layer}_p"
    M, S, sv, extra = _tables(ctx, P, w, q, shift)
    desc = extra + _descriptor("te_conv_p", P, [W, B, M, S, win.ih, win.iw, ic, win.oh, win.ow, oc,
                                        kh, kw, win.sh, win.sw, win.pt, win.pl, x.zp, sv],
                                (y.zp, lo, hi, fast))
    return LayerCode(body=f"\n  te_c_conv(&{P}, in0, out0);", headers=HEADERS, functions=(desc,))


def _depthwise(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    from tinyengine_tf.kernels import depthwise
    _need(not int16x8.handles(op, g))
    w = ctx.t_in(op, 1)
    _need(len(w.shape) == 4)
    one, kh, kw, oc = (int(v) for v in w.shape)
    x, w, y, bias, q, shift, lo, hi = _common(op, g, ctx, oc)
    lay = depthwise.layout(op, g, ctx)
    # The specialized kernel's contract (in place, one padded plane of scratch) is kept exactly,
    # so the memory plan is the same in both modes; any other contract keeps its code.
    ph, pw = lay.plane
    _need(lay.in_place and lay.mult == 1 and lay.scratch_bytes == ph * pw and one == 1)
    _need(not w.per_channel or len(w.scale) == oc)
    weights = w.data.reshape(kh * kw, oc).astype(np.int64)     # [tap][channel]
    _need(int((np.abs(bias) + 256 * np.abs(weights).sum(axis=0)).max(initial=0)) <= INT32_MAX)
    win = _window(op, x, (kh, kw), y)
    _need(ph < 65536 and pw < 65536)
    bias, q, shift, fast = _requant(bias, np.abs(weights).sum(axis=0), q, shift, x, y, lo, hi,
                                    w.per_channel)
    W = ctx.const("w", np.ascontiguousarray(weights.T).ravel(), "int8_t")
    B = ctx.const("bias_folded", bias - x.zp * weights.sum(axis=0), "int32_t")
    P = f"{ctx.prefix}_{ctx.layer}_p"
    M, S, sv, extra = _tables(ctx, P, w, q, shift)
    desc = extra + _descriptor("te_dw_p", P, [W, B, M, S, win.ih, win.iw, oc, win.oh, win.ow, ph, pw,
                                      kh, kw, win.sh, win.sw, win.pt, win.pl, x.zp, sv],
                                (y.zp, lo, hi, fast))
    return LayerCode(body=f"\n  te_c_dw(&{P}, in0, out0, scratch);", scratch_bytes=lay.scratch_bytes,
                     in_place=True, headers=HEADERS, functions=(desc,))



def _fully_connected(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    """A 1x1 conv over `rows` pixels of K channels (te_c_conv), with the FC kernel's checks."""
    from tinyengine_tf.kernels import fully_connected as fc
    _need(not int16x8.handles(op, g) and op.options.get("weights_format", 0) in (0, "DEFAULT"))
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    _need(all(t.dtype == "int8" and t.quantized for t in (x, w, y)) and w.is_const)
    _need(op.options.get("fused_activation_function") in CLAMPED)
    x, w, y, rows, k, n = fc._check(op, ctx)              # raises what the FC kernel would
    _need(rows < 65536 and k < 65536 and n < 65536 and len(w.shape) == 2)
    bias = fc._bias(op, ctx, n)
    if not w.per_channel:
        fc._check_bias_scale(op, ctx, x, w, y)
    _need(not w.per_channel or w.quantized_dim == 0)
    q, shift = quant.channel_multipliers(x.s, w.scale[:n], y.s, n if w.per_channel else 1)
    _need(bool(np.all(q >= 0) and np.all(q < 2**31) and np.all(shift <= 30)))
    # te_c_conv adds bias first, then every product: no wrap-around, unlike TFLM's int32 sum may.
    _need(int(np.abs(bias).max(initial=0)) + k * 128 * 255 <= INT32_MAX)
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)
    abs_sums = np.abs(w.data.astype(np.int64)).reshape(n, k).sum(axis=1)
    bias, q, shift, fast = _requant(bias, abs_sums, q, shift, x, y, lo, hi, w.per_channel)
    W = ctx.const("w", w.data.ravel(), "int8_t")
    B = ctx.const("bias_folded", bias, "int32_t")   # the FC kernel's array (here unfolded)
    P = f"{ctx.prefix}_{ctx.layer}_p"
    M, S, sv, extra = _tables(ctx, P, w, q, shift)
    desc = extra + _descriptor("te_conv_p", P, [W, B, M, S, 1, rows, k, 1, rows, n, 1, 1, 1, 1,
                                                0, 0, x.zp, sv], (y.zp, lo, hi, fast))
    return LayerCode(body=f"\n  te_c_conv(&{P}, in0, out0);", headers=HEADERS, functions=(desc,))

