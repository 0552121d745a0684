"""Tensor lifetimes, one-arena planning, the op-by-op lower bound, and overlap verification.

Steps: model inputs are live from step 0, op k (position in execution order) runs at step k,
model outputs stay live to the last step. A buffer is live over the inclusive interval
[producer step, last consumer step]; an op's inputs and outputs therefore never share bytes
unless the kernel declared the op in place. View ops (RESHAPE...) alias their input: one buffer.
Float model inputs/outputs are bound to the caller's pointers and take no arena bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tinyengine_tf.errors import TinyEngineError
from tinyengine_tf.kernels.base import ALIGN, VIEW_OPS


@dataclass
class Buffer:
    key: str               # "t12" for a tensor buffer, "s3" for op 3's scratch
    size: int
    first: int
    last: int
    tensors: list = field(default_factory=list)
    offset: int = -1
    in_place_of: str = ""  # key of the buffer this one may overwrite at step `first`


@dataclass
class Plan:
    buffers: list
    arena_size: int
    tensor_offset: dict    # tensor index -> byte offset (views included)
    scratch_offset: dict   # op position -> byte offset
    external: set          # tensor indices bound to caller pointers
    steps: int

    def live_bytes(self) -> list:
        """Arena bytes live at each step (after aliasing), for the report and the lower bound.

        An in-place pair (an output allowed to overwrite the input that dies at its step) needs
        only the larger of the two at that step.
        """
        # Differences per step, summed once: linear in steps + buffers (the NAS cost model asks
        # for this on every network it plans).
        by_key = {b.key: b for b in self.buffers}
        delta = [0] * (self.steps + 1)
        for b in self.buffers:
            first, last = max(b.first, 0), min(b.last, self.steps - 1)
            if first <= last:
                delta[first] += b.size
                delta[last + 1] -= b.size
            src = by_key.get(b.in_place_of)
            if src is not None and b.first == src.last and 0 <= b.first < self.steps:
                delta[b.first] -= min(b.size, src.size)
                delta[b.first + 1] += min(b.size, src.size)
        out, total = [], 0
        for s in range(self.steps):
            total += delta[s]
            out.append(total)
        return out

    @property
    def lower_bound(self) -> int:
        return max(self.live_bytes(), default=0)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(graph, scratch: dict, in_place: dict, caller=()) -> tuple[list, set]:
    """Buffers with their live intervals. scratch: op pos -> bytes; in_place: op pos -> bool;
    caller: more model inputs/outputs that stay in the caller's memory (no arena bytes)."""
    external = {i for i in list(graph.inputs) + list(graph.outputs) if graph.t(i).dtype == "float32"}
    external |= set(caller)
    root = {}  # tensor -> the tensor whose buffer it shares (views)
    for op in graph.ops:
        if op.kind in VIEW_OPS:
            src = op.inputs[0]
            root[op.outputs[0]] = root.get(src, src)
    last_step = max(len(graph.ops) - 1, 0)
    buffers: dict = {}

    def touch(t, step):
        key = root.get(t, t)
        if key in external or graph.t(key).is_const:
            return
        b = buffers.get(key)
        if b is None:
            b = buffers[key] = Buffer(f"t{key}", _align(graph.t(key).nbytes), step, step, [key])
        b.first, b.last = min(b.first, step), max(b.last, step)
        if t not in b.tensors:
            b.tensors.append(t)

    for t in graph.inputs:
        touch(t, 0)
    for step, op in enumerate(graph.ops):
        for t in op.inputs + op.outputs:
            if t >= 0:
                touch(t, step)
    for t in graph.outputs:
        touch(t, last_step)
    for step, op in enumerate(graph.ops):
        if in_place.get(step) and op.kind not in VIEW_OPS:
            # Input 0 unless the op names another (a conv with a fused residual ADD writes over
            # its skip input, passes/fuse_residual.py).
            i = op.inputs[op.options.get("in_place_input", 0)]
            src, dst = root.get(i, i), root.get(op.outputs[0], op.outputs[0])
            if src in buffers and dst in buffers and buffers[src].last == step:
                buffers[dst].in_place_of = f"t{src}"
    out = list(buffers.values())
    for step, nbytes in scratch.items():
        if nbytes:
            out.append(Buffer(f"s{step}", _align(nbytes), step, step))
    return out, external


def _overlaps_in_time(a: Buffer, b: Buffer) -> bool:
    if a.first > b.last or b.first > a.last:
        return False
    # An in-place output may start on its input's last step only at exactly the input's offset:
    # the kernel reads each element before writing the same slot, never a shifted one.
    if a.offset == b.offset >= 0:
        if a.in_place_of == b.key and a.first == b.last:
            return False
        if b.in_place_of == a.key and b.first == a.last:
            return False
    return True


def _time_neighbours(buffers: list) -> dict:
    """key -> the buffers whose live steps intersect it; placement-independent, computed once."""
    out = {b.key: [] for b in buffers}
    ordered = sorted(buffers, key=lambda b: b.first)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.first > a.last:
                break
            out[a.key].append(b)
            out[b.key].append(a)
    return out


def _place(buffers: list, order, neighbours: dict) -> int:
    """First fit in the given order; each buffer at the lowest offset free over its lifetime."""
    by_key = {b.key: b for b in buffers}
    for b in buffers:
        b.offset = -1
    placed: list = []
    # An in-place output is placed right after its input, so the alias is tried before anything
    # else can claim those bytes.
    followers = {b.in_place_of: b for b in buffers if b.in_place_of}
    queue = []
    for head in sorted(buffers, key=order):
        chain, nxt = [head], followers.get(head.key)
        while nxt is not None and nxt not in chain:
            chain.append(nxt)
            nxt = followers.get(nxt.key)
        queue.extend(chain)
    seen = set()
    for b in queue:
        if b.key in seen:
            continue
        seen.add(b.key)
        src = by_key.get(b.in_place_of)
        if src is not None and src.offset >= 0 and src.size >= b.size:
            # Take over the dying input's bytes if nothing else live there overlaps.
            b.offset = src.offset
            if all(o.offset < 0 or not _overlaps_in_time(b, o) or b.offset + b.size <= o.offset
                   or o.offset + o.size <= b.offset for o in neighbours[b.key]):
                placed.append(b)
                continue
            b.offset = -1
        busy = sorted((o.offset, o.offset + o.size) for o in neighbours[b.key]
                      if o.offset >= 0 and _overlaps_in_time(b, o))
        offset = 0
        for lo, hi in busy:
            if offset + b.size <= lo:
                break
            offset = max(offset, hi)
        b.offset = offset
        placed.append(b)
    return max((b.offset + b.size for b in buffers), default=0)


# Placement orders tried; the smallest arena wins. Largest-first is TFLM's; the others win on
# chains where early big tensors should sit at one end of the arena.
_ORDERS = (
    lambda b: (-b.size, b.first, b.key),
    lambda b: (b.first, -b.size, b.key),
    lambda b: (-(b.last - b.first), -b.size, b.key),
    lambda b: (-b.size * (b.last - b.first + 1), b.key),
    lambda b: (-b.size, -b.first, b.key),
)


def plan_memory(graph, scratch: dict | None = None, in_place: dict | None = None,
                caller=()) -> Plan:
    """Arena offsets for every buffer: the best of several greedy orders, always verified."""
    buffers, external = lifetimes(graph, scratch or {}, in_place or {}, caller)
    neighbours = _time_neighbours(buffers)
    steps = max(len(graph.ops), 1)
    # No order can place below the live bytes of the busiest step: once one reaches them, the
    # rest cannot win (they replace the best only when strictly smaller).
    bound = Plan(buffers, 0, {}, {}, external, steps).lower_bound
    best = None
    for order in _ORDERS:
        size = _place(buffers, order, neighbours)
        if best is None or size < best[0]:
            best = (size, [b.offset for b in buffers])
        if best[0] <= bound:
            break
    arena, offsets = best
    for b, off in zip(buffers, offsets):
        b.offset = off
    tensor_offset, scratch_offset = {}, {}
    for b in buffers:
        if b.key.startswith("s"):
            scratch_offset[int(b.key[1:])] = b.offset
        else:
            for t in b.tensors:
                tensor_offset[t] = b.offset
    plan = Plan(buffers, arena, tensor_offset, scratch_offset, external, steps)
    verify(plan)
    return plan


def verify(plan: Plan):
    """No two buffers live at the same step may share a byte; everything inside the arena."""
    for a in plan.buffers:
        if a.offset < 0 or a.offset + a.size > plan.arena_size or a.offset % ALIGN:
            raise TinyEngineError(f"memory plan is invalid: buffer {a.key} at {a.offset}+{a.size} "
                                  f"lies outside the {plan.arena_size}-byte arena or is misaligned")
    by_key = {b.key: b for b in plan.buffers}
    for key, others in _time_neighbours(plan.buffers).items():
        a = by_key[key]
        for b in others:
            if _overlaps_in_time(a, b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise TinyEngineError(
                    f"memory plan is invalid: buffers {a.key} [{a.offset}, {a.offset + a.size}) live "
                    f"at steps {a.first}-{a.last} and {b.key} [{b.offset}, {b.offset + b.size}) live "
                    f"at steps {b.first}-{b.last} overlap")
