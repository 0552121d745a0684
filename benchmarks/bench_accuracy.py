"""Accuracy under a memory budget: the TinyNAS-searched network against two hand-designed ones.

    python benchmarks/bench_accuracy.py [--data DIR] [--per-word 120] [--epochs 10] [--trials 6]
                                        [--budget 64,256] [--budget 128,512] [--spaces small,full]

On the offline speech set (`nas.datasets.synthesize_speech_commands`, the 12-class Speech Commands
task, split by synthetic voice), under each SRAM/Flash budget (KiB):

- TinyNAS: `nas.search` (stage 1 over every width of the MCUNet space at 49x10x1, stage 2 for
  --trials QAT trials), scored on the validation split;
- DS-CNN: the MLPerf Tiny keyword-spotting reference architecture (conv 10x4 stride 2, 64 channels,
  4 x (depthwise 3x3 + pointwise 64), average pool, dense; BN + ReLU after every conv);
- MobileNetV2: the inverted-residual network with every channel count scaled by alpha, the largest
  alpha of ALPHAS whose compiled model fits the budget (checked with te.convert(..., sram=, flash=)).

All are trained the same way as a stage-2 trial (nas/stage2_tuner.py): from scratch, tfmot
QAT for --epochs epochs, Adam at the same learning rate and batch size, on the same augmented
training array; then int8 .tflite, tinyengine_tf.convert under the budget, and the generated C run
on the int8 test split. The C's accuracy is checked to equal TFLite Micro's on the same .tflite.
The Cortex-M4 column is the exact instruction count of one inference under QEMU (DSP path).

Writes benchmarks/results_accuracy.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # tfmot quantizes tf_keras models only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

NUM_CLASSES = 12
INPUT_SHAPE = (49, 10, 1)
BATCH_SIZE = 32
LEARNING_RATE = 2e-3      # nas.search's default: every model gets the trial's recipe
ALPHAS = (1.0, 0.75, 0.5, 0.35, 0.25, 0.2, 0.15, 0.1)
# MobileNetV2's (expand ratio, channels, repeats, stride) table.
MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
        (6, 320, 1, 1))


# -- the two hand-designed networks (tf_keras, layers tfmot's default QAT scheme knows) -------
def _bn():
    """BatchNormalization as nas.build_model makes it: the same training recipe for all three.
    (Keras' default momentum 0.99 leaves the moving statistics far from the batch statistics
    after a few hundred steps; MobileNetV2 then evaluates at chance.)"""
    import tf_keras as keras

    from nas.build import BN_EPSILON, BN_MOMENTUM
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)


def ds_cnn(num_classes: int = NUM_CLASSES, input_shape=INPUT_SHAPE):
    """MLPerf Tiny's KWS DS-CNN (its `kws_ref_model`), without the dropout that vanishes anyway."""
    import tf_keras as keras
    L = keras.layers
    inp = keras.Input(input_shape)
    x = L.Conv2D(64, (10, 4), strides=2, padding="same", use_bias=False)(inp)
    x = L.ReLU()(_bn()(x))
    for _ in range(4):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = L.ReLU()(_bn()(x))
        x = L.Conv2D(64, 1, use_bias=False)(x)
        x = L.ReLU()(_bn()(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(num_classes)(x), name="ds_cnn")


def mobilenet_v2(alpha: float, num_classes: int = NUM_CLASSES, input_shape=INPUT_SHAPE):
    """MobileNetV2 with every width (stem, blocks and the 1280-channel last conv) times alpha,
    rounded to multiples of 8 as the paper does. Built here rather than with
    keras.applications, which refuses inputs under 32x32 (the MFCC map is 49x10)."""
    import tf_keras as keras

    from nas.space import make_divisible
    L = keras.layers

    def conv_bn(x, c, k, s, act=True):
        x = L.Conv2D(c, k, strides=s, padding="same", use_bias=False)(x)
        x = _bn()(x)
        return L.ReLU(6.0)(x) if act else x

    inp = keras.Input(input_shape)
    x = conv_bn(inp, make_divisible(32 * alpha), 3, 2)
    cin = x.shape[-1]
    for t, c, n, s in MBV2:
        cout = make_divisible(c * alpha)
        for i in range(n):
            h = conv_bn(x, cin * t, 1, 1) if t != 1 else x
            h = L.DepthwiseConv2D(3, strides=s if i == 0 else 1, padding="same", use_bias=False)(h)
            h = L.ReLU(6.0)(_bn()(h))
            h = conv_bn(h, cout, 1, 1, act=False)
            x = L.Add()([x, h]) if (i > 0 or s == 1) and cin == cout else h
            cin = cout
    x = conv_bn(x, make_divisible(1280 * alpha), 1, 1)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(num_classes)(x), name=f"mobilenet_v2_{alpha:g}")


def largest_fitting_mobilenet(sram: int, flash: int, calib) -> tuple[float, object]:
    """The largest alpha whose int8 MobileNetV2 compiles within (sram, flash)."""
    import tinyengine_tf as te
    for alpha in ALPHAS:
        model = mobilenet_v2(alpha)
        if _weight_count(model) > flash:
            continue    # its int8 weights alone exceed the Flash: no need to convert it
        try:
            te.convert(model, [calib[i:i + 1] for i in range(len(calib))], sram=sram, flash=flash)
        except te.DoesNotFitError:
            continue
        return alpha, model
    raise SystemExit(f"no MobileNetV2 of alpha in {ALPHAS} fits {sram} B SRAM / {flash} B Flash")


def _weight_count(model) -> int:
    """Parameters other than BatchNormalization's (folded away at conversion): one int8 byte each
    in Flash at least, so more of them than Flash bytes cannot fit."""
    return sum(int(layer.count_params()) for layer in model.layers
               if type(layer).__name__ != "BatchNormalization")


# -- training and scoring, as a stage-2 trial does ----------------------------------------------
def train_qat(model, x, y, epochs: int, seed: int = 0) -> tuple[bytes, float]:
    """tfmot QAT from scratch (nas/stage2_tuner.py's recipe) -> (int8 .tflite, seconds)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from converters.keras_to_tflite import keras_to_tflite
    tf.random.set_seed(seed)
    t0 = time.time()
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.compile(keras.optimizers.Adam(LEARNING_RATE),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    qat.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return keras_to_tflite(qat), time.time() - t0


def score(tflite: bytes, sram: int, flash: int, test) -> dict:
    """Compile under the budget; the C's test accuracy (checked against TFLM), size, M4 cost."""
    from tflite_micro.python.tflite_micro import runtime

    import tinyengine_tf as te
    from nas.datasets import quantize
    cm = te.convert(tflite, sram=sram, flash=flash)
    xq = quantize(test[0], cm)
    pred = np.argmax(np.asarray(cm.run(xq)).reshape(len(xq), -1), axis=1)
    interp = runtime.Interpreter.from_bytes(tflite)
    tflm = []
    for x in xq:
        interp.set_input(x[None], 0)
        interp.invoke()
        tflm.append(int(np.argmax(interp.get_output(0))))
    acc, tflm_acc = float(np.mean(pred == test[1])), float(np.mean(np.array(tflm) == test[1]))
    if acc != tflm_acc:
        raise SystemExit(f"the C's accuracy {acc} differs from TFLite Micro's {tflm_acc}")
    prof = cm.profile("cortex-m4", xq[:1])
    return {"accuracy": acc, "tflm_accuracy": tflm_acc, "peak_sram": cm.peak_sram, "flash": cm.flash,
            "macs": prof.macs, "m4_instructions": prof.invoke_instructions,
            "tflm_arena": cm.memory_report().tflm.arena_total}


# -- the benchmark ----------------------------------------------------------------------------------
def load_data(root: Path, per_word: int):
    from nas.datasets import load_speech_commands, synthesize_speech_commands
    t0 = time.time()
    summary = synthesize_speech_commands(root, per_word=per_word, seed=0, progress=False)
    synth_s = time.time() - t0
    t0 = time.time()
    splits = load_speech_commands(root, as_numpy=True, seed=0)
    return splits, {"synth_s": synth_s, "features_s": time.time() - t0, "clips": summary.clips}


def run_budget(sram_k: int, flash_k: int, spaces: list, splits, args, out_dir: Path) -> list:
    import nas
    sram, flash = sram_k * 1024, flash_k * 1024
    (xt, yt), val, test = splits
    rows = []
    cache = out_dir / f"rows_{sram_k}_{flash_k}.json"
    done = {r["model"]: r for r in json.loads(cache.read_text())} if cache.exists() else {}

    def keep(row):
        rows.append(row)
        cache.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)

    for space in spaces:
        key = SPACE_ROWS[space]
        if key in done:
            rows.append(done[key])
            continue
        t0 = time.time()
        r = nas.search((xt, yt), val, num_classes=NUM_CLASSES, sram=sram, flash=flash,
                       max_trials=args.trials, epochs=args.epochs, batch_size=BATCH_SIZE,
                       learning_rate=LEARNING_RATE, directory=out_dir / f"search_{space}_{sram_k}_{flash_k}",
                       seed=0, verbose=1, **SPACES[space])
        secs = time.time() - t0
        best = next(t for t in r.trials if t["trial_id"] == r.best_trial)
        r.plot(HERE / "figures" / f"accuracy_search_{space}_{sram_k}KiB_{flash_k}KiB.png")
        keep({"model": key, "detail": f"`{r.arch.short()}` (best of "
              f"{sum(t['status'] == 'COMPLETED' for t in r.trials)} trials)",
              "train_s": best["seconds"], "search_s": secs, "val_accuracy": r.accuracy,
              **score(r.tflite, sram, flash, test)})
    if "DS-CNN" in done:
        rows.append(done["DS-CNN"])
    else:
        tflite, secs = train_qat(ds_cnn(), xt, yt, args.epochs)
        keep({"model": "DS-CNN", "detail": "MLPerf Tiny KWS reference", "train_s": secs,
              **score(tflite, sram, flash, test)})
    if "MobileNetV2" in done:
        rows.append(done["MobileNetV2"])
    else:
        alpha, model = largest_fitting_mobilenet(sram, flash, xt[:32])
        tflite, secs = train_qat(model, xt, yt, args.epochs)
        keep({"model": "MobileNetV2", "detail": f"alpha {alpha:g} (largest that fits)", "train_s": secs,
              **score(tflite, sram, flash, test)})
    return rows


# "small": the notebooks' small setting (shallow stages, fewer kernels and expand ratios), whose
# trials are several times faster; "full": the whole MCUNet space.
SPACES = {"small": {"stage_depths": [(1, 2)] * 5 + [(1,)], "kernel_sizes": (3, 5), "expand_ratios": (3, 4)},
          "full": {}}
SPACE_ROWS = {"small": "TinyNAS", "full": "TinyNAS (full space)"}
SPACE_WORDS = {"small": "the MCUNet space narrowed to stage depths 1-2, kernels 3/5, expand ratios 3/4",
               "full": "the whole MCUNet space (depths 2-4, kernels 3/5/7, expand ratios 3/4/6)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HERE / "accuracy_data" / "speech_commands_synth")
    ap.add_argument("--per-word", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--budget", action="append",
                    help="SRAM,Flash in KiB, optionally :SPACES for this budget (repeatable); default 64,256")
    ap.add_argument("--spaces", default="small",
                    help="comma-separated search spaces, each its own TinyNAS row: small, full")
    ap.add_argument("--work", type=Path, default=HERE / "accuracy_data" / "runs",
                    help="search directories and finished rows: a rerun resumes")
    args = ap.parse_args()
    args.spaces = [v.strip() for v in args.spaces.split(",")]
    if any(v not in SPACES for v in args.spaces):
        ap.error(f"--spaces: choose from {', '.join(SPACES)}")
    budgets = {}
    for b in args.budget or ["64,256"]:
        size, _, spaces = b.partition(":")
        spaces = [v.strip() for v in spaces.split(",")] if spaces else args.spaces
        if any(v not in SPACES for v in spaces):
            ap.error(f"--budget {b}: spaces are {', '.join(SPACES)}")
        budgets[tuple(int(v) for v in size.split(","))] = spaces
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    splits, info = load_data(args.data, args.per_word)
    sizes = [len(s[1]) for s in splits]
    results = {}
    args.budgets = budgets
    for b in budgets:    # the table is rewritten after each budget: a cut-short run keeps its rows
        results[b] = run_budget(*b, budgets[b], splits, args, args.work)
        write_results(results, args, info, sizes, time.time() - t0)


def write_results(results, args, info, sizes, total):
    space = " and ".join(SPACE_WORDS[v] for v in args.spaces)
    lines = ["# Accuracy under a memory budget (`benchmarks/bench_accuracy.py`)", "",
             f"`python benchmarks/bench_accuracy.py --per-word {args.per_word} --epochs {args.epochs} "
             f"--trials {args.trials} --spaces {','.join(args.spaces)}"
             + "".join(f" --budget {s},{f}" + ("" if args.budgets[(s, f)] == args.spaces else
                                                  ":" + ",".join(args.budgets[(s, f)])) for s, f in results) + "`", "",
             f"Data: the offline speech set (`synthesize_speech_commands(per_word={args.per_word}, seed=0)`, "
             f"{info['clips']:,} clips of synthetic voices, split by voice), the 12-class task of "
             f"`load_speech_commands` (10% `_silence_`, 10% `_unknown_`, training augmented once with "
             f"time shift and background noise): {sizes[0]:,} training, {sizes[1]:,} validation, "
             f"{sizes[2]:,} test samples. Synthetic speech, not Speech Commands: these accuracies are "
             f"not comparable with published KWS figures.", "",
             f"Training, identical for every row: from scratch, tfmot QAT for {args.epochs} epochs, Adam "
             f"{LEARNING_RATE:g}, batch {BATCH_SIZE}; TinyNAS searched {space}, with stage 1 over every "
             f"width and {args.trials} stage-2 trials per space, each trained that way and scored on validation. "
             f"Accuracy is the generated C's on the int8 test split (equal to TFLite Micro's on the "
             f"same .tflite, checked); instructions are one inference on Cortex-M4 under QEMU (DSP path).", ""]
    for (s, f), rows in results.items():
        lines += [f"## {s} KiB SRAM / {f} KiB Flash", "",
                  "| model | | C test accuracy | peak SRAM | TFLM arena | Flash | MACs | Cortex-M4 instructions | training (this model) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            train = f"{r['train_s']:.0f} s"
            if "search_s" in r:
                train += f" (search {r['search_s'] / 60:.0f} min)"
            lines.append(f"| {r['model']} | {r['detail']} | {r['accuracy'] * 100:.1f}% | {r['peak_sram']:,} | "
                         f"{r['tflm_arena']:,} | {r['flash']:,} | {r['macs'] / 1e6:.2f}M | "
                         f"{r['m4_instructions']:,} | {train} |")
        best = max(rows, key=lambda r: r["accuracy"])
        nas_rows = [r for r in rows if r["model"].startswith("TinyNAS")]
        ref = next((r for r in rows if r["model"] == "DS-CNN"), None)
        if nas_rows and ref:
            top = max(nas_rows, key=lambda r: r["accuracy"])
            gap = (top["accuracy"] - ref["accuracy"]) * 100
            lines += ["", f"Most accurate: {best['model']} ({best['accuracy'] * 100:.1f}%). The best searched "
                          f"network is {abs(gap):.1f} points {'below' if gap < 0 else 'above'} DS-CNN with "
                          f"{top['macs'] / ref['macs']:.2f}x its MACs and {top['flash'] / ref['flash']:.1f}x its "
                          f"Flash. One test sample is {100 / sizes[2]:.1f} points."]
        compute = sum(r.get("search_s", r["train_s"]) for r in rows)
        lines += ["", f"Compute for this budget: {compute / 60:.0f} min (searches plus baseline training).", ""]
    lines += [f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (times vary up "
              f"to 3x with their load; each row's time is its own run's); data synthesised in "
              f"{info['synth_s']:.0f} s (only checked when already on disk), features in {info['features_s']:.0f} s. "
              f"Finished rows are reused when the script is run again.", ""]
    (HERE / "results_accuracy.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
