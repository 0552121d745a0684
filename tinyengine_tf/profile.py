"""Instruction profiles of the firmware under QEMU: per inference, per layer, per MAC."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def op_macs(op, g) -> int:
    """Multiply-accumulates of one op (convolutions, fully-connected, SVDF, LSTM; 0 for the rest)."""
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
    if op.kind == "SVDF":
        # Per batch row: the feature matmul (filters x inputs) and the time filter (filters x memory).
        x, wf, wt = g.t(op.inputs[0]), g.t(op.inputs[1]), g.t(op.inputs[2])
        return int(x.shape[0]) * int(wf.shape[0]) * (int(wf.shape[1]) + int(wt.shape[1]))
    if op.kind == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        # Per step and batch row: four gates, each an input FC and a recurrent FC.
        x, w_in, w_rec = g.t(op.inputs[0]), g.t(op.inputs[2]), g.t(op.inputs[6])
        rows = int(x.shape[0]) * int(x.shape[1])
        return rows * 4 * int(w_in.shape[0]) * (int(w_in.shape[1]) + int(w_rec.shape[1]))
    return 0


def graph_macs(g) -> int:
    return sum(op_macs(op, g) for op in g.ops)


@dataclass
class LayerProfile:
    step: int
    kind: str
    op_index: int
    instructions: int        # everything the layer caused, the library calls it made included
    macs: int
    library: int = 0         # of which in functions it called (memset, memcpy, __aeabi_*, ...)

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
    glue: int = 0                # of which in the invoke function itself, between the layers

    @property
    def per_mac(self) -> float:
        return self.invoke_instructions / self.macs if self.macs else float("nan")

    def to_markdown(self) -> str:
        out = [f"Profile on {self.target} ({'DSP' if self.dsp else 'portable'} path): "
               f"{self.invoke_instructions:,} instructions per inference, {self.macs:,} MACs, "
               f"{self.per_mac:.2f} instructions/MAC", "",
               "| step | op | instructions | of which library calls | MACs | instr/MAC |",
               "|---|---|---|---|---|---|"]
        for r in self.layers:
            pm = f"{r.per_mac:.2f}" if r.per_mac else ""
            out.append(f"| {r.step} | {r.kind} #{r.op_index} | {r.instructions:,} | {r.library:,} | "
                       f"{r.macs:,} | {pm} |")
        return "\n".join(out) + "\n"


def profile(cm, target: str = "cortex-m4", x=None, dsp: bool = True, stream: bool = False,
            **fw_kw) -> Profile:
    """stream=True counts the trace as QEMU writes it (firmware.run_qemu_streamed): the same
    figures, for inferences whose trace log would not fit on disk."""
    from tinyengine_tf.compiled import _NP, _sample_shape

    if x is None:
        rng = np.random.default_rng(0)
        x = [rng.integers(-128, 128, size=(1, *_sample_shape(t)), dtype=np.int64).astype(_NP[t.dtype])
             for t in cm._io("in")]
    arrays, n, _ = cm._prepare_inputs(x)
    arrays = [a[:1] for a in arrays]
    outs = [np.empty((1, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    trace = cm._run_firmware(target, arrays, 1, outs, trace="stream" if stream else True, dsp=dsp,
                             **fw_kw)
    return profile_from_trace(cm, trace, target, dsp)


def layer_functions(cm) -> dict:
    """{function name: step} of the layer functions in the firmware (a patched prefix's layers
    are functions of their own, named <prefix>_L<step>v...)."""
    names = {}
    for pos, op in enumerate(cm.graph.ops):
        names[f"{cm.prefix}_L{pos}_{op.kind.lower()}"] = pos
    return names


def profile_from_trace(cm, trace, target: str = "cortex-m4", dsp: bool = True) -> Profile:
    """Charge every instruction of one traced inference to the layer that caused it: the
    layer's own function and every function it called (memset, memcpy, __aeabi_* helpers).
    Layers that share one function (codegen._shared_layers) split its count evenly: the DSP
    loops have no data-dependent branches, and those layers are equal in every size, so every
    call runs the same instructions. A function layers of different sizes share
    (codegen._shareable_groups) is called from each layer's own function, so each call is
    charged to its layer as it runs."""
    from tinyengine_tf.firmware import attribute
    own = layer_functions(cm)
    owners = dict(own)
    shared = getattr(cm._gen, "shared", None) or {}
    for fname in shared:
        owners[fname] = ("shared", fname)
    patched = [f for f in trace if f not in own and "_L" in f and f.startswith(f"{cm.prefix}_L")]
    for f in patched:
        step = f[len(cm.prefix) + 2:].split("v")[0].split("_")[0]
        if step.isdigit():
            owners[f] = int(step)
    invoke = f"{cm.prefix}_invoke"
    charged = attribute(trace.blocks, owners, invoke)
    # Functions that layers of different sizes call from their own (codegen._shareable_groups)
    # and the helpers they call (codegen._emit_helpers) are their code too, not library calls:
    # charged, like those, to the calling layer.
    common = set(getattr(cm._gen, "shareable", None) or ()) | set(getattr(cm._gen, "helpers", None) or ())
    in_common = attribute([(f, n if f in common else 0) for f, n in trace.blocks], owners, invoke)
    share, share_own = {}, {}
    for fname, members in shared.items():
        for total, out in ((charged.get(("shared", fname), 0), share),
                           (trace.get(fname, 0) + in_common.get(("shared", fname), 0), share_own)):
            base, rem = divmod(total, len(members))
            for i, pos in enumerate(members):
                out[pos] = base + (i < rem)
    layers = []
    for pos, op in enumerate(cm.graph.ops):
        instr = charged.get(pos, 0) + share.get(pos, 0)
        in_own = (sum(v for f, v in trace.items() if owners.get(f) == pos) + share_own.get(pos, 0)
                  + in_common.get(pos, 0))
        layers.append(LayerProfile(pos, op.kind, op.index, instr, op_macs(op, cm.graph), instr - in_own))
    glue = charged.get(invoke, 0)
    return Profile(target, dsp, layers, sum(l.instructions for l in layers) + glue,
                   graph_macs(cm.graph), glue)
