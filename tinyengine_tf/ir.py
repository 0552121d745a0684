"""The graph every stage after the reader works on: plain data, no TensorFlow.

A Graph holds Tensors (activations and constants) and Ops in execution order. Passes rewrite it;
the planner and the code generator only read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

DTYPE_BYTES = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "int32": 4, "float32": 4,
               "int64": 8, "float16": 2, "float64": 8, "uint32": 4, "uint16": 2}
C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t",
           "float32": "float", "int64": "int64_t", "bool": "uint8_t"}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    dtype: str
    scale: Optional[np.ndarray] = None        # float32, one per tensor or per channel
    zero_point: Optional[np.ndarray] = None   # int64, same length as scale
    quantized_dim: int = 0
    data: Optional[np.ndarray] = None         # set for constants (weights, folded shapes)
    # Persistent state (kernels/state.py): a variable tensor lives in the model's state buffer,
    # outside the arena, and keeps its value across invocations. state_fill is the byte the
    # reset writes over it (TFLM: an int8 tensor's zero point, else 0); state_init, when set, is
    # its first value instead (a tf.Variable's initializer, run once by CALL_ONCE).
    is_variable: bool = False
    state_fill: int = 0
    state_init: Optional[bytes] = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def numel(self) -> int:
        return math.prod(int(d) for d in self.shape)   # 1 for a scalar; Python ints: no overflow

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]

    @property
    def quantized(self) -> bool:
        return self.scale is not None and len(self.scale) > 0

    @property
    def per_channel(self) -> bool:
        return self.quantized and len(self.scale) > 1

    @property
    def s(self) -> float:
        """Per-tensor scale as the float32 TFLM reads."""
        return float(np.float32(self.scale[0]))

    @property
    def zp(self) -> int:
        return int(self.zero_point[0]) if self.zero_point is not None and len(self.zero_point) else 0

    def describe(self) -> str:
        q = f" s={self.s:.6g} zp={self.zp}" if self.quantized and not self.per_channel else ""
        return f"{self.name or '#%d' % self.index} {self.dtype}{list(self.shape)}{q}"


@dataclass
class Op:
    index: int            # position in the source model's operator list, for messages
    kind: str             # TFLite builtin name, e.g. "CONV_2D"
    inputs: list          # tensor indices; -1 marks an omitted optional input
    outputs: list
    options: dict = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.kind} (op #{self.index})"


@dataclass
class Graph:
    tensors: dict         # index -> Tensor
    ops: list             # execution order
    inputs: list          # tensor indices
    outputs: list
    name: str = "model"

    def t(self, index: int) -> Tensor:
        return self.tensors[index]

    def producer(self, tensor_index: int) -> Optional[Op]:
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None

    def consumers(self, tensor_index: int) -> list:
        return [op for op in self.ops if tensor_index in op.inputs]

    def copy(self) -> "Graph":
        # Shallow field copies (arrays are shared, never mutated in place): passes run this per
        # graph and the NAS per sampled network, so it skips the dataclass machinery.
        tensors = {}
        for k, v in self.tensors.items():
            t = Tensor.__new__(Tensor)
            t.__dict__.update(v.__dict__)
            tensors[k] = t
        ops = []
        for op in self.ops:
            o = Op.__new__(Op)
            o.__dict__.update(op.__dict__, inputs=list(op.inputs), outputs=list(op.outputs),
                              options=dict(op.options))
            ops.append(o)
        return type(self)(tensors=tensors, ops=ops, inputs=list(self.inputs),
                          outputs=list(self.outputs), name=self.name)

    def new_tensor(self, **kw) -> Tensor:
        index = max(self.tensors, default=-1) + 1
        t = Tensor(index=index, **kw)
        self.tensors[index] = t
        return t

    def op_counts(self) -> dict:
        counts: dict = {}
        for op in self.ops:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        return counts

    def summary(self) -> str:
        lines = [f"graph {self.name}: {len(self.ops)} ops, inputs "
                 f"{[self.t(i).describe() for i in self.inputs]}"]
        for op in self.ops:
            ins = ", ".join(self.t(i).describe() for i in op.inputs if i >= 0 and not self.t(i).is_const)
            outs = ", ".join(self.t(i).describe() for i in op.outputs)
            lines.append(f"  {op.label()}: {ins} -> {outs}")
        return "\n".join(lines)
