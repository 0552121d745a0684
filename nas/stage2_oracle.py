"""TinyNAS stage 2, the proposer: a KerasTuner oracle that evolves MCUNet architectures inside one
(resolution, width) space and only ever proposes networks that fit the SRAM and Flash budgets.

Evolution is steady-state (asynchronous): the first ``population`` trials are distinct random
networks that fit; after that every new trial is a child of the ``parents`` best completed trials,
by crossover (share ``crossover / (crossover + mutation)``) or by mutation (each choice resampled
with ``mutation_prob``). No generation barrier, so every worker always gets work and no IDLE answer
is needed while the search runs. ``generations`` bounds the children (``generations * (crossover +
mutation)`` of them, the paper's schedule); ``max_trials`` bounds everything.

A candidate is checked with nas.cost (the compiler's own planner, no TensorFlow) before it becomes a
trial, and none is proposed twice. The trial's hyperparameters are the architecture's choices as
plain ints, floats and strings (they cross KerasTuner's gRPC): ``resolution``, ``width``,
``depth_<stage>``, ``kernel_<block>``, ``expand_<block>`` plus the fixed ``in_width``,
``in_channels`` and ``num_classes``; ``arch_from_values`` rebuilds the Arch.

Everything the oracle knows is in its project directory as JSON (``oracle.json`` through
get_state/set_state: proposals with their origin, the RNG state, leases). It also repairs the
KerasTuner 1.4.8 behaviours that shared/docs/keras-tuner.md measured:

- a worker that dies mid-trial: every trial holds a lease, renewed by each report from its worker
  (the tuner reports each epoch and sends heartbeats while it trains); a trial whose lease ran out
  is handed to the next worker that asks, and the dead worker's id is forgotten so the chief can end;
- a restarted distributed chief re-queued every ongoing trial, so live workers' trials ran twice:
  here they stay with their workers under a fresh lease (a dead one expires as above);
- ``end_trial`` saved before removing the trial from the ongoing set: it saves again after;
- a trial ended twice (a slow worker whose lease had expired finishing after its replacement) is
  recorded once;
- once ``max_trials`` are created, workers asking for more wait (IDLE; the tuner sleeps between
  asks) while other trials still run, because one of those may yet need a new worker.
"""
from __future__ import annotations

import random
import time

import keras_tuner
from keras_tuner.src.engine import trial as trial_module

from nas.space import STAGE_WIDTHS, Arch, MCUNetSpace

OBJECTIVE = "accuracy"          # validation accuracy of the generated C (what ships)
DEFAULT_LEASE_SECONDS = 120.0
_ENDED = (trial_module.TrialStatus.COMPLETED, trial_module.TrialStatus.FAILED)


# -- architecture <-> trial values ----------------------------------------------------------------
def arch_values(arch: Arch) -> dict:
    """The trial hyperparameters of an architecture: plain values only."""
    v = {"resolution": arch.resolution, "width": float(arch.width),
         "in_width": arch.input_shape[1], "in_channels": arch.in_channels,
         "num_classes": arch.num_classes, "arch": arch.short()}
    for i, d in enumerate(arch.depths):
        v[f"depth_{i}"] = int(d)
    for j, (k, e) in enumerate(zip(arch.kernels, arch.expands)):
        v[f"kernel_{j:02d}"] = int(k)
        v[f"expand_{j:02d}"] = int(e)
    return v


def arch_from_values(values: dict) -> Arch:
    """The Arch a trial's hyperparameter values describe (inverse of arch_values)."""
    depths = [int(values[f"depth_{i}"]) for i in range(len(STAGE_WIDTHS))]
    n = sum(depths)
    return Arch(int(values["resolution"]), float(values["width"]), depths,
                [int(values[f"kernel_{j:02d}"]) for j in range(n)],
                [int(values[f"expand_{j:02d}"]) for j in range(n)],
                int(values["num_classes"]), int(values["in_width"]), int(values["in_channels"]))


def smallest_arch(space: MCUNetSpace, resolution: int, width: float) -> Arch:
    """The network of a space with the least SRAM and Flash: shallowest, smallest kernels and
    expand ratios (every choice only ever adds bytes)."""
    depths = [min(d) for d in space.stage_depths]
    n = sum(depths)
    return space.arch(resolution, width, depths, [min(space.kernel_sizes)] * n,
                      [min(space.expand_ratios)] * n)


def check_budget_reachable(space: MCUNetSpace, resolution: int, width: float, sram: int, flash: int,
                           qat: bool = True) -> None:
    """Raise DoesNotFitError, before any training, when not even the smallest network fits."""
    from nas.cost import estimate
    from tinyengine_tf.errors import DoesNotFitError

    arch = smallest_arch(space, resolution, width)
    cost = estimate(arch, qat=qat)
    if not cost.fits(sram, flash):
        raise DoesNotFitError(
            f"no network of the space w{width:g}-r{resolution} fits: its smallest ({arch.short()}) "
            f"needs {cost.peak_sram:,} B of SRAM and {cost.flash:,} B of Flash against budgets of "
            f"{sram:,} B and {flash:,} B. Raise the budgets, or search a lower resolution or width")


# -- the oracle ------------------------------------------------------------------------------------
class TinyNASOracle(keras_tuner.Oracle):
    """Constrained steady-state evolution over nas.MCUNetSpace at one (resolution, width).

    space: the MCUNetSpace (its classes and input shape); resolution/width: the stage-1 choice
    (default: the space's only ones). sram/flash: budgets in bytes, checked with nas.cost before a
    candidate becomes a trial. population=100, parents=20, crossover=50, mutation=50,
    mutation_prob=0.1 and generations=30 are the MCUNet paper's. lease_seconds: how long a trial
    may go without a report from its worker before another worker gets it (distributed mode).
    """

    def __init__(self, space: MCUNetSpace, sram: int, flash: int, *, resolution: int | None = None,
                 width: float | None = None, max_trials: int = 100, population: int = 100,
                 parents: int = 20, crossover: int = 50, mutation: int = 50,
                 mutation_prob: float = 0.1, generations: int = 30, seed: int = 0, qat: bool = True,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, max_retries_per_trial: int = 1):
        if resolution is None:
            if len(space.resolutions) != 1:
                raise ValueError("pass resolution=: the space has several (run stage 1 to pick one)")
            resolution = space.resolutions[0]
        if width is None:
            if len(space.widths) != 1:
                raise ValueError("pass width=: the space has several (run stage 1 to pick one)")
            width = space.widths[0]
        for name, v in (("population", population), ("parents", parents), ("max_trials", max_trials)):
            if int(v) < 1:
                raise ValueError(f"{name} must be at least 1, got {v}")
        if crossover < 0 or mutation < 0 or crossover + mutation < 1:
            raise ValueError("crossover and mutation child counts must be >= 0 and not both 0")
        if not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in [0, 1], got {mutation_prob}")
        super().__init__(objective=keras_tuner.Objective(OBJECTIVE, "max"), max_trials=int(max_trials),
                         seed=int(seed) + 1, max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=None)
        self.space = space
        self.resolution, self.width = int(resolution), round(float(width), 6)
        self.sram, self.flash, self.qat = int(sram), int(flash), bool(qat)
        self.population, self.parents = int(population), int(parents)
        self.crossover, self.mutation = int(crossover), int(mutation)
        self.mutation_prob, self.generations = float(mutation_prob), int(generations)
        self.lease_seconds = float(lease_seconds)
        self.rng = random.Random(f"tinynas-stage2/{seed}")
        self.proposals: list = []      # {"trial_id", "arch" (JSON dict), "origin", "parents"}
        self.initial: list = []        # pre-sampled fitting random networks (JSON dicts), unused ones
        self.prepared = False
        self.exhausted = False         # the space holds no further distinct fitting network
        self.leases: dict = {}         # trial_id -> time.time() of the last report from its worker
        self.contact: dict = {}        # tuner_id -> time.time() of its last ask or report
        self.reassigned: list = []     # (trial_id, from tuner_id, time) of expired leases
        self._seen: set = set()
        self._checker = None
        self._restored_ongoing: dict = {}
        self.verbose = 0   # the tuner prints one line per trial instead of KerasTuner's tables

    # -- fit checks -----------------------------------------------------------------------------
    def fits(self, arch: Arch) -> bool:
        """Whether nas.cost says the compiled network fits both budgets (FitChecker gives
        estimate()'s verdict with cheaper pre-checks)."""
        from nas import cost
        if self._checker is None:
            self._checker = cost.FitChecker(self.sram, self.flash, self.space.num_classes, qat=self.qat)
            self._checker.calibrate([smallest_arch(self.space, self.resolution, self.width),
                                     self.space.sample(self.resolution, self.width, random.Random(0))])
        return bool(self._checker(arch)[0])

    def prepare(self, progress: bool = False) -> None:
        """Check the budget and pre-sample the initial population (so populate_space stays fast).
        Called by the tuner before it asks for trials; safe to call again."""
        if self.prepared:
            return
        check_budget_reachable(self.space, self.resolution, self.width, self.sram, self.flash, self.qat)
        want = min(self.population, self.max_trials) - len(self.proposals)
        bar = _bar(want, progress, "sampling the initial population")
        tries = 0
        while len(self.initial) < want and tries < 200 * max(want, 1):
            tries += 1
            arch = self.space.sample(self.resolution, self.width, self.rng)
            key = arch.to_json()
            if key in self._seen:
                continue
            if self.fits(arch):
                self.initial.append(arch.to_dict())
                self._seen.add(key)
                bar.update(1)
        bar.close()
        self.prepared = True

    # -- proposing -------------------------------------------------------------------------------
    def _completed(self) -> list:
        out = []
        for p in self.proposals:
            t = self.trials.get(p["trial_id"])
            if t is not None and t.status == trial_module.TrialStatus.COMPLETED and t.score is not None:
                out.append((float(t.score), p["trial_id"], Arch.from_json(p["arch"])))
        out.sort(key=lambda s: (-s[0], s[1]))
        return out

    def _new(self, arch: Arch) -> bool:
        return arch.to_json() not in self._seen and self.fits(arch)

    def _random(self, tries: int = 200):
        for _ in range(tries):
            arch = self.space.sample(self.resolution, self.width, self.rng)
            if self._new(arch):
                return arch
        return None

    def _child(self):
        ranked = self._completed()[: self.parents]
        if len(ranked) < 1:
            return self._random(), "random", []
        p_cross = self.crossover / (self.crossover + self.mutation)
        for _ in range(100):
            if len(ranked) >= 2 and self.rng.random() < p_cross:
                a, b = self.rng.sample(ranked, 2)
                child = self.space.crossover(a[2], b[2], self.rng)
                how, parents = "crossover", [a[1], b[1]]
            else:
                a = self.rng.choice(ranked)
                child = self.space.mutate(a[2], self.mutation_prob, self.rng)
                how, parents = "mutation", [a[1]]
            if self._new(child):
                return child, how, parents
        return self._random(), "random", []

    def _budget_left(self) -> bool:
        return len(self.proposals) < self.population + self.generations * (self.crossover + self.mutation)

    def populate_space(self, trial_id):
        if not self.prepared:
            self.prepare()
        if not self._budget_left():
            return {"status": trial_module.TrialStatus.STOPPED}
        if len(self.proposals) < self.population:
            if self.initial:
                arch, how, parents = Arch.from_json(self.initial.pop(0)), "random", []
            else:
                arch, how, parents = self._random(), "random", []
        else:
            arch, how, parents = self._child()
        if arch is None:
            self.exhausted = True
            return {"status": trial_module.TrialStatus.STOPPED}
        self._seen.add(arch.to_json())
        self.proposals.append({"trial_id": trial_id, "arch": arch.to_dict(), "origin": how,
                               "parents": parents})
        return {"status": trial_module.TrialStatus.RUNNING, "values": arch_values(arch)}

    # -- leases and the trial life cycle -----------------------------------------------------------
    def _expire(self, asking: str | None = None) -> None:
        now = time.time()
        for tuner_id, trial in list(self.ongoing_trials.items()):
            if tuner_id == asking:
                continue
            seen = self.leases.get(trial.trial_id, now)
            if now - seen > self.lease_seconds:
                self.ongoing_trials.pop(tuner_id)
                self.tuner_ids.discard(tuner_id)
                self.contact.pop(tuner_id, None)
                if trial.trial_id not in self._retry_queue:
                    self._retry_queue.append(trial.trial_id)
                self.reassigned.append([trial.trial_id, tuner_id, now])
                print(f"[tinynas] trial {trial.trial_id}: no report from {tuner_id} for "
                      f"{now - seen:.0f} s (lease {self.lease_seconds:g} s); handing it to another worker",
                      flush=True)
        # a worker that waits for work and stops asking has died too
        busy = set(self.ongoing_trials)
        for tuner_id in list(self.tuner_ids):
            if tuner_id != asking and tuner_id not in busy and \
                    now - self.contact.get(tuner_id, now) > self.lease_seconds:
                self.tuner_ids.discard(tuner_id)
                self.contact.pop(tuner_id, None)

    @keras_tuner.synchronized
    def expire_leases(self) -> None:
        """Hand trials whose workers stopped reporting to the next worker that asks."""
        self._expire()

    @keras_tuner.synchronized
    def search_over(self) -> bool:
        """Every trial handed out has ended and every worker has been told to stop (or died)."""
        return self._finished() and not self.ongoing_trials and not self._retry_queue \
            and not self.tuner_ids

    def _finished(self) -> bool:
        full = self.max_trials and len(self.trials) >= self.max_trials
        return bool(full or self.exhausted or not self._budget_left())

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        now = time.time()
        self.contact[tuner_id] = now
        self._expire(asking=tuner_id)
        if tuner_id in self.ongoing_trials:        # a worker back with the same id: its trial again
            self.leases[self.ongoing_trials[tuner_id].trial_id] = now
            return self.ongoing_trials[tuner_id]
        if not self._retry_queue and self._finished() and self.ongoing_trials:
            # Nothing to hand out now, but a running trial may still lose its worker.
            self.tuner_ids.add(tuner_id)
            return trial_module.Trial(self.get_space(), trial_id="idle",
                                      status=trial_module.TrialStatus.IDLE)
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self.leases[trial.trial_id] = now
        return trial

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        """Every report renews the trial's lease; reports without the objective (per-epoch
        progress, heartbeats) are recorded without KerasTuner's objective check."""
        self.leases[trial_id] = time.time()
        self._heard_from_holder(trial_id)
        metrics = dict(metrics)
        trial = self.trials[trial_id]
        if metrics.pop("heartbeat", None) is not None and not metrics:
            return trial
        if OBJECTIVE in metrics:
            return super().update_trial(trial_id, metrics, step)
        for name, value in metrics.items():
            if not trial.metrics.exists(name):
                trial.metrics.register(name, direction="max" if "acc" in name else "min")
            trial.metrics.update(name, float(value), step=step)
        self._save_trial(trial)
        return trial

    def _heard_from_holder(self, trial_id) -> None:
        """A report on a trial is contact from the worker holding it: without this, a worker that
        ends a trial longer than a lease after it asked for one looked idle and dead for the
        moment before its next ask, and the chief could end the search under it."""
        now = time.time()
        for tuner_id, t in self.ongoing_trials.items():
            if t.trial_id == trial_id:
                self.contact[tuner_id] = now

    @keras_tuner.synchronized
    def end_trial(self, trial):
        self._heard_from_holder(trial.trial_id)
        if trial.trial_id in self.end_order:
            # Ended already (by the worker that took over an expired lease): keep the first result.
            for tuner_id, t in list(self.ongoing_trials.items()):
                if t.trial_id == trial.trial_id:
                    self.ongoing_trials.pop(tuner_id)
            return
        super().end_trial(trial)
        self.leases.pop(trial.trial_id, None)
        self.save()   # KerasTuner saved before dropping the trial from the ongoing set

    # -- state -----------------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        version, internal, gauss = self.rng.getstate()
        state["tinynas"] = {
            "resolution": self.resolution, "width": self.width, "sram": self.sram, "flash": self.flash,
            "proposals": self.proposals, "initial": self.initial, "prepared": self.prepared,
            "rng": [version, list(internal), gauss], "leases": self.leases, "exhausted": self.exhausted,
            "reassigned": self.reassigned,
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        self._restored_ongoing = dict(self.ongoing_trials)
        mine = state.get("tinynas")
        if not mine:
            return
        if (mine["resolution"], mine["width"], mine["sram"], mine["flash"]) != \
                (self.resolution, self.width, self.sram, self.flash):
            from tinyengine_tf.errors import TinyEngineError
            raise TinyEngineError(
                f"{self._project_dir} holds a search of w{mine['width']:g}-r{mine['resolution']} under "
                f"{mine['sram']:,} B / {mine['flash']:,} B, not of w{self.width:g}-r{self.resolution} "
                f"under {self.sram:,} B / {self.flash:,} B: use another directory, or overwrite=True")
        self.proposals = mine["proposals"]
        self.initial = mine["initial"]
        self.prepared = mine["prepared"]
        version, internal, gauss = mine["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.leases = {k: float(v) for k, v in mine["leases"].items()}
        self.reassigned = mine.get("reassigned", [])
        self.exhausted = bool(mine.get("exhausted", False))
        self._seen = {Arch.from_json(p["arch"]).to_json() for p in self.proposals} | \
                     {Arch.from_json(a).to_json() for a in self.initial}

    def reload(self):
        super().reload()   # moves every ongoing trial into the retry queue
        # A trial that completed just before the kill may still be listed as ongoing.
        self._retry_queue = [t for t in self._retry_queue
                             if self.trials[t].status not in _ENDED]
        if _distributed_chief():
            # Workers outlive a chief restart: their trials stay theirs under a fresh lease.
            now = time.time()
            for tuner_id, trial in self._restored_ongoing.items():
                live = self.trials.get(trial.trial_id)
                if live is None or live.status in _ENDED:
                    continue
                if trial.trial_id in self._retry_queue:
                    self._retry_queue.remove(trial.trial_id)
                self.ongoing_trials[tuner_id] = live
                self.tuner_ids.add(tuner_id)
                self.leases[trial.trial_id] = now
                self.contact[tuner_id] = now
        self._restored_ongoing = {}

    # -- reading results ---------------------------------------------------------------------------
    def history(self) -> list:
        """One row per proposal, in order: trial id, arch, origin, parents, status and metrics."""
        rows = []
        for p in self.proposals:
            t = self.trials.get(p["trial_id"])
            row = {"trial_id": p["trial_id"], "arch": Arch.from_json(p["arch"]), "origin": p["origin"],
                   "parents": p["parents"], "status": t.status if t else "UNKNOWN",
                   "score": t.score if t else None}
            if t is not None:
                for name in t.metrics.metrics:
                    row[name] = t.metrics.get_last_value(name)
            rows.append(row)
        return rows


def _distributed_chief() -> bool:
    from keras_tuner.src.distribute import utils as dist_utils
    return dist_utils.is_chief_oracle()


def _bar(total: int, enabled: bool, desc: str):
    if enabled and total > 0:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="net", leave=False)

    class _Null:
        def update(self, n): pass
        def close(self): pass
    return _Null()

