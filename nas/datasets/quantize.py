"""Float features -> the int8 a deployed model is fed, with that model's own input quantization.

The rounding is TFLite Micro's QUANTIZE (float32 division, ties away from zero, saturation), so
features quantized here equal what a float-input model would compute on the device.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyengine_tf.errors import DatasetError


def input_quantization(model) -> tuple[float, int]:
    """(scale, zero_point) of a model's first input.

    ``model``: a compiled model (``te.convert(...)``), an ``input_details`` entry, a
    ``(scale, zero_point)`` pair, or a ``.tflite`` path or its bytes.
    """
    if isinstance(model, tuple) and len(model) == 2:
        return float(model[0]), int(model[1])
    if isinstance(model, dict):
        details = model
    elif hasattr(model, "input_details"):
        details = model.input_details[0]
    elif isinstance(model, (str, Path, bytes, bytearray)):
        details = _tflite_input(model)
    else:
        raise DatasetError(f"cannot read an input quantization from {type(model).__name__}: pass "
                           "a compiled model, a .tflite path or a (scale, zero_point) pair")
    if details.get("scale") is None or details.get("dtype") not in (None, "int8"):
        raise DatasetError(f"input {details.get('name', '?')!r} is not int8-quantized "
                           f"({details.get('dtype')}); features can only be quantized for an int8 input")
    zp = details["zero_point"]
    return float(details["scale"]), int(np.atleast_1d(zp)[0])


def _tflite_input(model) -> dict:
    from converters.tflite_reader import read_tflite
    if isinstance(model, (str, Path)):
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise DatasetError(f"{model}: cannot read ({exc.strerror or exc})") from None
    else:
        data = bytes(model)
    graph = read_tflite(data)
    t = graph.t(graph.inputs[0])
    return {"name": t.name, "dtype": t.dtype,
            "scale": t.s if t.quantized else None, "zero_point": t.zp}


def quantize(x, model) -> np.ndarray:
    """int8 of float ``x`` under ``model``'s input quantization (see input_quantization)."""
    scale, zp = input_quantization(model)
    # The quotient in float32 as TFLM divides; rounding in float64 so that adding 0.5 is exact.
    q = (np.asarray(x, dtype=np.float32) / np.float32(scale)).astype(np.float64)
    # std::round: ties away from zero (np.round would round ties to even).
    q = np.where(np.isnan(q), 0.0, np.trunc(q + np.copysign(0.5, q)))
    return np.clip(q + zp, -128, 127).astype(np.int8)
