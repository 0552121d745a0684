"""Side-by-side memory report: TinyEngine's plan against TFLite Micro on the same model.

TFLM's totals are measured by running the tflite-micro interpreter (its RecordingMicroAllocator
prints to file descriptor 2 from C++, so we capture at the descriptor level). Its per-layer live
bytes come from replaying its GreedyMemoryPlanner rules on the unmodified graph; the replay's
peak is checked against the measured head in the tests.
"""
from __future__ import annotations

import base64
import io
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np

from tinyengine_tf.memory import Plan

# TFLM's own figures for its framework code (shared/docs/tflm-arithmetic.md): the interpreter,
# allocator and planner, before any kernel; quoted in the report, not measured here.
TFLM_FRAMEWORK_BYTES_CORTEX_M = 16 * 1024
TFLM_FRAMEWORK_SOURCE = ("TFLM documentation: about 16 KB of framework code on Cortex-M3 "
                         "(9.7 KB in its memory_footprint example), kernels extra")
TFLM_ALIGN = 16


@dataclass
class TinyEngineMemory:
    peak_sram: int
    flash: int
    lower_bound: int
    peak_step: int
    state_bytes: int = 0              # persistent state (LSTM/SVDF/variables), outside the arena
    widened_bytes: int = 0            # of flash: filters stored as int16 and depthwise records
                                      # stored precomputed (convert(flash=...))


@dataclass
class TFLMMemory:
    arena_total: int
    arena_head: int
    arena_tail: int
    model_bytes: int                  # the .tflite flatbuffer TFLM keeps in Flash
    framework_bytes: int = TFLM_FRAMEWORK_BYTES_CORTEX_M
    replayed_head: int = 0            # our replay of its planner (should equal arena_head)

    @property
    def flash(self) -> int:
        return self.model_bytes + self.framework_bytes


@dataclass
class LayerRow:
    step: int
    op_index: int
    kind: str
    output_shape: tuple
    tinyengine_bytes: int | None      # None: folded away by a compile-time pass
    tflm_bytes: int
    live: list = field(default_factory=list)  # tensor names live in TinyEngine's arena


@dataclass
class PatchMemory:
    """The patched prefix against op-by-op execution of the same model."""
    split: int                  # source index of the last patched op
    rows: int
    cols: int
    input_in_arena: bool        # the accounting of peak_sram / plain_peak_sram
    peak_sram: int              # with patches (the compiled arena)
    plain_peak_sram: int        # patches=None
    peak_sram_other: int        # with patches, the other accounting (input in/out of the arena)
    plain_peak_sram_other: int
    workspace: int              # bytes of per-patch buffers (the largest patch variant's plan)
    patch_buffers: list         # (rows x cols of the patch's split-tensor tile, workspace bytes) per variant
    split_tensor_bytes: int
    macs: int                   # whole model, patched
    plain_macs: int
    plain_lower_bound: int      # the op-by-op lower bound of patches=None, same accounting
    tradeoff: list = field(default_factory=list)   # (setting, peak SRAM, MAC overhead), Pareto front

    @property
    def extra_macs(self) -> int:
        return self.macs - self.plain_macs

    @property
    def mac_overhead(self) -> float:
        return self.extra_macs / self.plain_macs if self.plain_macs else 0.0


@dataclass
class MemoryReport:
    model: str
    tinyengine: TinyEngineMemory
    tflm: TFLMMemory | None
    layers: list
    patches: PatchMemory | None = None

    @property
    def lower_bound(self) -> int:
        return self.tinyengine.lower_bound

    @property
    def peak_layer(self) -> str:
        for row in self.layers:
            if row.step == self.tinyengine.peak_step and row.tinyengine_bytes is not None:
                return f"{row.kind} (op #{row.op_index}, output {list(row.output_shape)})"
        return ""

    @property
    def sram_ratio(self) -> float | None:
        # TFLM's total holds a stateful model's variables (its persistent tail); ours are the
        # state buffer next to the arena, so both sides count them.
        ours = self.tinyengine.peak_sram + self.tinyengine.state_bytes
        return self.tflm.arena_total / ours if self.tflm and ours else None

    def to_dict(self) -> dict:
        return asdict(self)

    # -- renderings --------------------------------------------------------------------------
    def summary_rows(self) -> list:
        te, tf = self.tinyengine, self.tflm
        rows = [("peak SRAM (arena)", f"{te.peak_sram:,}",
                 f"{tf.arena_total:,} (head {tf.arena_head:,} + tail {tf.arena_tail:,})" if tf else "n/a"),
                ("op-by-op lower bound", f"{te.lower_bound:,}", ""),
                *([("state (persistent, outside the arena)", f"{te.state_bytes:,}",
                    "in the arena tail (persistent buffers)" if tf else "n/a")]
                  if te.state_bytes else []),
                ("Flash: model constants", f"{te.flash:,}", f"{tf.model_bytes:,} (flatbuffer)" if tf else "n/a"),
                *([("of which widened filters and stored records (the flash budget's room)",
                    f"+{te.widened_bytes:,}", "")] if te.widened_bytes else []),
                ("Flash: runtime code", "generated per model (see firmware build)",
                 f"~{tf.framework_bytes:,} framework + kernels" if tf else "n/a")]
        if tf:
            label = "SRAM ratio TFLM / TinyEngine" + (" (arena + state)" if te.state_bytes else "")
            rows.append((label, f"{self.sram_ratio:.2f}x", ""))
        pm = self.patches
        if pm:
            rows[1] = ("lower bound of this plan", rows[1][1], "")
            rows.append(("peak SRAM op by op (patches=None)", f"{pm.plain_peak_sram:,}", ""))
            rows.append(("op-by-op lower bound (patches=None)", f"{pm.plain_lower_bound:,}", ""))
            rows.append((f"patched prefix: ops up to #{pm.split}, {pm.rows} x {pm.cols} patches",
                         f"{pm.workspace:,} B per-patch buffers, +{100 * pm.mac_overhead:.1f}% MACs",
                         ""))
        return rows

    def patch_markdown(self) -> list:
        pm = self.patches
        if pm is None:
            return []
        here = "input in the arena" if pm.input_in_arena else "input read from caller memory"
        there = "input read from caller memory" if pm.input_in_arena else "input in the arena"
        out = ["", f"### Patch-based prefix: ops up to #{pm.split} as {pm.rows} x {pm.cols} patches", "",
               "| | op by op (patches=None) | with patches |", "|---|---|---|",
               f"| peak SRAM, {here} | {pm.plain_peak_sram:,} | {pm.peak_sram:,} |",
               f"| peak SRAM, {there} | {pm.plain_peak_sram_other:,} | {pm.peak_sram_other:,} |",
               f"| MACs | {pm.plain_macs:,} | {pm.macs:,} (+{100 * pm.mac_overhead:.1f}%) |",
               f"| split tensor (whole, in the arena) | | {pm.split_tensor_bytes:,} |",
               f"| per-patch buffers (largest patch variant) | | {pm.workspace:,} |", "",
               "Per-patch buffers by patch shape: " + ", ".join(
                   f"{tile} tile: {ws:,} B" for tile, ws in pm.patch_buffers) + "."]
        if pm.tradeoff:
            out += ["", f"Memory against MAC overhead ({here}; the least peak at each overhead):", "",
                    "| patches (split, rows, cols) | peak SRAM | MAC overhead |", "|---|---|---|"]
            out += [f"| {st} | {peak:,} | +{100 * ov:.1f}% |" for st, peak, ov in pm.tradeoff]
        return out

    def to_markdown(self) -> str:
        out = [f"## Memory report: {self.model}", "", "| | TinyEngine | TFLite Micro |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in self.summary_rows()]
        gap = self.tinyengine.peak_sram - self.tinyengine.lower_bound
        out += self.patch_markdown()
        out += ["", f"Plan is {gap:,} bytes above the lower bound. Peak at {self.peak_layer or 'n/a'}.",
                "", "| step | op | output | TinyEngine live bytes | TFLM live bytes |", "|---|---|---|---|---|"]
        for r in self.layers:
            te = "folded" if r.tinyengine_bytes is None else f"{r.tinyengine_bytes:,}"
            out.append(f"| {r.step} | {r.kind} #{r.op_index} | {list(r.output_shape)} | {te} | {r.tflm_bytes:,} |")
        if self.tflm:
            out += ["", f"TFLM totals measured with the tflite-micro interpreter's RecordingMicroAllocator; "
                        f"its framework size is quoted ({TFLM_FRAMEWORK_SOURCE})."]
        return "\n".join(out) + "\n"

    def plot(self, path=None):
        """Per-layer live bytes, TinyEngine against TFLM, with each one's arena as a line."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r.step for r in self.layers]
        te = [r.tinyengine_bytes or 0 for r in self.layers]
        tf = [r.tflm_bytes for r in self.layers]
        fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(steps) + 3), 4.2))
        wdt = 0.4
        ax.bar(np.array(steps) - wdt / 2, [v / 1024 for v in tf], wdt, label="TFLite Micro live", color="#c44e52")
        ax.bar(np.array(steps) + wdt / 2, [v / 1024 for v in te], wdt, label="TinyEngine live", color="#4c72b0")
        ax.axhline(self.tinyengine.peak_sram / 1024, color="#4c72b0", ls="--",
                   label=f"TinyEngine arena {self.tinyengine.peak_sram / 1024:.1f} kB")
        if self.tflm:
            ax.axhline(self.tflm.arena_total / 1024, color="#c44e52", ls="--",
                       label=f"TFLM arena {self.tflm.arena_total / 1024:.1f} kB (head {self.tflm.arena_head / 1024:.1f})")
        ax.set_xticks(steps)
        ax.set_xticklabels([f"{r.kind.replace('_2D', '').replace('DEPTHWISE_', 'DW_')[:10]}" for r in self.layers],
                           rotation=70, fontsize=7)
        ax.set_ylabel("SRAM (kB)")
        ax.set_title(f"{self.model}: live activation memory per layer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        if path is None:
            return fig
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def to_html(self, path) -> str:
        buf = io.BytesIO()
        fig = self.plot(None)
        fig.savefig(buf, format="png", dpi=110)
        import matplotlib.pyplot as plt
        plt.close(fig)
        img = base64.b64encode(buf.getvalue()).decode()
        # A template with autoescaping: model and tensor names come from the user's file.
        import jinja2
        env = jinja2.Environment(loader=jinja2.PackageLoader("tinyengine_tf", "templates"),
                                 autoescape=True, keep_trailing_newline=True)
        page = env.get_template("memory_report.html").render(
            model=self.model, summary=self.summary_rows(), peak_layer=self.peak_layer,
            plot_png=img, layers=self.layers, peak_step=self.tinyengine.peak_step,
            framework_source=TFLM_FRAMEWORK_SOURCE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(page)
        os.replace(tmp, path)
        return str(path)


def measure_tflm_arena(tflite: bytes) -> tuple[int, int, int]:
    """(total, head, tail) bytes from the tflite-micro interpreter's RecordingMicroAllocator."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(tflite), arena_size=max(len(tflite) * 20, 1 << 20))
    for k in range(_num_inputs(tflite)):
        d = interp.get_input_details(k)
        interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), k)
    interp.invoke()
    text = _capture_fd2(interp.print_allocations)
    vals = {}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if not m:
            raise RuntimeError(f"could not read TFLM's arena {key} from:\n{text[:500]}")
        vals[key] = int(m.group(1))
    return vals["total"], vals["head"], vals["tail"]


def _num_inputs(tflite: bytes) -> int:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    return schema.Model.GetRootAsModel(bytes(tflite), 0).Subgraphs(0).InputsLength()


def _capture_fd2(fn) -> str:
    import sys
    sys.stderr.flush()
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        return f.read().decode("utf-8", "replace")


def tflm_lifetimes(graph) -> list:
    """(size, first, last) per non-persistent buffer, replaying TFLM's allocation rules.

    Every non-constant tensor gets its own buffer (TFLM copies on RESHAPE); inputs live from the
    start, outputs to the end, sizes rounded up to 16 bytes.
    """
    n = len(graph.ops)
    first, last = {}, {}
    for i in graph.inputs:
        first[i], last[i] = 0, 0
    for step, op in enumerate(graph.ops):
        for t in op.inputs + op.outputs:
            # Variable tensors are persistent allocations (the tail), not planned buffers.
            if t >= 0 and not graph.t(t).is_const and not graph.t(t).is_variable:
                first.setdefault(t, step)
                last[t] = max(last.get(t, step), step)
    for o in graph.outputs:
        last[o] = max(n - 1, 0)
    # Equal-sized buffers are placed highest tensor index first: the order that reproduces the
    # interpreter's measured head on every model tested (tests/test_report.py).
    return [(t, -(-graph.t(t).nbytes // TFLM_ALIGN) * TFLM_ALIGN, first[t], last[t])
            for t in sorted(first, reverse=True)]


def replay_tflm_head(buffers) -> int:
    """TFLM's GreedyMemoryPlanner: largest first, each at the lowest offset free for its lifetime."""
    placed = []
    for _, size, f, l in sorted(buffers, key=lambda b: -b[1]):
        busy = sorted((o, o + s) for o, s, pf, pl in placed if not (pf > l or f > pl))
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, hi)
        placed.append((off, size, f, l))
    return max((o + s for o, s, _, _ in placed), default=0)


def build_report(cm, measure_tflm: bool = True) -> MemoryReport:
    plan: Plan = cm.plan
    live = plan.live_bytes()
    peak_step = int(np.argmax(live)) if live else 0
    from tinyengine_tf.kernels import conv, depthwise, fully_connected
    te = TinyEngineMemory(plan.arena_size, cm.flash, plan.lower_bound, peak_step,
                          getattr(cm, "state_bytes", 0),
                          sum(fully_connected.widened_bytes(op, cm.graph)
                              + conv.widened_bytes(op, cm.graph)
                              + depthwise.widened_bytes(op, cm.graph) for op in cm.graph.ops))
    src = cm.source_graph
    tb = tflm_lifetimes(src)
    tflm_live = [sum(s for _, s, f, l in tb if f <= k <= l) for k in range(len(src.ops))]
    tflm = None
    if measure_tflm:
        total, head, tail = measure_tflm_arena(cm.tflite)
        tflm = TFLMMemory(total, head, tail, len(cm.tflite), replayed_head=replay_tflm_head(tb))
    te_step = {op.index: k for k, op in enumerate(cm.graph.ops)}
    # An ADD fused into the conv before it (passes/fuse_residual.py) runs at the conv's step.
    te_step.update({op.options["residual"][4]: k for k, op in enumerate(cm.graph.ops)
                    if "residual" in op.options})
    pp = cm.patched
    if pp is not None:
        # Every prefix op runs inside the PATCHED_PREFIX op at step 0.
        te_step.update({op.index: 0 for op in pp.ops})
        te_step.update({op.options["residual"][4]: 0 for op in pp.ops if "residual" in op.options})
    names = {b.key: b for b in plan.buffers}
    rows = []
    for k, op in enumerate(src.ops):
        step = te_step.get(op.index)
        live_names = []
        if step is not None:
            for b in names.values():
                if b.first <= step <= b.last:
                    live_names.append(_buffer_name(cm.graph, b))
        rows.append(LayerRow(step=k, op_index=op.index, kind=op.kind,
                             output_shape=tuple(src.t(op.outputs[0]).shape),
                             tinyengine_bytes=None if step is None else live[step],
                             tflm_bytes=tflm_live[k], live=live_names))
    # Report peak steps in source-graph numbering.
    for r in rows:
        if te_step.get(r.op_index) == peak_step:
            te.peak_step = r.step
            break
    return MemoryReport(cm.name, te, tflm, rows, _patch_memory(cm))


def _patch_memory(cm) -> PatchMemory | None:
    from tinyengine_tf.patch_search import evaluate, plain_plan, workspace
    from tinyengine_tf.profile import graph_macs

    pp = cm.patched
    if pp is None:
        return None
    g0, inside = cm.unpatched_graph, cm.input_in_arena
    other = evaluate(g0, pp.split, pp.rows, pp.cols, not inside).peak_sram
    buffers = []
    for patch in pp.variants.values():
        y0, y1, x0, x1 = patch.rect
        single = type(pp)(pp.split, pp.rows, pp.cols, pp.inputs, pp.output, pp.ops, [patch],
                          pp.plain_macs, {patch.key: patch})
        buffers.append((f"{y1 - y0}x{x1 - x0} at ({y0}, {x0})", workspace(single)))
    tradeoff = []
    choice = cm.patch_choice
    if choice is not None:
        best = None
        for c in sorted(choice.candidates, key=lambda c: (c.extra_macs, c.peak_sram)):
            if best is None or c.peak_sram < best:
                best = c.peak_sram
                tradeoff.append((c.setting, c.peak_sram, choice.overhead(c)))
    plain = plain_plan(g0, inside)
    return PatchMemory(pp.split, pp.rows, pp.cols, inside, cm.peak_sram, plain.arena_size,
                       other, plain_plan(g0, not inside).arena_size, workspace(pp), buffers,
                       cm.graph.t(pp.output).nbytes, graph_macs(cm.graph), graph_macs(g0),
                       plain.lower_bound, tradeoff)


def _buffer_name(graph, b) -> str:
    if b.key.startswith("s"):
        return f"scratch({b.size})"
    t = graph.t(b.tensors[0])
    # Converter names join every fused op with ';': the first part names the tensor well enough.
    name = (t.name or b.key).split(";")[0]
    return f"{name[:40] + '...' if len(name) > 43 else name}({b.size})"
