"""Graph + memory plan -> C sources: one specialized function per layer, one static arena.

Layers whose C is the same but for the names of their constant arrays (stacks of identical
blocks) share one function that takes the arrays as pointers (_shared_layers). Layers of
different sizes whose kernels give an equal Shareable block (kernels/base.py: the sizes read
from parameters) call one function for it from their own (_shareable_groups).

The generated C is C99 with no heap, no recursion and no mutable state but the arena. It compiles
cleanly with -Wall -Wextra -Werror on gcc, clang and arm-none-eabi-gcc.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np

from tinyengine_tf import kernels  # noqa: F401  (registers every kernel module)
from tinyengine_tf.errors import UnsupportedOpError
from tinyengine_tf.ir import C_TYPES, Graph
from tinyengine_tf.kernels import compact
from tinyengine_tf.kernels.base import (HELPER_TOKEN, HELPERS, KERNELS, VIEW_OPS, EmitContext,
                                        LayerCode, ctype_bytes, supported_ops)
from tinyengine_tf.kernels.state import (StateLayout, check_state_use, init_image, mutable_input,
                                         reset_statements, state_layout)
from tinyengine_tf import band_plan
from tinyengine_tf.memory import Plan
from tinyengine_tf.passes.patches import KIND as PATCHED_KIND


@dataclass
class Generated:
    sources: dict          # file name -> text
    plan: Plan
    flash_bytes: int
    layers: list           # (op, LayerCode or None) in execution order
    prefix: str
    state: StateLayout = None  # persistent state buffer (kernels/state.py); empty if stateless
    shared: dict = None    # shared function name -> positions of the layers that call it
    layer_fn: dict = None  # pos -> (function, constant arrays passed after its buffers)
    # function name -> positions of the layers whose functions call it (_shareable_groups):
    # each call is charged to its caller's layer
    shareable: dict = None
    # helper function name -> how many functions call it (_emit_helpers); charged like those
    helpers: dict = None
    # constant array symbol -> ("dsp" or "portable", bytes): read by that branch only, so a
    # build of the other does not link it (firmware.code_beyond_weights)
    branch_only: dict = None


def c_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name or "model")
    return ident if ident and not ident[0].isdigit() else f"m_{ident}"


def emit_layers(graph: Graph, ctx: EmitContext) -> list:
    """(op, LayerCode or None for a view) per op of the graph."""
    layers = [(op, emit_layer(graph, ctx, pos, op)) for pos, op in enumerate(graph.ops)]
    ctx.layer = ""
    return layers


def emit_layer(graph: Graph, ctx: EmitContext, pos: int, op) -> LayerCode | None:
    if op.kind in VIEW_OPS:
        x, y = graph.t(op.inputs[0]), graph.t(op.outputs[0])
        if x.numel != y.numel or x.dtype != y.dtype:
            raise UnsupportedOpError(f"{op.label()}: reshapes {x.describe()} into {y.describe()}, "
                                     "which changes the element count or type", op.kind, op.index)
        return None
    if op.kind == PATCHED_KIND:
        from tinyengine_tf.patch_codegen import emit_patched
        return emit_patched(op, graph, ctx, pos)
    ctx.layer = f"L{pos}"
    if ctx.optimize == "size":
        code = compact.emit(op, graph, ctx)   # None: the layer keeps its specialized code
        if code is not None:
            return code
    fn = KERNELS.get(op.kind)
    if fn is None:
        raise UnsupportedOpError(
            f"{op.label()} is not supported by tinyengine-tf. Supported ops: "
            f"{', '.join(supported_ops())}. Replace the layer in the Keras model with supported "
            "ones, or open an issue with the model attached", op.kind, op.index)
    return fn(op, graph, ctx)


def _reemit_banded(graph: Graph, ctx: EmitContext, layers: list, bands: dict) -> list:
    """layers with the ops in bands emitted again with the band (or chunk) the plan assumes;
    their constants take the place of the first emission's, so the file keeps its order."""
    layers = list(layers)
    for pos in sorted(bands):
        stem = f"{ctx.prefix}_L{pos}_"
        mine = [k for k, (sym, _, _) in enumerate(ctx.constants) if sym.startswith(stem)]
        at = mine[0] if mine else len(ctx.constants)
        ctx.constants = [c for k, c in enumerate(ctx.constants) if k not in set(mine)]
        n = len(ctx.constants)
        op = band_plan.banded(graph.ops[pos], bands[pos])
        layers[pos] = (op, emit_layer(graph, ctx, pos, op))
        new = ctx.constants[n:]
        ctx.constants = ctx.constants[:at] + new + ctx.constants[at:n]
    ctx.layer = ""
    return layers


def _signature(graph: Graph, op, code: LayerCode, fname: str) -> tuple[str, list]:
    params, voids = [], []
    for k, t in enumerate(op.inputs):
        if t >= 0 and not graph.t(t).is_const:
            q = "" if mutable_input(op, k) else "const "
            params.append(f"{q}{C_TYPES[graph.t(t).dtype]} *in{k}")
            voids.append(f"in{k}")
    for k, t in enumerate(op.outputs):
        params.append(f"{C_TYPES[graph.t(t).dtype]} *out{k}")
        voids.append(f"out{k}")
    if code.scratch_bytes:
        params.append("int8_t *scratch")
        voids.append("scratch")
    ret = "int" if code.fails else "void"
    return f"static TE_LAYER {ret} {fname}({', '.join(params) or 'void'})", voids


def generate(graph: Graph, name: str = "model", input_in_arena: bool = True,
             optimize: str = "speed") -> Generated:
    """input_in_arena=False leaves the model inputs in the caller's memory (read, never written).
    optimize="size" has conv and depthwise layers call shared kernels (kernels/compact.py)."""
    prefix = c_identifier(name)
    ctx = EmitContext(graph, prefix)
    ctx.optimize = optimize
    check_state_use(graph)
    state = state_layout(graph)
    layers = emit_layers(graph, ctx)
    scratch = {pos: code.scratch_bytes for pos, (op, code) in enumerate(layers) if code}
    in_place = {pos: code.in_place for pos, (op, code) in enumerate(layers) if code}
    # Variable tensors live in the state buffer: the arena plan leaves them out.
    caller = tuple(state.offsets) + (() if input_in_arena else tuple(graph.inputs))
    plan, bands = band_plan.plan(graph, scratch, in_place, caller=caller)
    layers = _reemit_banded(graph, ctx, layers, bands)

    functions, calls = [], []
    layers, common = _shareable_groups(layers, prefix)
    functions.extend(text for text, _ in common.values())
    shared = _shared_layers(graph, layers, prefix, ctx, taken=set(common))
    emitted = set()
    for pos, (op, code) in enumerate(layers):
        if code is None:
            continue
        fname = f"{prefix}_L{pos}_{op.kind.lower()}"
        extra = []
        if pos in shared:
            fname, body, syms, members = shared[pos]
            extra = syms
        sig, voids = _signature(graph, op, code, fname)
        tail = "\n  return 0;" if code.fails else ""
        if pos not in shared:
            ins = ", ".join(graph.t(i).describe() for i in op.inputs if i >= 0 and not graph.t(i).is_const)
            outs = ", ".join(graph.t(i).describe() for i in op.outputs)
            unused = "".join(f"\n  (void){v};" for v in voids)
            functions.extend(code.functions)
            functions.append(f"/* {op.label()}: {ins} -> {outs} */\n{sig} {{{unused}{code.body}{tail}\n}}\n")
        elif fname not in emitted:
            emitted.add(fname)
            types = {s: c for s, c, _ in ctx.constants}
            params = ", ".join(f"const {types[s]} *k{i}" for i, s in enumerate(syms))
            sig = sig.replace(")", f", {params})", 1) if not sig.endswith("(void)") else sig.replace("(void)", f"({params})")
            unused = "".join(f"\n  (void){v};" for v in voids + [f"k{i}" for i in range(len(syms))])
            labels = ", ".join(f"L{p}" for p in members)
            functions.append(f"/* {op.kind} of layers {labels}: one function, their constants passed in "
                             f"(the same code for each; see codegen._shared_layers) */\n"
                             f"{sig} {{{unused}{body}{tail}\n}}\n")
        args = []
        for k, t in enumerate(op.inputs):
            if t >= 0 and not graph.t(t).is_const:
                args.append(_pointer(graph, plan, t, prefix, const=not mutable_input(op, k),
                                     state=state))
        for t in op.outputs:
            args.append(_pointer(graph, plan, t, prefix, const=False, state=state))
        if code.scratch_bytes:
            args.append(f"TE_ARENA + {plan.scratch_offset[pos]}")
        args += extra
        call = f"{fname}({', '.join(args)})"
        calls.append(f"  if ({call}) return {pos + 1};" if code.fails else f"  {call};")

    functions, helpers = _emit_helpers(functions, prefix)
    text_bodies = "\n".join(functions + calls)   # shared functions get their arrays in calls
    # Symbols are C identifiers: one scan of the text finds every one a body names.
    names = set(re.findall(r"\w+", text_bodies))
    used = [(s, c, v) for s, c, v in ctx.constants if s in names]
    flash = sum(int(np.asarray(v).size) * ctype_bytes(c) for s, c, v in used)
    consts = "\n".join(f"static const {c} {s}[{max(np.asarray(v).size, 1)}] = {_literal(c, v)};"
                       for s, c, v in used)

    headers = ["te_runtime.h"] + sorted({h for _, code in layers if code for h in code.headers})
    header = _header(graph, plan, prefix, flash, state)
    model_c = _model_c(graph, plan, prefix, consts, functions, calls, headers, state)
    cdir = resources.files("tinyengine_tf").joinpath("c")
    sources = {f"{prefix}.h": header, f"{prefix}.c": model_c}
    sources.update({h: cdir.joinpath(h).read_text() for h in headers})
    members = {fname: ps for fname, _, _, ps in shared.values()}
    layer_fn = {pos: shared[pos][::2] if pos in shared else (f"{prefix}_L{pos}_{op.kind.lower()}", [])
                for pos, (op, code) in enumerate(layers) if code is not None}
    return Generated(sources, plan, flash, layers, prefix, state, members, layer_fn,
                     {f: ps for f, (_, ps) in common.items()}, helpers,
                     {s: (ctx.branch_only[s], int(np.asarray(v).size) * ctype_bytes(c))
                      for s, c, v in used if s in ctx.branch_only})


def _emit_helpers(functions: list, prefix: str) -> tuple[list, dict]:
    """(functions with the helpers they call (kernels/base.py's Helper) defined ahead of them,
    each once, and their tokens replaced by the helpers' names; {helper name: functions that
    call it}). A helper that several functions call stays out of line (TE_HELPER: one copy,
    never cloned per caller); one that a single function calls is plain static, which gcc
    inlines."""
    order = list(dict.fromkeys(t for f in functions for t in HELPER_TOKEN.findall(f)))
    names, defs, users = {}, [], {}
    for n, token in enumerate(order):
        h = HELPERS[token]
        names[token] = f"{prefix}_H{n}_{h.family.lower()}"
        users[names[token]] = sum(token in f for f in functions)
        attr = "static TE_HELPER" if users[names[token]] > 1 else "static"
        text = f"{attr} void {names[token]}({h.params}) {{{h.body}\n}}\n"
        defs.append(f"#if {h.guard}\n{text}#endif\n" if h.guard else text)
    def rename(text: str) -> str:
        return HELPER_TOKEN.sub(lambda m: names[m.group(0)], text)
    return [rename(d) for d in defs] + [rename(f) for f in functions], users


def _shareable_groups(layers: list, prefix: str) -> tuple[list, dict]:
    """(layers, {function name: (its C, member positions)}): layers whose Shareable blocks are
    equal (kernels/base.py) call one function for it, in place of the inline block, wherever
    they differ in some value (layers equal in every value share their whole function
    instead, _shared_layers). The function takes each array the largest bound of its layers
    asks for."""
    groups: dict = {}
    for pos, (op, code) in enumerate(layers):
        sh = code.shareable if code is not None else None
        if sh is not None:
            groups.setdefault((op.kind, sh.key()), []).append(pos)
    out, common = list(layers), {}
    for (kind, _), members in groups.items():
        shs = [layers[p][1].shareable for p in members]
        values = {(tuple(v for c, _, v in sh.params if not c.endswith("*")), sh.bounds) for sh in shs}
        if len(values) < 2:
            continue
        fname = f"{prefix}_S{members[0]}_{kind.lower()}"
        bounds = [(n, max(dict(sh.bounds)[n] for sh in shs)) for n, _ in shs[0].bounds]
        common[fname] = (shs[0].function(fname, bounds), members)
        for pos, sh in zip(members, shs):
            op, code = layers[pos]
            inline = sh.inline()
            if code.body.count(inline) != 1:
                raise RuntimeError(f"layer {pos}: its shareable block is not once in its body")
            out[pos] = (op, replace(code, body=code.body.replace(inline, sh.call(fname)),
                                    shareable=None))
    return out, common


def _shared_layers(graph: Graph, layers: list, prefix: str, ctx: EmitContext,
                   taken: set = frozenset()) -> dict:
    """pos -> (function name, body, constant symbols, member positions) for layers whose C is
    the same but for the names of their constant arrays (a stack of identical blocks, as in
    MobileNet's 6x6x128 stage): one function serves them all, the arrays passed as pointers.
    Specialization buys nothing there (every size and zero point is already equal), and each
    copy would cost Flash. The function is named after its layers; profiles split its count
    evenly among them (the DSP loops have no data-dependent branches, so each call runs the
    same instructions)."""
    types = {s: c for s, c, _ in ctx.constants}
    groups = {}
    for pos, (op, code) in enumerate(layers):
        if code is None or code.functions or op.kind == PATCHED_KIND:
            continue
        syms = list(dict.fromkeys(re.findall(rf"\b{prefix}_L{pos}_\w+", code.body)))
        # Layers without arrays of their own (state reads and writes) have nothing to pass in.
        if not syms or not all(s in types for s in syms):
            continue
        body = code.body
        for i, s in enumerate(syms):
            body = re.sub(rf"\b{s}\b", f"k{i}", body)
        sig, _ = _signature(graph, op, code, "f")
        key = (op.kind, sig, body, tuple(types[s] for s in syms))
        groups.setdefault(key, []).append((pos, syms))
    out = {}
    for (kind, _, body, _), members in groups.items():
        if len(members) < 2:
            continue
        positions = [p for p, _ in members]
        fname = f"{prefix}_S{positions[0]}_{kind.lower()}"
        if fname in taken:     # the first also names a _shareable_groups function
            fname = f"{prefix}_S{positions[-1]}_{kind.lower()}"
        for pos, syms in members:
            out[pos] = (fname, body, syms, positions)
    return out


def _literal(ctype: str, values) -> str:
    arr = np.asarray(values).ravel()
    if ctype == "float":
        vals = [repr(float(np.float32(v))) + "f" for v in arr]
    else:
        # INT32_MIN has no literal form in C; spell it as an expression.
        vals = [str(int(v)) if int(v) != -2**31 else "(-2147483647 - 1)" for v in arr]
        if ctype == "int64_t":
            vals = [v + "LL" if not v.startswith("(") else v for v in vals]
    if not vals:
        return "{0}"
    rows = [", ".join(vals[i:i + 24]) for i in range(0, len(vals), 24)]
    return "{\n  " + ",\n  ".join(rows) + "\n}"


def io_params(graph: Graph):
    """(C parameter list, [(tensor, param name, is_input)]) of the invoke entry point."""
    params, io = [], []
    for j, t in enumerate(graph.inputs):
        params.append(f"const {C_TYPES[graph.t(t).dtype]} *in{j}")
        io.append((t, f"in{j}", True))
    for j, t in enumerate(graph.outputs):
        params.append(f"{C_TYPES[graph.t(t).dtype]} *out{j}")
        io.append((t, f"out{j}", False))
    return ", ".join(params), io


def _pointer(graph, plan, t, prefix, const, state=None):
    ctype = C_TYPES[graph.t(t).dtype]
    if state and t in state.offsets:
        q = "const " if const else ""
        return f"({q}{ctype} *)(void *)(TE_STATE + {state.offsets[t]})"
    if t in plan.external:
        if t in graph.inputs:
            return f"in{graph.inputs.index(t)}"
        return f"out{graph.outputs.index(t)}"
    q = "const " if const else ""
    return f"({q}{ctype} *)(void *)(TE_ARENA + {plan.tensor_offset[t]})"


def _header(graph, plan, prefix, flash, state=None) -> str:
    P = prefix.upper()
    params, io = io_params(graph)
    lines = [f"#define {P}_ARENA_BYTES {plan.arena_size}", f"#define {P}_FLASH_BYTES {flash}",
             *([f"#define {P}_STATE_BYTES {state.size}"] if state else []),
             f"#define {P}_NUM_INPUTS {len(graph.inputs)}", f"#define {P}_NUM_OUTPUTS {len(graph.outputs)}"]
    for t, pname, is_in in io:
        tt = graph.t(t)
        tag = pname.upper()
        lines.append(f"#define {P}_{tag}_BYTES {tt.nbytes}  /* {tt.describe()} */")
    return f"""/* Generated by tinyengine-tf. Do not edit. */
#ifndef {P}_H
#define {P}_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif

{chr(10).join(lines)}

/* Runs one inference: copies the inputs into the arena, runs every layer, copies the outputs out.
 * Returns 0, or k + 1 when layer k rejects its input as TFLite Micro's Eval does (RSQRT of a
 * value below its zero point); the later layers and the output copy are then skipped, as TFLM's
 * Invoke stops with an error. Not reentrant: the model owns one static arena. */
int {prefix}_invoke({params});

/* Where input/output i lives inside the arena (NULL for float tensors, which stay with the
 * caller): firmware can write inputs there directly and call {prefix}_invoke with the same pointers. */
void *{prefix}_input(int i);
void *{prefix}_output(int i);

{_reset_decl(prefix) if state else ""}#ifdef __cplusplus
}}
#endif
#endif
"""


def _reset_decl(prefix: str) -> str:
    return f"""
/* Stateful model: the state (LSTM/SVDF states, variables) persists across {prefix}_invoke calls,
 * each call continuing the sequence. {prefix}_reset() sets it back to its reset value, as the
 * TFLite Micro interpreter's Reset() does. */
void {prefix}_reset(void);
"""


def _state_c(graph, prefix, state) -> tuple[str, str]:
    """(the state buffer's definition, the reset function) for a stateful model."""
    if not state:
        return "", ""
    image = init_image(graph, state)
    words = [int.from_bytes(image[i:i + 4], "little", signed=True) for i in range(0, len(image), 4)]
    init = _literal("int32_t", words) if any(words) else "{0}"
    buf = f"""/* Persistent state ({state.size} bytes), outside the arena; byte image in little-endian words. */
static int32_t {prefix}_state[{max(len(words), 1)}] TE_ALIGN16 = {init};
#define TE_STATE ((int8_t *){prefix}_state)
"""
    if any(words) and not all(b == 0 for b in image):
        buf = "#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__\n" \
              "#error \"the state image is little-endian\"\n#endif\n" + buf
    body = "\n".join(reset_statements(graph, state, "TE_STATE"))
    return buf, f"\nvoid {prefix}_reset(void) {{\n{body}\n}}\n"


def _model_c(graph, plan, prefix, consts, functions, calls, headers, state=None) -> str:
    state_buf, reset_fn = _state_c(graph, prefix, state)
    params, io = io_params(graph)
    words = max((plan.arena_size + 3) // 4, 1)
    copy_in, copy_out, in_cases, out_cases = [], [], [], []
    for t, pname, is_in in io:
        tt = graph.t(t)
        if t in plan.external:
            continue
        ptr = f"TE_ARENA + {plan.tensor_offset[t]}"
        if is_in:
            copy_in.append(f"  if ((const void *){pname} != (const void *)({ptr})) memcpy({ptr}, {pname}, {tt.nbytes});")
            in_cases.append(f"    case {pname[2:]}: return {ptr};")
        else:
            copy_out.append(f"  if ((void *){pname} != (void *)({ptr})) memcpy({pname}, {ptr}, {tt.nbytes});")
            out_cases.append(f"    case {pname[3:]}: return {ptr};")
    body = "\n".join(copy_in + calls + copy_out)
    return f"""/* Generated by tinyengine-tf for model '{graph.name}'. Do not edit.
 * Arena: {plan.arena_size} bytes. Constants: see {prefix}.h. */
#include <stddef.h>
#include <string.h>
{chr(10).join(f'#include "{h}"' for h in headers)}
#include "{prefix}.h"

#if defined(__GNUC__)
#define TE_ALIGN16 __attribute__((aligned(16)))
/* Out of line so profiles attribute every instruction to its layer; one call per layer is free. */
#define TE_LAYER __attribute__((noinline))
#else
#define TE_ALIGN16
#define TE_LAYER
#endif
/* A helper several layers call: one copy, never cloned per caller (codegen._emit_helpers). */
#if defined(__GNUC__) && !defined(__clang__)
#define TE_HELPER __attribute__((noinline, noipa))
#elif defined(__GNUC__)
#define TE_HELPER __attribute__((noinline))
#else
#define TE_HELPER
#endif

/* int32_t storage keeps word accesses to scratch well-defined; bytes alias it freely. */
static int32_t {prefix}_arena[{words}] TE_ALIGN16;
#define TE_ARENA ((int8_t *){prefix}_arena)
{state_buf}
{consts}

{chr(10).join(functions)}
int {prefix}_invoke({params}) {{
{body}
  return 0;
}}

void *{prefix}_input(int i) {{
  switch (i) {{
{chr(10).join(in_cases)}
    default: return NULL;
  }}
}}

void *{prefix}_output(int i) {{
  switch (i) {{
{chr(10).join(out_cases)}
    default: return NULL;
  }}
}}
{reset_fn}"""
