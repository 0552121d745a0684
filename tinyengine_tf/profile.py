"""Instruction profiles of the firmware under QEMU: per inference, per layer, per MAC."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def op_macs(op, g) -> int:
    """Multiply-accumulates of one op (convolutions and fully-connected; 0 for the rest)."""
    if op.kind == "PATCHED_PREFIX":
        return op.options["patched"].macs
    if op.kind == "CONV_2D":
        w, y = g.t(op.inputs[1]), g.t(op.outputs[0])
        return int(np.prod(y.shape)) * int(np.prod(w.shape[1:]))
    if op.kind == "DEPTHWISE_CONV_2D":
        w, y = g.t(op.inputs[1]), g.t(op.outputs[0])
        return int(np.prod(y.shape)) * int(w.shape[1] * w.shape[2])
    if op.kind == "FULLY_CONNECTED":
        w, y = g.t(op.inputs[1]), g.t(op.outputs[0])
        return int(np.prod(y.shape)) * int(w.shape[-1])
    return 0


def graph_macs(g) -> int:
    return sum(op_macs(op, g) for op in g.ops)


@dataclass
class LayerProfile:
    step: int
    kind: str
    op_index: int
    instructions: int
    macs: int

    @property
    def per_mac(self) -> float | None:
        return self.instructions / self.macs if self.macs else None


@dataclass
class Profile:
    target: str
    dsp: bool
    layers: list
    invoke_instructions: int     # everything between entering and leaving <prefix>_invoke
    macs: int

    @property
    def per_mac(self) -> float:
        return self.invoke_instructions / self.macs if self.macs else float("nan")

    def to_markdown(self) -> str:
        out = [f"Profile on {self.target} ({'DSP' if self.dsp else 'portable'} path): "
               f"{self.invoke_instructions:,} instructions per inference, {self.macs:,} MACs, "
               f"{self.per_mac:.2f} instructions/MAC", "",
               "| step | op | instructions | MACs | instr/MAC |", "|---|---|---|---|---|"]
        for r in self.layers:
            pm = f"{r.per_mac:.2f}" if r.per_mac else ""
            out.append(f"| {r.step} | {r.kind} #{r.op_index} | {r.instructions:,} | {r.macs:,} | {pm} |")
        return "\n".join(out) + "\n"


def profile(cm, target: str = "cortex-m4", x=None, dsp: bool = True, **fw_kw) -> Profile:
    from tinyengine_tf.compiled import _NP, _sample_shape

    if x is None:
        rng = np.random.default_rng(0)
        x = [rng.integers(-128, 128, size=(1, *_sample_shape(t)), dtype=np.int64).astype(_NP[t.dtype])
             for t in cm._io("in")]
    arrays, n, _ = cm._prepare_inputs(x)
    arrays = [a[:1] for a in arrays]
    outs = [np.empty((1, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    counts = cm._run_firmware(target, arrays, 1, outs, trace=True, dsp=dsp, **fw_kw)
    layers, in_layers = [], 0
    # Layers that share one function (codegen._shared_layers) split its count evenly.
    share = {}
    for fname, members in (getattr(cm._gen, "shared", None) or {}).items():
        base, rem = divmod(counts.get(fname, 0), len(members))
        for i, pos in enumerate(members):
            share[pos] = base + (i < rem)
    for pos, op in enumerate(cm.graph.ops):
        fname = f"{cm.prefix}_L{pos}_{op.kind.lower()}"
        # A patched prefix's layers are functions of their own, named after it.
        instr = sum(v for k, v in counts.items() if k == fname or k.startswith(f"{cm.prefix}_L{pos}v"))
        instr += share.get(pos, 0)
        in_layers += instr
        layers.append(LayerProfile(pos, op.kind, op.index, instr, op_macs(op, cm.graph)))
    # The invoke body itself; the harness hands it arena pointers, so it copies nothing.
    glue = counts.get(f"{cm.prefix}_invoke", 0)
    return Profile(target, dsp, layers, in_layers + glue, graph_macs(cm.graph))
