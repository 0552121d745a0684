"""Side by side with Arm's CMSIS-NN on a Cortex-M4 under QEMU: instructions per inference and per
layer, instructions per MAC, code beyond the weights, arena + scratch.

    .venv/bin/python benchmarks/bench_cmsis_nn.py [--cmsis-nn ../shared/vendor/cmsis-nn]
        [--out benchmarks/results_cmsis_nn.md] [--models vww_96_int8 ... mobilenet_v2_0.35_96]
        [--cache /tmp/tinyengine_cmsis_models]

For every model: ours is cm.build_firmware("cortex-m4") of te.convert(..., flash=1 MiB), the
Flash it links into (FULLY_CONNECTED and convolution filters widened to int16, depthwise
records stored precomputed, where it leaves room); the CMSIS-NN
side is the same source model called layer by layer through the CMSIS-NN functions TFLite Micro's
cmsis_nn kernels call, with the parameters TFLM's Prepare computes (tinyengine_tf/cmsis_nn.py),
CMSIS-NN built from the given checkout. Both: arm-none-eabi-gcc -O2 -mcpu=cortex-m4 -mthumb -mfloat-abi=soft, DSP on,
-ffunction-sections -fdata-sections -Wl,--gc-sections, newlib-nano, QEMU mps2-an386. Both are
checked against the TFLite Micro interpreter bit for bit (all -128, all 127, alternating
extremes, random inputs) before one random input is profiled from QEMU's translation-block
trace, every instruction a layer causes (CMSIS-NN kernels, memcpy/memset, __aeabi_* helpers)
charged to it. The four models of ../shared/models plus two MobileNets built with
tf_keras.applications (weights=None, BatchNorm statistics re-estimated on random data so the
activations do not vanish, a 10-class average-pool + dense + softmax head, int8 PTQ on random
data), cached under --cache. Takes a few minutes.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tinyengine_tf as te  # noqa: E402
from tinyengine_tf import cmsis_nn  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
SHARED_MODELS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]
# name: (application, input size, alpha)
MOBILENETS = {"mobilenet_v2_0.35_96": ("MobileNetV2", 96, 0.35),
              "mobilenet_v1_0.25_128": ("MobileNet", 128, 0.25)}
MODELS = SHARED_MODELS + list(MOBILENETS)
TARGET = "cortex-m4"
CHECK_SAMPLES = 6
# The Flash both firmware images link into (cm.build_firmware's and cmsis_nn.build_firmware's
# default): ours is converted with it as its budget, so the Flash it leaves may widen
# FULLY_CONNECTED and convolution filters to int16 (api._widen_in_flash).
FLASH = 1024 * 1024


# -- the MobileNets ---------------------------------------------------------------------------

def build_mobilenet(app: str, size: int, alpha: float, seed: int = 0) -> bytes:
    import tensorflow as tf
    import tf_keras
    tf_keras.utils.set_random_seed(seed)
    base = getattr(tf_keras.applications, app)(input_shape=(size, size, 3), alpha=alpha,
                                               include_top=False, weights=None)
    h = base.output
    h = tf_keras.layers.AveragePooling2D(pool_size=tuple(h.shape[1:3]))(h)
    h = tf_keras.layers.Flatten()(h)
    h = tf_keras.layers.Dense(10)(h)
    h = tf_keras.layers.Softmax()(h)
    model = tf_keras.Model(base.input, h)
    rng = np.random.default_rng(seed + 1)
    calib = rng.uniform(-1, 1, (16, size, size, 3)).astype(np.float32)
    # weights=None leaves BatchNorm at mean 0 / variance 1: through ~50 random layers the
    # activations then shrink to nothing (a softmax input scale of 1e-8, which TFLM rejects).
    # Re-estimate each BatchNorm's statistics on the calibration data, in order, with a small
    # random shift, as a trained network's would be.
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            probe = tf_keras.Model(model.input, layer.input)
            a = probe.predict(calib, verbose=0)
            gamma, beta, _, _ = layer.get_weights()
            beta = rng.normal(0.0, 0.2, beta.shape).astype(np.float32)
            layer.set_weights([gamma, beta, a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2)) + 1e-3])

    def representative():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def load(name: str, cache: Path) -> bytes:
    if name in MOBILENETS:
        path = cache / f"{name}.tflite"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            t = time.time()
            path.write_bytes(build_mobilenet(*MOBILENETS[name]))
            print(f"built {name} in {time.time() - t:.0f} s -> {path}", file=sys.stderr)
        return path.read_bytes()
    return (SHARED / f"{name}.tflite").read_bytes()


# -- one model --------------------------------------------------------------------------------

def measure(name: str, data: bytes, cmsis_dir) -> cmsis_nn.Comparison:
    """Both sides checked against TFLM on CHECK_SAMPLES inputs, then one random input profiled."""
    from reference import int8_inputs, tflm_run
    cm = te.convert(data, name=name.replace(".", "_"), flash=FLASH)
    g = cm.source_graph
    shape = tuple(int(d) for d in g.t(g.inputs[0]).shape[1:])
    x = int8_inputs(shape, CHECK_SAMPLES, seed=11)      # -128, 127, alternating, then random
    comp = cmsis_nn.compare(cm, cmsis_dir, x=[x[CHECK_SAMPLES - 1:]], target=TARGET,
                            reference=lambda xs: tflm_run(data, xs), x_check=[x])
    comp.model = name
    return comp


# -- tables -----------------------------------------------------------------------------------

def yes(b) -> str:
    return "yes" if b else "**NO**"


def summary(rows) -> str:
    out = ["| model | MACs | instructions: ours | CMSIS-NN | ours / CMSIS-NN | instr/MAC: ours | "
           "CMSIS-NN | code beyond weights (B): ours | CMSIS-NN | Flash (B): ours | CMSIS-NN | "
           "arena + scratch (B): ours | CMSIS-NN | bit-exact with TFLM: ours | CMSIS-NN |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|"]
    for c in rows:
        o, t = c.ours, c.cmsis
        out.append(f"| {c.model} | {o.macs:,} | {o.instructions:,} | {t.instructions:,} | "
                   f"{c.ratio:.2f} | {o.per_mac:.2f} | {t.per_mac:.2f} | {o.code_beyond_weights:,} | "
                   f"{t.code_beyond_weights:,} | {o.flash:,} | {t.flash:,} | {o.arena + o.scratch:,} | "
                   f"{t.arena:,} + {t.scratch:,} | {yes(o.bit_exact)} | {yes(t.bit_exact)} |")
    return "\n".join(out)


def per_layer(c) -> str:
    """Source ops in TFLM's order; ours by the source op index (a PAD ours folds into the next
    convolution has no row of its own on our side)."""
    ours_by_op: dict = {}
    for step, op_index, kind, instr, lib, macs in c.ours.layers:
        ours_by_op.setdefault(op_index, []).append((kind, instr, lib, macs))
    out = ["| # | op | CMSIS-NN call | MACs | CMSIS-NN instructions | of which in called functions "
           "| CMSIS-NN instr/MAC | ours instructions | ours instr/MAC | ours / CMSIS-NN |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for step, op_index, kind, instr, lib, macs in c.cmsis.layers:
        mine = ours_by_op.get(op_index)
        tpm = f"{instr / macs:.2f}" if macs else ""
        if mine:
            oi = sum(m[1] for m in mine)
            opm = f"{oi / macs:.2f}" if macs else ""
            ratio = f"{oi / instr:.2f}" if instr else ""
            ours = f"{oi:,}"
        else:
            ours, opm, ratio = "folded" if kind != "RESHAPE" else "0 (view)", "", ""
        out.append(f"| {op_index} | {kind} | {c.calls.get(step) or 'none (view)'} | {macs:,} | "
                   f"{instr:,} | {lib:,} | {tpm} | {ours} | {opm} | {ratio} |")
    return "\n".join(out)


def machine(cmsis_dir) -> str:
    def tool(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "not found"
    notice = Path(cmsis_dir) / "NOTICE.md"
    commit = ""
    if notice.exists():
        import re
        m = re.search(r"commit ([0-9a-f]{40})", notice.read_text())
        commit = f" (commit {m.group(1)})" if m else ""
    return (f"- CMSIS-NN: {cmsis_dir}{commit}\n"
            f"- compiler: {tool(['arm-none-eabi-gcc', '--version'])}, -O2 -mcpu=cortex-m4 -mthumb "
            f"-mfloat-abi=soft, -ffunction-sections -fdata-sections -Wl,--gc-sections, newlib-nano\n"
            f"- emulator: {tool(['qemu-system-arm', '--version'])}, machine mps2-an386\n"
            f"- host: {platform.platform()}, Python {platform.python_version()}\n"
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cmsis-nn", default=str(cmsis_nn.default_dir()),
                    help="a CMSIS-NN checkout (Include/, Source/); default %(default)s")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_cmsis_nn.md"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--cache", default="/tmp/tinyengine_cmsis_models",
                    help="where the MobileNets are built once")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    for name in args.models:
        t = time.time()
        data = load(name, Path(args.cache))
        comp = measure(name, data, args.cmsis_nn)
        rows.append(comp)
        print(f"{name}: ours {comp.ours.instructions:,}, CMSIS-NN {comp.cmsis.instructions:,} "
              f"({comp.ratio:.2f}), {time.time() - t:.1f} s", file=sys.stderr)
    text = ["# Side by side with CMSIS-NN on a Cortex-M4 (QEMU)", "",
            "Ours: the firmware `cm.build_firmware(\"cortex-m4\")` links, the model converted "
            "with `flash=1 MiB`, the Flash that firmware links into (and CMSIS-NN's): where it "
            "leaves room, FULLY_CONNECTED filters and the pointwise and windowed convolutions' "
            "filters are stored widened to int16 (fewer instructions for twice their bytes, in "
            "ours' Flash column; AD01's ten layers, the CNNs' 64-channel-and-up 1x1 layers and "
            "ResNet's 3x3 ones: `api._widen_in_flash`), and the in-place depthwise layers' "
            "per-channel records (doubled weights, requantization constants) are stored "
            "precomputed instead of filled at run time (about 40 bytes a channel). "
            "CMSIS-NN: the same source "
            "model called layer by layer, no interpreter, through the CMSIS-NN functions TFLite "
            "Micro's `kernels/cmsis_nn` call (`arm_convolve_wrapper_s8`, "
            "`arm_depthwise_conv_wrapper_s8`, `arm_fully_connected_wrapper_s8`, "
            "`arm_elementwise_add_s8`, `arm_avgpool_s8`, `arm_softmax_s8`, `arm_pad_s8`; RESHAPE is "
            "a view) with TFLM's Prepare parameters and the scratch its `*_get_buffer_size` "
            "functions ask for (`tinyengine_tf/cmsis_nn.py`). Both sides built and run the same "
            "way (see Machine), both checked bit for bit against the TFLite Micro interpreter on "
            "all -128, all 127, alternating extremes and random inputs, then one random input "
            "profiled. Instructions are counted exactly from QEMU's translation-block trace for "
            "the whole inference; every instruction a layer causes is charged to it (CMSIS-NN's "
            "kernels, memcpy/memset, `__aeabi_*` helpers), on both sides. MACs: convolutions, "
            "depthwise convolutions and fully-connected layers. Code beyond weights: the linked "
            "image's Flash (vectors, text, read-only data, data) minus that side's constant "
            "arrays (weights, biases and per-channel multipliers and shifts: ours `cm.flash`, as "
            "`bench_firmware.py` counts it; CMSIS-NN's int8 weights, int32 biases, int32 "
            "multipliers and shifts), i.e. code, parameter structs and small tables; start-up and "
            "the QEMU harness (about 0.3 KB) are in it on both sides. Flash is the whole image "
            "(the weights are the same bytes on both sides, but for filters ours widened). "
            "Arena + scratch: ours is one arena (scratch inside); CMSIS-NN's arena is planned greedily (TFLM's strategy, RESHAPE in "
            "place) and its scratch is one buffer of the largest layer's `*_get_buffer_size`.", "",
            summary(rows), ""]
    for c in rows:
        text += [f"## {c.model}, layer by layer", "", per_layer(c), ""]
    text += ["## Machine", "", machine(args.cmsis_nn), "", f"Run time: {time.time() - t0:.0f} s.", ""]
    md = "\n".join(text)
    print(md)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
