"""Cortex-M firmware: builds within budgets, runs under QEMU, equals TFLM; sizes and profiles."""
import numpy as np
import pytest

import tinyengine_tf as te
from reference import SHARED_MODEL_NAMES, compiled_shared_model, int8_inputs, model_inputs, tflm_run
from tflite_builder import ModelBuilder
from tinyengine_tf.errors import DoesNotFitError


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_shared_model_fits_and_matches_tflm_under_qemu(shared_models, name, target):
    cm, data = compiled_shared_model(shared_models, name)
    fw = cm.build_firmware(target, sram=320 * 1024, flash=1024 * 1024)
    assert fw.flash_bytes <= 1024 * 1024 and fw.sram_bytes <= 320 * 1024
    # The arena and the constants are in the ELF: SRAM holds at least the arena, Flash the weights.
    assert fw.sram_bytes >= cm.peak_sram and fw.flash_bytes >= cm.flash
    x = model_inputs(cm, 8, seed=3)[0]
    assert np.array_equal(cm.run(x, target=target), tflm_run(data, x))


def test_cortex_m55_runs_too(shared_models):
    cm, data = compiled_shared_model(shared_models, "kws_ref_model")
    x = int8_inputs((49, 10, 1), 4, seed=5)
    assert np.array_equal(cm.run(x, target="cortex-m55"), tflm_run(data, x))


def test_runtime_code_beyond_weights_for_vww(shared_models):
    cm, _ = compiled_shared_model(shared_models, "vww_96_int8")
    fw = cm.build_firmware("cortex-m4")
    overhead = fw.flash_bytes - cm.flash
    assert 0 < overhead <= 16 * 1024, f"{overhead} bytes of code and tables beyond the weights"


def _big_fc_model(out_features=1024, in_features=2048):
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor((1, in_features), scale=0.05, zp=0)
    w = b.tensor((out_features, in_features), scale=0.01, zp=0,
                 data=rng.integers(-127, 128, (out_features, in_features)))
    y = b.tensor((1, out_features), scale=0.1, zp=0)
    b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions")
    return b.build([x], [y])


def test_two_megabyte_model_does_not_fit_one_megabyte():
    cm = te.convert(_big_fc_model())
    assert cm.flash >= 2 * 1024 * 1024
    with pytest.raises(DoesNotFitError, match=r"Flash over by [\d,]+ B"):
        cm.build_firmware("cortex-m4", sram=320 * 1024, flash=1024 * 1024)


def test_arena_larger_than_sram_does_not_fit(shared_models):
    cm, _ = compiled_shared_model(shared_models, "vww_96_int8")
    with pytest.raises(DoesNotFitError, match="SRAM over by"):
        cm.build_firmware("cortex-m4", sram=32 * 1024, flash=1024 * 1024)


def test_profile_counts_every_layer(shared_models):
    cm, _ = compiled_shared_model(shared_models, "kws_ref_model")
    prof = cm.profile("cortex-m4")
    assert all(layer.instructions > 0 for layer in prof.layers if layer.kind != "RESHAPE")
    assert prof.macs > 0 and prof.invoke_instructions >= sum(l.instructions for l in prof.layers)
    # A MAC cannot take less than a fraction of an instruction, nor hundreds of them.
    assert 0.3 < prof.per_mac < 60
    again = cm.profile("cortex-m4")
    assert again.invoke_instructions == prof.invoke_instructions  # exact counts are repeatable


def test_streamed_profile_equals_the_logged_one(shared_models):
    """profile(stream=True) counts the trace from a FIFO as QEMU writes it, consecutive blocks of
    one function merged: every layer's figure equals the one read from the trace log."""
    cm, _ = compiled_shared_model(shared_models, "kws_ref_model")
    logged, streamed = (cm.profile("cortex-m4", stream=s) for s in (False, True))
    assert streamed.invoke_instructions == logged.invoke_instructions > 0
    assert [(l.kind, l.instructions, l.library) for l in streamed.layers] == \
        [(l.kind, l.instructions, l.library) for l in logged.layers]
    assert streamed.glue == logged.glue


@pytest.mark.parametrize("seed_name", ["new_ops", "int16x8"])
def test_issue_11_ops_and_16x8_match_tflm_under_qemu(seed_name):
    """The fuzz seeds that chain every op issue 11 added (int8) and a 16x8 keyword chain, built
    for Cortex-M4 (DSP path on) and run under QEMU: equal to TFLM, extremes included."""
    from test_reader_fuzz import seed_model
    model = seed_model(seed_name)
    cm = te.convert(model)
    shape = tuple(cm.graph.t(cm.graph.inputs[0]).shape[1:])
    if seed_name == "new_ops":
        x = int8_inputs(shape, 6)
    else:
        x = np.random.default_rng(0).integers(-32768, 32768, (6, *shape)).astype(np.int16)
        x[0], x[1] = -32768, 32767
    y = cm.run(x, target="cortex-m4")
    assert np.array_equal(np.asarray(y).reshape(6, -1), tflm_run(model, x).reshape(6, -1))


def _invoke_window(blocks, invoke: str) -> dict:
    """Instructions per function from the first block of <invoke> until the harness's main runs
    again: the whole inference, whoever executes it (read straight off the ordered trace)."""
    per_fn, inside = {}, False
    for fn, n in blocks:
        if fn == invoke:
            inside = True
        elif fn == "main" and inside:
            break
        if inside:
            per_fn[fn] = per_fn.get(fn, 0) + n
    return per_fn


def test_profile_charges_library_calls_to_the_layer(shared_models):
    """Issue 12: memset/memcpy and other library calls a layer makes are charged to it, so the
    per-layer totals (plus the invoke body) equal the whole inference counted off the trace."""
    from tinyengine_tf.compiled import _NP, _sample_shape
    from tinyengine_tf.profile import profile_from_trace
    cm, _ = compiled_shared_model(shared_models, "kws_ref_model")
    x = [int8_inputs(_sample_shape(t), 1, seed=2) for t in cm._io("in")]
    arrays, _, _ = cm._prepare_inputs(x)
    outs = [np.empty((1, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    trace = cm._run_firmware("cortex-m4", arrays, 1, outs, trace=True)
    window = _invoke_window(trace.blocks, f"{cm.prefix}_invoke")
    whole = sum(window.values())
    prof = profile_from_trace(cm, trace)
    assert sum(l.instructions for l in prof.layers) + prof.glue == prof.invoke_instructions == whole
    # The layers do call the C library here (memset), and all of it lands in the layers.
    library = sum(n for f, n in window.items() if not f.startswith(cm.prefix))
    assert library > 0, window.keys()
    assert sum(l.library for l in prof.layers) == library
    # Layer functions: one per layer (_L), or one shared by identical layers (_S).
    own = sum(n for f, n in window.items() if f.startswith((f"{cm.prefix}_L", f"{cm.prefix}_S")))
    assert whole == own + prof.glue + library > own + prof.glue  # layer functions alone miss it
    assert cm.profile("cortex-m4", x=x).invoke_instructions == whole  # the public path agrees


def _objdump(elf) -> str:
    import subprocess
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def test_hard_float_builds_match_tflm_like_soft_float(shared_models):
    """Issue 12: -mfloat-abi=hard -mfpu=fpv4-sp-d16 (Cortex-M4F) and fpv5-d16 (M7) firmware gives
    TFLM's outputs bit for bit, like the soft-float build: float32 in and out (QUANTIZE's
    division and rounding, DEQUANTIZE; ties, infinities, NaN, denormals) and an int8 model."""
    import subprocess
    from test_kernels_quantize import _float_model, assert_same_floats, float_samples
    from tinyengine_tf.firmware import cpu_flags, target
    # newlib ships a hard-float multilib for each (what the link below uses)
    for name, want_dir in (("cortex-m4", "thumb/v7e-m+fp/hard"), ("cortex-m7", "thumb/v7e-m+dp/hard")):
        got = subprocess.run(["arm-none-eabi-gcc", *cpu_flags(target(name), "hard"),
                              "-print-multi-directory"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
        assert got == want_dir, (name, got)
    model = _float_model((1, 40), 0.0235294, -1, mid=(0.05, 7))
    cm = te.convert(model)
    xs = float_samples((40,), 0.0235294, -1, n=24)
    want = tflm_run(model, xs)
    instructions = {}
    for target, abi in (("cortex-m4", "soft"), ("cortex-m4", "hard"), ("cortex-m7", "hard")):
        assert_same_floats(cm.run(xs, target=target, float_abi=abi), want)
        fw = cm.build_firmware(target, float_abi=abi)
        assert fw.float_abi == abi
        code = _objdump(fw.elf)
        if abi == "hard":   # the FPU does the float work, no soft-float helper is linked
            assert "vdiv.f32" in code and "__aeabi_fdiv" not in code
        else:
            assert "__aeabi_fdiv" in code and "vdiv.f32" not in code
        if target == "cortex-m4":
            instructions[abi] = cm.profile(target, x=xs[:1], float_abi=abi).invoke_instructions
    assert instructions["hard"] < instructions["soft"]
    kws, data = compiled_shared_model(shared_models, "kws_ref_model")
    x = int8_inputs((49, 10, 1), 3, seed=9)
    assert np.array_equal(kws.run(x, target="cortex-m4", float_abi="hard"), tflm_run(data, x))
    with pytest.raises(te.TinyEngineError, match="float ABI"):
        kws.build_firmware("cortex-m4", float_abi="softfp")


def _worst_stack(cm, opt: str, dsp: bool) -> tuple:
    """(bytes, path) of the deepest call path from Reset_Handler in the M4 firmware built with
    `opt`, from gcc's per-function frames and call graph (-fcallgraph-info=su)."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path
    from tinyengine_tf import firmware as F, toolchain
    t = F.target("cortex-m4")
    sources = {**cm.sources, "te_main.c": F.harness(cm), **F.firmware_sources()}
    flags = [*toolchain.WARNINGS, opt, *F.cpu_flags(t, "soft"), "-ffunction-sections",
             "-fdata-sections", "-fno-strict-aliasing"] + ([] if dsp else ["-DTE_NO_DSP"])
    frames, calls = {}, {}
    with tempfile.TemporaryDirectory(prefix="te_stack_") as tmp:
        for name, text in sources.items():
            Path(tmp, name).write_text(text)
        for c in sorted(Path(tmp).glob("*.c")):
            subprocess.run([F._tool("arm-none-eabi-gcc"), *flags, "-I", tmp, "-c", str(c), "-o",
                            str(c.with_suffix(".o")), "-fcallgraph-info=su"], check=True, cwd=tmp)
        for ci in Path(tmp).glob("*.ci"):
            text = ci.read_text()
            for title, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]*)"', text):
                su = re.search(r"(\d+) bytes \((\w+)\)", label)
                if su:
                    assert su.group(2) == "static", (title, label)
                    frames[title] = int(su.group(1))
            for src, dst in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
                calls.setdefault(src, set()).add(dst)

    def deepest(fn, seen=()):
        assert fn not in seen, f"recursion through {fn}"
        below = [deepest(g, seen + (fn,)) for g in calls.get(fn, ())]
        best = max(below, default=(0, []))
        return frames.get(fn, 0) + best[0], [fn] + best[1]
    return deepest("Reset_Handler")


@pytest.mark.parametrize("opt", ["-O2", "-O0"])
@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_firmware_stack_holds_the_deepest_layer(shared_models, name, opt):
    """The conv forms' expanded operands live on the stack (conv_dsp_base.DSP_STACK per layer): the
    deepest path, with an exception frame's 32 B, fits the firmware's stack (ResNet at -O2:
    3,232 B of 4,096)."""
    from tinyengine_tf.firmware import STACK_BYTES
    cm, data = compiled_shared_model(shared_models, name)
    for dsp in (True, False):
        worst, path = _worst_stack(cm, opt, dsp)
        assert worst + 32 <= STACK_BYTES, (worst, path)
    # with the filters the Flash has room for widened (windows of 3 or 2 pixels on the stack)
    wide = te.convert(data, name=name, flash=1 << 20)
    worst, path = _worst_stack(wide, opt, True)
    assert worst + 32 <= STACK_BYTES, (worst, path)
