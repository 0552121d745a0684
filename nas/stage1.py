"""TinyNAS stage 1: pick the (resolution, width) search space whose fitting networks are largest.

For every configuration (R, W) the optimizer samples networks, keeps those that fit both the SRAM
and the Flash budget under tinyengine_tf's own compiler (nas.cost), and records the MACs
distribution of the kept ones. A configuration whose fitting networks have more MACs holds more
capable models (MCUNet, NeurIPS 2020, section 3.1), so the one with the largest mean MACs wins,
among configurations where at least ``min_fit_ratio`` of the samples fit (a space where almost
nothing fits is a poor space to search, however large its few survivors are).

Sampling is reproducible: configuration (R, W) draws from its own generator seeded by
(seed, R, W), so results do not depend on the number of worker processes or their order.

Costs do not depend on the budget, so each network is evaluated once against the largest budget
of a run (``evaluate_configurations``), and any smaller budget is then decided from the recorded
numbers. Work is skipped only where an exact argument decides the verdict: a network whose Flash
exceeds the budget, or whose tensors that must be live together at some step (the lower bound
every valid arena obeys) exceed the SRAM budget, is out whatever the planner does. Every other
network is planned by tinyengine_tf's planner. cost.FitChecker does this from the layer list when
the compiler's passes leave a configuration's graphs unchanged (checked per configuration, and
re-checked against the full pipeline every 50th planned network); otherwise every network goes
through the full pipeline. ``measure_throughput`` (``python -m nas.stage1``) times a sweep.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np

from nas.space import RESOLUTIONS, WIDTHS, MCUNetSpace

DEFAULT_MIN_FIT_RATIO = 0.1


# -- evaluating sampled networks --------------------------------------------------------------------
@dataclass
class ConfigSamples:
    """The sampled networks of one configuration: MACs always; Flash and peak SRAM where they were
    needed (-1 = not computed, which only happens for networks that fail the evaluation budget)."""
    resolution: int
    width: float
    macs: np.ndarray
    flash: np.ndarray
    peak_sram: np.ndarray
    seconds: float = 0.0       # wall time in the worker
    planned: int = 0           # networks that went through the memory planner
    cpu_seconds: float = 0.0   # CPU time in the worker (wall time on a busy machine overstates it)
    fast: bool = False         # whether cost.FitChecker's layer shortcut held for this configuration
    patched: np.ndarray | None = None   # per network: fits only with patch-based inference
    extra_macs: np.ndarray | None = None  # per network: MACs the patches recompute

    def fits(self, sram: int, flash: int) -> np.ndarray:
        return (self.peak_sram >= 0) & (self.peak_sram <= sram) & (self.flash >= 0) & (self.flash <= flash)


def config_rng(seed: int, resolution: int, width: float) -> random.Random:
    """The generator of one configuration, independent of all others (string seeds hash stably)."""
    return random.Random(f"tinynas-stage1/{seed}/{resolution}/{width:.6g}")


def evaluate_config(resolution: int, width: float, samples: int, seed: int, sram: int, flash: int,
                    num_classes: int = 1000, space_kwargs: dict | None = None,
                    fast: bool = True, qat: bool = False, patches: dict | None = None) -> ConfigSamples:
    """Sample `samples` networks of (resolution, width) and cost each against the budgets.
    fast=False runs the full pipeline (cost.check_fit) on every network; qat as nas.estimate.
    patches={"max_mac_overhead": m, "input_in_arena": b}: a network over the SRAM budget op by op
    (Flash within) is tried with patch-based inference, the least-bound settings first, and fits
    when one of them compiles within the budget (patch_search.first_fit)."""
    from nas import cost

    space = MCUNetSpace(resolutions=[resolution], widths=[width], num_classes=num_classes,
                        **(space_kwargs or {}))
    t0, c0 = time.perf_counter(), time.process_time()
    checker = cost.FitChecker(sram, flash, num_classes, qat=qat)
    if fast:
        checker.calibrate(_probes(space, resolution, width))
    args = (space, resolution, width, samples, seed, checker, patches, sram, flash)
    try:
        macs, fl, peak, patched, extra = _sample_and_check(*args)
    except cost.PassesChangedGraph:
        checker.fast = False
        checker.planned = 0
        macs, fl, peak, patched, extra = _sample_and_check(*args)
    return ConfigSamples(resolution, width, macs, fl, peak, time.perf_counter() - t0,
                         checker.planned, time.process_time() - c0, checker.fast,
                         patched if patches else None, extra if patches else None)


def _sample_and_check(space, resolution, width, samples, seed, checker, patches=None,
                      sram=None, flash=None):
    from nas import cost
    rng = config_rng(seed, resolution, width)
    macs = np.zeros(samples, np.int64)
    fl = np.full(samples, -1, np.int64)
    peak = np.full(samples, -1, np.int64)
    patched = np.zeros(samples, bool)
    extra = np.zeros(samples, np.int64)
    for i in range(samples):
        arch = space.sample(resolution, width, rng)
        ok, m, f, p = checker(arch)
        if not ok and patches and (f is None or flash is None or f <= flash):
            # Over the SRAM budget op by op (or rejected before Flash was counted): patches may
            # still make it fit.
            from tinyengine_tf.patch_search import first_fit
            g = cost.compiled_graph(arch, checker.num_classes, qat=checker.qat)
            if f is None:
                f = cost.flash_of(g)[0]
            if flash is None or f <= flash:
                cand = first_fit(g, sram, patches.get("max_mac_overhead", 0.2),
                                 patches.get("input_in_arena", True))
                if cand is not None:
                    p, patched[i], extra[i] = cand.peak_sram, True, cand.extra_macs
        macs[i] = m
        fl[i] = -1 if f is None else f
        peak[i] = -1 if p is None else p
    return macs, fl, peak, patched, extra


def _probes(space: MCUNetSpace, resolution: int, width: float) -> list:
    """The configuration's largest and smallest networks: between them every block variant
    (each kernel size with each expand ratio, stride and shortcut kind) appears."""
    ks, es = space.kernel_sizes, space.expand_ratios
    deep = tuple(max(d) for d in space.stage_depths)
    n = sum(deep)
    shallow = tuple(min(d) for d in space.stage_depths)
    m = sum(shallow)
    return [space.arch(resolution, width, deep, [ks[i % len(ks)] for i in range(n)],
                       [es[(i // len(ks)) % len(es)] for i in range(n)]),
            space.arch(resolution, width, shallow, [ks[-1 - i % len(ks)] for i in range(m)],
                       [es[-1 - (i // len(ks)) % len(es)] for i in range(m)])]


def _worker(args):
    return evaluate_config(*args)


def _warm_worker():
    # Imported once per worker, before any timing: the kernels register themselves on import.
    from tinyengine_tf import kernels  # noqa: F401


def evaluate_configurations(configs, samples: int, seed: int, sram: int, flash: int,
                            num_classes: int = 1000, workers: int | None = None,
                            progress: bool = True, space_kwargs: dict | None = None,
                            qat: bool = False, patches: dict | None = None) -> list:
    """ConfigSamples for every (R, W), in the order given, using `workers` processes."""
    configs = [(int(r), round(float(w), 6)) for r, w in configs]
    jobs = [(r, w, samples, seed, sram, flash, num_classes, space_kwargs, True, qat, patches)
            for r, w in configs]
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = _progress(len(jobs) * samples, progress)
    results: dict = {}
    try:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                res = _worker(job)
                results[(res.resolution, res.width)] = res
                bar.update(samples)
        else:
            ctx = _mp_context()
            # One configuration per task: at most one configuration's work is left at the end.
            with ctx.Pool(min(workers, len(jobs)), initializer=_warm_worker) as pool:
                for res in pool.imap_unordered(_worker, jobs, chunksize=1):
                    results[(res.resolution, res.width)] = res
                    bar.update(samples)
    finally:
        bar.close()
    return [results[c] for c in configs]


def _mp_context():
    """fork where the platform has it: workers inherit the imported modules and start at once,
    and scripts without a __main__ guard, notebooks and stdin all work. The workers never call
    TensorFlow, so a parent that has imported it is no obstacle."""
    import multiprocessing as mp
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, unit="net", desc="TinyNAS stage 1", disable=not enabled,
                    smoothing=0.1)
    except ImportError:  # pragma: no cover - tqdm is a dependency; degrade to silence
        class _Null:
            def update(self, n): pass
            def close(self): pass
        return _Null()


# -- choosing a configuration ---------------------------------------------------------------------
def _row(cs: ConfigSamples, sram: int, flash: int) -> dict:
    ok = cs.fits(sram, flash)
    n_fit = int(ok.sum())
    m = cs.macs[ok]
    peak, fl = cs.peak_sram[ok], cs.flash[ok]
    return {
        "resolution": cs.resolution, "width": cs.width, "samples": int(len(cs.macs)),
        "fit": n_fit, "fit_ratio": n_fit / max(len(cs.macs), 1),
        "mean_macs": float(m.mean()) if n_fit else 0.0,
        "median_macs": float(np.median(m)) if n_fit else 0.0,
        "p90_macs": float(np.percentile(m, 90)) if n_fit else 0.0,
        "max_macs": int(m.max()) if n_fit else 0,
        "mean_peak_sram": float(peak.mean()) if n_fit else 0.0,
        "mean_flash": float(fl.mean()) if n_fit else 0.0,
        "all_mean_macs": float(cs.macs.mean()) if len(cs.macs) else 0.0,
        "fit_with_patches": int((ok & cs.patched).sum()) if cs.patched is not None else 0,
    }


def _name(r, w) -> str:
    """MCUNet's naming, e.g. w0.5-r144."""
    text = f"{w:g}"
    return f"w{text if '.' in text else text + '.0'}-r{r}"


def _size(n: int) -> str:
    """Bytes as a person would write the budget: 320 KiB (327,680) or 320 kB (320,000)."""
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10), ("MB", 10 ** 6), ("kB", 10 ** 3)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n / 1e3:.1f} kB"


def _choose(rows: list, min_fit_ratio: float):
    """(best row or None, reason)."""
    eligible = [r for r in rows if r["fit"] and r["fit_ratio"] >= min_fit_ratio]
    relaxed = False
    if not eligible:
        eligible = [r for r in rows if r["fit"]]
        relaxed = True
    if not eligible:
        return None, ("no sampled network of any configuration fits both budgets: raise the SRAM or "
                      "Flash budget, or add smaller resolutions/widths to the space")
    ranked = sorted(eligible, key=lambda r: (-r["mean_macs"], -r["fit_ratio"], r["resolution"], r["width"]))
    best = ranked[0]
    why = (f"{_name(best['resolution'], best['width'])} has the largest mean MACs among the networks "
           f"that fit ({best['mean_macs'] / 1e6:.1f}M mean, {best['median_macs'] / 1e6:.1f}M median, "
           f"{best['fit_ratio']:.0%} of its samples fit)")
    if relaxed:
        why += (f"; no configuration had {min_fit_ratio:.0%} of its samples fit, so every configuration "
                "with at least one fitting network was considered")
    else:
        why += f", among the {len(eligible)} configurations where at least {min_fit_ratio:.0%} of samples fit"
    if len(ranked) > 1:
        nxt = ranked[1]
        why += (f"; runner-up {_name(nxt['resolution'], nxt['width'])} "
                f"({nxt['mean_macs'] / 1e6:.1f}M mean, {nxt['fit_ratio']:.0%} fit)")
    bigger = [r for r in rows if r["fit"] and r["fit_ratio"] < min_fit_ratio and r["mean_macs"] > best["mean_macs"]]
    if bigger and not relaxed:
        b = max(bigger, key=lambda r: r["mean_macs"])
        why += (f". {_name(b['resolution'], b['width'])} reaches {b['mean_macs'] / 1e6:.1f}M mean but only "
                f"{b['fit_ratio']:.1%} of its samples fit, too few for a space worth searching")
    return best, why


@dataclass
class SearchSpaceChoice:
    """Stage 1's result: the chosen configuration, one table row per configuration, the samples."""
    resolution: int | None
    width: float | None
    table: list
    reason: str
    sram: int
    flash: int
    samples: int
    seed: int
    min_fit_ratio: float
    configs: list = field(default_factory=list, repr=False)   # ConfigSamples, table order
    seconds: float = 0.0

    @property
    def best(self) -> dict | None:
        for row in self.table:
            if (row["resolution"], row["width"]) == (self.resolution, self.width):
                return row
        return None

    @property
    def networks(self) -> int:
        return sum(len(c.macs) for c in self.configs)

    @property
    def networks_per_second(self) -> float:
        return self.networks / self.seconds if self.seconds else float("nan")

    def __repr__(self):
        return (f"<SearchSpaceChoice {_name(self.resolution, self.width) if self.resolution else 'none'} "
                f"for SRAM {self.sram:,} B / Flash {self.flash:,} B: {self.reason}>")

    def to_markdown(self, top: int | None = None) -> str:
        """The table, best configurations first (all rows unless `top`)."""
        rows = sorted(self.table, key=lambda r: (-r["mean_macs"], r["resolution"], r["width"]))
        if top:
            rows = rows[:top]
        lines = [f"TinyNAS stage 1: SRAM {_size(self.sram)} ({self.sram:,} B), Flash {_size(self.flash)} "
                 f"({self.flash:,} B), {self.samples} "
                 f"samples per configuration, seed {self.seed}", "",
                 "| config | R | W | fit | mean MACs | median MACs | p90 MACs | mean peak SRAM | mean Flash |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            mark = " **(chosen)**" if (r["resolution"], r["width"]) == (self.resolution, self.width) else ""
            lines.append(
                f"| {_name(r['resolution'], r['width'])}{mark} | {r['resolution']} | {r['width']:g} | "
                f"{r['fit_ratio']:.1%} | {r['mean_macs'] / 1e6:.2f}M | {r['median_macs'] / 1e6:.2f}M | "
                f"{r['p90_macs'] / 1e6:.2f}M | {r['mean_peak_sram'] / 1e3:.1f} kB | "
                f"{r['mean_flash'] / 1e3:.1f} kB |")
        lines += ["", f"Choice: {_name(self.resolution, self.width) if self.resolution else 'none'}. "
                      f"{self.reason}."]
        return "\n".join(lines)

    def plot(self, path, highlight: int = 4):
        """CDFs of the MACs of the fitting networks per configuration (MCUNet's Figure 3 style):
        every configuration in grey, the choice and the `highlight` next best in colour."""
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(8, 5))
        ranked = sorted((r for r in self.table if r["fit"]), key=lambda r: -r["mean_macs"])
        keep = [(r["resolution"], r["width"]) for r in ranked[:highlight + 1]]
        if self.resolution is not None and (self.resolution, self.width) not in keep:
            keep.insert(0, (self.resolution, self.width))
        by_key = {(c.resolution, c.width): c for c in self.configs}
        for cs in self.configs:
            m = np.sort(cs.macs[cs.fits(self.sram, self.flash)]) / 1e6
            if len(m) and (cs.resolution, cs.width) not in keep:
                ax.step(m, np.arange(1, len(m) + 1) / len(m), where="post", color="0.8", lw=0.7)
        palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]  # red marks the choice
        for k, key in enumerate(keep):
            cs = by_key.get(key)
            if cs is None:
                continue
            m = np.sort(cs.macs[cs.fits(self.sram, self.flash)]) / 1e6
            if not len(m):
                continue
            chosen = key == (self.resolution, self.width)
            label = (f"{_name(*key)}: mean {m.mean():.1f}M, {len(m) / len(cs.macs):.0%} fit"
                     + (" (chosen)" if chosen else ""))
            ax.step(m, np.arange(1, len(m) + 1) / len(m), where="post", lw=2.4 if chosen else 1.4,
                    color="red" if chosen else palette[k % len(palette)], label=label)
            if chosen:
                ax.axvline(m.mean(), color="red", ls="--", lw=0.8)
        ax.set_xlabel("MACs of networks that fit (millions)")
        ax.set_ylabel("cumulative probability")
        ax.set_title(f"TinyNAS search-space optimization\nSRAM {_size(self.sram)}, "
                     f"Flash {_size(self.flash)}, {self.samples} samples per configuration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _select(configs: list, sram: int, flash: int, samples: int, seed: int, min_fit_ratio: float,
            seconds: float) -> SearchSpaceChoice:
    rows = [_row(cs, sram, flash) for cs in configs]
    best, reason = _choose(rows, min_fit_ratio)
    return SearchSpaceChoice(best["resolution"] if best else None, best["width"] if best else None,
                             rows, reason, sram, flash, samples, seed, min_fit_ratio, configs, seconds)


def optimize_search_space(sram: int, flash: int, samples: int = 1000, resolutions=RESOLUTIONS,
                          widths=WIDTHS, seed: int = 0, workers: int | None = None,
                          num_classes: int = 1000, min_fit_ratio: float = DEFAULT_MIN_FIT_RATIO,
                          progress: bool = True, raise_if_none: bool = True,
                          qat: bool = False, input_shape=None,
                          space_options: dict | None = None, patches: bool = False,
                          max_mac_overhead: float = 0.2,
                          input_in_arena: bool = True) -> SearchSpaceChoice:
    """TinyNAS stage 1 over resolutions x widths for an SRAM and a Flash budget (bytes).

    num_classes sizes the classifier (its weights count against Flash); qat=True costs the
    networks as tfmot's quantize_model() exports them (see nas.estimate). input_shape (H, W, C)
    costs non-square or single-channel inputs, space_options restricts the per-block choices
    (both as MCUNetSpace takes them). Uses `workers`
    processes (default: all cores) and shows a progress bar unless progress=False.

    patches=True also counts the networks that fit only with patch-based inference
    (te.convert(..., patches="auto", max_mac_overhead=..., input_in_arena=...)): each network over
    the SRAM budget op by op is tried with the patch settings whose extra MACs stay within
    max_mac_overhead, so spaces that fit only with patches can be chosen (the table's
    "fit_with_patches" column counts them). It costs a patch search per such network.

    Raises tinyengine_tf.DoesNotFitError when no sampled network of any configuration fits
    (raise_if_none=False returns a result whose resolution and width are None instead).
    """
    sram, flash = int(sram), int(flash)
    configs = [(r, w) for r in resolutions for w in widths]
    t0 = time.perf_counter()
    space_kwargs = dict(space_options or {})   # stage_depths, kernel_sizes, expand_ratios
    if input_shape is not None:
        space_kwargs["input_shape"] = tuple(int(v) for v in input_shape)
    space_kwargs = space_kwargs or None
    patch_opts = ({"max_mac_overhead": float(max_mac_overhead), "input_in_arena": bool(input_in_arena)}
                  if patches else None)
    evaluated = evaluate_configurations(configs, samples, seed, sram, flash, num_classes, workers, progress,
                                        space_kwargs=space_kwargs, qat=qat, patches=patch_opts)
    choice = _select(evaluated, sram, flash, samples, seed, min_fit_ratio, time.perf_counter() - t0)
    if choice.resolution is None and raise_if_none:
        from tinyengine_tf.errors import DoesNotFitError
        raise DoesNotFitError(f"TinyNAS stage 1: {choice.reason} (SRAM {sram:,} B, Flash {flash:,} B)",
                              choice)
    return choice


# -- sensitivity to the budgets -------------------------------------------------------------------
@dataclass
class Sensitivity:
    """The chosen configuration across a grid of budgets: choices[i][j] for srams[i], flashes[j]."""
    srams: list
    flashes: list
    choices: list
    seconds: float = 0.0

    def grid(self, what: str = "resolution") -> np.ndarray:
        return np.array([[getattr(c, what) if c.resolution is not None else np.nan for c in row]
                         for row in self.choices], dtype=float)

    def to_markdown(self) -> str:
        head = "| SRAM \\ Flash | " + " | ".join(_size(f) for f in self.flashes) + " |"
        lines = [head, "|---|" + "---|" * len(self.flashes)]
        for s, row in zip(self.srams, self.choices):
            cells = [_name(c.resolution, c.width) if c.resolution is not None else "none" for c in row]
            lines.append(f"| {_size(s)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path):
        """Two heat maps over (Flash, SRAM): the chosen resolution and the chosen width."""
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for ax, what, fmt in ((axes[0], "resolution", "{:.0f}"), (axes[1], "width", "{:.1f}")):
            z = self.grid(what)
            im = ax.imshow(z, origin="lower", cmap="viridis", aspect="auto")
            lo, hi = np.nanmin(z) if np.isfinite(z).any() else 0, np.nanmax(z) if np.isfinite(z).any() else 1
            for i in range(z.shape[0]):
                for j in range(z.shape[1]):
                    bright = not np.isnan(z[i, j]) and (z[i, j] - lo) > 0.6 * (hi - lo)
                    ax.text(j, i, "-" if np.isnan(z[i, j]) else fmt.format(z[i, j]), ha="center",
                            va="center", color="black" if bright else "white", fontsize=9)
            ax.set_xticks(range(len(self.flashes)), [_size(f) for f in self.flashes])
            ax.set_yticks(range(len(self.srams)), [_size(s) for s in self.srams])
            ax.set_xlabel("Flash budget")
            ax.set_ylabel("SRAM budget")
            ax.set_title(f"chosen {what}")
            fig.colorbar(im, ax=ax)
        fig.suptitle("TinyNAS stage 1: the search space chosen for each SRAM / Flash budget")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def sensitivity(srams, flashes, samples: int = 1000, resolutions=RESOLUTIONS, widths=WIDTHS,
                seed: int = 0, workers: int | None = None, num_classes: int = 1000,
                min_fit_ratio: float = DEFAULT_MIN_FIT_RATIO, progress: bool = True,
                qat: bool = False) -> Sensitivity:
    """Stage 1's choice for every (SRAM, Flash) pair. Networks are sampled and costed once (against
    the largest budgets) and every pair is decided from the same samples."""
    srams, flashes = [int(s) for s in srams], [int(f) for f in flashes]
    configs = [(r, w) for r in resolutions for w in widths]
    t0 = time.perf_counter()
    evaluated = evaluate_configurations(configs, samples, seed, max(srams), max(flashes), num_classes,
                                        workers, progress, qat=qat)
    secs = time.perf_counter() - t0
    choices = [[_select(evaluated, s, f, samples, seed, min_fit_ratio, secs) for f in flashes] for s in srams]
    return Sensitivity(srams, flashes, choices, secs)


# -- throughput -----------------------------------------------------------------------------------
def measure_throughput(sram: int = 320_000, flash: int = 1_000_000, samples: int = 1000,
                       resolutions=RESOLUTIONS, widths=WIDTHS, workers: int | None = None,
                       seed: int = 0, progress: bool = True) -> dict:
    """Time stage 1 over the grid; networks/second and where the time went."""
    t0 = time.perf_counter()
    configs = [(r, w) for r in resolutions for w in widths]
    evaluated = evaluate_configurations(configs, samples, seed, sram, flash, 1000, workers, progress)
    wall = time.perf_counter() - t0
    n = sum(len(c.macs) for c in evaluated)
    planned = sum(c.planned for c in evaluated)
    return {"networks": n, "seconds": wall, "networks_per_second": n / wall if wall else math.nan,
            "planned": planned, "planned_fraction": planned / max(n, 1),
            "worker_seconds": sum(c.seconds for c in evaluated),
            "cpu_seconds": sum(c.cpu_seconds for c in evaluated),
            "networks_per_cpu_second": n / max(sum(c.cpu_seconds for c in evaluated), 1e-9),
            "full_pipeline_configurations": sum(not c.fast for c in evaluated),
            "workers": workers or os.cpu_count(), "configurations": len(configs)}


if __name__ == "__main__":  # python -m nas.stage1 [samples] [workers]
    import sys
    s = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    w = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(measure_throughput(samples=s, workers=w))
