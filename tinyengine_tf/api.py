"""convert(): any supported model form -> CompiledModel."""
from __future__ import annotations

import os
from pathlib import Path

from tinyengine_tf.errors import DoesNotFitError, InvalidModelError, TinyEngineError


def load_tflite_bytes(model, representative_dataset=None) -> bytes:
    """The int8 flatbuffer for any accepted model form. Only Keras/SavedModel inputs import TF."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir():
            from converters.keras_to_tflite import saved_model_to_tflite
            return saved_model_to_tflite(str(path), representative_dataset)
        if not path.exists():
            raise InvalidModelError(f"{path}: no such file; pass a .tflite file, a SavedModel "
                                    "directory, .tflite bytes or a Keras model")
        return path.read_bytes()
    if hasattr(model, "layers") and hasattr(model, "inputs"):
        from converters.keras_to_tflite import keras_to_tflite
        return keras_to_tflite(model, representative_dataset)
    raise TinyEngineError(f"cannot convert a {type(model).__name__}: pass .tflite bytes, a path to a "
                          ".tflite file or SavedModel directory, or a Keras model")


def compile_tflite(data: bytes, name: str = "model", sram: int | None = None,
                   flash: int | None = None, patches=None, max_mac_overhead: float = 0.2):
    from converters.tflite_reader import check_quantized, read_tflite
    from tinyengine_tf.codegen import generate
    from tinyengine_tf.compiled import CompiledModel
    from tinyengine_tf.passes import run_passes

    source = read_tflite(data, name=name)
    check_quantized(source)
    graph = run_passes(source)
    if patches is not None:
        from tinyengine_tf.passes.patches import patch_prefix
        split, rows, cols = patches
        graph = patch_prefix(graph, split, rows, cols)
    cm = CompiledModel(graph, generate(graph, name), data, source)
    _check_budget(cm, sram, flash)
    return cm


def _check_budget(cm, sram, flash):
    problems = []
    if sram is not None and cm.peak_sram > sram:
        problems.append(f"peak SRAM {cm.peak_sram:,} B exceeds the {sram:,} B budget")
    if flash is not None and cm.flash > flash:
        problems.append(f"Flash {cm.flash:,} B exceeds the {flash:,} B budget")
    if problems:
        report = cm.memory_report()
        where = f"; the peak is at {report.peak_layer}" if report.peak_layer else ""
        raise DoesNotFitError(f"model '{cm.name}' does not fit: {'; '.join(problems)}{where}. "
                              "Use a smaller input resolution or width, or a larger budget", report)


def convert(model, representative_dataset=None, *, name: str = "model", sram: int | None = None,
            flash: int | None = None, patches=None, max_mac_overhead: float = 0.2):
    """Compile a model to specialized C. See shared/docs/design.md for the contract."""
    data = load_tflite_bytes(model, representative_dataset)
    return compile_tflite(data, name=name, sram=sram, flash=flash, patches=patches,
                          max_mac_overhead=max_mac_overhead)
