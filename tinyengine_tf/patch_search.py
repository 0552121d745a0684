"""Choosing where to split and how many patches: least peak SRAM under a MAC-overhead limit.

Every candidate (split op, rows, cols) is costed with the compiler's own pieces: its MACs from
receptive-field extents (rows and columns propagate independently, so a grid's MACs are a sum of
products of per-axis totals, no graph needed), and its peak SRAM from the planner run on the
patched graph with each layer's scratch and in-place facts taken from its kernel. The figure a
candidate gets is therefore the compiled model's ``peak_sram``, byte for byte.

Candidates are visited cheapest lower bound first (inputs + split tensor + the largest patch's
largest tensor), and the search stops when no remaining one can beat the best found.
"""
from __future__ import annotations

from dataclasses import dataclass

from tinyengine_tf import band_plan, regions
from tinyengine_tf.errors import TinyEngineError, UnsupportedOpError
from tinyengine_tf.kernels.base import ALIGN, KERNELS, VIEW_OPS, EmitContext
from tinyengine_tf.memory import plan_memory
from tinyengine_tf.passes import patches as P
from tinyengine_tf.profile import op_macs

MAX_PARTS = 8          # rows and columns tried: 1..8 each
_FACTS: dict = {}


@dataclass
class Candidate:
    split: int
    rows: int
    cols: int
    peak_sram: int
    macs: int            # whole model, patched
    extra_macs: int
    workspace: int       # the per-patch buffers (the PATCHED_PREFIX op's scratch)

    @property
    def setting(self) -> tuple:
        return (self.split, self.rows, self.cols)


@dataclass
class Choice:
    best: Candidate | None       # None: no candidate beats op-by-op execution
    plain_peak: int              # patches=None on the same accounting
    plain_macs: int
    candidates: list             # every candidate costed exactly, cheapest peak first

    def overhead(self, c: Candidate) -> float:
        return c.extra_macs / self.plain_macs if self.plain_macs else 0.0


def _key(op, g):
    def sig(i):
        if i < 0:
            return None
        t = g.t(i)
        return (tuple(t.shape), t.dtype, t.per_channel, t.is_const)
    opts = tuple(sorted((k, repr(v)) for k, v in op.options.items() if k != "patched"))
    return (op.kind, tuple(sig(i) for i in op.inputs), tuple(sig(i) for i in op.outputs), opts)


def _conv_facts(op, g):
    # conv.conv_2d: no scratch and never in place, but with a fused residual ADD: a chunk of the
    # conv's values in scratch and the sum written over the skip input.
    from tinyengine_tf.kernels import conv_residual
    if conv_residual.handles(op):
        return conv_residual.scratch_bytes(op, g), op.options.get("in_place_input") == 3
    return 0, False


def _depthwise_facts(op, g):
    from tinyengine_tf.kernels import depthwise
    lay = depthwise.layout(op, g, EmitContext(g, "facts"))
    return lay.scratch_bytes, lay.in_place


# The kernels' own shape rules for the layers patches multiply; anything else is emitted once.
_SHAPE_RULES = {"CONV_2D": _conv_facts, "DEPTHWISE_CONV_2D": _depthwise_facts}


def layer_facts(op, g) -> tuple[int, bool]:
    """(scratch bytes, in place) of one layer as its kernel emits it; cached by shapes/options."""
    if op.kind in VIEW_OPS:
        return 0, False
    key = _key(op, g)
    facts = _FACTS.get(key)
    if facts is None and op.kind in _SHAPE_RULES:
        facts = _FACTS[key] = _SHAPE_RULES[op.kind](op, g)
    if facts is None:
        fn = KERNELS.get(op.kind)
        if fn is None:
            raise UnsupportedOpError(f"{op.label()} is not supported by tinyengine-tf", op.kind,
                                     op.index)
        ctx = EmitContext(g, "facts")
        ctx.layer = "L0"
        code = fn(op, g, ctx)
        facts = _FACTS[key] = (int(code.scratch_bytes), bool(code.in_place))
    return facts


def _plan(g, facts: list, caller, bands: bool = True):
    """The model graph's plan as codegen makes it (band_plan); a patch's own graph (bands=False)
    as patch_codegen plans it."""
    scratch = {k: s for k, (s, ip) in enumerate(facts)}
    in_place = {k: ip for k, (s, ip) in enumerate(facts)}
    if not bands:
        return plan_memory(g, scratch, in_place, caller=caller)
    return band_plan.plan(g, scratch, in_place, caller=caller)[0]


def workspace(pp: P.PatchedPrefix) -> int:
    """Bytes of the per-patch buffers: the largest patch variant's own plan."""
    size = 0
    for patch in pp.variants.values():
        g = patch.graph
        size = max(size, _plan(g, [layer_facts(op, g) for op in g.ops], (), False).arena_size)
    return size


def plain_plan(graph, input_in_arena: bool = True):
    """The plan of patches=None on this accounting."""
    caller = () if input_in_arena else graph.inputs
    return _plan(graph, [layer_facts(op, graph) for op in graph.ops], caller)


def plain_peak(graph, input_in_arena: bool = True) -> int:
    return plain_plan(graph, input_in_arena).arena_size


def evaluate(graph, split: int, rows: int, cols: int, input_in_arena: bool = True) -> Candidate:
    """The exact peak SRAM and MACs the compiled model would have with these patches."""
    g = P.patch_prefix(graph, split, rows, cols)
    pp = g.ops[0].options["patched"]
    ws = workspace(pp)
    facts = [(ws, False)] + [layer_facts(op, g) for op in g.ops[1:]]
    caller = () if input_in_arena else g.inputs
    peak = _plan(g, facts, caller).arena_size
    macs = sum(op_macs(op, g) for op in g.ops)
    return Candidate(split, rows, cols, peak, macs, pp.extra_macs, ws)


def _axis_bands(graph, ops, out, axis: int, parts: int, axes=None) -> tuple[dict, dict]:
    """tensor -> (sum over the bands of its extent, largest extent) along one axis."""
    total, largest = {}, {}
    size = regions.hw(graph.t(out))[axis]
    for lo, hi in regions.grid(size, parts):
        for t, (a, b) in regions.propagate_axis(graph, ops, out, axis, lo, hi, axes).items():
            total[t] = total.get(t, 0) + (b - a)
            largest[t] = max(largest.get(t, 0), b - a)
    return total, largest


class _SplitAxes:
    """Per-axis receptive-field extents of one split, for every band count up to max_parts."""

    def __init__(self, graph, split: int, max_parts: int = MAX_PARTS):
        self.graph = graph
        self.ops, self.out = P.prefix_ops(graph, split)
        h, w = regions.hw(graph.t(self.out))
        axes = {id(op): regions.window_axes(op, graph) for op in self.ops
                if op.kind in regions.WINDOW_OPS}
        self.ys = {n: _axis_bands(graph, self.ops, self.out, 0, n, axes)
                   for n in range(1, min(max_parts, h) + 1)}
        self.xs = {n: _axis_bands(graph, self.ops, self.out, 1, n, axes)
                   for n in range(1, min(max_parts, w) + 1)}
        self.per_pixel = {}
        for op in self.ops:
            oh, ow = regions.hw(graph.t(op.outputs[0]))
            self.per_pixel[op.outputs[0]] = (op_macs(op, graph), oh * ow)
        self.plain = sum(m for m, _ in self.per_pixel.values())

    def macs(self, rows: int, cols: int) -> int:
        """MACs of the prefix run as rows x cols patches: per-pixel MACs times summed extents."""
        ty, tx = self.ys[rows][0], self.xs[cols][0]
        return sum(m * ty[t] * tx[t] // px for t, (m, px) in self.per_pixel.items())

    def lower_bound(self, rows: int, cols: int) -> int:
        """Split tensor plus the largest patch's largest tensor: bytes any plan must hold."""
        ly, lx = self.ys[rows][1], self.xs[cols][1]
        biggest = max(ly[t] * lx[t] * int(self.graph.t(t).shape[3]) for t in ly)
        return _align(self.graph.t(self.out).nbytes) + _align(biggest)


def estimate_macs(graph, split: int, rows: int, cols: int) -> int:
    """Prefix MACs with patches, from per-axis extents alone (equals PatchedPrefix.macs)."""
    return _SplitAxes(graph, split, max(rows, cols)).macs(rows, cols)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def search(graph, max_mac_overhead: float = 0.2, input_in_arena: bool = True,
           max_parts: int = MAX_PARTS, keep_all: bool = False) -> Choice:
    """Least peak SRAM over every valid split and grid whose extra MACs stay within the limit.

    max_mac_overhead is relative to the whole model's MACs (op by op). keep_all costs every
    candidate within the limit exactly (for trade-off tables), not only the ones that could win.
    """
    if max_mac_overhead < 0:
        raise TinyEngineError(f"max_mac_overhead must be >= 0, got {max_mac_overhead}")
    total_macs = sum(op_macs(op, graph) for op in graph.ops)
    plain = plain_plan(graph, input_in_arena)
    base = plain.arena_size
    # Splits whose later ops alone need the op-by-op peak cannot win.
    cands = list(_candidates(graph, plain, max_mac_overhead, input_in_arena, max_parts,
                             None if keep_all else base - 1))
    cands.sort()
    costed, best = [], None
    for bound, _, split, r, c in cands:
        if best is not None and bound >= best.peak_sram and not keep_all:
            break
        try:
            cand = evaluate(graph, split, r, c, input_in_arena)
        except TinyEngineError:
            continue
        costed.append(cand)
        if best is None or (cand.peak_sram, cand.extra_macs) < (best.peak_sram, best.extra_macs):
            best = cand
    if best is not None and best.peak_sram >= base:
        best = None
    costed.sort(key=lambda c: (c.peak_sram, c.extra_macs))
    return Choice(best, base, total_macs, costed)


def first_fit(graph, sram: int, max_mac_overhead: float = 0.2, input_in_arena: bool = True,
              max_parts: int = MAX_PARTS) -> Candidate | None:
    """A setting within the MAC limit whose compiled peak SRAM is at most sram, or None.

    The same candidates as search(), visited cheapest lower bound first, but it stops at the
    first one that fits (NAS stage 1 needs the verdict, not the least peak), and as soon as every
    remaining bound exceeds sram. A None is exact: no setting within the limit fits."""
    cands = [c for c in _candidates(graph, plain_plan(graph, input_in_arena), max_mac_overhead,
                                    input_in_arena, max_parts, sram) if c[0] <= sram]
    for bound, _, split, r, c in sorted(cands):
        try:
            cand = evaluate(graph, split, r, c, input_in_arena)
        except TinyEngineError:
            continue
        if cand.peak_sram <= sram:
            return cand
    return None


def _candidates(graph, plain, max_mac_overhead, input_in_arena, max_parts, limit=None):
    """(lower bound on the peak, extra MACs, split, rows, cols) of every grid within the MAC
    limit, skipping splits whose later ops alone need more than limit bytes."""
    total_macs = sum(op_macs(op, graph) for op in graph.ops)
    in_bytes = sum(_align(graph.t(i).nbytes) for i in graph.inputs) if input_in_arena else 0
    after = _suffix_bounds(graph, plain)
    for split in P.valid_splits(graph):
        if limit is not None and after[split] > limit:
            continue
        axes = _SplitAxes(graph, split, max_parts)
        for r in axes.ys:
            for c in axes.xs:
                if r * c < 2:
                    continue
                extra = axes.macs(r, c) - axes.plain
                if total_macs and extra > max_mac_overhead * total_macs:
                    continue
                yield max(in_bytes + axes.lower_bound(r, c), after[split]), extra, split, r, c


def _suffix_bounds(graph, plain) -> dict:
    """split op index -> bytes live at some step after it in the op-by-op plan: a valid split
    leaves only the split tensor crossing, so the patched graph's later steps hold exactly those
    buffers, and its plan is at least that large."""
    live = plain.live_bytes()
    out, tail = {}, 0
    for pos in range(len(graph.ops) - 1, -1, -1):
        out[graph.ops[pos].index] = tail
        tail = max(tail, live[pos])
    return out


def patched_cost(graph, patches, max_mac_overhead: float = 0.2, input_in_arena: bool = True):
    """(Candidate, op-by-op lower bound) of graph compiled as te.convert(patches=...) would.

    patches: None, "auto" or (split, rows, cols). With None, or "auto" finding nothing better,
    the Candidate is op-by-op execution (setting None, no extra MACs)."""
    plain = plain_plan(graph, input_in_arena)
    best = None
    if patches == "auto":
        best = search(graph, max_mac_overhead, input_in_arena).best
    elif patches is not None:
        best = evaluate(graph, *patches, input_in_arena=input_in_arena)
    if best is None:
        macs = sum(op_macs(op, graph) for op in graph.ops)
        best = _Plain(plain.arena_size, macs)
    return best, plain.lower_bound


@dataclass
class _Plain:
    peak_sram: int
    macs: int
    extra_macs: int = 0
    workspace: int = 0
    setting: None = None
