"""CONV_2D 1x1 with a fused residual ADD (passes/fuse_residual.py): y = ADD(conv(x), skip).

The conv part is the CONV_2D kernel itself (kernels/conv.py, portable and DSP forms), emitted as a
function over a chunk of pixels that writes the conv's int8 values, exactly as CONV_2D stores
them, into a small scratch buffer; the layer runs it chunk after chunk, each chunk followed by
TFLM's int8 ADD (kernels/elementwise.py) of the scratch and the skip into the output. The output
may be the skip buffer itself: element i of the chunk is written once, right after element i of
the skip is read. (The conv kernels recompute the overlap of their last tile; inside the scratch
that is harmless, which is why the sum is not formed in their stores.)

The chunk is the largest whole number of pixels dividing the tensor whose conv values fit in
CHUNK_BYTES, so the scratch stays far below the projection output it replaces.

On the DSP path the ADD's three TFLM requantizations are each one SMMLAR (dsp.Requant's
te_dsp_rq: exact for |acc| < 2^30 and right shifts of 1-31, which every input's (x - zp) * 2^20
and their sum meet) instead of a 64-bit multiply and rounding: MobileNetV2's folded ADDs from
some 36 instructions per element to 20. (The ADD kernel's 256-entry tables would take 2 KiB of
stack beside the conv part's, and be rebuilt for every chunk.)
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tinyengine_tf.errors import UnsupportedOpError
from tinyengine_tf.ir import Graph, Op, Tensor
from tinyengine_tf.kernels.base import ALIGN, FIX_QUANTIZE, EmitContext, LayerCode
from tinyengine_tf import quant
from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.elementwise import LEFT_SHIFT, add_sub_params, add_sub_recipe
from tinyengine_tf.passes.fuse_residual import RESIDUAL

CHUNK_BYTES = 512
CHUNK_OPTION = "te_chunk_pixels"


def handles(op: Op) -> bool:
    return RESIDUAL in op.options


def chunk_pixels(op: Op, g) -> int:
    """Pixels per conv call: the largest divisor of the pixel count whose outputs fit, or the
    smaller one CHUNK_OPTION names (band_plan.py sets it where the scratch is on the peak)."""
    x, w = g.t(op.inputs[0]), g.t(op.inputs[1])
    pixels = int(np.prod(x.shape[:3]))
    oc = int(w.shape[0])
    forced = op.options.get(CHUNK_OPTION)
    if forced:
        if int(forced) < 1 or pixels % int(forced):
            divisors = [d for d in range(1, pixels + 1) if pixels % d == 0]
            raise UnsupportedOpError(f"{op.label()}: a chunk of {forced} pixels does not divide its "
                                     f"{pixels} pixels. Fix: set {CHUNK_OPTION} to one of {divisors} "
                                     "or leave it out", op.kind, op.index)
        return int(forced)
    best = 1
    for d in range(1, pixels + 1):
        if d * oc > CHUNK_BYTES:
            break
        if pixels % d == 0:
            best = d
    return best


def scratch_bytes(op: Op, g) -> int:
    n = chunk_pixels(op, g) * int(g.t(op.inputs[1]).shape[0])
    return (n + ALIGN - 1) // ALIGN * ALIGN


def chunk_choices(op: Op, g) -> list:
    """(chunk pixels, scratch bytes) of the chunks smaller than the default, smallest first."""
    pixels = int(np.prod(g.t(op.inputs[0]).shape[:3]))
    oc = int(g.t(op.inputs[1]).shape[0])
    default = chunk_pixels(op, g)
    return [(d, (d * oc + ALIGN - 1) // ALIGN * ALIGN) for d in range(1, default) if pixels % d == 0]


def _conv_part(op: Op, g, chunk: int) -> tuple[Op, Graph]:
    """The conv over one chunk of pixels as a graph of its own: input (1, 1, chunk, ic), output
    the conv's own (pre-ADD) quantization."""
    _, mid_s, mid_zp, _, _ = op.options[RESIDUAL]
    x, w = g.t(op.inputs[0]), g.t(op.inputs[1])
    oc = int(w.shape[0])
    xs = Tensor.__new__(Tensor)
    xs.__dict__.update(x.__dict__)
    xs.shape = (1, 1, chunk, int(x.shape[3]))
    out = max(g.tensors) + 1
    mid = Tensor(out, "conv_out", (1, 1, chunk, oc), "int8", np.array([mid_s], np.float32),
                 np.array([mid_zp], np.int64))
    tensors = {x.index: xs, w.index: w, out: mid}
    if op.inputs[2] >= 0:
        tensors[op.inputs[2]] = g.t(op.inputs[2])
    options = {k: v for k, v in op.options.items() if k not in (RESIDUAL, "in_place_input")}
    conv = Op(op.index, "CONV_2D", list(op.inputs[:3]), [out], options)
    return conv, Graph(tensors, [conv], [x.index], [out], name=g.name)


def _dsp_add(x1, x2, y, act: str):
    """combine(e1, e2) of TFLM's int8 ADD as te_dsp_rq requantizations of the int8 elements
    e1, e2 (C expressions), or None where some requantization has no such form."""
    lo, hi = quant.activation_range(act, y.s, y.zp)
    unit = 1 << LEFT_SHIFT
    ins, reach = [], 1
    for t, m in zip((x1, x2), add_sub_params(x1.s, x2.s, y.s, LEFT_SHIFT)[:2]):
        q, shift = quant.quantize_multiplier(m)
        exact = shift == 0 and q % (1 << (31 - LEFT_SHIFT)) == 0
        if not (1 <= -shift <= 31 or exact):
            return None
        ins.append((q, -shift, int(t.zp)))
        reach += int(quant.mbqm(255 * unit, q, shift)) + 1
    qo, so = quant.quantize_multiplier(add_sub_params(x1.s, x2.s, y.s, LEFT_SHIFT)[2])
    rq = dsp.Requant([qo], [so], y.zp, lo, hi, [reach])
    if not rq.ok or rq.wide:
        return None

    def scaled(e, q, r, zp):
        x = f"((int32_t){e} - {zp})" if zp > 0 else (f"((int32_t){e} + {-zp})" if zp else f"(int32_t){e}")
        if r == 0:
            # (x - zp) * 2^20 * q is a multiple of 2^31 (the larger input's multiplier is
            # 1/2 = 2^30 * 2^-31): TFLM's rounding has nothing to round.
            return f"({x} * {q >> (31 - LEFT_SHIFT)})"
        return f"te_dsp_rq((int32_t)((uint32_t){x} << {LEFT_SHIFT}), {q}, {1 << (r - 1)}, {r})"

    def combine(e1, e2):
        s = f"({scaled(e1, *ins[0])} + {scaled(e2, *ins[1])})"
        return rq.expr(s, "0", False)
    return combine


def emit(op: Op, g, ctx: EmitContext) -> LayerCode:
    from tinyengine_tf.kernels.conv import conv_2d

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
    if tuple(skip.shape) != tuple(y.shape):
        raise ctx.unsupported(op, f"the skip input {skip.describe()} does not match the output "
                                  f"{list(y.shape)}", FIX_QUANTIZE)
    chunk = chunk_pixels(op, g)
    conv, sub = _conv_part(op, g, chunk)
    saved = ctx.graph
    ctx.graph = sub
    try:
        code = conv_2d(conv, sub, ctx)
    finally:
        ctx.graph = saved
    # Named by its chunk too: patch variants of one layer share the weights, and their chunk
    # functions are the same text exactly when the chunks are equal.
    stem = f"{ctx.prefix}_{ctx.layer}" if ctx.layer else ctx.prefix
    fname = f"{stem}_conv{chunk}"
    function = (f"/* the 1x1 conv of {op.label()} over {chunk} pixels, before its fused ADD */\n"
                f"static TE_LAYER void {fname}(const int8_t *in0, int8_t *out0) {{{code.body}\n}}\n")

    # The ADD, with the conv's output as the input it was in the model.
    mid = SimpleNamespace(s=mid_s, zp=mid_zp)
    scale_1, scale_2, combine = add_sub_recipe(op, ctx, *((mid, skip) if order == 0 else (skip, mid)),
                                               y, add_act)
    a, b = ("t_[i]", "sp[i]") if order == 0 else ("sp[i]", "t_[i]")
    pixels = n * ih * iw
    add = f"for (int i = 0; i < {chunk * oc}; ++i) yp[i] = (int8_t)({combine(scale_1(a), scale_2(b))});"
    fast = _dsp_add(*((mid, skip) if order == 0 else (skip, mid)), y, add_act)
    if fast is not None:
        add = f"""
#if TE_DSP
    for (int i = 0; i < {chunk * oc}; ++i) yp[i] = (int8_t){fast(a, b)};
#else
    {add}
#endif"""
    body = f"""
  int8_t *t_ = scratch;
  for (int k = 0; k < {pixels // chunk}; ++k) {{
    {fname}(in0 + k * {chunk * ic}, t_);
    const int8_t *sp = in3 + k * {chunk * oc};
    int8_t *yp = out0 + k * {chunk * oc};
    {add}
  }}"""
    in_place = op.options.get("in_place_input") == 3
    return LayerCode(body=body, scratch_bytes=scratch_bytes(op, g), in_place=in_place,
                     headers=tuple(sorted(set(code.headers) | ({"te_dsp.h"} if fast else set()))),
                     functions=code.functions + (function,))
