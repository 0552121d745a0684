"""The offline speech set against the MLPerf Tiny KWS reference model, run through our C.

    .venv/bin/python benchmarks/bench_speech_synth.py [--per-word 40] [--seed 0] [--out DIR]

Generates the set (``tinyengine-tf data speech-commands``), loads every split without
augmentation through the one feature function, quantizes it with the model's own input scale and
zero point, runs ``te.convert(kws_ref_model.tflite).run`` and writes the recognition rate per
class to ``benchmarks/results_speech_synth.md``. Chance is 1/12.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tinyengine_tf as te  # noqa: E402
from nas.datasets.speech_commands import LABELS, load_speech_commands  # noqa: E402
from nas.datasets.speech_synth import synthesize_speech_commands  # noqa: E402
from nas.datasets.quantize import input_quantization, quantize  # noqa: E402

MODEL = ROOT.parent / "shared" / "models" / "kws_ref_model.tflite"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-word", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="generate into (or reuse) this folder (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_speech_synth.md"))
    args = ap.parse_args(argv)

    tmp = None if args.data else tempfile.TemporaryDirectory(prefix="speech_synth_")
    data = Path(args.data or tmp.name) / "speech_commands"
    summary = synthesize_speech_commands(data, per_word=args.per_word, seed=args.seed)
    cm = te.convert(str(MODEL))
    splits = load_speech_commands(data, as_numpy=True, augment=False, seed=args.seed,
                                  unknown_percentage=None)
    x = np.concatenate([s[0] for s in splits])
    y = np.concatenate([s[1] for s in splits])
    t0 = time.perf_counter()
    pred = cm.run(quantize(x, cm)).argmax(axis=1)
    run_s = time.perf_counter() - t0
    scale, zp = input_quantization(cm)

    rows, keyword_hits = [], []
    for k, label in enumerate(LABELS):
        mask = y == k
        if not mask.any():
            continue
        hits = pred[mask] == k
        if k < 10:
            keyword_hits.append(hits)
        confused = np.bincount(pred[mask][~hits], minlength=len(LABELS))
        top = f"{LABELS[int(confused.argmax())]} ({int(confused.max())})" if confused.any() else "-"
        rows.append(f"| {label} | {int(mask.sum())} | {hits.mean():.1%} | {top} |")
    kw = np.concatenate(keyword_hits)
    overall = (pred == y).mean()
    test_mask = np.zeros_like(y, bool)
    test_mask[len(y) - len(splits.test[1]):] = True
    text = f"""# Offline speech set vs the MLPerf Tiny KWS reference model (`benchmarks/bench_speech_synth.py`)

`tinyengine-tf data speech-commands --per-word {args.per_word} --seed {args.seed}`: {summary.clips:,}
clips ({len(LABELS[:10])} keywords and {summary.clips // args.per_word - 10} other words, {args.per_word} each) from
{sum(summary.speakers.values())} synthetic voices (espeak-ng English voices x variants, flite
voices when installed), split by voice {summary.speakers['train']}/{summary.speakers['val']}/{summary.speakers['test']}
(train/val/test), synthesised in {summary.seconds:.0f} s ({summary.clips_per_second:.1f} clips/s,
{platform.machine()}, {os.cpu_count()} cores, shared).

Recognised by `kws_ref_model.tflite` compiled by tinyengine-tf (`te.convert(path).run`, bit-exact
with TFLite Micro) on the features of `nas.datasets.speech_features.features` quantized with the
model's input scale {scale:.7g} and zero point {zp} (`nas.datasets.quantize`). All three splits,
no augmentation; `_silence_` is one-second cuts of the generated `_background_noise_`,
`_unknown_` every clip of the other words. Chance: 8.3% (12 classes).

| class | clips | recognised | most frequent confusion |
|---|---:|---:|---|
{chr(10).join(rows)}

**Keywords: {kw.mean():.1%}** of {kw.size:,} clips; all 12 classes: {overall:.1%} of {y.size:,}
(test split alone: {(pred[test_mask] == y[test_mask]).mean():.1%}). {y.size:,} inferences in
{run_s:.1f} s through the generated C.
"""
    Path(args.out).write_text(text)
    print(text)
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
