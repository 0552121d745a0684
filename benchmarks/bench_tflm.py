"""Latency: the generated C against the TFLite Micro interpreter, same models, same process.

    .venv/bin/python benchmarks/bench_tflm.py [--out benchmarks/results_speed.md] [--profile]

For each of the MLPerf Tiny models in ../shared/models: convert it, check on a few inputs
(all -128, all 127, alternating extremes, random) that the C output equals TFLM's bit for bit,
then time one inference of each engine on the same input:
  - TFLM: interpreter.set_input + invoke + get_output (the pip tflite-micro runtime, reference
    kernels), the interpreter built once;
  - TinyEngine: CompiledModel.time_host, the generated C built with the host flags
    (gcc -O3 -march=native) and called in a loop through ctypes.
Both are measured in rounds that alternate between the engines, each round long enough to span
many inferences; the table reports the median round. The speed-up's geometric mean is taken over
the three CNNs (the acceptance metric) and, separately, over all four rows.

--profile adds, per model, the time of each generated layer (each layer function called in a
loop on the model's own arena) summed by op kind.
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import tinyengine_tf as te  # noqa: E402
from tinyengine_tf import toolchain  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
CNNS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant"]
MODELS = CNNS + ["ad01_int8"]


# -- inputs and the reference -------------------------------------------------------------------

def inputs_for(cm, n: int, seed: int = 0) -> np.ndarray:
    """n int8 samples for the model's first input; the first three are the extremes."""
    t = cm.graph.t(cm.graph.inputs[0])
    shape = tuple(t.shape[1:]) if len(t.shape) > 1 and t.shape[0] == 1 else tuple(t.shape)
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape)).astype(np.int8)
    x[0], x[1] = -128, 127
    x[2].flat[::2], x[2].flat[1::2] = -128, 127
    return x


class Tflm:
    """One TFLite Micro interpreter for one model, reused for every call."""

    def __init__(self, data: bytes):
        from tflite_micro.python.tflite_micro import runtime
        self.interp = runtime.Interpreter.from_bytes(data, arena_size=max(len(data) * 20, 1 << 20))
        self.shape = tuple(self.interp.get_input_details(0)["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_input(np.ascontiguousarray(x).reshape(self.shape), 0)
        self.interp.invoke()
        return np.array(self.interp.get_output(0))

    def seconds(self, x: np.ndarray, iters: int) -> float:
        x = np.ascontiguousarray(x).reshape(self.shape)
        t0 = time.perf_counter()
        for _ in range(iters):
            self.interp.set_input(x, 0)
            self.interp.invoke()
            self.interp.get_output(0)
        return (time.perf_counter() - t0) / iters


def check_bit_exact(cm, tflm: Tflm, xs: np.ndarray):
    ours = np.asarray(cm.run(xs))
    for i, x in enumerate(xs):
        ref = tflm(x).reshape(ours[i].shape)
        if not np.array_equal(ours[i], ref):
            bad = int(np.sum(ours[i] != ref))
            raise SystemExit(f"{cm.name}: sample {i}: {bad} of {ref.size} outputs differ from TFLM; "
                             "not timing a wrong result")


# -- timing -------------------------------------------------------------------------------------

def iterations(fn, budget: float) -> int:
    """How many calls fill about `budget` seconds."""
    once = max(fn(1), 1e-7)
    return max(1, int(budget / once))


def time_pair(cm, tflm: Tflm, x: np.ndarray, rounds: int, budget: float) -> tuple[float, float]:
    """Median seconds per inference (TFLM, TinyEngine), rounds alternating between them."""
    n_t = iterations(lambda k: tflm.seconds(x, k), budget)
    n_e = iterations(lambda k: cm.time_host(x, k), budget)
    t_tflm, t_te = [], []
    for _ in range(rounds):
        t_tflm.append(tflm.seconds(x, n_t))
        t_te.append(cm.time_host(x, n_e))
    return statistics.median(t_tflm), statistics.median(t_te)


# -- per-layer profile ----------------------------------------------------------------------------

_PROFILE_C = r"""
#define _POSIX_C_SOURCE 199309L
#include <time.h>
#include "te_prof_model.h"
int te_profile(const void *const *ins, void *const *outs, double *secs, int iters);
static double te_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);   /* CPU time: robust to other processes */
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
int te_profile(const void *const *ins, void *const *outs, double *secs, int iters) {
%(decls)s
  %(prefix)s_invoke(%(args)s);
%(timed)s
  return 0;
}
"""


def profile_layers(cm, x: np.ndarray, iters: int, rounds: int = 5) -> list:
    """[(op kind, seconds per call)] for every generated layer, in execution order.

    The model's C is included into a harness that calls each layer function in a loop on the
    arena that one full inference has filled (layer functions are static: same translation unit).
    """
    src = dict(cm.sources)
    model_c = src.pop(f"{cm.prefix}.c")
    m = re.search(rf"int {cm.prefix}_invoke\((.*?)\) \{{\n(.*?)\n  return 0;", model_c, re.S)
    if not m:
        raise RuntimeError("cannot find the invoke body in the generated C")
    params = [p.strip() for p in m.group(1).split(",")]
    calls = [ln.strip() for ln in m.group(2).splitlines()
             if re.match(rf"\s*{cm.prefix}_L\d+_\w+\(", ln)]
    decls, args = [], []
    n_in = n_out = 0
    for p in params:
        star = p.rindex("*")
        ctype, name = p[:star + 1].strip(), p[star + 1:].strip()
        table = "ins" if name.startswith("in") else "outs"
        k = n_in if table == "ins" else n_out
        decls.append(f"  {ctype} {name} = ({ctype}){table}[{k}];")
        n_in, n_out = (n_in + 1, n_out) if table == "ins" else (n_in, n_out + 1)
        args.append(name)
    timed = []
    for k, call in enumerate(calls):
        timed.append(f"  {{ double t0 = te_now(); for (int i = 0; i < iters; ++i) {{ {call} }}\n"
                     f"    secs[{k}] = (te_now() - t0) / iters; }}")
    src["te_prof_model.h"] = model_c
    src["te_prof.c"] = _PROFILE_C % {"decls": "\n".join(decls), "prefix": cm.prefix,
                                     "args": ", ".join(args), "timed": "\n".join(timed)}
    lib = ctypes.CDLL(str(toolchain.build(src)))
    fn = lib.te_profile
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    xa = np.ascontiguousarray(x)
    outs = [np.zeros(cm.graph.t(t).nbytes, np.int8) for t in cm.graph.outputs]
    ins = (ctypes.c_void_p * 1)(xa.ctypes.data)
    out_ptrs = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
    runs = []
    for _ in range(rounds):          # the median round per layer: robust to a busy machine
        secs = np.zeros(len(calls))
        fn(ctypes.cast(ins, ctypes.c_void_p), ctypes.cast(out_ptrs, ctypes.c_void_p),
           secs.ctypes.data, iters)
        runs.append(secs)
    secs = np.median(np.array(runs), axis=0)
    kinds = [re.match(rf"{cm.prefix}_L\d+_(\w+)\(", c).group(1).upper() for c in calls]
    return list(zip(kinds, secs.tolist()))


def by_kind(layers: list) -> dict:
    out: dict = {}
    for kind, s in layers:
        out[kind] = out.get(kind, 0.0) + s
    return out


# -- report ---------------------------------------------------------------------------------------

def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    isa = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not isa:
                # The vector extensions gcc -march=native can use decide the kernels' speed.
                flags = set(line.split(":", 1)[1].split())
                isa = [f for f in ("sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                   "asimd", "asimddp") if f in flags]
    except OSError:
        pass
    cc = toolchain.compiler()
    cc_version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    try:
        from importlib.metadata import version
        tflm_version = version("tflite-micro")
    except Exception:  # noqa: BLE001 - informational only
        tflm_version = "unknown"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu, "vector ISA": " ".join(isa) or "unknown", "cores": os.cpu_count(), "cc": cc_version[0] if cc_version else cc,
            "flags": " ".join(toolchain.HOST_FLAGS), "python": platform.python_version(),
            "tflite-micro": tflm_version, "load": f"{load:.2f}",
            "date": time.strftime("%Y-%m-%d %H:%M")}


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else float("nan")


def markdown(rows: list, info: dict, profiles: dict) -> str:
    lines = ["# Latency: generated C vs the TFLite Micro interpreter", "",
             "One inference, same input, same process; median of alternating rounds "
             "(`benchmarks/bench_tflm.py`). Every model was first checked bit-exact against TFLM.", "",
             "| model | TFLM (ms) | TinyEngine (ms) | speed-up |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tflm'] * 1e3:.3f} | {r['te'] * 1e3:.3f} | {r['speedup']:.1f}x |")
    cnn = [r["speedup"] for r in rows if r["model"] in CNNS]
    every = geomean(r["speedup"] for r in rows)
    lines += ["", f"Geometric mean speed-up over the three CNNs (VWW, KWS, ResNet-8): "
                  f"**{geomean(cnn):.1f}x**; over all {len(rows)} rows: {every:.1f}x.",
              "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    if profiles:
        lines += ["", "## Where the generated C spends its time", "",
                  "Each layer function timed alone (process CPU time) on the model's arena, "
                  "summed by op kind (share of the sum of layer times).", ""]
        kinds = sorted({k for p in profiles.values() for k in p})
        lines.append("| model | " + " | ".join(kinds) + " |")
        lines.append("|---|" + "---:|" * len(kinds))
        for name, p in profiles.items():
            total = sum(p.values()) or 1.0
            cells = [f"{100 * p[k] / total:.0f}% ({p[k] * 1e6:.0f} us)" if k in p else "-" for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_speed.md"))
    ap.add_argument("--models", nargs="*", default=MODELS, help="names in ../shared/models")
    ap.add_argument("--models-dir", default=str(SHARED))
    ap.add_argument("--rounds", type=int, default=7, help="alternating timing rounds per engine")
    ap.add_argument("--budget", type=float, default=0.25, help="seconds per timing round")
    ap.add_argument("--check", type=int, default=6, help="inputs compared with TFLM before timing")
    ap.add_argument("--profile", action="store_true", help="time every generated layer")
    args = ap.parse_args(argv)

    rows, profiles = [], {}
    t_start = time.time()
    for name in args.models:
        data = (Path(args.models_dir) / f"{name}.tflite").read_bytes()
        t0 = time.time()
        cm = te.convert(data, name=name)
        tflm = Tflm(data)
        xs = inputs_for(cm, max(args.check, 4))
        check_bit_exact(cm, tflm, xs)           # also builds the C
        build_s = time.time() - t0
        x = xs[3]                               # a random input
        t_tflm, t_te = time_pair(cm, tflm, x, args.rounds, args.budget)
        rows.append({"model": name, "tflm": t_tflm, "te": t_te, "speedup": t_tflm / t_te})
        print(f"{name:24s} TFLM {t_tflm * 1e3:8.3f} ms  TinyEngine {t_te * 1e3:7.3f} ms  "
              f"x{t_tflm / t_te:5.1f}   (convert+build+check {build_s:.1f}s)", flush=True)
        if args.profile:
            layers = profile_layers(cm, x, iterations(lambda k: cm.time_host(x, k), 0.02),
                                    rounds=args.rounds)
            profiles[name] = by_kind(layers)
    info = machine_info()
    text = markdown(rows, info, profiles)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print()
    print(text)
    print(f"written to {args.out} in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
