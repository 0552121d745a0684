"""Memory plans that shrink in-place layers' scratch where it sets the peak.

Two kernels have a scratch they can shrink at some cost in speed: the in-place depthwise layer
(a band of plane rows instead of the whole plane) and the 1x1 conv with a fused residual ADD
(smaller chunks of pixels, kernels/conv_residual.py). The depthwise case in detail:

An in-place depthwise layer holds one whole zero-point-padded channel plane as scratch; in bands
(kernels/depthwise_band.py) it holds only a few rows, for a little more copying. The band is
worth it only where the scratch is part of the arena's peak, so it is chosen after planning:
while in-place depthwise layers (without a band yet) run at the steps with the most live bytes,
all of them are tried at their shortest band; if the arena shrinks, each keeps the tallest band
that plans to the same arena (fewest bands) and the search goes on from the new plan (a layer
may shrink again there, with the others that share the new peak), otherwise it stops.
Everywhere else the whole plane (and its instruction counts) stays. The result depends on the
graph's shapes and the other layers' facts only, so the code generator, the patch search and the
NAS cost model, which all call ``plan``, agree byte for byte. A layer whose op already carries
the band option (0 included) keeps it.
"""
from __future__ import annotations

from dataclasses import replace

from tinyengine_tf.kernels.base import EmitContext
from tinyengine_tf.memory import plan_memory

_CHOICES: dict = {}


def _key(op, g):
    def sig(i):
        if i < 0:
            return None
        t = g.t(i)
        return (tuple(t.shape), t.dtype, t.scale is not None and len(t.scale) > 1, t.is_const)
    opts = tuple(sorted((k, repr(v)) for k, v in op.options.items() if k != "patched"))
    return (tuple(sig(i) for i in op.inputs), tuple(sig(i) for i in op.outputs), opts)


def _option(op) -> str | None:
    """The op option that shrinks this layer's scratch, if its kernel has one."""
    from tinyengine_tf.kernels import conv_residual, depthwise_band
    if op.kind == "DEPTHWISE_CONV_2D":
        return depthwise_band.BAND_OPTION
    if op.kind == "CONV_2D" and conv_residual.handles(op):
        return conv_residual.CHUNK_OPTION
    return None


def choices(op, g) -> list:
    """(option value, scratch bytes) this op may take, smallest scratch first; [] where none."""
    from tinyengine_tf.kernels import conv_residual, depthwise, depthwise_band, int16x8
    name = _option(op)
    if name is None or name in op.options:
        return []
    key = (op.kind, _key(op, g))
    out = _CHOICES.get(key)
    if out is None:
        try:
            if op.kind == "CONV_2D":
                out = conv_residual.chunk_choices(op, g)
            elif int16x8.handles(op, g):
                out = []
            else:
                out = depthwise_band.band_choices(depthwise.layout(op, g, EmitContext(g, "band")))
        except Exception:   # the kernel refuses the layer; its own emission says why
            out = []
        _CHOICES[key] = out
    return out


def plan(graph, scratch: dict, in_place: dict, caller=()) -> tuple:
    """(the plan, {op position: option value}) for the layers' scratch and in-place facts."""
    best = plan_memory(graph, scratch, in_place, caller=caller)
    # A layer's choices are looked up when it first runs at the peak step (most never do: the
    # NAS cost model plans thousands of networks); closed: layers with none left.
    options, closed = {}, set()
    bands, scratch = {}, dict(scratch)
    while True:
        live = best.live_bytes()
        top = max(live, default=0)
        cands = []
        for pos, op in enumerate(graph.ops):
            if pos >= len(live) or live[pos] != top or pos in closed:
                continue
            if pos not in options:
                ch = choices(op, graph) if in_place.get(pos) and _option(op) else []
                if not ch or ch[0][1] >= scratch.get(pos, 0):
                    closed.add(pos)
                    continue
                options[pos] = ch
            cands.append(pos)
        if not cands:
            break
        # Every layer at a peak step at its shortest band: several steps may share the peak.
        trial_scratch = {**scratch, **{pos: options[pos][0][1] for pos in cands}}
        trial = plan_memory(graph, trial_scratch, in_place, caller=caller)
        chosen = {pos: 0 for pos in cands}
        if trial.arena_size >= best.arena_size:
            break
        for pos in cands:
            # The tallest band planning as small: arena sizes grow with the band (bisection).
            ch = options[pos]
            lo, hi = 1, len(ch) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                p = plan_memory(graph, {**trial_scratch, pos: ch[mid][1]}, in_place, caller=caller)
                if p.arena_size <= trial.arena_size:
                    chosen[pos], trial, lo = mid, p, mid + 1
                    trial_scratch[pos] = ch[mid][1]
                else:
                    hi = mid - 1
        for pos in cands:
            # What is left to try later: the smaller scratches (a layer held up by another one
            # at the same peak shrinks again with it).
            bands[pos] = options[pos][chosen[pos]][0]
            options[pos] = options[pos][:chosen[pos]]
            if not options[pos]:
                del options[pos]
                closed.add(pos)
        scratch, best = trial_scratch, trial
    return best, bands


def banded(op, value: int):
    """A copy of op whose kernel takes the smaller scratch `value` names."""
    return replace(op, options={**op.options, _option(op): value})
