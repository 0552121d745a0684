"""TinyNAS stage 2 benchmark: how fast the oracle answers, and one measured search.

    python benchmarks/bench_nas_stage2.py [--proposals 300] [--search] [--workers 2]

1. populate_space latency: a TinyNASOracle in the stage-1 choice for 320 KiB / 1 MiB (w0.5-r192,
   2 classes) answers `--proposals` create_trial calls, with made-up scores so evolution runs
   (the chief's single gRPC thread is held for exactly this long per request).
2. --search: nas.search on a synthetic two-class image task (bright squares on noise, 48x48),
   in one process and with --workers processes, timing both.

Writes benchmarks/results_nas_stage2.md.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402


def bench_populate(n: int) -> dict:
    from keras_tuner.src.engine import trial as trial_module

    from nas.space import MCUNetSpace
    from nas.stage2_oracle import TinyNASOracle, arch_from_values

    space = MCUNetSpace(resolutions=[192], widths=[0.5], num_classes=2)
    oracle = TinyNASOracle(space, 320 * 1024, 1024 * 1024, max_trials=n, seed=0)
    oracle._set_project_dir(tempfile.mkdtemp(prefix="bench_oracle_"), "p")
    t0 = time.perf_counter()
    oracle.prepare()
    prepare = time.perf_counter() - t0
    lat, phases, pop = [], [], []
    inner = oracle.populate_space

    def timed(trial_id):
        t = time.perf_counter()
        out = inner(trial_id)
        pop.append(time.perf_counter() - t)
        return out
    oracle.populate_space = timed
    for _ in range(n):
        t0 = time.perf_counter()
        trial = oracle.create_trial("tuner0")
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        phases.append(oracle.proposals[-1]["origin"])
        arch = arch_from_values(trial.hyperparameters.values)
        oracle.update_trial(trial.trial_id, {"accuracy": float(np.mean(arch.kernels)) / 7 + random.random() * 0.05})
        trial.status = trial_module.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    out = {"n": n, "prepare_s": prepare, "origins": {k: phases.count(k) for k in sorted(set(phases))}}
    for name, values in (("create", lat), ("populate", pop)):
        ms = np.array(values) * 1000
        evo = np.array([m for m, p in zip(ms, phases) if p != "random"])
        out[name] = {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max()),
                     "evo_median": float(np.median(evo)), "evo_p95": float(np.percentile(evo, 95)),
                     "evo_max": float(evo.max())}
    return out


def synthetic_images(n: int, seed: int, size: int = 48):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.4, (n, size, size, 3)).astype(np.float32)
    for i in np.flatnonzero(y == 1):
        r, c = rng.integers(4, size - 20, 2)
        x[i, r:r + 16, c:c + 16, :] += 1.2
    return np.clip(x, -1, 1), y


def bench_search(workers: int, trials: int, epochs: int, modes=("single", "distributed")) -> list:
    import nas
    rows = []
    for w in [None if m == "single" else workers for m in modes]:
        d = tempfile.mkdtemp(prefix="bench_search_")
        t0 = time.time()
        r = nas.search(synthetic_images(512, 0), synthetic_images(128, 1), num_classes=2, sram=64 * 1024,
                       flash=256 * 1024, resolutions=[48], widths=[0.3], max_trials=trials, epochs=epochs,
                       directory=d, seed=0, workers=w, verbose=1)
        secs = time.time() - t0
        r.plot(HERE / "figures" / f"nas_stage2_search{'_distributed' if w else ''}.png")
        rows.append({"workers": w or 1, "seconds": secs, "best": r.arch.short(), "accuracy": r.accuracy,
                     "sram": r.compiled.peak_sram, "flash": r.compiled.flash,
                     "trials": r.trials, "completed": sum(t["status"] == "COMPLETED" for t in r.trials)})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proposals", type=int, default=300)
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--modes", default="single,distributed", help="which searches: single,distributed")
    args = ap.parse_args()
    p = bench_populate(args.proposals)
    lines = ["# TinyNAS stage 2", "",
             f"Machine: {os.cpu_count()} cores; `python benchmarks/bench_nas_stage2.py"
             f"{' --search' if args.search else ''}`.", "",
             "## populate_space latency (create_trial on the chief)", "",
             f"TinyNASOracle in w0.5-r192 (the stage-1 choice at 320 KiB / 1 MiB), {p['n']} proposals "
             f"({', '.join(f'{v} {k}' for k, v in p['origins'].items())}); initial population sampled "
             f"up front in {p['prepare_s']:.2f} s.", "",
             "| call | proposals | median | p95 | max |", "|---|---|---:|---:|---:|"]
    for name, label in (("populate", "`populate_space`"), ("create", "`create_trial` (with KerasTuner's saves)")):
        q = p[name]
        lines += [f"| {label} | all | {q['median']:.1f} ms | {q['p95']:.1f} ms | {q['max']:.1f} ms |",
                  f"| {label} | children only | {q['evo_median']:.1f} ms | {q['evo_p95']:.1f} ms | {q['evo_max']:.1f} ms |"]
    lines.append("")
    print("\n".join(lines))
    if args.search:
        rows = bench_search(args.workers, args.trials, args.epochs, args.modes.split(","))
        lines += ["## A measured search", "",
                  f"Synthetic two-class 48x48 images (512 train / 128 val), 64 KiB SRAM / 256 KiB Flash, "
                  f"w0.3-r48, {args.trials} trials of {args.epochs} QAT epochs.", "",
                  "| processes | wall time | trials completed | best | C accuracy | peak SRAM | Flash |",
                  "|---|---:|---:|---|---:|---:|---:|"]
        for r in rows:
            proc = "1 (in process)" if r["workers"] == 1 else f"chief + {r['workers']} workers"
            lines.append(f"| {proc} | {r['seconds']:.0f} s | {r['completed']} | `{r['best']}` | "
                         f"{r['accuracy']:.4f} | {r['sram']:,} B | {r['flash']:,} B |")
        for r in rows:
            proc = "single-process" if r["workers"] == 1 else "distributed"
            lines += ["", f"Trials of the {proc} run:", "", r["trials"].to_markdown(), ""]
    (HERE / "results_nas_stage2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-12:]))


if __name__ == "__main__":
    main()
