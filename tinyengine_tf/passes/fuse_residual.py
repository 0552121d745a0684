"""Fuse a residual ADD into the 1x1 convolution that feeds it (the projection of an inverted
residual block).

Op by op, the projection's step holds three tensors: the block input (kept for the ADD), the
expanded map the projection reads, and the projection's output. On MobileNetV2 at 224 that step
is the peak after the first stages (28x28x32 + 28x28x192 + 28x28x32 = 200,704 B). Fused, each
output element is computed, requantized to int8 exactly as the CONV_2D would store it, added to
the skip element with the ADD's own recipe and written over that skip element: the projection's
output never exists, and the step holds 175,616 B. The arithmetic is the two ops' arithmetic in
the same order, so the result equals TFLM's bit for bit.

The fused op keeps kind CONV_2D with the skip tensor as input 3, the ADD's output as its output
and ``options["residual"] = (conv output's position in the ADD, its scale, its zero point, the
ADD's fused activation, the ADD's op index)``; ``options["in_place_input"] = 3`` tells the planner
which input the output may overwrite (absent where the skip is the conv's own input). Only 1x1 stride-1 convolutions over int8 tensors of equal
shapes are fused: output pixel p reads input pixel p alone, so writing pixel p over the skip
never disturbs a later read.
"""
from __future__ import annotations

import numpy as np

RESIDUAL = "residual"


def _fusable_conv(op, g) -> bool:
    if op.kind != "CONV_2D" or RESIDUAL in op.options or len(op.inputs) < 2:
        return False
    if min(op.inputs[:2]) < 0 or len(op.outputs) != 1 or op.outputs[0] < 0:
        return False      # malformed: the kernel refuses it with a message
    x, w, t = g.t(op.inputs[0]), g.t(op.inputs[1]), g.t(op.outputs[0])
    if not w.is_const or len(w.shape) != 4 or tuple(w.shape[1:3]) != (1, 1):
        return False
    if len(x.shape) != 4 or len(t.shape) != 4 or int(w.shape[3]) != int(x.shape[3]):
        return False
    o = op.options
    if (int(o.get("stride_h", 1)), int(o.get("stride_w", 1))) != (1, 1):
        return False
    if any(o.get("pad_extra", (0, 0, 0, 0))) or tuple(x.shape[:3]) != tuple(t.shape[:3]):
        return False
    if not (x.dtype == w.dtype == t.dtype == "int8"):
        return False
    if not (x.quantized and t.quantized) or x.per_channel or t.per_channel:
        return False
    return w.zero_point is None or not np.any(w.zero_point != 0)


def _fusable_add(add, t: int, g):
    """The skip input of an ADD that may absorb the conv producing t, or None."""
    if add.kind != "ADD" or len(add.inputs) != 2 or len(add.outputs) != 1 or min(add.inputs) < 0:
        return None
    if add.inputs[0] == add.inputs[1]:
        return None
    skip = add.inputs[1] if add.inputs[0] == t else add.inputs[0]
    s, y, tt = g.t(skip), g.t(add.outputs[0]), g.t(t)
    if s.is_const or not (s.dtype == y.dtype == "int8") or not (s.quantized and y.quantized):
        return None
    if s.per_channel or y.per_channel:
        return None
    if not (tuple(s.shape) == tuple(y.shape) == tuple(tt.shape)):
        return None
    return skip


def fuse_residual(graph, copy: bool = True):
    """copy=False rewrites graph itself (for a caller that owns a freshly built one)."""
    g = graph.copy() if copy else graph
    position = {}
    for k, op in enumerate(g.ops):
        for out in op.outputs:
            position[out] = k
    consumers: dict = {}
    for op in g.ops:
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(op)
    removed = set()
    for k, op in enumerate(g.ops):
        if id(op) in removed or not _fusable_conv(op, g):
            continue
        t = op.outputs[0]
        users = consumers.get(t, [])
        if t in g.outputs or len(users) != 1:
            continue
        add = users[0]
        skip = _fusable_add(add, t, g)
        # The skip must exist when the conv runs (the fused op runs at the conv's position).
        if skip is None or position.get(skip, -1) >= k:
            continue
        mid = g.t(t)
        order = add.inputs.index(t)
        act = add.options.get("fused_activation_function") or "NONE"
        inputs = list(op.inputs) + [-1] * (3 - len(op.inputs))
        op.inputs = inputs[:3] + [skip]
        op.outputs = [add.outputs[0]]
        op.options[RESIDUAL] = (order, float(mid.s), int(mid.zp), act, int(add.index))
        # x + conv(x): the conv still reads pixel p's input after writing some of its outputs,
        # so the sum gets its own buffer (the conv's output still never exists).
        if skip != op.inputs[0]:
            op.options["in_place_input"] = 3
        position[add.outputs[0]] = k
        removed.add(id(add))
    g.ops = [op for op in g.ops if id(op) not in removed]
    return g
