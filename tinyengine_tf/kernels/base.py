"""The contract between the code generator and the kernel modules.

A kernel module registers one function per op kind with ``@kernel("KIND", ...)``. The function
receives the op, the graph and an EmitContext, validates everything it relies on (raising
``ctx.unsupported(op, why)`` otherwise, never emitting something approximate) and returns a
LayerCode whose ``body`` is the C statements of one layer function. Inside the body:

- ``in0, in1, ...`` are pointers to the op's inputs by position, typed by element type
  (``const int8_t *``, ``const float *``...). Ask ``ctx.operand(op, k)`` for the C expression of
  input k: it is ``in<k>`` for activations and the name of a ``const`` array for constants.
- ``out0, out1, ...`` are the outputs (``int8_t *`` ...).
- Family-specific C helpers go in a header of their own, ``tinyengine_tf/c/te_<family>.h``
  (static inline functions), named in ``LayerCode.headers``.
- ``scratch`` is an ``int8_t *`` to ``scratch_bytes`` of arena memory, 16-byte aligned, live only
  during this layer.

Shapes, strides, zero points and multipliers are known at generation time: bake them into the
code as literals or ``const`` arrays (``ctx.const``) so the C compiler specializes every loop.
Where one code shape serves layers of many sizes (a DSP form whose asm depends only on its tile),
a kernel may also return that block as a ``Shareable`` (its sizes read from named parameters):
codegen then has every layer with an equal block call one function for it. Smaller pieces
equal across layers of any size (a depthwise channel's records) go in a ``helper``: the body
calls its token, and codegen defines each distinct helper once.

Which constant arrays a kernel emits, and their sizes, must depend only on shapes, options and
quantization granularity (per-tensor vs per-channel), never on the values: the NAS cost model
predicts Flash and scratch from shapes alone. A family may register a fast shape-only
``footprint(op, graph) -> (flash_bytes, scratch_bytes[, in_place])`` with ``@kernel(...,
footprint=fn)``; a test checks it against the emitted code. Without one, the footprint is measured by emitting the layer.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinyengine_tf.errors import UnsupportedOpError
from tinyengine_tf.ir import C_TYPES, Graph, Op, Tensor

KERNELS: dict[str, Callable] = {}
FOOTPRINTS: dict[str, Callable] = {}
# Ops that only reinterpret the shape of a row-major buffer: the output aliases the input.
VIEW_OPS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
# The op option the Flash planner (api._widen_in_flash) sets on the FULLY_CONNECTED and CONV_2D
# layers whose filters it stores as int16 (fewer instructions for twice their bytes).
WIDE_WEIGHTS = "te_wide_weights"
ALIGN = 16


@dataclass
class LayerCode:
    body: str
    scratch_bytes: int = 0
    # The output may be written over input 0 (element-wise ops, in-place depthwise).
    in_place: bool = False
    # Extra headers from tinyengine_tf/c/ this layer's code needs (te_runtime.h is always there).
    headers: tuple = ()
    # Whole C functions this layer's body calls (a patched prefix's per-patch layers).
    functions: tuple = ()
    # The body may `return 1;` on an input TFLM's Eval rejects (RSQRT below its zero point):
    # the layer function returns int and <name>_invoke stops there with the layer's number + 1,
    # as TFLM's Invoke stops with an error. Never inside a patch (only pointwise ops fail).
    fails: bool = False
    # A block of the body (its text appears in it once, from Shareable.inline()) that layers
    # of other sizes can share: codegen calls one function for every layer with an equal one.
    shareable: "Shareable | None" = None


@dataclass(frozen=True)
class Shareable:
    """Statements that read what differs between layers (sizes, counts, constant arrays) from
    named values rather than literals, so that layers of different geometry whose blocks are
    equal can call one function (codegen._shareable_groups).

    params: ((C type, name, value), ...): each a parameter of the shared function, given its
    value (a C expression of the layer: a literal, an array, in0) per call. bounds: ((name,
    size), ...): integer constants the block sizes its arrays with; a shared function takes
    the largest of its layers'. guard: a preprocessor condition around the shared function
    (the block's branch of the layer body, e.g. "TE_DSP"). A layer whose block no other shares
    keeps it inline: `alone` where the kernel gives it (its specialized form, which gcc may
    allocate registers for better than for the general one), else the block with its values
    as constants."""
    form: str
    body: str
    params: tuple
    bounds: tuple = ()
    guard: str = ""
    alone: str = ""

    def key(self) -> tuple:
        return (self.form, self.body, tuple(c for c, _, _ in self.params),
                tuple(n for n, _ in self.bounds), self.guard)

    def _enums(self, bounds) -> str:
        return "".join(f"\n  enum {{ {n} = {int(v)} }};" for n, v in bounds)

    def inline(self) -> str:
        if self.alone:
            return self.alone
        consts = "".join(f"\n  {c} const {n} = {v};" if c.endswith("*") else f"\n  const {c} {n} = {v};"
                         for c, n, v in self.params if n != v)
        unused = "".join(f"\n  (void){n};" for _, n, v in self.params if n != v)
        return f"\n  {{{self._enums(self.bounds)}{consts}{unused}{self.body}\n  }}"

    def function(self, fname: str, bounds) -> str:
        params = ", ".join(f"{c}{'' if c.endswith('*') else ' '}{n}" for c, n, _ in self.params)
        unused = "".join(f"\n  (void){n};" for _, n, _ in self.params)
        text = f"static TE_LAYER void {fname}({params}) {{{self._enums(bounds)}{unused}{self.body}\n}}\n"
        return f"#if {self.guard}\n{text}#endif\n" if self.guard else text

    def call(self, fname: str) -> str:
        return f"\n  {fname}({', '.join(v for _, _, v in self.params)});"


@dataclass(frozen=True)
class Helper:
    """A static C function that layers call from their bodies, one copy for every layer whose
    call names the same text: the part of a kernel that specialization leaves equal across
    layers of different sizes (a depthwise channel's weight and requantization records), whose
    copies would cost Flash for nothing. Kernels write `helper(...)`'s token where the call
    goes; codegen emits each distinct helper once, named <prefix>_H<n>_<family>, out of line
    where several layer functions call it (inline where one does)."""
    family: str       # the op kind it belongs to (its name groups it with the layers in size tables)
    params: str       # the C parameter list
    body: str
    guard: str = ""   # a preprocessor condition around it (the branch of the layer body it serves)


HELPERS: dict[str, Helper] = {}
HELPER_TOKEN = re.compile(r"\bTE_HELPER_[0-9a-f]{12}\b")


def helper(family: str, params: str, body: str, guard: str = "") -> str:
    """The token a layer body calls the helper by (content-addressed: equal helpers, one token)."""
    h = Helper(family, params, body, guard)
    token = "TE_HELPER_" + hashlib.sha1(repr(h).encode()).hexdigest()[:12]
    HELPERS[token] = h
    return token


def kernel(*kinds: str, footprint: Callable | None = None):
    def register(fn):
        for kind in kinds:
            if kind in KERNELS:
                raise RuntimeError(f"two kernels registered for {kind}")
            KERNELS[kind] = fn
            if footprint is not None:
                FOOTPRINTS[kind] = footprint
        return fn
    return register


class EmitContext:
    """Collects the constant arrays of one model while its layers are generated."""

    def __init__(self, graph: Graph, prefix: str):
        self.graph = graph
        self.prefix = prefix
        self.constants: list = []      # (symbol, ctype, values)
        self.flash_bytes = 0
        self.layer = ""                # set by codegen: the current layer's symbol stem
        self.optimize = "speed"        # convert(optimize=...): "size" selects kernels/compact.py
        self.branch_only: dict = {}    # symbol -> "dsp" / "portable": the one branch reading it

    def const(self, hint: str, values, ctype: str) -> str:
        """A file-scope ``static const`` array named after the layer and the hint."""
        arr = np.asarray(values)
        symbol = f"{self.prefix}_{self.layer}_{hint}" if self.layer else f"{self.prefix}_{hint}"
        if any(s == symbol for s, _, _ in self.constants):
            raise RuntimeError(f"constant {symbol} declared twice")
        self.constants.append((symbol, ctype, arr))
        self.flash_bytes += arr.size * ctype_bytes(ctype)
        return symbol

    def operand(self, op: Op, k: int) -> str:
        """C expression for input k of op: the parameter, or a const array for a constant."""
        t = self.graph.t(op.inputs[k])
        if t.is_const:
            return self.const(f"in{k}", t.data, C_TYPES[t.dtype])
        return f"in{k}"

    def unsupported(self, op: Op, why: str, fix: str = "") -> UnsupportedOpError:
        msg = f"{op.label()}: {why}"
        if fix:
            msg += f". {fix}"
        return UnsupportedOpError(msg, op_kind=op.kind, op_index=op.index)

    def t_in(self, op: Op, k: int) -> Tensor:
        if k >= len(op.inputs) or op.inputs[k] < 0:
            raise self.unsupported(op, f"input {k} is missing")
        return self.graph.t(op.inputs[k])

    def t_out(self, op: Op, k: int = 0) -> Tensor:
        return self.graph.t(op.outputs[k])

    def require_int8(self, op: Op, *tensors: Tensor):
        for t in tensors:
            if t.dtype != "int8":
                raise self.unsupported(op, f"tensor {t.describe()} is {t.dtype}; only int8 is "
                                           "supported here", "Quantize the model to int8")
            if not t.quantized:
                raise self.unsupported(op, f"tensor {t.describe()} has no quantization parameters",
                                       "Quantize the model to int8 with a representative dataset")

    def require_per_tensor(self, op: Op, *tensors: Tensor):
        """Activations quantized per channel are accepted: TFLite Micro's kernels read a tensor's
        params.scale / params.zero_point, which are its first channel's (micro_allocator.cc),
        and run; Tensor.s and Tensor.zp are exactly those. Only QUANTIZE / DEQUANTIZE check the
        scale count, and they do so themselves (kernels/quantize.py). Kept as the one place that
        states this rule for every kernel that calls it."""
        del op, tensors


def ctype_bytes(ctype: str) -> int:
    return {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4,
            "float": 4, "int64_t": 8, "double": 8}[ctype]


def supported_ops() -> list:
    from tinyengine_tf import kernels  # noqa: F401  (imports every kernel module)
    return sorted(set(KERNELS) | VIEW_OPS)


# Fixes that refusal messages name (ctx.unsupported(op, why, fix)).
FIX_REEXPORT = "Re-export the model with the TFLite converter (its shapes or options are inconsistent)"
FIX_QUANTIZE = "Quantize the model with the TFLite converter (int8, or 16x8 for int16 activations)"
FIX_CONSTANT = "Export the model with constant weights and sizes"
FIX_REQUANTIZE = "Requantize the model or split the layer"
