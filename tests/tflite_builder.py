"""Build small .tflite models directly with the TFLite schema's object API (no TensorFlow).

Tests use this to cover op parameters the Keras converter never emits (dilation with stride,
per-tensor filters, odd pads, broadcasts) and to keep each model tiny and fast to judge.

    b = ModelBuilder()
    x = b.tensor((1, 8, 8, 3), scale=0.05, zp=-3)
    w = b.tensor((4, 3, 3, 3), scale=[0.01] * 4, zp=[0] * 4, data=weights, qdim=0)
    bias = b.tensor((4,), dtype="int32", scale=..., zp=[0] * 4, data=bias_values)
    y = b.tensor((1, 8, 8, 4), scale=0.1, zp=5)
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
    model_bytes = b.build(inputs=[x], outputs=[y])
"""
from __future__ import annotations

import flatbuffers
import numpy as np

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

_TYPES = {"int8": schema.TensorType.INT8, "int16": schema.TensorType.INT16,
          "int32": schema.TensorType.INT32, "float32": schema.TensorType.FLOAT32,
          "uint8": schema.TensorType.UINT8, "int64": schema.TensorType.INT64,
          "bool": schema.TensorType.BOOL}
_NP = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "float32": np.float32,
       "uint8": np.uint8, "int64": np.int64, "bool": np.bool_}
_PADDING = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}
_ACT = {k: v for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}


class ModelBuilder:
    def __init__(self):
        self.tensors: list = []
        self.buffers: list = [schema.BufferT()]  # buffer 0 is the empty sentinel
        self.ops: list = []
        self.opcodes: list = []

    def tensor(self, shape, dtype="int8", scale=None, zp=None, data=None, qdim=0, name=None) -> int:
        t = schema.TensorT()
        t.shape = list(int(d) for d in shape)
        t.type = _TYPES[dtype]
        t.name = name or f"t{len(self.tensors)}"
        if scale is not None:
            q = schema.QuantizationParametersT()
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zps = np.atleast_1d(np.asarray(0 if zp is None else zp, dtype=np.int64))
            if len(zps) == 1 and len(scales) > 1:
                zps = np.repeat(zps, len(scales))
            q.scale = [float(s) for s in scales]
            q.zeroPoint = [int(z) for z in zps]
            q.quantizedDimension = qdim
            t.quantization = q
        if data is not None:
            arr = np.asarray(data, dtype=_NP[dtype]).reshape(shape)
            buf = schema.BufferT()
            buf.data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _opcode(self, kind: str) -> int:
        code = getattr(schema.BuiltinOperator, kind)
        for i, oc in enumerate(self.opcodes):
            if oc.builtinCode == code:
                return i
        oc = schema.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        self.opcodes.append(oc)
        return len(self.opcodes) - 1

    def op(self, kind: str, inputs, outputs, options_type: str | None = None, **options):
        o = schema.OperatorT()
        o.opcodeIndex = self._opcode(kind)
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        if options_type:
            opts = getattr(schema, options_type + "T")()
            for key, value in options.items():
                if key == "padding" and isinstance(value, str):
                    value = _PADDING[value]
                if key == "fusedActivationFunction" and isinstance(value, str):
                    value = _ACT[value]
                if not hasattr(opts, key):
                    raise AttributeError(f"{options_type} has no field {key}")
                setattr(opts, key, value)
            o.builtinOptionsType = getattr(schema.BuiltinOptions, options_type)
            o.builtinOptions = opts
        self.ops.append(o)
        return o

    def build(self, inputs, outputs) -> bytes:
        sg = schema.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = list(inputs)
        sg.outputs = list(outputs)
        sg.operators = self.ops
        sg.name = "main"
        m = schema.ModelT()
        m.version = 3
        m.operatorCodes = self.opcodes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = "tinyengine-tf test model"
        fb = flatbuffers.Builder(1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())


def bias_scale(input_scale, filter_scales):
    """The int32 bias scale TFLM expects: input_scale * filter_scale (per channel)."""
    return [float(np.float32(input_scale) * np.float32(s)) for s in np.atleast_1d(filter_scales)]
