"""convert(): any supported model form -> CompiledModel."""
from __future__ import annotations

import os
from pathlib import Path

from tinyengine_tf.errors import DoesNotFitError, InvalidModelError, TinyEngineError


QUANTIZATIONS = ("int8", "int16x8")
OPTIMIZE = ("speed", "size")


def load_tflite_bytes(model, representative_dataset=None, quantization: str = "int8") -> bytes:
    """The int8 (or 16x8) flatbuffer for any accepted model form. Only Keras/SavedModel inputs
    import TF; `quantization` applies to those (a .tflite file is compiled as it is quantized)."""
    if quantization not in QUANTIZATIONS:
        from tinyengine_tf.errors import QuantizationError
        raise QuantizationError(f"quantization={quantization!r} is not one of {QUANTIZATIONS}")
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir():
            from converters.keras_to_tflite import saved_model_to_tflite
            return saved_model_to_tflite(str(path), representative_dataset, quantization)
        if not path.exists():
            raise InvalidModelError(f"{path}: no such file; pass a .tflite file, a SavedModel "
                                    "directory, .tflite bytes or a Keras model")
        return path.read_bytes()
    if hasattr(model, "layers") and hasattr(model, "inputs"):
        from converters.keras_to_tflite import keras_to_tflite
        return keras_to_tflite(model, representative_dataset, quantization)
    raise TinyEngineError(f"cannot convert a {type(model).__name__}: pass .tflite bytes, a path to a "
                          ".tflite file or SavedModel directory, or a Keras model")


def compile_tflite(data: bytes, name: str = "model", sram: int | None = None,
                   flash: int | None = None, patches=None, max_mac_overhead: float = 0.2,
                   input_in_arena: bool = True, optimize: str = "speed"):
    check_optimize(optimize)
    from converters.tflite_reader import check_quantized, read_tflite
    from tinyengine_tf.codegen import generate
    from tinyengine_tf.compiled import CompiledModel
    from tinyengine_tf.passes import run_passes

    source = read_tflite(data, name=name)
    check_quantized(source)
    graph = run_passes(source)
    plain = graph
    choice = None
    if patches is not None:
        graph, choice = _apply_patches(graph, patches, max_mac_overhead, input_in_arena)
    gen = generate(graph, name, input_in_arena, optimize)
    if flash is not None and optimize == "speed":
        graph, gen = _widen_in_flash(graph, gen, flash, name, input_in_arena)
    cm = CompiledModel(graph, gen, data, source)
    cm.patch_choice = choice
    cm.unpatched_graph = plain
    cm.input_in_arena = input_in_arena
    cm.optimize = optimize
    _check_budget(cm, sram, flash, plain, max_mac_overhead, input_in_arena, patches)
    return cm


# Flash left to the code when filters are widened: more than the largest code
# beyond weights measured on the benchmark models (MobileNetV2-0.35: 33 kB on the M4).
WIDEN_CODE_ROOM = 48 * 1024


def _widen_in_flash(graph, gen, flash: int, name: str, input_in_arena: bool):
    """(graph, generated) with the FULLY_CONNECTED and CONV_2D filters that the Flash budget has
    room for widened to int16 (kernels/fc_tiled.py's "w16" form, conv_dsp_p.py's widened "p"
    form: fewer instructions for twice the filter bytes) and the in-place DEPTHWISE_CONV_2D
    layers' per-channel DSP records stored instead of filled at run time (kernels/depthwise.py),
    most instructions saved per extra byte first, while the constants (cm.flash, what the budget is checked against) stay within it
    less WIDEN_CODE_ROOM: the budget counts constants only, and widening must not eat the room
    the code will need at link time.
    Unchanged where nothing fits."""
    import dataclasses

    from tinyengine_tf.codegen import generate
    from tinyengine_tf.kernels import conv, depthwise, fully_connected
    from tinyengine_tf.kernels.base import WIDE_WEIGHTS

    room = flash - gen.flash_bytes - WIDEN_CODE_ROOM
    widening = {"FULLY_CONNECTED": fully_connected.widening, "CONV_2D": conv.widening,
                "DEPTHWISE_CONV_2D": depthwise.widening}
    gains = [(pos, g) for pos, op in enumerate(graph.ops)
             if op.kind in widening and (g := widening[op.kind](op, graph))]
    gains.sort(key=lambda pg: (-pg[1][1] / max(pg[1][0], 1), pg[0]))
    chosen = set()
    for pos, (extra, saved) in gains:
        if saved > 0 and extra <= room:
            chosen.add(pos)
            room -= extra
    if not chosen:
        return graph, gen
    ops = [dataclasses.replace(op, options={**op.options, WIDE_WEIGHTS: True}) if pos in chosen
           else op for pos, op in enumerate(graph.ops)]
    wide = dataclasses.replace(graph, ops=ops)
    wide_gen = generate(wide, name, input_in_arena, "speed")
    return (wide, wide_gen) if wide_gen.flash_bytes <= flash - WIDEN_CODE_ROOM else (graph, gen)


def check_optimize(optimize):
    if not isinstance(optimize, str) or optimize not in OPTIMIZE:
        raise TinyEngineError(f"optimize={optimize!r} is not one of {OPTIMIZE}: pass "
                              "optimize=\"speed\" (the default: specialized code per layer) or "
                              "optimize=\"size\" (kernels shared across layers, less code)")


def _apply_patches(graph, patches, max_mac_overhead, input_in_arena):
    from tinyengine_tf.passes.patches import patch_prefix
    from tinyengine_tf.patch_search import search

    if isinstance(patches, str):
        if patches != "auto":
            raise TinyEngineError(f"patches={patches!r}: use \"auto\", None, or (split_op_index, "
                                  "rows, cols)")
        choice = search(graph, max_mac_overhead, input_in_arena)
        if choice.best is None:
            return graph, choice
        return patch_prefix(graph, *choice.best.setting), choice
    try:
        split, rows, cols = patches
    except (TypeError, ValueError):
        raise TinyEngineError(f"patches={patches!r}: use \"auto\", None, or a tuple "
                              "(split_op_index, rows, cols)") from None
    return patch_prefix(graph, split, rows, cols), None


def _check_budget(cm, sram, flash, plain=None, max_mac_overhead=0.2, input_in_arena=True,
                  patches=None):
    problems = []
    if sram is not None and cm.peak_sram > sram:
        problems.append(f"peak SRAM {cm.peak_sram:,} B exceeds the {sram:,} B budget")
    if flash is not None and cm.flash > flash:
        problems.append(f"Flash {cm.flash:,} B exceeds the {flash:,} B budget")
    if problems:
        report = cm.memory_report()
        where = f"; the peak is at {report.peak_layer}" if report.peak_layer else ""
        hint = ""
        if sram is not None and cm.peak_sram > sram and plain is not None:
            hint = _patch_hint(plain, sram, max_mac_overhead, input_in_arena, patches)
        raise DoesNotFitError(f"model '{cm.name}' does not fit: {'; '.join(problems)}{where}. "
                              f"{hint}Use a smaller input resolution or width, or a larger budget",
                              report)


def _patch_hint(graph, sram, max_mac_overhead, input_in_arena, patches) -> str:
    """Which patch setting would make the model fit, if any (within twice the MAC limit)."""
    from tinyengine_tf.patch_search import search

    for limit in sorted({max_mac_overhead, max(2 * max_mac_overhead, 0.5)}):
        best = search(graph, limit, input_in_arena).best
        if best is not None and best.peak_sram <= sram:
            over = best.extra_macs / max(search_macs(graph), 1)
            return (f"With patch-based inference it fits: patches={best.setting} gives peak SRAM "
                    f"{best.peak_sram:,} B at +{100 * over:.1f}% MACs (pass that, or "
                    f"patches=\"auto\", max_mac_overhead={max(limit, round(over + 0.005, 2))}). ")
    if input_in_arena:
        best = search(graph, max(2 * max_mac_overhead, 0.5), False).best
        if best is not None and best.peak_sram <= sram:
            return (f"With the input read from the caller's memory (input_in_arena=False) and "
                    f"patches={best.setting} it fits: peak SRAM {best.peak_sram:,} B. ")
    return "Patch-based inference does not make it fit either. " if patches is None else ""


def search_macs(graph) -> int:
    from tinyengine_tf.profile import graph_macs
    return graph_macs(graph)


def convert(model, representative_dataset=None, *, name: str = "model", sram: int | None = None,
            flash: int | None = None, quantization: str = "int8", patches=None,
            max_mac_overhead: float = 0.2, input_in_arena: bool = True, optimize: str = "speed"):
    """Compile a model to specialized C. See shared/docs/design.md for the contract.

    quantization: for a Keras model or SavedModel, "int8" (default) or "int16x8" (TFLite's 16x8
    mode: int16 activations, int8 weights).
    patches: None (op by op), "auto" (the split op and grid with the least peak SRAM whose extra
    MACs stay within max_mac_overhead of the model's; op by op when none beats it), or
    (split_op_index, rows, cols): ops up to and including source op #split_op_index run as a
    rows x cols grid of patches of that op's output (passes/patches.py).
    input_in_arena: True counts the input tensor in the arena (the caller's data is copied in);
    False reads it where the caller keeps it (a camera frame buffer, external RAM, Flash): the
    arena holds no input and the model never writes to the caller's buffer.
    flash: a budget for the constants (cm.flash); with optimize="speed", the room it leaves
    stores FULLY_CONNECTED and CONV_2D filters widened to int16 (kernels/fc_tiled.py,
    kernels/conv_dsp_p.py: fewer instructions for twice their bytes) and the in-place depthwise
    layers' per-channel DSP records precomputed (kernels/depthwise.py), most instructions saved
    per byte first, leaving WIDEN_CODE_ROOM (48 KiB) of it to the code. None widens nothing.
    optimize: "speed" (default) specializes every layer's code for its shape; "size" has the
    model's convolutions and in-place depthwise convolutions call one shared kernel per family
    with a small table of each layer's parameters (kernels/compact.py): less code beyond the
    weights, more instructions. Outputs, constant arrays and the memory plan are the same.
    """
    check_optimize(optimize)
    data = load_tflite_bytes(model, representative_dataset, quantization)
    return compile_tflite(data, name=name, sram=sram, flash=flash, patches=patches,
                          max_mac_overhead=max_mac_overhead, input_in_arena=input_in_arena,
                          optimize=optimize)
