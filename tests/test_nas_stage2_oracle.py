"""TinyNASOracle without training: every proposal fits (by nas.estimate), none repeats, evolution
uses the best completed trials, state survives a reload, leases hand silent workers' trials on."""
import random
import time

import numpy as np
import pytest

import nas
from nas.space import MCUNetSpace

pytest.importorskip("keras_tuner")
from keras_tuner.src.engine import trial as trial_module  # noqa: E402

from nas.stage2_oracle import TinyNASOracle, arch_from_values, arch_values, smallest_arch  # noqa: E402

R, W, CLASSES = 64, 0.3, 10


def _space():
    return MCUNetSpace(resolutions=[R], widths=[W], num_classes=CLASSES)


@pytest.fixture(scope="module")
def median_budget():
    """Budgets at the median footprint of random networks: about half of the space does not fit,
    so the fit check decides something."""
    space = _space()
    costs = [nas.estimate(space.sample(R, W, random.Random(i)), qat=True) for i in range(40)]
    return int(np.median([c.peak_sram for c in costs])), int(np.median([c.flash for c in costs]) * 1.1)


def _oracle(tmp_path, budget, name="p", **kw):
    kw.setdefault("max_trials", 50)
    kw.setdefault("population", 10)
    kw.setdefault("parents", 4)
    oracle = TinyNASOracle(_space(), *budget, seed=kw.pop("seed", 0), **kw)
    oracle._set_project_dir(str(tmp_path), name)
    return oracle


def _score(arch) -> float:
    """A made-up accuracy that prefers large kernels: evolution should move toward them."""
    return float(np.mean(arch.kernels)) / 7.0


def _finish(oracle, trial, score=None, status="COMPLETED"):
    arch = arch_from_values(trial.hyperparameters.values)
    if status == "COMPLETED":
        oracle.update_trial(trial.trial_id, {"accuracy": _score(arch) if score is None else score})
    trial.status = status
    oracle.end_trial(trial)
    return arch


def test_arch_values_are_plain_and_round_trip():
    for space in (_space(), MCUNetSpace(widths=[0.4], num_classes=12, input_shape=(49, 10, 1))):
        for seed in range(5):
            arch = space.sample(space.resolutions[0], space.widths[0], random.Random(seed))
            values = arch_values(arch)
            assert all(type(v) in (int, float, str) for v in values.values())
            assert arch_from_values(values) == arch
    mfcc = MCUNetSpace(widths=[0.4], num_classes=12, input_shape=(49, 10, 1)).sample(rng=1)
    assert mfcc.input_shape == (49, 10, 1)


def test_every_proposal_fits_and_none_repeats(tmp_path, median_budget):
    """Several hundred proposals through the real create/end cycle: each fits by nas.estimate
    (checked independently of the oracle's own check), no architecture appears twice, and after
    the initial population the children come from mutation and crossover."""
    sram, flash = median_budget
    oracle = _oracle(tmp_path, median_budget, max_trials=300, population=40, parents=8)
    archs, origins = [], []
    for _ in range(300):
        trial = oracle.create_trial("tuner0")
        assert trial.status == trial_module.TrialStatus.RUNNING
        archs.append(_finish(oracle, trial))
    assert oracle.create_trial("tuner0").status == trial_module.TrialStatus.STOPPED
    origins = [p["origin"] for p in oracle.proposals]
    assert len({a.to_json() for a in archs}) == len(archs) == 300
    for arch in archs:
        cost = nas.estimate(arch, qat=True)
        assert cost.peak_sram <= sram and cost.flash <= flash, arch.short()
    assert origins[:40] == ["random"] * 40
    assert origins[40:].count("mutation") > 50 and origins[40:].count("crossover") > 50
    # children descend from the best completed trials, so the made-up score rises
    first, last = np.mean([_score(a) for a in archs[:40]]), np.mean([_score(a) for a in archs[-60:]])
    assert last > first + 0.05


def test_generations_and_population_bound_the_search(tmp_path, median_budget):
    oracle = _oracle(tmp_path, median_budget, max_trials=100, population=5, parents=2, crossover=2,
                     mutation=3, generations=2)
    n = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == trial_module.TrialStatus.STOPPED:
            break
        _finish(oracle, trial)
        n += 1
    assert n == 5 + 2 * (2 + 3)


def test_state_reload_continues_identically(tmp_path, median_budget):
    """After a reload from oracle.json the next proposals are exactly what the uninterrupted
    oracle proposes (population, history and RNG state all on disk)."""
    a = _oracle(tmp_path, median_budget)
    for _ in range(14):
        _finish(a, a.create_trial("tuner0"))
    a.save()
    b = _oracle(tmp_path, median_budget)
    b.reload()
    assert b.proposals == a.proposals
    nxt_a = [_finish(a, a.create_trial("tuner0")).to_json() for _ in range(8)]
    nxt_b = [_finish(b, b.create_trial("tuner0")).to_json() for _ in range(8)]
    assert nxt_a == nxt_b


def test_interrupted_trial_is_rerun_after_reload_and_completed_ones_are_not(tmp_path, median_budget):
    a = _oracle(tmp_path, median_budget)
    done = [a.create_trial("tuner0") for _ in range(1)]
    _finish(a, done[0])
    running = a.create_trial("tuner0")    # then the process dies
    b = _oracle(tmp_path, median_budget)
    b.reload()
    again = b.create_trial("tuner0")
    assert again.trial_id == running.trial_id
    assert again.hyperparameters.values == running.hyperparameters.values
    _finish(b, again)
    assert b.create_trial("tuner0").trial_id not in (done[0].trial_id, running.trial_id)


def test_another_reload_with_other_budget_is_refused(tmp_path, median_budget):
    from tinyengine_tf.errors import TinyEngineError
    a = _oracle(tmp_path, median_budget)
    _finish(a, a.create_trial("tuner0"))
    b = _oracle(tmp_path, (median_budget[0] + 8, median_budget[1]))
    with pytest.raises(TinyEngineError, match="another directory"):
        b.reload()


def test_a_silent_worker_loses_its_trial_to_the_next_that_asks(tmp_path, median_budget):
    oracle = _oracle(tmp_path, median_budget, lease_seconds=0.3)
    t1 = oracle.create_trial("worker1")
    # worker2 is busy and reporting: its lease holds
    t2 = oracle.create_trial("worker2")
    for _ in range(5):
        time.sleep(0.1)
        oracle.update_trial(t2.trial_id, {"heartbeat": 1.0})
    t3 = oracle.create_trial("worker3")
    assert t3.trial_id == t1.trial_id                # worker1 went silent: its trial moves on
    assert t3.hyperparameters.values == t1.hyperparameters.values
    assert "worker1" not in oracle.tuner_ids and "worker2" in oracle.tuner_ids
    assert oracle.reassigned and oracle.reassigned[0][:2] == [t1.trial_id, "worker1"]
    # worker1 comes back late and finishes too: the trial is recorded once
    _finish(oracle, t3, score=0.5)
    _finish(oracle, t1, score=0.9)
    assert oracle.trials[t1.trial_id].score == 0.5
    assert oracle.end_order.count(t1.trial_id) == 1


def test_worker_back_with_same_id_gets_its_trial(tmp_path, median_budget):
    oracle = _oracle(tmp_path, median_budget)
    t1 = oracle.create_trial("worker1")
    assert oracle.create_trial("worker1").trial_id == t1.trial_id


def test_workers_wait_while_the_last_trials_run_then_stop(tmp_path, median_budget):
    oracle = _oracle(tmp_path, median_budget, max_trials=2)
    a, b = oracle.create_trial("w1"), oracle.create_trial("w2")
    assert oracle.create_trial("w3").status == trial_module.TrialStatus.IDLE
    _finish(oracle, a)
    assert oracle.create_trial("w1").status == trial_module.TrialStatus.IDLE   # b may still fail over
    _finish(oracle, b)
    assert not oracle.search_over()          # w1 and w3 have not been told to stop
    for w in ("w1", "w2", "w3"):
        assert oracle.create_trial(w).status == trial_module.TrialStatus.STOPPED
    assert oracle.search_over()


def test_a_worker_ending_a_long_trial_is_not_taken_for_dead(tmp_path, median_budget):
    """The race a cluster run hit: the last trial outlasts the lease; the moment it ends, the
    chief's lease check must not drop its worker (which then finds the chief gone) before the
    worker has asked again and been told to stop."""
    oracle = _oracle(tmp_path, median_budget, max_trials=1, lease_seconds=0.3)
    t = oracle.create_trial("w1")
    for _ in range(6):                       # a trial of 4 leases, reported by heartbeats
        time.sleep(0.2)
        oracle.update_trial(t.trial_id, {"heartbeat": 1.0})
    _finish(oracle, t)
    oracle.expire_leases()                   # the chief's loop, between the end and the next ask
    assert "w1" in oracle.tuner_ids and not oracle.search_over()
    assert oracle.create_trial("w1").status == trial_module.TrialStatus.STOPPED
    assert oracle.search_over()


def test_failed_trials_never_stop_the_search(tmp_path, median_budget):
    oracle = _oracle(tmp_path, median_budget, max_trials=6)
    for _ in range(6):
        _finish(oracle, oracle.create_trial("tuner0"), status="FAILED")
    assert oracle.create_trial("tuner0").status == trial_module.TrialStatus.STOPPED
    assert [t.status for t in oracle.trials.values()] == ["FAILED"] * 6


def test_a_budget_nothing_fits_is_refused_before_any_trial(tmp_path):
    from tinyengine_tf.errors import DoesNotFitError
    space = _space()
    small = nas.estimate(smallest_arch(space, R, W), qat=True)
    oracle = _oracle(tmp_path, (small.peak_sram - 1, small.flash))
    with pytest.raises(DoesNotFitError) as e:
        oracle.create_trial("tuner0")
    assert f"{small.peak_sram:,} B of SRAM" in str(e.value) and f"{small.flash:,} B of Flash" in str(e.value)
    assert not oracle.trials
