"""Fold an explicit PAD/PADV2 into the CONV_2D / DEPTHWISE_CONV_2D that consumes it.

The conv kernels skip out-of-bounds taps, which is the same as reading the input zero point, so a
spatial pad whose fill value equals the input zero point becomes extra implicit padding and the
padded copy disappears (no code, no arena bytes).
"""
from __future__ import annotations

import numpy as np

_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _fill_value(op, g):
    if op.kind == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        v = g.t(op.inputs[2])
        if not v.is_const or v.numel != 1:
            return None
        return int(v.data.ravel()[0])
    return g.t(op.outputs[0]).zp


def fold_pad(graph):
    g = graph.copy()
    removed = set()
    for op in g.ops:
        if op.kind not in ("PAD", "PADV2") or len(op.inputs) < 2:
            continue
        x, pads, y = g.t(op.inputs[0]), g.t(op.inputs[1]), g.t(op.outputs[0])
        consumers = g.consumers(y.index)
        # TFLM reads paddings as int32 only; an int64 pad must reach the PAD kernel to be rejected.
        if (not pads.is_const or pads.dtype != "int32" or len(x.shape) != 4 or x.dtype != "int8" or y.index in g.outputs
                or len(consumers) != 1 or consumers[0].kind not in _CONVS
                or consumers[0].inputs[0] != y.index):
            continue
        p = np.asarray(pads.data).reshape(-1, 2)
        if p.shape != (4, 2) or p[0].any() or p[3].any() or (p < 0).any():
            continue
        if (x.zp != y.zp or x.s != y.s or _fill_value(op, g) != y.zp):
            continue
        conv = consumers[0]
        t, b, l, r = (int(v) for v in (p[1, 0], p[1, 1], p[2, 0], p[2, 1]))
        et, eb, el, er = conv.options.get("pad_extra", (0, 0, 0, 0))
        conv.options["pad_extra"] = (et + t, eb + b, el + l, er + r)
        conv.inputs[0] = x.index
        removed.add(id(op))
    g.ops = [op for op in g.ops if id(op) not in removed]
    return g
