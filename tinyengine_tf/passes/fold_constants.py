"""Evaluate ops whose result is known at compile time (Keras 3's Flatten shape arithmetic).

SHAPE of a statically shaped tensor, and integer ops over constants (STRIDED_SLICE, PACK,
CONCATENATION, views), become constant tensors, so every shape the kernels see is static.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf.errors import UnsupportedOpError

_INT_DTYPES = ("int32", "int64")


def _strided_slice(op, x, begin, end, strides):
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0):
        raise UnsupportedOpError(f"{op.label()}: ellipsis/new-axis masks in shape arithmetic are "
                                 "not supported", op.kind, op.index)
    slices, shrink = [], []
    for d in range(len(begin)):
        b = None if (o.get("begin_mask", 0) >> d) & 1 else int(begin[d])
        e = None if (o.get("end_mask", 0) >> d) & 1 else int(end[d])
        s = int(strides[d])
        if (o.get("shrink_axis_mask", 0) >> d) & 1:
            idx = int(begin[d])
            slices.append(slice(idx, idx + 1 if idx != -1 else None, 1))
            shrink.append(d)
        else:
            slices.append(slice(b, e, s))
    out = x[tuple(slices)]
    return out.reshape([n for d, n in enumerate(out.shape) if d not in shrink]) if shrink else out


def _evaluate(op, g):
    ts = [g.t(i) if i >= 0 else None for i in op.inputs]
    if op.kind == "SHAPE":
        return np.array(ts[0].shape, dtype=np.int32)
    if not all(t is None or t.is_const for t in ts):
        return None
    vals = [t.data if t is not None else None for t in ts]
    if any(t is not None and t.dtype not in _INT_DTYPES for t in ts) and op.kind not in (
            "RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        return None  # float/int8 constant math is left to the kernels (none is expected)
    out_shape = g.t(op.outputs[0]).shape
    if op.kind == "STRIDED_SLICE":
        return _strided_slice(op, vals[0], vals[1], vals[2], vals[3])
    if op.kind == "PACK":
        return np.stack(vals, axis=op.options.get("axis", 0))
    if op.kind == "CONCATENATION":
        return np.concatenate(vals, axis=op.options.get("axis", 0))
    if op.kind in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        return vals[0].reshape(out_shape)
    if op.kind in ("ADD", "SUB", "MUL") and ts[0].dtype in _INT_DTYPES and not ts[0].quantized:
        f = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply}[op.kind]
        return f(vals[0], vals[1])
    return None


def fold_constants(graph):
    g = graph.copy()
    kept = []
    for op in g.ops:
        try:
            value = _evaluate(op, g) if len(op.outputs) == 1 else None
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            from tinyengine_tf.errors import InvalidModelError
            raise InvalidModelError(f"{op.label()}: its constant inputs do not fit its output "
                                    f"({exc}); the model is inconsistent") from None
        if value is None:
            kept.append(op)
            continue
        out = g.t(op.outputs[0])
        value = np.asarray(value).astype({"int32": np.int32, "int64": np.int64}.get(out.dtype, value.dtype))
        if out.shape and tuple(value.shape) != tuple(out.shape) and value.size == out.numel:
            value = value.reshape(out.shape)
        out.data = value
        if not out.shape and value.ndim:
            out.shape = tuple(value.shape)
    g.ops = kept
    return g
