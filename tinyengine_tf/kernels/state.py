"""Persistent state: variable tensors, their static buffer, and READ_VARIABLE / ASSIGN_VARIABLE.

A variable tensor (``Tensor.is_variable``: an SVDF or LSTM state input marked isVariable in the
file, or a resource variable the reader turned into one, converters/tflite_variables.py) lives in
``<prefix>_state``, one static buffer next to the arena, never in it: the memory plan leaves it
out (peak SRAM stays the arena) and the model reports it as ``state_bytes``. The buffer starts
as TFLM's interpreter does after ``reset()`` (each tensor memset with its ``state_fill``), or with
a tf.Variable's initial value where CALL_ONCE assigns one; ``<prefix>_reset()`` writes the fill
bytes again, as ``MicroInterpreter::Reset`` does (CALL_ONCE does not run again after it).

Layer functions reach a variable through their ordinary ``in<k>`` / ``out<k>`` pointers, which
point into the state buffer; an op that updates its state input in place (SVDF, LSTM) gets that
input as a non-const pointer (codegen.py asks ``mutable_input``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tinyengine_tf.errors import UnsupportedOpError
from tinyengine_tf.ir import Graph, Op
from tinyengine_tf.kernels.base import ALIGN, EmitContext, LayerCode, kernel

# Which inputs of an op may be variable tensors the op updates in place, and which read-only.
STATE_INPUTS = {"SVDF": (4,), "UNIDIRECTIONAL_SEQUENCE_LSTM": (18, 19)}
STATE_READERS = {"READ_VARIABLE": (0,)}
STATE_WRITERS = {"ASSIGN_VARIABLE": (0,)}


@dataclass
class StateLayout:
    offsets: dict = field(default_factory=dict)   # tensor index -> byte offset in the state buffer
    size: int = 0

    def __bool__(self) -> bool:
        return bool(self.offsets)


def state_tensors(graph: Graph) -> list:
    """Variable tensors the ops use, in first-use order."""
    seen = []
    for op in graph.ops:
        for t in op.inputs + op.outputs:
            if t >= 0 and graph.t(t).is_variable and t not in seen:
                seen.append(t)
    return seen


def state_layout(graph: Graph) -> StateLayout:
    layout = StateLayout()
    off = 0
    for t in state_tensors(graph):
        layout.offsets[t] = off
        off += (graph.t(t).nbytes + ALIGN - 1) // ALIGN * ALIGN
    layout.size = off
    return layout


def mutable_input(op: Op, k: int) -> bool:
    return k in STATE_INPUTS.get(op.kind, ())


def check_state_use(graph: Graph):
    """Variable tensors only where an op is known to read or update state the way TFLM does."""
    from tinyengine_tf.ir import DTYPE_BYTES
    for op in graph.ops:
        for t in op.inputs + op.outputs:
            if t >= 0 and graph.t(t).is_variable and graph.t(t).dtype not in DTYPE_BYTES:
                raise UnsupportedOpError(f"{op.label()}: variable tensor {graph.t(t).describe()} has "
                                         "an element type without a size", op.kind, op.index)
        for k, t in enumerate(op.inputs):
            if t >= 0 and graph.t(t).is_variable and k not in STATE_INPUTS.get(op.kind, ()) \
                    and k not in STATE_READERS.get(op.kind, ()):
                raise UnsupportedOpError(
                    f"{op.label()}: input {k} ({graph.t(t).describe()}) is a variable (persistent "
                    "state) tensor; only SVDF's activation state, the LSTM's output and cell states "
                    "and READ_VARIABLE may take one. Re-export the model with the TFLite converter",
                    op.kind, op.index)
        for k, t in enumerate(op.outputs):
            if graph.t(t).is_variable and k not in STATE_WRITERS.get(op.kind, ()):
                raise UnsupportedOpError(
                    f"{op.label()}: output {k} is a variable (persistent state) tensor; only "
                    "ASSIGN_VARIABLE may write one. Re-export the model with the TFLite converter",
                    op.kind, op.index)
        if op.kind in STATE_READERS or op.kind in STATE_WRITERS:
            var = graph.t(op.inputs[0] if op.kind in STATE_READERS else op.outputs[0])
            if not var.is_variable:
                raise UnsupportedOpError(f"{op.label()} does not refer to a variable", op.kind,
                                         op.index)


def init_image(graph: Graph, layout: StateLayout) -> bytes:
    """The state buffer's first contents: each tensor's initial value or its fill byte."""
    buf = bytearray(layout.size)
    for t, off in layout.offsets.items():
        tt = graph.t(t)
        n = tt.nbytes
        if tt.state_init is not None:
            buf[off:off + n] = tt.state_init[:n].ljust(n, b"\0")
        else:
            buf[off:off + n] = bytes([tt.state_fill & 0xFF]) * n
    return bytes(buf)


def reset_statements(graph: Graph, layout: StateLayout, base: str) -> list:
    """C statements of <prefix>_reset(): TFLM's reset, fill bytes over every variable."""
    # A byte loop, not memset: gcc's -Wmemset-elt-size misreads a length that equals the word
    # count of the state array.
    return [f"  for (int i = 0; i < {graph.t(t).nbytes}; ++i) ((uint8_t *){base})[{off} + i] = "
            f"{graph.t(t).state_fill & 0xFF}u;  /* {graph.t(t).describe()} */"
            for t, off in layout.offsets.items()]


def _copy(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    if len(op.inputs) != 1 or len(op.outputs) != 1 or op.inputs[0] < 0:
        raise ctx.unsupported(op, "expected one input and one output")
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    if x.nbytes != y.nbytes:
        raise ctx.unsupported(op, f"copies {x.describe()} into {y.describe()}, which differ in size")
    return LayerCode(body=f"\n  memcpy(out0, in0, {y.nbytes});")


@kernel("READ_VARIABLE", "ASSIGN_VARIABLE")
def variable_copy(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    """TFLM copies the variable's bytes out (READ) or in (ASSIGN): a memcpy either way."""
    return _copy(op, g, ctx)
