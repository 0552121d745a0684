"""Peak SRAM: TinyEngine's plan against TFLite Micro's measured arena, same models, one run.

    .venv/bin/python benchmarks/bench_memory.py [--out benchmarks/results_memory.md] [--no-keras]

Models: the four MLPerf Tiny models in ../shared/models, MobileNetV2 (alpha 0.35) at 64 and 144
pixels built in place (weights=None: nothing is downloaded) and quantized with random calibration
data, and MCUNet-style networks from the NAS space when `nas` is importable.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tinyengine_tf as te  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"


def shared_models():
    for name in ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]:
        yield name, (SHARED / f"{name}.tflite").read_bytes()


def keras_models():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tf_keras

    from converters.keras_to_tflite import keras_to_tflite

    for px in (64, 144):
        # Random weights give logits too small for any int8 softmax (TFLM refuses them too):
        # the benchmark is about activations, so the head ends at the logits.
        model = tf_keras.applications.MobileNetV2(input_shape=(px, px, 3), alpha=0.35, weights=None,
                                                  classes=10, classifier_activation=None)
        data = np.random.default_rng(0).uniform(-1, 1, (8, px, px, 3)).astype("float32")
        yield f"mobilenetv2_0.35_{px}", keras_to_tflite(model, data)
    try:
        import nas
    except ImportError:
        return
    space = nas.MCUNetSpace()
    for res, width, seed in ((96, 0.5, 0), (128, 0.4, 1)):
        arch = space.sample(resolution=res, width=width, rng=seed)
        model = nas.build_model(arch, num_classes=2)
        data = np.random.default_rng(seed).uniform(-1, 1, (8, res, res, 3)).astype("float32")
        yield f"mcunet_r{res}_w{width}", keras_to_tflite(model, data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_memory.md"))
    ap.add_argument("--no-keras", action="store_true", help="only the four shared models")
    args = ap.parse_args(argv)
    rows, ratios = [], []
    sources = [shared_models()] + ([] if args.no_keras else [keras_models()])
    for source in sources:
        for name, data in source:
            t0 = time.perf_counter()
            cm = te.convert(data, name=name.replace(".", "_"))
            rep = cm.memory_report()
            ratio = rep.tflm.arena_total / cm.peak_sram
            ratios.append(ratio)
            rows.append((name, cm.peak_sram, rep.lower_bound, rep.tflm.arena_total, rep.tflm.arena_head,
                         rep.tflm.arena_tail, ratio, rep.peak_layer))
            print(f"{name}: TinyEngine {cm.peak_sram:,} B (lower bound {rep.lower_bound:,}), TFLM "
                  f"{rep.tflm.arena_total:,} B, {ratio:.2f}x  [{time.perf_counter() - t0:.1f}s]", flush=True)
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    lines = ["| model | TinyEngine peak SRAM | lower bound | TFLM total | TFLM head | TFLM tail | TFLM total / TinyEngine | peak at |",
             "|---|---|---|---|---|---|---|---|"]
    for name, peak, lb, tot, head, tail, ratio, where in rows:
        lines.append(f"| {name} | {peak:,} | {lb:,} | {tot:,} | {head:,} | {tail:,} | {ratio:.2f}x | {where} |")
    lines += ["", f"Geometric-mean ratio TFLM total / TinyEngine: **{geo:.2f}x** over {len(rows)} models. "
                  "TFLM figures measured with the tflite-micro interpreter (x86-64; its tail holds "
                  "64-bit pointers, so it is larger than on a Cortex-M; the head is the same)."]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
