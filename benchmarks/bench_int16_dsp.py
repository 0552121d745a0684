"""Issue 11 (16x8 DSP path): Cortex-M4 instructions of int16 FULLY_CONNECTED / CONV_2D layers,
portable loops against the ``#if TE_DSP`` branch (SMLALD / SMLAD, c/te_int16_dsp.h).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_int16_dsp.py [--out benchmarks/results_int16_dsp.md]

Each model is one hand-built 16x8 layer of the sizes audio models use (int16 activations, int8
per-channel weights, int64 bias unless noted), plus a whole tf_keras DS-CNN quantized in 16x8
mode by te.convert (TensorFlow needed). Each is built twice from the same generated C:
with -DTE_NO_DSP (the portable loops: what the DSP build ran for these layers before the DSP
branch existed) and as the default DSP build; both firmwares are checked against TFLite Micro
on 4 inputs (the int16 extremes first; a mismatch stops the run), one inference is profiled
under QEMU (mps2-an386, instructions counted from its translation-block trace), and the linked
firmware's code beyond the weights (Flash minus the model's constant arrays) is reported.
A few minutes on one core.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SRAM, FLASH = 320 * 1024, 1024 * 1024

# name -> (kind, shape parameters, bias kind)
LAYERS = {
    "fc_490x128": ("fc", dict(rows=1, k=490, n=128), "int64"),
    "fc_128x12": ("fc", dict(rows=1, k=128, n=12), "int64"),
    "fc_4x64x64_int32": ("fc", dict(rows=4, k=64, n=64), "int32"),
    "conv3x3_16x16x16": ("conv", dict(h=16, w=16, ic=16, oc=16, k=(3, 3)), "int64"),
    "conv1x1_10x25x64": ("conv", dict(h=10, w=25, ic=64, oc=64, k=(1, 1)), "int64"),
    "conv3x3_s2_20x10x8": ("conv", dict(h=20, w=10, ic=8, oc=24, k=(3, 3), s=2), "int64"),
}


def build(kind, p, bias) -> bytes:
    sys.path.insert(0, str(ROOT / "tests"))
    from tflite_builder import ModelBuilder, bias_scale
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    xs, ys = 0.0005, 0.002
    if kind == "fc":
        x = b.tensor((p["rows"], p["k"]), dtype="int16", scale=xs, zp=0)
        n = p["n"]
        wshape = (n, p["k"])
    else:
        x = b.tensor((1, p["h"], p["w"], p["ic"]), dtype="int16", scale=xs, zp=0)
        n = p["oc"]
        wshape = (n, *p["k"], p["ic"])
    fs = list(rng.uniform(0.002, 0.02, n))
    w = b.tensor(wshape, scale=fs, zp=[0] * n, data=rng.integers(-127, 128, wshape))
    bt = b.tensor((n,), dtype=bias, scale=bias_scale(xs, fs), zp=[0] * n,
                  data=rng.integers(-1 << 20, 1 << 20, n))
    if kind == "fc":
        y = b.tensor((p["rows"], n), dtype="int16", scale=ys, zp=0)
        b.op("FULLY_CONNECTED", [x, w, bt], [y], "FullyConnectedOptions")
    else:
        s = p.get("s", 1)
        oh, ow = -(-p["h"] // s), -(-p["w"] // s)
        y = b.tensor((1, oh, ow, n), dtype="int16", scale=ys, zp=0)
        b.op("CONV_2D", [x, w, bt], [y], "Conv2DOptions", padding="SAME", strideH=s, strideW=s)
    return b.build([x], [y])


def keras_ds_cnn() -> bytes:
    """A DS-CNN keyword model (49 x 10 MFCC input, 64 channels) from tf_keras, quantized by
    te.convert(..., quantization="int16x8") (TFLite's 16x8 mode)."""
    import tf_keras as keras
    import tinyengine_tf as te
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((49, 10, 1))
    x = L.Conv2D(64, (10, 4), strides=2, padding="same", activation="relu")(inp)
    for _ in range(2):
        x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = L.Conv2D(64, 1, activation="relu")(x)
    x = L.Flatten()(L.AveragePooling2D((25, 5))(x))
    model = keras.Model(inp, L.Softmax()(L.Dense(12)(x)))
    data = np.random.default_rng(1).uniform(-1, 1, (32, 49, 10, 1)).astype(np.float32)
    return te.convert(model, data, quantization="int16x8", name="ds_cnn16").tflite


def measure(name: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import tinyengine_tf as te
    from reference import tflm_run
    from tinyengine_tf.compiled import _NP, _sample_shape
    if name == "keras_ds_cnn_16x8":
        data = keras_ds_cnn()
        bias = "int64"
    else:
        kind, p, bias = LAYERS[name]
        data = build(kind, p, bias)
    cm = te.convert(data, name=name)
    shape = _sample_shape(cm.graph.t(cm.graph.inputs[0]))
    rng = np.random.default_rng(7)
    x = rng.integers(-32768, 32768, (4, *shape)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    x[2].flat[::2] = -32768
    x[2].flat[1::2] = 32767
    want = tflm_run(data, x)
    row = {"name": name, "bias": bias}
    for dsp in (False, True):
        arrays, n, _ = cm._prepare_inputs(x)
        outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
        cm._run_firmware("cortex-m4", arrays, n, outs, dsp=dsp, sram=SRAM, flash=FLASH)
        if not np.array_equal(outs[0].reshape(np.shape(want)), want):
            raise SystemExit(f"{name}: the {'DSP' if dsp else 'portable'} firmware differs from "
                             "TFLite Micro; not profiling it")
        prof = cm.profile("cortex-m4", x[:1], dsp=dsp, sram=SRAM, flash=FLASH)
        fw = cm.build_firmware("cortex-m4", sram=SRAM, flash=FLASH, dsp=dsp)
        key = "dsp" if dsp else "portable"
        if len(prof.layers) == 1:
            row[key] = {"instructions": prof.layers[0].instructions, "code": fw.flash_bytes - cm.flash}
            row["macs"] = prof.layers[0].macs
        else:      # a whole model: the inference, and per op kind
            row[key] = {"instructions": prof.invoke_instructions, "code": fw.flash_bytes - cm.flash,
                        "kinds": {k: sum(l.instructions for l in prof.layers if l.kind == k)
                                  for k in sorted({l.kind for l in prof.layers})}}
            row["macs"] = prof.macs
            row["kind_macs"] = {k: sum(l.macs for l in prof.layers if l.kind == k)
                                for k in row[key]["kinds"]}
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_int16_dsp.md"))
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = [measure(name) for name in [*LAYERS, "keras_ds_cnn_16x8"]]
    out = ["# 16x8 DSP path on Cortex-M4 (issue 11)", "",
           "One 16x8 layer per model (int16 activations, int8 per-channel weights). Portable: the "
           "generated C built with -DTE_NO_DSP (the loops the DSP build ran for these layers "
           "before the DSP branch). DSP: the default build (arm-none-eabi-gcc -O2 "
           "-mcpu=cortex-m4). Instructions of the layer for one inference, counted from QEMU's "
           "trace (mps2-an386); both firmwares equal TFLite Micro on 4 inputs (int16 extremes "
           "first), checked by this script before profiling. Code: linked Flash minus the "
           "model's constant arrays.", "",
           "| layer | bias | MACs | instructions portable | DSP | instr/MAC portable | DSP | "
           "speed-up | code portable (B) | DSP (B) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, d, m = r["portable"], r["dsp"], r["macs"]
        out.append(f"| {r['name']} | {r['bias']} | {m:,} | {a['instructions']:,} | "
                   f"{d['instructions']:,} | {a['instructions'] / m:.2f} | "
                   f"{d['instructions'] / m:.2f} | {a['instructions'] / d['instructions']:.2f}x | "
                   f"{a['code']:,} | {d['code']:,} |")
    model = rows[-1]
    out += ["", "Whole model: keras_ds_cnn_16x8 (tf_keras DS-CNN, 49x10 input, conv 10x4 stride 2, "
            "two depthwise + 1x1 blocks of 64 channels, average pool, dense 12, softmax; "
            "te.convert(..., quantization=\"int16x8\")); instructions of the whole inference "
            "and per op kind (depthwise 16x8 has no DSP branch).", "",
            "| op kind | MACs | instructions portable | DSP | speed-up |", "|---|---:|---:|---:|---:|"]
    for k, pk in model["portable"]["kinds"].items():
        dk = model["dsp"]["kinds"][k]
        out.append(f"| {k} | {model['kind_macs'][k]:,} | {pk:,} | {dk:,} | {pk / dk:.2f}x |")
    out += ["", f"Measured by `benchmarks/bench_int16_dsp.py` in {time.time() - t0:.0f} s."]
    Path(args.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
