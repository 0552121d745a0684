"""nas.search: data -> stage 1 (the space) -> stage 2 (the network) -> a compiled int8 model.

    r = nas.search((x_train, y_train), (x_val, y_val), num_classes=10, sram=320 * 1024,
                   flash=1024 * 1024, max_trials=20, epochs=10, directory="runs/kws", seed=0)
    r.arch, r.accuracy, r.tflite, r.compiled, r.model, r.trials, r.plot("search.png")

The project directory holds everything (stage1.json, search.json, stage2/ with KerasTuner's
oracle.json and one trial_<id>/ per trial): run the same call again and it continues where it
stopped. workers=N runs a chief and N worker processes on 127.0.0.1 (KerasTuner's distributed
mode); for several machines see ``tinyengine-tf nas search --chief/--worker``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from nas.space import RESOLUTIONS, WIDTHS, Arch, MCUNetSpace
from tinyengine_tf.errors import TinyEngineError

STAGE2 = "stage2"


class DataError(TinyEngineError):
    """Training or validation data that a search cannot use (shapes, labels, types)."""


# -- data ---------------------------------------------------------------------------------------
def as_arrays(data, name: str, num_classes: int):
    """(x, y) numpy arrays from a pair of arrays or a tf.data.Dataset of (x, y) (batched or not);
    x gets a channel axis when it has none. Refuses what cannot be trained on, up front."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "as_numpy_iterator"):
        xs, ys = [], []
        for el in data.as_numpy_iterator():
            if not (isinstance(el, tuple) and len(el) == 2):
                raise DataError(f"{name}: a dataset must yield (inputs, labels) pairs")
            xs.append(np.asarray(el[0]))
            ys.append(np.asarray(el[1]))
        if not xs:
            raise DataError(f"{name}: the dataset is empty")
        # batched elements carry a vector of labels, one per input
        batched = ys[0].ndim == 1 and xs[0].ndim >= 3 and len(ys[0]) == len(xs[0])
        x = np.concatenate(xs) if batched else np.stack(xs)
        y = np.concatenate(ys) if batched else np.stack(ys)
    else:
        raise DataError(f"{name}: pass (inputs, labels) numpy arrays or a tf.data.Dataset of "
                        f"(inputs, labels), not {type(data).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{name}: inputs must be (N, height, width[, channels]), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{name}: inputs must be numbers, got dtype {x.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{name}: labels must be one integer per input ({len(x)}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{name}: labels must be class indices (integers); got {y.dtype} values")
        y = y.astype(np.int64)
    if len(y) == 0:
        raise DataError(f"{name}: no samples")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{name}: labels must be in [0, {num_classes - 1}] for num_classes={num_classes}; "
                        f"found {lo if lo < 0 else hi}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name}: inputs contain NaN or infinity")
    return x, y.astype(np.int64)


# -- results --------------------------------------------------------------------------------------
class TrialTable(list):
    """One dict per trial (id, arch, origin, status, C accuracy, SRAM, Flash, MACs, seconds, failure)."""

    def to_markdown(self) -> str:
        lines = ["| trial | architecture | origin | status | C accuracy | peak SRAM | Flash | MACs | s |",
                 "|---|---|---|---|---:|---:|---:|---:|---:|"]
        for r in self:
            acc = "" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
            def num(k):
                return "" if r.get(k) is None else f"{int(r[k]):,}"
            status = r["status"] + (f": {r['failure'][:60]}" if r.get("failure") else "")
            secs = "" if r.get("seconds") is None else f"{r['seconds']:.0f}"
            lines.append(f"| {r['trial_id']} | `{r['arch']}` | {r['origin']} | {status} | {acc} | "
                         f"{num('peak_sram')} | {num('flash')} | {num('macs')} | {secs} |")
        return "\n".join(lines)


@dataclass
class SearchResult:
    """The best trial of a search, and every trial. .model rebuilds the trained QAT tf_keras
    model, .compiled compiles the best .tflite (both on first use)."""
    arch: Arch | None
    accuracy: float | None
    tflite: bytes | None
    trials: TrialTable
    directory: Path
    sram: int
    flash: int
    resolution: int
    width: float
    stage1: object = None
    best_trial: str | None = None
    _compiled: object = field(default=None, repr=False)
    _model: object = field(default=None, repr=False)

    @property
    def compiled(self):
        if self._compiled is None and self.tflite is not None:
            from tinyengine_tf.api import compile_tflite
            self._compiled = compile_tflite(self.tflite, name="model", sram=self.sram, flash=self.flash)
        return self._compiled

    @property
    def model(self):
        if self._model is None and self.arch is not None:
            os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
            import tensorflow_model_optimization as tfmot

            from nas.build import build_model
            qat = tfmot.quantization.keras.quantize_model(build_model(self.arch))
            qat.load_weights(str(self.directory / STAGE2 / f"trial_{self.best_trial}" / "qat.weights.h5"))
            self._model = qat
        return self._model

    def plot(self, path=None):
        """Accuracy of the C against MACs for every completed trial, with the Pareto front, and
        each trial's peak SRAM and Flash against the budget. Returns the matplotlib Figure."""
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        done = [r for r in self.trials if r["status"] == "COMPLETED" and r.get("accuracy") is not None]
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
        if done:
            macs = np.array([r["macs"] for r in done]) / 1e6
            acc = np.array([r["accuracy"] for r in done])
            colors = {"random": "tab:gray", "mutation": "tab:blue", "crossover": "tab:orange"}
            for origin, col in colors.items():
                m = [r["origin"] == origin for r in done]
                if any(m):
                    ax.scatter(macs[m], acc[m], c=col, s=22, label=origin, alpha=0.8)
            order = np.argsort(macs)
            front, best = [], -1.0
            for i in order:
                if acc[i] > best:
                    front.append(i)
                    best = acc[i]
            # the front holds its last accuracy out to the largest network tried
            fx = np.append(macs[front], macs.max())
            fy = np.append(acc[front], acc[front][-1])
            ax.step(fx, fy, where="post", c="tab:green", lw=1.5, label="Pareto front", zorder=1)
            ax.margins(x=0.05, y=0.12)
            if self.best_trial is not None:
                b = next(r for r in done if r["trial_id"] == self.best_trial)
                ax.scatter([b["macs"] / 1e6], [b["accuracy"]], marker="*", s=180, c="tab:red",
                           label=f"best ({b['accuracy']:.3f})", zorder=5)
            # "best" keeps the legend off the points (a fixed corner hid a trial)
            ax.legend(fontsize=8, loc="best")
            sram = np.array([r["peak_sram"] for r in done]) / 1024
            flash = np.array([r["flash"] for r in done]) / 1024
            bx.scatter(flash, sram, c=acc, cmap="viridis", s=22)
        ax.set_xlabel("MACs (millions)")
        ax.set_ylabel("validation accuracy of the generated C")
        ax.set_title(f"TinyNAS stage 2, w{self.width:g}-r{self.resolution}: {len(done)} trials")
        ax.grid(alpha=0.3)
        bx.axvline(self.flash / 1024, c="tab:red", ls="--", lw=1)
        bx.axhline(self.sram / 1024, c="tab:red", ls="--", lw=1, label="budget")
        bx.set_xlabel("Flash (KiB)")
        bx.set_ylabel("peak SRAM (KiB)")
        bx.set_title("compiled footprint of every trial (colour: accuracy)")
        bx.set_xlim(0, self.flash / 1024 * 1.08)
        bx.set_ylim(0, self.sram / 1024 * 1.08)
        bx.legend(fontsize=8, loc="lower right")
        bx.grid(alpha=0.3)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig

    def __repr__(self):
        if self.arch is None:
            return f"<SearchResult: no completed trial in {self.directory}>"
        return (f"<SearchResult {self.arch.short()}: C accuracy {self.accuracy:.4f}, "
                f"{len(self.trials)} trials in {self.directory}>")


# -- the search --------------------------------------------------------------------------------------
def default_resolutions(input_shape) -> list:
    """Images (3 channels) may be resized to any resolution up to their own; other inputs
    (spectrograms, MFCCs) keep their size."""
    h, _, c = input_shape
    if c != 3:
        return [h]
    return [r for r in RESOLUTIONS if r <= h] or [h]


@dataclass(frozen=True)
class SearchSettings:
    """Every setting of a search but the data and the process layout (workers, timeout).

    population/parents default to the paper's 100/20, scaled down to max_trials // 2 and a fifth
    of that so a short search still evolves. stage_depths / kernel_sizes / expand_ratios narrow the
    MCUNet space (see MCUNetSpace). recalibrate_batches: forward passes that refresh BatchNorm
    statistics after training (MCUNet)."""
    num_classes: int
    sram: int
    flash: int
    input_shape: tuple | None = None
    resolutions: list | None = None
    widths: list | None = None
    max_trials: int = 20
    epochs: int = 10
    directory: str | Path = "tinynas_run"
    seed: int = 0
    warmup_epochs: int = 0
    batch_size: int = 32
    learning_rate: float = 2e-3
    population: int | None = None
    parents: int | None = None
    mutation_prob: float = 0.1
    generations: int = 30
    stage1_samples: int = 1000
    lease_seconds: float = 120.0
    overwrite: bool = False
    verbose: int = 1
    stage_depths: tuple | None = None
    kernel_sizes: tuple | None = None
    expand_ratios: tuple | None = None
    recalibrate_batches: int = 50

    @classmethod
    def of(cls, caller: str, settings: dict) -> "SearchSettings":
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"{caller}() got unexpected setting(s) {', '.join(unknown)}; "
                            f"the settings are: {', '.join(names)}")
        missing = [n for n in ("num_classes", "sram", "flash") if n not in settings]
        if missing:
            raise TypeError(f"{caller}() needs {', '.join(missing)}")
        return cls(**settings)


def search(train, val, *, workers: int | None = None, timeout: float | None = None,
           **settings) -> SearchResult:
    """TinyNAS: stage 1 picks (resolution, width) unless a single one is given, stage 2 evolves
    networks in it with QAT trials scored on the generated C. See the module docstring.

    settings: num_classes, sram, flash (required) and the rest of SearchSettings' fields.
    workers=N runs a chief and N worker processes on 127.0.0.1; timeout bounds such a search
    (seconds).
    """
    run = SearchSettings.of("nas.search", settings)
    spec, arrays, choice = plan_search(train, val, run)
    directory = Path(run.directory)
    if workers and workers > 1:
        write_cluster_data(directory, arrays)
        run_local_cluster(directory, int(workers), timeout=timeout, verbose=run.verbose)
        oracle = load_oracle(directory)
    else:
        tuner = make_tuner(directory, spec, verbose=run.verbose)
        tuner.search(*arrays)
        oracle = tuner.oracle
    return collect(directory, oracle, spec, choice)


def plan_search(train, val, run: SearchSettings):
    """Everything before stage 2 (checks, stage 1, the settings file): (spec, arrays, stage-1 choice).
    Writes DIRECTORY/search.json, which every process of a distributed search reads."""
    from nas.stage2_oracle import check_budget_reachable

    num_classes, sram, flash = int(run.num_classes), int(run.sram), int(run.flash)
    max_trials, epochs, seed, verbose = run.max_trials, run.epochs, run.seed, run.verbose
    if num_classes < 2:
        raise DataError(f"num_classes must be at least 2, got {num_classes}")
    if max_trials < 1 or epochs < 1:
        raise TinyEngineError(f"max_trials and epochs must be at least 1 (got {max_trials}, {epochs})")
    x_tr, y_tr = as_arrays(train, "train", num_classes)
    x_va, y_va = as_arrays(val, "val", num_classes)
    if x_tr.shape[1:] != x_va.shape[1:]:
        raise DataError(f"train inputs are {x_tr.shape[1:]} but val inputs are {x_va.shape[1:]}")
    shape = tuple(int(v) for v in (run.input_shape or x_tr.shape[1:]))
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or shape[-1] != x_tr.shape[-1]:
        raise DataError(f"input_shape {shape} does not match the data's {tuple(x_tr.shape[1:])} "
                        "(height, width, channels)")
    if shape[-1] != 3 and tuple(x_tr.shape[1:]) != shape:
        raise DataError(f"inputs of {x_tr.shape[-1]} channel(s) are not resized: input_shape {shape} must "
                        f"equal the data's {tuple(x_tr.shape[1:])}")
    resolutions = [int(r) for r in (run.resolutions or default_resolutions(shape))]
    widths = [round(float(w), 6) for w in (run.widths or WIDTHS)]
    directory = Path(run.directory)
    options = _space_options(run.stage_depths, run.kernel_sizes, run.expand_ratios)
    try:
        space_all = MCUNetSpace(resolutions=resolutions, widths=widths, num_classes=num_classes,
                                input_shape=shape, **options)
    except ValueError as exc:
        raise TinyEngineError(f"invalid search space: {exc}") from None
    # Before anything costly: is there any network at all that fits?
    check_budget_reachable(space_all, min(resolutions), min(widths), sram, flash)

    if run.overwrite and directory.exists():
        import shutil
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    choice = None
    if len(resolutions) == 1 and len(widths) == 1:
        resolution, width = resolutions[0], widths[0]
    else:
        resolution, width, choice = _stage1(directory, sram, flash, run.stage1_samples, resolutions,
                                            widths, seed, num_classes, shape, verbose, options)
    population = run.population or max(2, min(100, max_trials // 2))
    parents = run.parents or max(2, min(20, population // 5))
    spec = {"num_classes": num_classes, "input_shape": list(shape), "resolution": resolution,
            "width": width, "sram": sram, "flash": flash, "max_trials": int(max_trials),
            "epochs": int(epochs), "seed": int(seed), "warmup_epochs": int(run.warmup_epochs),
            "batch_size": int(run.batch_size), "learning_rate": float(run.learning_rate),
            "population": int(population), "parents": int(parents),
            "mutation_prob": float(run.mutation_prob),
            "generations": int(run.generations), "lease_seconds": float(run.lease_seconds),
            "recalibrate_batches": int(run.recalibrate_batches),
            "space_options": {k: [list(v) if isinstance(v, (list, tuple)) else v for v in vals]
                              for k, vals in options.items()}}
    _check_same_search(directory, spec)
    _write_json(directory / "search.json", spec)
    return spec, (x_tr, y_tr, x_va, y_va), choice


def write_cluster_data(directory, arrays) -> Path:
    """DIRECTORY/data.npz: the arrays every worker process trains on."""
    path = Path(directory) / "data.npz"
    tmp = path.with_name(".data.tmp.npz")
    x_tr, y_tr, x_va, y_va = arrays
    np.savez(tmp, x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va)
    os.replace(tmp, path)
    return path


def _space_options(stage_depths, kernel_sizes, expand_ratios) -> dict:
    out = {}
    if stage_depths is not None:
        out["stage_depths"] = tuple(tuple(int(d) for d in s) for s in stage_depths)
    if kernel_sizes is not None:
        out["kernel_sizes"] = tuple(int(k) for k in kernel_sizes)
    if expand_ratios is not None:
        out["expand_ratios"] = tuple(int(e) for e in expand_ratios)
    return out


def _stage1(directory, sram, flash, samples, resolutions, widths, seed, num_classes, shape, verbose,
            options):
    from nas.stage1 import optimize_search_space
    path = directory / "stage1.json"
    key = {"sram": sram, "flash": flash, "samples": samples, "resolutions": resolutions, "widths": widths,
           "seed": seed, "num_classes": num_classes, "input_shape": list(shape),
           "space_options": {k: json.loads(json.dumps(v)) for k, v in options.items()}}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["resolution"], saved["width"], None
    choice = optimize_search_space(sram, flash, samples=samples, resolutions=resolutions, widths=widths,
                                   seed=seed, num_classes=num_classes, qat=True, input_shape=shape,
                                   progress=verbose > 0, space_options=options)
    if verbose:
        print(f"TinyNAS stage 1: {choice.reason}", flush=True)
    _write_json(path, {"key": key, "resolution": choice.resolution, "width": choice.width,
                       "table": choice.to_markdown()})
    return choice.resolution, choice.width, choice


def _check_same_search(directory: Path, spec: dict):
    path = directory / "search.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != spec:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {spec.get(k)!r}" for k in sorted(set(old) | set(spec))
                             if old.get(k) != spec.get(k))
            raise TinyEngineError(f"{directory} holds a different search ({diff}); pass another "
                                  "directory, or overwrite=True to start afresh")


def _write_json(path: Path, obj):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def make_oracle(spec: dict):
    from nas.stage2_oracle import TinyNASOracle
    space = MCUNetSpace(resolutions=[spec["resolution"]], widths=[spec["width"]],
                        num_classes=spec["num_classes"], input_shape=spec["input_shape"],
                        **spec.get("space_options", {}))
    return TinyNASOracle(space, spec["sram"], spec["flash"], max_trials=spec["max_trials"],
                         population=spec["population"], parents=spec["parents"],
                         mutation_prob=spec["mutation_prob"], generations=spec["generations"],
                         seed=spec["seed"], lease_seconds=spec["lease_seconds"])


def make_tuner(directory, spec: dict, verbose: int = 1):
    from nas.stage2_tuner import TinyNASTuner
    return TinyNASTuner(make_oracle(spec), sram=spec["sram"], flash=spec["flash"], epochs=spec["epochs"],
                        warmup_epochs=spec["warmup_epochs"], batch_size=spec["batch_size"],
                        learning_rate=spec["learning_rate"],
                        recalibrate_batches=spec.get("recalibrate_batches", 50), directory=str(directory),
                        project_name=STAGE2, overwrite=False, verbose=verbose)


def load_oracle(directory):
    """The oracle of a search as saved in its directory (no tuner, no TensorFlow training)."""
    directory = Path(directory)
    spec = json.loads((directory / "search.json").read_text())
    oracle = make_oracle(spec)
    oracle._set_project_dir(str(directory), STAGE2)
    if (directory / STAGE2 / "oracle.json").exists():
        oracle.reload()
    return oracle


def collect(directory, oracle, spec: dict, choice=None) -> SearchResult:
    """SearchResult from an oracle and its trial directories."""
    directory = Path(directory)
    rows = TrialTable()
    for h in oracle.history():
        tdir = directory / STAGE2 / f"trial_{h['trial_id']}"
        row = {"trial_id": h["trial_id"], "arch": h["arch"].short(), "origin": h["origin"],
               "parents": h["parents"], "status": str(h["status"])}
        res = tdir / "result.json"
        if res.exists() and row["status"] == "COMPLETED":
            row.update({k: v for k, v in json.loads(res.read_text()).items() if k != "arch"})
        fail = tdir / "failure.txt"
        if fail.exists() and row["status"] != "COMPLETED":
            row["failure"] = fail.read_text().strip().splitlines()[0] if fail.read_text().strip() else ""
        row["_arch"] = h["arch"]
        rows.append(row)
    done = [r for r in rows if r["status"] == "COMPLETED" and r.get("accuracy") is not None]
    best = max(done, key=lambda r: (r["accuracy"], -r["macs"])) if done else None
    tflite = None
    if best is not None:
        tflite = (directory / STAGE2 / f"trial_{best['trial_id']}" / "model.tflite").read_bytes()
    return SearchResult(best["_arch"] if best else None, best["accuracy"] if best else None, tflite, rows,
                        directory, spec["sram"], spec["flash"], spec["resolution"], spec["width"],
                        choice, best["trial_id"] if best else None)


# -- a chief and workers on this machine --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(tuner_id: str, port: int) -> dict:
    env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port), TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_process(directory, tuner_id: str, port: int, log=None, verbose: int = 1) -> subprocess.Popen:
    """One chief or worker process of the search in `directory` (see nas.stage2_worker)."""
    cmd = [sys.executable, "-m", "nas.stage2_worker", str(directory), "--verbose", str(verbose)]
    out = open(log, "ab") if log else None
    return subprocess.Popen(cmd, env=process_env(tuner_id, port), stdout=out or None,
                            stderr=subprocess.STDOUT if out else None)


def run_local_cluster(directory, workers: int, timeout: float | None = None, verbose: int = 1):
    directory = Path(directory)
    port = free_port()
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    procs = [start_process(directory, "chief", port, logs / "chief.log", verbose)]
    procs += [start_process(directory, f"worker{i}", port, logs / f"worker{i}.log", verbose)
              for i in range(workers)]
    deadline = None if timeout is None else time.time() + timeout
    try:
        while procs[0].poll() is None:
            if deadline is not None and time.time() > deadline:
                raise TinyEngineError(f"the distributed search did not finish in {timeout:g} s; it "
                                      f"resumes from {directory} when run again")
            time.sleep(0.5)
        for p in procs[1:]:
            p.wait(timeout=60)
        if procs[0].returncode != 0:
            raise TinyEngineError(f"the TinyNAS chief failed (exit {procs[0].returncode}); see "
                                  f"{logs / 'chief.log'}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


__all__ = ["search", "SearchResult", "TrialTable", "DataError", "as_arrays", "load_oracle"]
