"""Resource variables (VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE / CALL_ONCE) -> state tensors.

TFLite Micro keeps a tf.Variable as a resource: VAR_HANDLE names it (container, shared_name),
ASSIGN_VARIABLE copies a tensor into it, READ_VARIABLE copies it out, and CALL_ONCE runs an
initialization subgraph (VAR_HANDLE + ASSIGN_VARIABLE of constants) on the first invocation.
What it does, and so what this rewrite reproduces:

- a variable's buffer is allocated by the first ASSIGN_VARIABLE TFLM prepares (subgraph 0 in op
  order, then the init subgraph) with that value's byte size, and filled with that value's
  int8 zero point (MicroResourceVariables::Allocate); the interpreter's Reset() refills it with
  the same byte; CALL_ONCE never runs again after a reset;
- READ_VARIABLE and ASSIGN_VARIABLE copy exactly the variable's bytes.

The graph gets one Tensor per variable with is_variable=True (it lives in the state buffer, not
the arena): READ_VARIABLE becomes a copy from it (inputs [var]), ASSIGN_VARIABLE a copy into it
(outputs [var]); VAR_HANDLE and CALL_ONCE disappear, the init values become the variable's
state_init. Anything else touching a resource is refused with the op named.
"""
from __future__ import annotations

from tinyengine_tf.errors import InvalidModelError, UnsupportedOpError
from tinyengine_tf.ir import Op, Tensor

RESOURCE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE")
NO_OUTPUT_OPS = ("ASSIGN_VARIABLE", "CALL_ONCE")


def _text(v):
    """A flatbuffer string as TFLM's kernels see it: a C string, so up to its first NUL byte;
    None when the field is absent."""
    if v is None:
        return None
    raw = bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode()
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _fill_byte(t: Tensor) -> int:
    """The byte TFLM memsets a resource buffer with: the value tensor's first zero point, cast
    to int8 (0 when the tensor has no quantization parameters)."""
    if t.zero_point is None or not len(t.zero_point):
        return 0
    return int(t.zero_point[0]) & 0xFF


class _Variables:
    def __init__(self):
        self.keys: list = []       # (container, shared_name) in id order
        self.alloc: dict = {}      # id -> the value Tensor that allocated it
        self.init: dict = {}       # id -> bytes assigned by the init subgraph
        self.where: dict = {}      # id -> label of the allocating op

    def find_or_create(self, container, shared_name: str) -> int:
        # MicroResourceVariables::FindId: an absent container matches any, else strcmp.
        for k, (c, s) in enumerate(self.keys):
            if (container is None or c is None or container == c) and shared_name == s:
                return k
        self.keys.append((container, shared_name))
        return len(self.keys) - 1


def _handles(ops, tensors, variables, sg_label):
    """resource tensor index -> variable id, from the VAR_HANDLE ops (in order)."""
    handles = {}
    for op in ops:
        if op.kind != "VAR_HANDLE":
            continue
        if len(op.outputs) != 1 or op.inputs:
            raise InvalidModelError(f"{op.label()}{sg_label} must have no inputs and one output; "
                                    "the model is corrupt, re-export it")
        if tensors[op.outputs[0]].dtype != "resource":
            raise InvalidModelError(f"{op.label()}{sg_label} outputs a "
                                    f"{tensors[op.outputs[0]].dtype} tensor, not a resource; the "
                                    "model is corrupt, re-export it")
        name = _text(op.options.get("shared_name"))
        if not name:
            raise InvalidModelError(f"{op.label()}{sg_label} names no variable (empty shared_name); "
                                    "the model is corrupt, re-export it")
        handles[op.outputs[0]] = variables.find_or_create(_text(op.options.get("container")), name)
    return handles


def _resource(op, k, handles, tensors, sg_label) -> int:
    if k >= len(op.inputs) or op.inputs[k] not in handles:
        raise UnsupportedOpError(f"{op.label()}{sg_label}: input {k} is not the output of a "
                                 "VAR_HANDLE op; only variables named by VAR_HANDLE in the same "
                                 "subgraph are supported. Re-export the model with the TFLite "
                                 "converter (experimental_enable_resource_variables=True)",
                                 op.kind, op.index)
    return handles[op.inputs[k]]


def _sized(t: Tensor, op, sg_label="") -> Tensor:
    """t, when its element type has a byte size (a variable's bytes are copied)."""
    from tinyengine_tf.ir import DTYPE_BYTES
    if t.dtype not in DTYPE_BYTES:
        raise UnsupportedOpError(f"{op.label()}{sg_label}: tensor {t.describe()} has element type "
                                 f"{t.dtype}, which a variable cannot hold here; use a numeric "
                                 "tf.Variable", op.kind, op.index)
    return t


def _check_arity(op, n_in, n_out, sg_label):
    if len(op.inputs) != n_in or len(op.outputs) != n_out or any(i < 0 for i in op.inputs):
        raise InvalidModelError(f"{op.label()}{sg_label} must have {n_in} inputs and {n_out} "
                                f"outputs, has {len(op.inputs)} and {len(op.outputs)}; the model "
                                "is corrupt, re-export it")


def _init_subgraph(op, subgraphs, read_subgraph, variables, sub_cache):
    """Run CALL_ONCE's init subgraph at compile time: VAR_HANDLE + ASSIGN_VARIABLE(constant)."""
    index = op.options.get("init_subgraph_index")
    if not isinstance(index, int) or not 0 < index < len(subgraphs):
        raise InvalidModelError(f"{op.label()} calls subgraph {index}, but the model has "
                                f"{len(subgraphs)} subgraphs (and subgraph 0 cannot initialize "
                                "itself); the model is corrupt, re-export it")
    if index in sub_cache:
        return sub_cache[index]
    sub_cache[index] = []
    tensors, ops = read_subgraph(index)
    label = f" of init subgraph {index}"
    handles = _handles(ops, tensors, variables, label)
    assigns = []
    for o in ops:
        if o.kind == "VAR_HANDLE":
            continue
        if o.kind != "ASSIGN_VARIABLE":
            raise UnsupportedOpError(f"{o.label()}{label} (run by {op.label()}): an init subgraph "
                                     "may only assign constants to variables (VAR_HANDLE + "
                                     "ASSIGN_VARIABLE); initialize the tf.Variable with a constant",
                                     o.kind, o.index)
        _check_arity(o, 2, 0, label)
        vid = _resource(o, 0, handles, tensors, label)
        value = _sized(tensors[o.inputs[1]], o, label)
        if not value.is_const:
            raise UnsupportedOpError(f"{o.label()}{label}: the initial value of variable "
                                     f"'{variables.keys[vid][1]}' is not a constant; initialize the "
                                     "tf.Variable with a constant", o.kind, o.index)
        assigns.append((vid, value, o.label() + label))
    sub_cache[index] = assigns
    return assigns


def resolve_variables(ops: list, tensors: dict, subgraphs: list, read_subgraph) -> list:
    """ops (subgraph 0, execution order) with resources turned into state tensors. `tensors` is
    updated in place. read_subgraph(i) -> (tensors, ops) parses and validates subgraph i."""
    if not any(op.kind in RESOURCE_OPS for op in ops) and not any(
            t.dtype == "resource" for t in tensors.values()):
        return ops
    variables = _Variables()
    handles = _handles(ops, tensors, variables, "")
    sub_cache: dict = {}
    first_var_op = None
    once = []
    # Prepare order: subgraph 0's ops first (its ASSIGN_VARIABLEs allocate), then the init
    # subgraphs (CALL_ONCE's Prepare does not run them; PrepareSubgraphs visits every subgraph).
    for op in ops:
        if op.kind == "CALL_ONCE":
            if op.inputs or op.outputs:
                raise InvalidModelError(f"{op.label()} must have no inputs and no outputs; the "
                                        "model is corrupt, re-export it")
            if first_var_op is not None:
                raise UnsupportedOpError(f"{op.label()} runs after {first_var_op.label()} uses a "
                                         "variable; only a CALL_ONCE that runs before every "
                                         "variable access is supported (the TFLite converter puts "
                                         "it first)", op.kind, op.index)
            once.append(op)
        elif op.kind in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            first_var_op = first_var_op or op
            if op.kind == "ASSIGN_VARIABLE":
                _check_arity(op, 2, 0, "")
                vid = _resource(op, 0, handles, tensors, "")
                if vid not in variables.alloc:
                    variables.alloc[vid] = _sized(tensors[op.inputs[1]], op)
                    variables.where[vid] = op.label()
                _sized(tensors[op.inputs[1]], op)
            else:
                _check_arity(op, 1, 1, "")
                _resource(op, 0, handles, tensors, "")
                _sized(tensors[op.outputs[0]], op)
    for op in once:
        for vid, value, where in _init_subgraph(op, subgraphs, read_subgraph, variables, sub_cache):
            if vid not in variables.alloc:
                variables.alloc[vid] = value
                variables.where[vid] = where
            nbytes = variables.alloc[vid].nbytes
            if value.nbytes != nbytes:
                raise UnsupportedOpError(f"{where}: assigns {value.nbytes} bytes to variable "
                                         f"'{variables.keys[vid][1]}', which holds {nbytes}; "
                                         "re-export the model with one shape per variable",
                                         "ASSIGN_VARIABLE", None)
            variables.init[vid] = value.data.tobytes()[:nbytes]

    # One state tensor per variable.
    state = {}
    next_index = max(tensors, default=-1) + 1
    for vid, (container, name) in enumerate(variables.keys):
        src = variables.alloc.get(vid)
        if src is None:
            continue
        t = Tensor(index=next_index, name=f"variable:{name}", shape=tuple(src.shape),
                   dtype=src.dtype, scale=src.scale, zero_point=src.zero_point,
                   quantized_dim=src.quantized_dim)
        t.is_variable = True
        t.state_fill = _fill_byte(src)
        t.state_init = variables.init.get(vid)
        tensors[next_index] = t
        state[vid] = next_index
        next_index += 1

    out = []
    for op in ops:
        if op.kind in ("VAR_HANDLE", "CALL_ONCE"):
            continue
        if op.kind in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            vid = handles[op.inputs[0]]
            if vid not in state:
                raise UnsupportedOpError(f"{op.label()} uses variable '{variables.keys[vid][1]}', "
                                         "which no ASSIGN_VARIABLE ever writes (TFLite Micro has no "
                                         "buffer for it); assign it, or initialize the tf.Variable",
                                         op.kind, op.index)
            var = tensors[state[vid]]
            other = tensors[op.outputs[0]] if op.kind == "READ_VARIABLE" else tensors[op.inputs[1]]
            if other.nbytes != var.nbytes:
                raise UnsupportedOpError(f"{op.label()}: {other.describe()} has {other.nbytes} bytes "
                                         f"but variable '{variables.keys[vid][1]}' holds "
                                         f"{var.nbytes} (allocated by {variables.where[vid]}); "
                                         "re-export the model with one shape per variable",
                                         op.kind, op.index)
            if op.kind == "READ_VARIABLE":
                out.append(Op(op.index, op.kind, [state[vid]], list(op.outputs),
                              {"variable": variables.keys[vid][1]}))
            else:
                out.append(Op(op.index, op.kind, [op.inputs[1]], [state[vid]],
                              {"variable": variables.keys[vid][1]}))
            continue
        for i in op.inputs:
            if i >= 0 and tensors[i].dtype == "resource":
                raise UnsupportedOpError(f"{op.label()} takes a resource (variable handle) as "
                                         "input; only READ_VARIABLE and ASSIGN_VARIABLE may",
                                         op.kind, op.index)
        for i in op.outputs:
            if tensors[i].dtype == "resource":
                raise UnsupportedOpError(f"{op.label()} produces a resource tensor; only "
                                         "VAR_HANDLE may", op.kind, op.index)
        out.append(op)
    for k in [k for k, t in tensors.items() if t.dtype == "resource"]:
        del tensors[k]
    return out
