"""Receptive fields: which input rectangle an output rectangle of a spatial op reads.

A rectangle is (y0, y1, x0, x1), half-open, in the coordinates of the whole tensor. Propagating
one back through a chain of ops (``propagate``) gives, for every tensor, the rectangle a patch of
the last tensor needs; where several consumers read one tensor, it is the bounding box of what
they need. Windows that reach past the image border are clipped to it, and the clipped part
becomes explicit padding of the patch's op (``WindowSpan.pad_before``/``pad_after``): patches
are padded only where the whole image is.

Everything here is geometry on shapes and options; no kernel or code is involved.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinyengine_tf import quant
from tinyengine_tf.errors import UnsupportedOpError

WINDOW_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D")
# Each output element reads the input elements at the same position (and constants broadcast
# over height and width): a rectangle maps to itself.
POINTWISE_OPS = ("ADD", "SUB", "MUL", "RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH",
                 "HARD_SWISH", "QUANTIZE", "LEAKY_RELU")
SPATIAL_OPS = WINDOW_OPS + POINTWISE_OPS


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a sliding window over the whole tensor."""
    size: int     # input length
    k: int
    s: int
    d: int
    p: int        # implicit padding before the input (SAME and folded PAD together)
    out: int


@dataclass(frozen=True)
class WindowSpan:
    lo: int          # first input row read, clipped to the tensor
    hi: int          # one past the last, clipped
    pad_before: int  # rows of the window before row 0 (image border padding)
    pad_after: int


def window_axes(op, g) -> tuple[Axis, Axis]:
    """(rows, columns) geometry of a conv, depthwise or pooling op over its whole input."""
    x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
    o = op.options
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = g.t(op.inputs[1])
        kh, kw = int(w.shape[1]), int(w.shape[2])
    else:
        kh, kw = int(o.get("filter_height", 1)), int(o.get("filter_width", 1))
    sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
    dh, dw = int(o.get("dilation_h_factor", 1)), int(o.get("dilation_w_factor", 1))
    et, eb, el, er = o.get("pad_extra", (0, 0, 0, 0))
    ih, iw, oh, ow = int(x.shape[1]), int(x.shape[2]), int(y.shape[1]), int(y.shape[2])
    pt, pl = et, el
    if o.get("padding", "VALID") == "SAME":
        pt += quant.same_padding(ih + et + eb, kh, sh, dh, oh)
        pl += quant.same_padding(iw + el + er, kw, sw, dw, ow)
    return Axis(ih, kh, sh, dh, pt, oh), Axis(iw, kw, sw, dw, pl, ow)


def input_span(a: Axis, lo: int, hi: int) -> WindowSpan:
    """The input rows output rows [lo, hi) read, clipped, with the border padding they need."""
    first = lo * a.s - a.p
    last = (hi - 1) * a.s - a.p + (a.k - 1) * a.d + 1
    clo, chi = max(first, 0), min(last, a.size)
    return WindowSpan(clo, chi, clo - first, last - chi)


def union(r1, r2):
    if r1 is None:
        return r2
    return (min(r1[0], r2[0]), max(r1[1], r2[1]), min(r1[2], r2[2]), max(r1[3], r2[3]))


def hw(t) -> tuple[int, int]:
    return int(t.shape[1]), int(t.shape[2])


def needs(op, g, rect) -> dict:
    """tensor index -> rectangle op's non-constant inputs must hold for output rectangle rect."""
    y0, y1, x0, x1 = rect
    if op.kind in WINDOW_OPS:
        ay, ax = window_axes(op, g)
        sy, sx = input_span(ay, y0, y1), input_span(ax, x0, x1)
        return {op.inputs[0]: (sy.lo, sy.hi, sx.lo, sx.hi), **_skip(op, rect)}
    out = {}
    for i in op.inputs:
        if i >= 0 and not g.t(i).is_const:
            out[i] = rect
    return out


def _skip(op, rect) -> dict:
    """A conv with a fused residual ADD (passes/fuse_residual.py) reads its skip input at the
    output's own positions."""
    return {op.inputs[3]: rect} if len(op.inputs) > 3 and op.options.get("residual") else {}


def check_spatial(op, g):
    """Raise UnsupportedOpError unless op maps rectangles of its 4-D output to its inputs'."""
    y = g.t(op.outputs[0])
    if op.kind not in SPATIAL_OPS:
        raise UnsupportedOpError(f"{op.label()} does not preserve image positions, so a patch "
                                 "cannot be run through it", op.kind, op.index)
    if len(op.outputs) != 1 or len(y.shape) != 4 or y.shape[0] != 1:
        raise UnsupportedOpError(f"{op.label()}: patches need one 4-D output with batch 1, it has "
                                 f"{[list(g.t(o).shape) for o in op.outputs]}", op.kind, op.index)
    for i in list(op.inputs) + list(op.outputs):
        if i >= 0 and not g.t(i).is_const and g.t(i).dtype != "int8":
            raise UnsupportedOpError(f"{op.label()}: {g.t(i).describe()} is {g.t(i).dtype}; patches "
                                     "run int8 tensors only", op.kind, op.index)
    if op.kind in WINDOW_OPS:
        return
    for i in op.inputs:
        if i < 0:
            continue
        t = g.t(i)
        if t.is_const:
            shape = (1,) * (4 - len(t.shape)) + tuple(t.shape)
            if len(t.shape) > 4 or shape[1] != 1 or shape[2] != 1:
                raise UnsupportedOpError(f"{op.label()}: the constant {t.describe()} varies over "
                                         "height or width, so a patch would need its own slice of "
                                         "it", op.kind, op.index)
        elif tuple(t.shape) != tuple(y.shape):
            raise UnsupportedOpError(f"{op.label()}: input {t.describe()} is broadcast to "
                                     f"{list(y.shape)}; patches need equal shapes", op.kind, op.index)


def propagate(g, ops, out_tensor: int, rect) -> dict:
    """tensor index -> rectangle it must hold so that ops compute rect of out_tensor.

    ops in execution order; every tensor they read that is not produced among them (the
    prefix's inputs) gets the rectangle too.
    """
    regions = {out_tensor: rect}
    for op in reversed(ops):
        r = regions.get(op.outputs[0])
        if r is None:
            continue
        for t, need in needs(op, g, r).items():
            regions[t] = union(regions.get(t), need)
    return regions


def axis_needs(op, g, span, axis: int, axes=None) -> tuple[dict, tuple]:
    """One axis of ``needs``: (tensor -> (lo, hi) along axis, (pad_before, pad_after) of a window
    op's patch, else None). axes: optional {id(op): window_axes(op, g)} memo."""
    if op.kind in WINDOW_OPS:
        a = (axes[id(op)] if axes is not None else window_axes(op, g))[axis]
        s = input_span(a, span[0], span[1])
        return {op.inputs[0]: (s.lo, s.hi), **_skip(op, span)}, (s.pad_before, s.pad_after)
    return {i: span for i in op.inputs if i >= 0 and not g.t(i).is_const}, None


def propagate_axis(g, ops, out_tensor: int, axis: int, lo: int, hi: int, axes=None) -> dict:
    """``propagate`` along one axis (0: rows, 1: columns): rectangles are products of these."""
    spans = {out_tensor: (lo, hi)}
    for op in reversed(ops):
        r = spans.get(op.outputs[0])
        if r is None:
            continue
        for t, n in axis_needs(op, g, r, axis, axes)[0].items():
            old = spans.get(t)
            spans[t] = n if old is None else (min(old[0], n[0]), max(old[1], n[1]))
    return spans


def axis_key(g, ops, spans: dict, axis: int, axes=None) -> tuple:
    """Everything a patch's graph depends on along one axis, relative to where the band lies:
    bands with equal keys give patches with equal shapes, border padding and crops."""
    key = []
    for op in ops:
        r = spans.get(op.outputs[0])
        if r is None:
            key.append(None)
            continue
        reads, pads = axis_needs(op, g, r, axis, axes)
        key.append((r[1] - r[0], pads,
                    tuple((w[0] - spans[t][0], w[1] - w[0]) for t, w in reads.items())))
    return tuple(key)


def grid(size: int, parts: int) -> list:
    """[lo, hi) bounds that cut 0..size into `parts` near-equal pieces, larger ones first."""
    base, extra = divmod(size, parts)
    bounds, lo = [], 0
    for k in range(parts):
        hi = lo + base + (1 if k < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds
