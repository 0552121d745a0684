"""C for a PATCHED_PREFIX op (passes/patches.py): per-patch layers inside one workspace.

Every distinct patch shape (interior, edge, corner...) is a graph of its own; its ops are emitted
by the ordinary kernels and its buffers placed by the ordinary planner, in a workspace that is
the PATCHED_PREFIX op's scratch in the model's arena. The op's body then runs, for each patch:
copy the patch's input rectangle into the workspace, call its layers, copy its output rectangle
into the split tensor. Patches with the same shape share their functions, and every variant of a
layer refers to the same weight arrays.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf.errors import UnsupportedOpError
from tinyengine_tf.ir import C_TYPES
from tinyengine_tf.kernels.base import KERNELS, EmitContext, LayerCode
from tinyengine_tf.kernels.layout import copy_loops, row_strides
from tinyengine_tf.memory import plan_memory


class SharedConstants(EmitContext):
    """An EmitContext for one patch graph whose constants join the model's, shared by content.

    ``constants`` lists this context's declarations in order, a reused symbol included (kernels
    read back what a call declared, as dsp.table_symbols does); the model's list, ``shared``,
    holds each symbol once."""

    def __init__(self, graph, parent: EmitContext):
        super().__init__(graph, parent.prefix)
        self.shared = parent.constants

    def const(self, hint: str, values, ctype: str) -> str:
        arr = np.asarray(values)
        stem = f"{self.prefix}_{self.layer}_{hint}"
        taken = [s for s, _, _ in self.shared if s == stem or s.startswith(stem + "_v")]
        symbol = None
        for s, c, v in self.shared:
            if s in taken and c == ctype and v.shape == arr.shape and np.array_equal(v, arr):
                symbol = s
                break
        if symbol is None:
            symbol = stem if not taken else f"{stem}_v{len(taken)}"
            self.shared.append((symbol, ctype, arr))
        self.constants.append((symbol, ctype, arr))
        return symbol


def variant_layers(patch, ctx: EmitContext, stem: str) -> tuple[list, object]:
    """([(op, LayerCode)], memory plan) of one patch graph."""
    sub = SharedConstants(patch.graph, ctx)
    layers = []
    for j, op in enumerate(patch.graph.ops):
        fn = KERNELS.get(op.kind)
        if fn is None:
            raise UnsupportedOpError(f"{op.label()} is not supported by tinyengine-tf", op.kind,
                                     op.index)
        # The same stem for a layer in every variant, so equal weight arrays get one symbol.
        sub.layer = f"{stem}p{j}"
        layers.append((op, fn(op, patch.graph, sub)))
    scratch = {j: code.scratch_bytes for j, (op, code) in enumerate(layers)}
    in_place = {j: code.in_place for j, (op, code) in enumerate(layers)}
    return layers, plan_memory(patch.graph, scratch, in_place)


def emit_patched(op, graph, ctx: EmitContext, pos: int) -> LayerCode:
    from tinyengine_tf.codegen import _signature

    pp = op.options["patched"]
    stem = f"L{pos}"
    functions, headers, calls, workspace = [], set(), {}, 0
    # A layer whose shapes and border padding are the same in several variants (an inner layer
    # of patches that differ only at the image border further up) is one function.
    emitted: dict = {}
    for vi, (key, patch) in enumerate(pp.variants.items()):
        layers, plan = variant_layers(patch, ctx, stem)
        workspace = max(workspace, plan.arena_size)
        g = patch.graph
        lines = []
        for j, (o, code) in enumerate(layers):
            headers.update(code.headers)
            # Helpers a layer calls (a fused residual conv's chunk function): equal text, one copy.
            functions.extend(f for f in code.functions if f not in functions)
            sig, voids = _signature(g, o, code, "@")
            unused = "".join(f"\n  (void){v};" for v in voids)
            text = f"{sig} {{{unused}{code.body}\n}}\n"
            fname = emitted.get((j, text))
            if fname is None:
                fname = emitted[(j, text)] = f"{ctx.prefix}_{stem}v{vi}_{j}_{o.kind.lower()}"
                ins = ", ".join(g.t(i).describe() for i in o.inputs if i >= 0 and not g.t(i).is_const)
                outs = ", ".join(g.t(i).describe() for i in o.outputs)
                functions.append(f"/* {o.label()}, patch variant {vi}: {ins} -> {outs} */\n"
                                 + text.replace("void @(", f"void {fname}(", 1))
            args = [_ptr(g, plan, i, True) for i in o.inputs if i >= 0 and not g.t(i).is_const]
            args += [_ptr(g, plan, i, False) for i in o.outputs]
            if code.scratch_bytes:
                args.append(f"scratch + {plan.scratch_offset[j]}")
            lines.append(f"  {fname}({', '.join(args)});")
        calls[key] = (lines, plan)
    body = []
    for n, p in enumerate(pp.patches):
        lines, plan = calls[p.key]
        y0, y1, x0, x1 = p.rect
        body.append(f"\n  /* patch {n}: rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1} */")
        for k, t in enumerate(pp.inputs):
            body.append(_copy_rect(graph.t(t), p.reads[t], plan.tensor_offset[t], True, f"in{k}"))
        body.extend(lines)
        body.append(_copy_rect(graph.t(pp.output), p.rect, plan.tensor_offset[pp.output], False,
                               "out0"))
    return LayerCode(body="".join(body), scratch_bytes=workspace, headers=tuple(sorted(headers)),
                     functions=tuple(functions))


def _ptr(g, plan, t, const) -> str:
    q = "const " if const else ""
    return f"({q}{C_TYPES[g.t(t).dtype]} *)(void *)(scratch + {plan.tensor_offset[t]})"


def _copy_rect(full, rect, patch_offset: int, into_patch: bool, pointer: str) -> str:
    """C copying rectangle rect of a whole int8 NHWC tensor into the patch's buffer at
    patch_offset in the workspace (into_patch) or back out of it into the whole tensor."""
    y0, y1, x0, x1 = rect
    c = int(full.shape[3])
    counts = (y1 - y0, x1 - x0, c)
    full_strides = row_strides(full.shape)[1:]
    box_strides = row_strides(counts)
    origin = y0 * full_strides[0] + x0 * full_strides[1]
    if into_patch:
        return copy_loops("scratch", pointer, counts, box_strides, full_strides,
                          dst_base=patch_offset, src_base=origin)
    return copy_loops(pointer, "scratch", counts, full_strides, box_strides, dst_base=origin,
                      src_base=patch_offset)
