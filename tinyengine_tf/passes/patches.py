"""Run the first ops of a graph patch by patch (MCUNetV2's patch-based inference).

``patch_prefix(graph, split, rows, cols)`` replaces every op up to and including the op with
source index ``split`` by one PATCHED_PREFIX op. Its output, the split tensor, is cut into a
rows x cols grid; for each patch, ``regions.propagate`` gives the rectangle of every tensor in
the prefix the patch needs, and the patch gets a graph of its own in which every tensor has that
rectangle's shape, every window op is VALID with explicit padding equal to the part of its window
beyond the image border (zero inside the image: the halo comes from the neighbours' pixels, which
are recomputed), and a SLICE crops a tensor where one consumer needs less of it than another.
Those graphs are ordinary graphs: the kernels emit them and the planner places them exactly as
any other model's, so the arithmetic is TFLM's and the code is the same kernels' code.

The prefix's large tensors then never exist whole: at any time the arena holds the prefix's
inputs, the split tensor being filled, and one patch's buffers. The cost is the halo, computed
once per patch that needs it (``PatchedPrefix.extra_macs``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinyengine_tf import regions
from tinyengine_tf.errors import TinyEngineError, UnsupportedOpError
from tinyengine_tf.ir import Graph, Op, Tensor

KIND = "PATCHED_PREFIX"


@dataclass
class Patch:
    rect: tuple          # (y0, y1, x0, x1) of the split tensor this patch writes
    reads: dict          # prefix input tensor -> rectangle of it the patch reads
    graph: Graph         # the patch's own graph: region shapes, border padding only
    key: tuple           # patches with equal keys have identical code
    macs: int


@dataclass
class PatchedPrefix:
    split: int           # source index of the last op run patch by patch
    rows: int
    cols: int
    inputs: list         # tensors the prefix reads from outside (the model input)
    output: int          # the split tensor
    ops: list            # the prefix's ops as they were
    patches: list
    plain_macs: int      # MACs of the prefix run op by op
    variants: dict = field(default_factory=dict)   # key -> first patch with it

    @property
    def macs(self) -> int:
        return sum(p.macs for p in self.patches)

    @property
    def extra_macs(self) -> int:
        return self.macs - self.plain_macs


def _op_macs(op, g) -> int:
    from tinyengine_tf.profile import op_macs
    return op_macs(op, g)


def prefix_ops(graph: Graph, split: int) -> tuple[list, int]:
    """(the ops up to and including source op #split, the split tensor), or a refusal that says
    which split points would work."""
    pos = next((k for k, op in enumerate(graph.ops) if op.index == split), None)
    valid = valid_splits(graph)
    hint = (f"Splits that work on this model: op #{valid[0]} to op #{valid[-1]} ({len(valid)} "
            "points; patches=\"auto\" picks one)" if valid else
            "No split works on this model: its first op does not preserve image positions")
    if pos is None:
        raise TinyEngineError(f"patches: there is no op #{split} in the compiled graph (it may have "
                              f"been folded away). {hint}")
    ops = graph.ops[:pos + 1]
    for op in ops:
        try:
            regions.check_spatial(op, graph)
        except UnsupportedOpError as e:
            raise UnsupportedOpError(f"patches: cannot split at op #{split}: {e}. {hint}",
                                     op.kind, op.index) from None
    out = ops[-1].outputs[0]
    produced = {t for op in ops for t in op.outputs}
    later = {t for op in graph.ops[pos + 1:] for t in op.inputs} | set(graph.outputs)
    leaks = sorted((produced - {out}) & later)
    if leaks:
        t = graph.t(leaks[0])
        raise TinyEngineError(f"patches: cannot split at op #{split}: {t.describe()}, computed before "
                              "the split, is read after it, so it would have to exist whole. "
                              f"{hint}")
    for op in ops:
        for i in op.inputs:
            if i >= 0 and not graph.t(i).is_const and i not in produced and i not in graph.inputs:
                raise TinyEngineError(f"patches: {op.label()} reads {graph.t(i).describe()}, which "
                                      "is neither a model input nor computed in the prefix")
    return ops, out


def valid_splits(graph: Graph) -> list:
    """Source indices of the ops a prefix may end at: spatial all the way, one tensor crossing."""
    out = []
    produced: set = set()
    for pos, op in enumerate(graph.ops):
        try:
            regions.check_spatial(op, graph)
        except UnsupportedOpError:
            break
        produced |= set(op.outputs)
        later = {t for o in graph.ops[pos + 1:] for t in o.inputs} | set(graph.outputs)
        if not (produced - {op.outputs[0]}) & later and regions.hw(graph.t(op.outputs[0])) != (1, 1):
            out.append(op.index)
    return out


def _check_grid(graph: Graph, ops: list, out: int, rows: int, cols: int):
    h, w = regions.hw(graph.t(out))
    if not (isinstance(rows, (int, np.integer)) and isinstance(cols, (int, np.integer))) \
            or rows < 1 or cols < 1:
        raise TinyEngineError(f"patches: rows and cols must be positive integers, got {rows!r} x "
                              f"{cols!r}")
    if rows > h or cols > w:
        raise TinyEngineError(
            f"patches: a {rows} x {cols} grid has more patches than the split tensor "
            f"{graph.t(out).describe()} after {ops[-1].label()} has rows or columns ({h} x {w}); "
            f"use at most {h} x {w}, or split at an earlier op with a larger output")
    if rows * cols == 1:
        raise TinyEngineError("patches: a 1 x 1 grid is the whole image; use patches=None for "
                              "op-by-op execution, or at least 2 patches")


def patch_prefix(graph: Graph, split: int, rows: int, cols: int) -> Graph:
    """The graph with ops up to #split replaced by one PATCHED_PREFIX op."""
    pp = build_patches(graph, split, rows, cols)
    g = graph.copy()
    pos = len(pp.ops)
    op = Op(index=split, kind=KIND, inputs=list(pp.inputs), outputs=[pp.output],
            options={"patched": pp})
    g.ops = [op] + g.ops[pos:]
    return g


def build_patches(graph: Graph, split: int, rows: int, cols: int) -> PatchedPrefix:
    ops, out = prefix_ops(graph, split)
    _check_grid(graph, ops, out, rows, cols)
    produced = {t for op in ops for t in op.outputs}
    inputs = []
    for op in ops:
        for i in op.inputs:
            if i >= 0 and not graph.t(i).is_const and i not in produced and i not in inputs:
                inputs.append(i)
    h, w = regions.hw(graph.t(out))
    axes = {id(op): regions.window_axes(op, graph) for op in ops if op.kind in regions.WINDOW_OPS}

    def bands(axis, size, parts):
        out_bands = []
        for lo, hi in regions.grid(size, parts):
            spans = regions.propagate_axis(graph, ops, out, axis, lo, hi, axes)
            out_bands.append((lo, hi, spans, regions.axis_key(graph, ops, spans, axis, axes)))
        return out_bands

    patches, variants = [], {}
    # Rectangles are products of row and column spans, so a patch's graph depends only on its
    # row band's and column band's geometry: one graph per distinct pair.
    for y0, y1, ys, ykey in bands(0, h, rows):
        for x0, x1, xs, xkey in bands(1, w, cols):
            rect, key = (y0, y1, x0, x1), (ykey, xkey)
            need = {t: (ys[t][0], ys[t][1], xs[t][0], xs[t][1]) for t in ys}
            first = variants.get(key)
            if first is None:
                first = variants[key] = _patch(graph, ops, inputs, out, rect, need, key)
                patches.append(first)
            else:
                patches.append(Patch(rect, {t: need[t] for t in inputs}, first.graph, key,
                                     first.macs))
    plain = sum(_op_macs(op, graph) for op in ops)
    pp = PatchedPrefix(split, rows, cols, inputs, out, ops, patches, plain, variants)
    verify(pp, graph)
    return pp


def verify(pp: PatchedPrefix, graph: Graph):
    """The patches tile the split tensor exactly once, and each one's graph computes its tile."""
    h, w = regions.hw(graph.t(pp.output))
    cover = np.zeros((h, w), dtype=np.int64)
    for p in pp.patches:
        y0, y1, x0, x1 = p.rect
        cover[y0:y1, x0:x1] += 1
        got = tuple(p.graph.t(pp.output).shape)
        if got != (1, y1 - y0, x1 - x0, int(graph.t(pp.output).shape[3])):
            raise TinyEngineError(f"patch plan is invalid: patch {p.rect} computes {list(got)}")
        for t, r in p.reads.items():
            th, tw = regions.hw(graph.t(t))
            if not (0 <= r[0] < r[1] <= th and 0 <= r[2] < r[3] <= tw):
                raise TinyEngineError(f"patch plan is invalid: patch {p.rect} reads {r} of "
                                      f"{graph.t(t).describe()}")
    if (cover != 1).any():
        raise TinyEngineError("patch plan is invalid: the patches do not cover the split tensor "
                              "exactly once")


def _region_tensor(t: Tensor, rect, index: int | None = None) -> Tensor:
    r = Tensor.__new__(Tensor)
    r.__dict__.update(t.__dict__)
    r.shape = (1, rect[1] - rect[0], rect[3] - rect[2], int(t.shape[3]))
    if index is not None:
        r.index = index
        r.name = f"{t.name}_crop"
    return r


def _patch(graph: Graph, ops: list, inputs: list, out: int, rect, need: dict, key) -> Patch:
    for t, r in need.items():
        if r[1] <= r[0] or r[3] <= r[2]:
            raise TinyEngineError(f"patches: the patch {rect} of the split tensor needs an empty "
                                  f"region of {graph.t(t).describe()} (its windows lie in the "
                                  "padding); use fewer patches")
    tensors = {}
    for t, r in need.items():
        tensors[t] = _region_tensor(graph.t(t), r)
    next_index = max(graph.tensors) + 1
    new_ops, macs = [], 0
    for op in ops:
        r = need.get(op.outputs[0])
        if r is None:
            continue
        o = Op(op.index, op.kind, list(op.inputs), list(op.outputs), dict(op.options))
        reads = regions.needs(op, graph, r)
        for k, i in enumerate(op.inputs):
            if i < 0:
                continue
            src = graph.t(i)
            if src.is_const:
                tensors.setdefault(i, src)
                continue
            want, have = reads[i], need[i]
            if want != have:
                # This consumer reads less of the tensor than another one: crop it.
                crop = _region_tensor(src, want, next_index)
                begin, size = next_index + 1, next_index + 2
                tensors[crop.index] = crop
                tensors[begin] = Tensor(begin, "crop_begin", (4,), "int32", data=np.array(
                    [0, want[0] - have[0], want[2] - have[2], 0], dtype=np.int32))
                tensors[size] = Tensor(size, "crop_size", (4,), "int32",
                                       data=np.array(crop.shape, dtype=np.int32))
                new_ops.append(Op(op.index, "SLICE", [i, begin, size], [crop.index], {}))
                o.inputs[k] = crop.index
                next_index += 3
        if op.kind in regions.WINDOW_OPS:
            ay, ax = regions.window_axes(op, graph)
            sy, sx = regions.input_span(ay, r[0], r[1]), regions.input_span(ax, r[2], r[3])
            o.options["padding"] = "VALID"
            o.options["pad_extra"] = (sy.pad_before, sy.pad_after, sx.pad_before, sx.pad_after)
            # Pooling counts only in-image taps: this padding is the image border's, not a PAD op's.
            o.options["border_padding"] = True
        new_ops.append(o)
        macs += _op_macs(o, Graph(tensors, [], [], []))
    g = Graph(tensors, new_ops, list(inputs), [out], name=graph.name)
    reads = {t: need[t] for t in inputs}
    return Patch(rect, reads, g, key, macs)
