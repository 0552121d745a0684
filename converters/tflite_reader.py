"""TFLite flatbuffer bytes -> a validated tinyengine_tf IR Graph.

Parsing uses the TFLite schema's generated Python (shipped in the tflite-micro wheel) and the
flatbuffers runtime. Nothing downstream trusts the bytes: every index, buffer bound, shape and
quantization parameter is checked here, and any failure becomes an InvalidModelError.
"""
from __future__ import annotations

import re

import numpy as np

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tinyengine_tf.errors import InvalidModelError, QuantizationError, TinyEngineError
from tinyengine_tf.ir import DTYPE_BYTES, Graph, Op, Tensor

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_NUMPY = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
          "float32": np.float32, "int64": np.int64, "bool": np.bool_, "float16": np.float16,
          "float64": np.float64, "uint16": np.uint16, "uint32": np.uint32}
_PADDING = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}
_ACTIVATION = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 28


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_OPTION_TYPES = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}
_OPTIONS_FOR = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                "FULLY_CONNECTED": "FullyConnectedOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
                "MAX_POOL_2D": "Pool2DOptions", "SOFTMAX": "SoftmaxOptions", "ADD": "AddOptions",
                "SUB": "SubOptions", "MUL": "MulOptions", "RESHAPE": "ReshapeOptions",
                "CONCATENATION": "ConcatenationOptions", "PAD": "PadOptions",
                "MEAN": "ReducerOptions", "SQUEEZE": "SqueezeOptions"}
_OPTIONS_REQUIRED = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"}


_OPTIONS_IRREGULAR = {"BATCH_MATMUL": "BatchMatMulOptions", "LEAKY_RELU": "LeakyReluOptions",
                      "SPLIT_V": "SplitVOptions", "SUM": "ReducerOptions",
                      "REDUCE_MAX": "ReducerOptions", "REDUCE_MIN": "ReducerOptions",
                      "PADV2": "PadV2Options", "MAXIMUM": "MaximumMinimumOptions",
                      "MINIMUM": "MaximumMinimumOptions"}


def _options_for(kind: str) -> str | None:
    """The options table TFLM's parser reads for `kind`, when the schema has one."""
    if kind in _OPTIONS_FOR:
        return _OPTIONS_FOR[kind]
    if kind in _OPTIONS_IRREGULAR:
        return _OPTIONS_IRREGULAR[kind]
    name = "".join(w.capitalize() for w in kind.split("_")) + "Options"
    return name if name in _OPTION_TYPES.values() else None


def _check_options_type(op_t, kind, k) -> bool:
    """Whether the op's options are the ones TFLM reads. TFLM's parser
    (builtin_options_as_<Kind>Options) sees a table of another type as absent and runs with
    zero defaults, so such an op is accepted with default options; only ops whose defaults
    TFLM cannot run (stride 0 convolutions and pools) need their options."""
    where = f"{kind} (op #{k})"
    got = _OPTION_TYPES.get(op_t.builtinOptionsType, "UNKNOWN")
    want = _options_for(kind)
    usable = got != "NONE" and op_t.builtinOptions is not None and (want is None or got == want)
    if kind in _OPTIONS_REQUIRED and not usable:
        raise InvalidModelError(f"{where} carries {got} options instead of {want}; TFLite Micro "
                                "would run it with stride 0: the model is corrupt, re-export it")
    return usable


def _options(op_t) -> dict:
    """Builtin options as a plain dict with snake_case keys and enum names resolved."""
    opts = {}
    if op_t.builtinOptions is not None:
        for key, value in vars(op_t.builtinOptions).items():
            key = _snake(key)
            if isinstance(value, np.ndarray):
                value = [int(v) for v in value]
            opts[key] = value
    if "fused_activation_function" in opts:
        # TFLM's ConvertActivation maps a value outside the enum to NONE.
        opts["fused_activation_function"] = _ACTIVATION.get(opts["fused_activation_function"], "NONE")
    if "padding" in opts:
        if opts["padding"] not in _PADDING:
            raise InvalidModelError(f"unknown padding value {opts['padding']}; the model is corrupt")
        opts["padding"] = _PADDING[opts["padding"]]
    return opts


def _unpack(data: bytes):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidModelError(f"expected .tflite bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 16:
        raise InvalidModelError(
            f"the model is {len(data)} bytes long, too short to be a TFLite flatbuffer; "
            "pass the bytes of a .tflite file written by tf.lite.TFLiteConverter")
    if data[4:8] != b"TFL3":
        raise InvalidModelError(
            "the bytes are not a TFLite model (no 'TFL3' file identifier at offset 4); "
            "pass a .tflite file written by tf.lite.TFLiteConverter")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except TinyEngineError:
        raise
    except Exception as exc:  # the generated reader raises anything on corrupt offsets
        raise InvalidModelError(
            f"the TFLite flatbuffer is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "re-export the model") from None
    return data, model


def _buffer_bytes(data: bytes, model, index: int, where: str) -> bytes | None:
    if index == 0:
        return None
    if not model.buffers or index >= len(model.buffers) or index < 0:
        raise InvalidModelError(f"{where} refers to buffer {index}, but the model has "
                                f"{len(model.buffers or [])} buffers")
    buf = model.buffers[index]
    if buf.offset and buf.offset > 1:
        if buf.offset + buf.size > len(data):
            raise InvalidModelError(f"{where}: buffer {index} runs past the end of the file "
                                    f"(offset {buf.offset} + {buf.size} > {len(data)}); the file is truncated")
        return data[buf.offset:buf.offset + buf.size]
    if buf.data is None or len(buf.data) == 0:
        return None
    return np.asarray(buf.data, dtype=np.uint8).tobytes()


def _tensor(data: bytes, model, index: int, t) -> Tensor:
    where = f"tensor #{index}"
    name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else (t.name or "")
    if t.type not in _TYPE_NAMES:
        raise InvalidModelError(f"{where} ({name}) has unknown element type {t.type}")
    dtype = _TYPE_NAMES[t.type]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    if any(d < 0 or d > MAX_DIM for d in shape):
        raise InvalidModelError(f"{where} ({name}) has an invalid shape {list(shape)}; "
                                "dynamic shapes are not supported, convert with a fixed batch size")
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if numel > MAX_ELEMENTS:
        raise InvalidModelError(f"{where} ({name}) claims {numel} elements, more than any MCU model")
    if t.isVariable and t.buffer not in (0, None) and _buffer_bytes(data, model, t.buffer, where):
        raise InvalidModelError(f"{where} ({name}) is a variable (persistent state) with constant "
                                "data; TFLite Micro ignores such data and starts from zero. The "
                                "model is corrupt, re-export it")
    if t.sparsity is not None:
        raise InvalidModelError(f"{where} ({name}) is sparse; densify the model before converting")

    raw = _buffer_bytes(data, model, t.buffer, f"{where} ({name})")
    array = None
    if dtype == "int4":
        # Packed 4-bit weights (conv, depthwise, FC filters): TFLM unpacks them to int8 before
        # its int8 kernels run (UnpackDenseInt4IntoInt8: low nibble first, sign-extended), so
        # the reader does the same and the constant is int8 from here on.
        if raw is None:
            raise InvalidModelError(f"{where} ({name}) is an int4 tensor without data; only "
                                    "constant int4 weights are supported")
        need = (numel + 1) // 2
        if len(raw) < need:
            raise InvalidModelError(f"{where} ({name}): buffer holds {len(raw)} bytes but "
                                    f"{numel} int4 values need {need}")
        packed = np.frombuffer(raw[:need], dtype=np.int8).astype(np.int16)
        low = ((packed << 4).astype(np.int8) >> 4).astype(np.int8)
        high = (packed.astype(np.int8) >> 4).astype(np.int8)
        array = np.stack([low, high], axis=1).ravel()[:numel].reshape(shape).copy()
        raw, dtype = None, "int8"
    if raw is not None:
        if dtype not in _NUMPY:
            raise InvalidModelError(f"{where} ({name}) is a constant of unsupported type {dtype}")
        expected = numel * DTYPE_BYTES[dtype]
        # TFLM reads the first `expected` bytes and never compares the buffer's length with the
        # shape: a longer buffer is accepted (its tail ignored); a shorter one would be read
        # past its end, so it stays an error.
        if len(raw) < expected:
            raise InvalidModelError(f"{where} ({name}): buffer holds {len(raw)} bytes but shape "
                                    f"{list(shape)} of {dtype} needs {expected}")
        array = np.frombuffer(raw[:expected], dtype=_NUMPY[dtype]).reshape(shape).copy()

    scale, zero_point, qdim = _quantization(t.quantization, dtype, where, name)
    tensor = Tensor(index=index, name=name, shape=shape, dtype=dtype, scale=scale,
                    zero_point=zero_point, quantized_dim=qdim, data=array)
    if t.isVariable:
        # Persistent state (SVDF / LSTM state inputs). TFLM's reset memsets it with an int8
        # tensor's first zero point (the raw one, scale or not), 0 for any other type.
        tensor.is_variable = True
        q = t.quantization
        if dtype == "int8" and q is not None and q.zeroPoint is not None and len(q.zeroPoint):
            tensor.state_fill = int(q.zeroPoint[0]) & 0xFF
    return tensor


# Element types whose quantization parameters TFLM's int8/int16 kernels never turn into
# arithmetic: int32/int64 constants are biases (their scale is implied by input x filter scale;
# only FULLY_CONNECTED compares it, with a tolerance) or raw integers (shapes, axes, pads);
# float and bool tensors are never dequantized (QUANTIZE reads its int output's parameters,
# DEQUANTIZE its int input's).
_RAW_INTEGER_TYPES = ("int32", "int64", "float32", "float16", "float64", "bool")


def _quantization(q, dtype: str, where: str, name: str):
    """(scale, zero_point, quantized_dim) as TFLM's allocator builds them
    (InitializeTfLiteTensorFromFlatbuffer), or (None, None, 0) for an unquantized tensor.

    What TFLM does, and so what is accepted here:
    - a tensor is quantized only when it has both scales and zero points; scales alone leave it
      unquantized (TFLM's kernels then reject it where they need quantization);
    - the scales set the channel count; when the zero-point count differs from it, TFLM uses
      the first zero point for every channel (the space saving the TFLite converter uses for
      symmetric weights), and so does the reader;
    - quantized_dimension is stored, never checked here: TFLM ignores it on biases (a 1-D bias
      may carry quantized_dimension 3) and conv/depthwise kernels index their own channel axis;
      each kernel checks the scale count against the axis it reads, as TFLM's Prepare does.
    Kept because the generated arithmetic relies on them: scales finite and positive and zero
    points within the element type on tensors whose quantization becomes arithmetic.
    """
    if q is None or q.scale is None or len(q.scale) == 0:
        return None, None, 0
    if q.zeroPoint is None or len(q.zeroPoint) == 0:
        return None, None, 0
    scale = np.asarray(q.scale, dtype=np.float32)
    zero_point = np.asarray(q.zeroPoint, dtype=np.int64)
    if len(zero_point) != len(scale):
        zero_point = np.repeat(zero_point[:1], len(scale))
    qdim = int(q.quantizedDimension)
    if dtype in _RAW_INTEGER_TYPES:
        return scale, zero_point, qdim
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise InvalidModelError(f"{where} ({name}) has a non-positive or non-finite "
                                f"quantization scale {scale[:4].tolist()}")
    lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}.get(
        dtype, (-2**31, 2**31 - 1))
    if np.any(zero_point < lo) or np.any(zero_point > hi):
        raise InvalidModelError(f"{where} ({name}) has zero point {zero_point[:4].tolist()} "
                                f"outside the {dtype} range")
    return scale, zero_point, qdim


def read_tflite(data: bytes, name: str = "model") -> Graph:
    """Parse and validate; returns the graph with ops in a valid execution order."""
    data, model = _unpack(data)
    # model.version is not checked: TFLM's interpreter never reads it (its examples compare it
    # with TFLITE_SCHEMA_VERSION, the interpreter runs any value); the 'TFL3' identifier that
    # _unpack requires already fixes the layout.
    subgraphs = model.subgraphs or []
    if not subgraphs:
        raise InvalidModelError("the model has no subgraph; re-export it")
    # TFLM runs subgraph 0; further subgraphs only run through control-flow ops (IF, WHILE,
    # CALL_ONCE), which subgraph 0 would then contain and which the code generator refuses by
    # name. Unreferenced extra subgraphs change nothing, so they are accepted and ignored.
    tensors, ops = _subgraph(data, model, subgraphs[0])
    sg = subgraphs[0]
    n = len(tensors)

    def check_index(i, where):
        if not (-1 <= i < n):
            raise InvalidModelError(f"{where} refers to tensor {i}, but the subgraph has {n} tensors")
        return int(i)

    inputs = [check_index(i, "subgraph input") for i in (sg.inputs if sg.inputs is not None else [])]
    outputs = [check_index(i, "subgraph output") for i in (sg.outputs if sg.outputs is not None else [])]
    if not inputs or not outputs or min(inputs + outputs) < 0:
        raise InvalidModelError("the subgraph must declare at least one input and one output tensor")
    for i in inputs + outputs:
        if tensors[i].dtype == "resource" or tensors[i].is_variable:
            raise InvalidModelError(f"model input/output tensor #{i} ({tensors[i].name}) is a "
                                    "variable or resource; a model's inputs and outputs must be "
                                    "plain tensors. Re-export the model")
    ordered = _execution_order(ops, tensors, inputs)
    from converters.tflite_variables import resolve_variables
    ordered = resolve_variables(ordered, tensors, subgraphs,
                                lambda k: _subgraph(data, model, subgraphs[k], k))
    graph = Graph(tensors=tensors, ops=ordered, inputs=inputs, outputs=outputs, name=name)
    _check_dataflow(graph)
    return graph


def _subgraph(data: bytes, model, sg, sg_index: int = 0):
    """(tensors, ops in file order) of one subgraph, every index checked."""
    from converters.tflite_variables import NO_OUTPUT_OPS
    raw_tensors = sg.tensors or []
    tensors = {i: _tensor(data, model, i, t) for i, t in enumerate(raw_tensors)}
    n = len(tensors)
    in_sg = f" in subgraph {sg_index}" if sg_index else ""

    def check_index(i, where):
        if not (-1 <= i < n):
            raise InvalidModelError(f"{where}{in_sg} refers to tensor {i}, but the subgraph has "
                                    f"{n} tensors")
        return int(i)

    opcodes = model.operatorCodes or []
    ops = []
    for k, op_t in enumerate(sg.operators or []):
        if not (0 <= op_t.opcodeIndex < len(opcodes)):
            raise InvalidModelError(f"op #{k} uses operator code {op_t.opcodeIndex}, but the model "
                                    f"defines {len(opcodes)}")
        oc = opcodes[op_t.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        kind = _OP_NAMES.get(code, f"BUILTIN_{code}")
        if kind == "CUSTOM":
            custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
            kind = f"CUSTOM:{custom}"
        ins = [check_index(i, f"{kind} (op #{k}) input") for i in (op_t.inputs if op_t.inputs is not None else [])]
        outs = [check_index(i, f"{kind} (op #{k}) output") for i in (op_t.outputs if op_t.outputs is not None else [])]
        if (not outs and kind not in NO_OUTPUT_OPS) or any(o < 0 for o in outs):
            raise InvalidModelError(f"{kind} (op #{k}){in_sg} has no valid output tensor")
        usable = _check_options_type(op_t, kind, k)
        try:
            options = _options(op_t) if usable else {}
        except InvalidModelError as exc:
            raise InvalidModelError(f"{kind} (op #{k}): {exc}") from None
        ops.append(Op(index=k, kind=kind, inputs=ins, outputs=outs, options=options))
    return tensors, ops


def _execution_order(ops, tensors, inputs):
    """Ops sorted so every input is ready before use; the file's order wins among ready ops."""
    producer = {}
    for op in ops:
        for o in op.outputs:
            if o in producer:
                raise InvalidModelError(f"tensor #{o} is written by both {producer[o].label()} and "
                                        f"{op.label()}")
            if tensors[o].is_const:
                raise InvalidModelError(f"{op.label()} writes into constant tensor #{o}")
            producer[o] = op
    ready = set(inputs) | {i for i, t in tensors.items() if t.is_const}
    pending, order = list(ops), []
    while pending:
        for j, op in enumerate(pending):
            if all(i < 0 or i in ready or i not in producer for i in op.inputs):
                order.append(op)
                ready.update(op.outputs)
                del pending[j]
                break
        else:
            raise InvalidModelError(f"the graph has a cycle through {pending[0].label()}")
    return order


def _check_dataflow(graph: Graph):
    produced = set(graph.inputs) | {o for op in graph.ops for o in op.outputs}
    for op in graph.ops:
        for i in op.inputs + op.outputs:
            if i >= 0 and not graph.t(i).is_const and 0 in graph.t(i).shape:
                raise InvalidModelError(f"{op.label()} uses tensor #{i} of shape "
                                        f"{list(graph.t(i).shape)}, which holds no elements")
    for op in graph.ops:
        for i in op.inputs:
            if i >= 0 and not graph.t(i).is_const and not graph.t(i).is_variable and i not in produced:
                raise InvalidModelError(f"{op.label()} reads tensor #{i} ({graph.t(i).name}), which "
                                        "is neither a constant, a model input nor any op's output")
    for o in graph.outputs:
        if graph.t(o).is_const:
            raise InvalidModelError(f"model output tensor #{o} is a constant; a model's outputs "
                                    "must be computed by its ops")
        if o not in produced:
            raise InvalidModelError(f"model output tensor #{o} is never written")
    for i in graph.inputs:
        if graph.t(i).is_const:
            raise InvalidModelError(f"model input tensor #{i} is a constant")


def check_quantized(graph: Graph):
    """A float model cannot be compiled; say how to quantize it."""
    for op in graph.ops:
        # Quantize/dequantize convert at the float boundary; variable reads and writes copy
        # bytes (the converter keeps an unquantized tf.Variable in float32 between them).
        if op.kind in ("QUANTIZE", "DEQUANTIZE", "READ_VARIABLE", "ASSIGN_VARIABLE"):
            continue
        for i in op.inputs + op.outputs:
            if i >= 0 and graph.t(i).dtype == "float32":
                raise QuantizationError(
                    f"{op.label()} computes in float32: the model is not fully int8-quantized. "
                    "Pass the Keras model with representative_dataset=... to tinyengine_tf.convert(), "
                    "or convert with converter.optimizations=[tf.lite.Optimize.DEFAULT] and "
                    "target_spec.supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]")
