"""TinyNAS stage 2 end to end with real QAT trials: nas.search in one process, killed and resumed;
KerasTuner's chief/worker mode on 127.0.0.1 with a worker killed, a chief killed and restarted and
a worker back under its own id. Every process a test starts is bounded in time and ended by it."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nas_search_job import FLASH, MFCC, SRAM, mfcc_task, search_kwargs

pytestmark = pytest.mark.slow
pytest.importorskip("keras_tuner")
pytest.importorskip("tensorflow_model_optimization")

JOB = Path(__file__).with_name("nas_search_job.py")
DONE = re.compile(r"trial (\d+) \S+: C accuracy")
LIMIT = 420   # seconds any one scenario may take on a loaded 2-core machine


def _json(path: Path):
    for _ in range(50):   # a file being rewritten by another process
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"cannot read {path}")


def _statuses(directory: Path) -> dict:
    out = {}
    for p in sorted((directory / "stage2").glob("trial_*/trial.json")):
        t = _json(p)
        out[t["trial_id"]] = t["status"]
    return out


def _ongoing(directory: Path) -> dict:
    p = directory / "stage2" / "oracle.json"
    return _json(p)["ongoing_trials"] if p.exists() else {}


def _wait(what, cond, procs, timeout=LIMIT, allow_exit=()):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        for name, p in procs.items():
            if name not in allow_exit and p.poll() is not None:
                raise AssertionError(f"{name} exited ({p.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _completions(*logs: Path) -> list:
    return [m.group(1) for log in logs if log.exists() for m in DONE.finditer(log.read_text())]


class _Procs(dict):
    def kill_all(self):
        for p in self.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@pytest.fixture
def procs():
    ps = _Procs()
    yield ps
    ps.kill_all()


def test_search_finishes_fits_and_ships_a_bit_exact_model(tmp_path):
    """49x10x1 inputs (single channel, non-square): every trial's .tflite compiles within the
    budget, the result's C is bit-exact with TFLite Micro (extremes included), and the reported
    accuracy is the generated C's on the quantized validation set."""
    import nas
    from reference import assert_matches_tflm, int8_inputs, tflm_run
    from tinyengine_tf.api import compile_tflite

    val = mfcc_task(48, 1)
    r = nas.search(mfcc_task(96, 0), val, verbose=0, **search_kwargs(tmp_path / "run", 2))
    assert len(r.trials) == 2 and all(t["status"] == "COMPLETED" for t in r.trials)
    for t in r.trials:
        # The budget the trials compile under: its room stores widened filters and depthwise
        # records, which cm.flash counts.
        cm = compile_tflite((tmp_path / "run" / "stage2" / f"trial_{t['trial_id']}" / "model.tflite").read_bytes(),
                            sram=SRAM, flash=FLASH)
        assert cm.peak_sram <= SRAM and cm.flash <= FLASH
        assert (cm.peak_sram, cm.flash) == (t["peak_sram"], t["flash"])
        assert (tmp_path / "run" / "stage2" / f"trial_{t['trial_id']}" / "c" / "memory_report.md").exists()
    assert r.arch.input_shape == MFCC and r.compiled.input_details[0]["shape"] == (1, *MFCC)
    assert_matches_tflm(r.compiled, r.tflite, int8_inputs(MFCC, 16, seed=5))
    from nas.datasets.quantize import quantize
    xq = quantize(val[0], r.compiled.input_details[0])
    tflm_pred = np.argmax(np.asarray(tflm_run(r.tflite, xq)).reshape(len(xq), -1), axis=1)
    assert r.accuracy == pytest.approx(float(np.mean(tflm_pred == val[1])))
    table = r.trials.to_markdown()
    assert table.count("COMPLETED") == 2
    r.plot(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 10_000


def test_bad_data_and_impossible_budgets_are_refused_up_front(tmp_path):
    import nas
    from tinyengine_tf.errors import DoesNotFitError

    x, y = mfcc_task(16, 0)
    kw = search_kwargs(tmp_path / "bad", 2)
    with pytest.raises(nas.DataError, match=r"labels must be in \[0, 1\]"):
        nas.search((x, y + 1), (x, y), **kw)
    with pytest.raises(nas.DataError, match="val inputs"):
        nas.search((x, y), (x[:, :20], y), **kw)
    with pytest.raises(nas.DataError, match="one integer per input"):
        nas.search((x, y[:5]), (x, y), **kw)
    kw.update(sram=2048)
    t0 = time.time()
    with pytest.raises(DoesNotFitError, match=r"needs [\d,]+ B of SRAM and [\d,]+ B of Flash"):
        nas.search((x, y), (x, y), **kw)
    assert time.time() - t0 < 30 and not (tmp_path / "bad").exists()


def test_single_process_search_killed_mid_trial_resumes_without_rerunning(tmp_path, procs):
    run = tmp_path / "run"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(logs[0], "wb") as out:
        procs["first"] = subprocess.Popen([sys.executable, str(JOB), str(run), "2"], stdout=out,
                                          stderr=subprocess.STDOUT, env=env)
    # trial 0 done and trial 1 under way: kill without warning
    _wait("trial 1 to start", lambda: _statuses(run).get("0") == "COMPLETED" and "1" in _statuses(run), procs)
    time.sleep(3)
    procs["first"].send_signal(signal.SIGKILL)
    procs["first"].wait(timeout=30)
    assert _statuses(run)["1"] == "RUNNING"
    done_before = _completions(logs[0])
    with open(logs[1], "wb") as out:
        procs["second"] = subprocess.Popen([sys.executable, str(JOB), str(run), "2"], stdout=out,
                                           stderr=subprocess.STDOUT, env=env)
        procs["second"].wait(timeout=LIMIT)
    assert procs["second"].returncode == 0, logs[1].read_text()[-3000:]
    assert done_before == ["0"]
    assert sorted(_completions(*logs)) == ["0", "1"]     # none twice, the killed one re-run
    assert set(_statuses(run).values()) == {"COMPLETED"}


def _cluster_dir(tmp_path, max_trials):
    from nas.pipeline import SearchSettings, plan_search, write_cluster_data
    run = tmp_path / "run"
    spec, arrays, _ = plan_search(mfcc_task(96, 0), mfcc_task(48, 1),
                                  SearchSettings(verbose=0, **search_kwargs(run, max_trials)))
    write_cluster_data(run, arrays)
    return run


def _start(procs, run, name, port, log, tuner_id=None):
    from nas.pipeline import start_process
    procs[name] = start_process(run, tuner_id or name, port, log)
    return procs[name]


def test_chief_and_two_workers_finish_although_a_worker_dies(tmp_path, procs):
    """worker1 is killed in its first trial: no finished trial is lost, its trial goes to worker0
    once the lease (20 s) runs out, and the chief ends although worker1 never comes back."""
    from nas.pipeline import free_port, load_oracle
    run = _cluster_dir(tmp_path, 2)
    port = free_port()
    log = {n: tmp_path / f"{n}.log" for n in ("chief", "worker0", "worker1")}
    for name in log:
        _start(procs, run, name, port, log[name])
    _wait("worker1 to hold a trial", lambda: "worker1" in _ongoing(run), procs)
    lost = _ongoing(run)["worker1"]
    time.sleep(2)
    procs["worker1"].send_signal(signal.SIGKILL)
    _wait("the chief to end", lambda: procs["chief"].poll() is not None, procs,
          allow_exit=("chief", "worker0", "worker1"))
    assert procs["chief"].returncode == 0, log["chief"].read_text()[-3000:]
    procs["worker0"].wait(timeout=60)
    assert procs["worker0"].returncode == 0, log["worker0"].read_text()[-3000:]
    assert sorted(_completions(log["worker0"], log["worker1"])) == ["0", "1"]
    assert lost not in _completions(log["worker1"])
    assert set(_statuses(run).values()) == {"COMPLETED"}
    oracle = load_oracle(run)
    assert [r[:2] for r in oracle.reassigned] == [[lost, "worker1"]]
    assert "handing it to another worker" in log["chief"].read_text()


def test_chief_restart_and_worker_back_under_its_id_continue_the_search(tmp_path, procs):
    """The chief is killed while worker0 trains and is restarted: worker0's trial stays its own
    (finished once, not re-queued). Then worker0 is killed mid-trial and restarted with the same
    id: it gets that trial back and the search ends."""
    run = _cluster_dir(tmp_path, 2)
    from nas.pipeline import free_port
    port = free_port()
    log = {n: tmp_path / f"{n}.log" for n in ("chief", "chief2", "worker0", "worker0b")}
    _start(procs, run, "chief", port, log["chief"])
    _start(procs, run, "worker0", port, log["worker0"])
    _wait("worker0 to hold a trial", lambda: "worker0" in _ongoing(run), procs)
    first = _ongoing(run)["worker0"]
    procs["chief"].send_signal(signal.SIGKILL)
    procs["chief"].wait(timeout=30)
    time.sleep(2)
    _start(procs, run, "chief2", port, log["chief2"], tuner_id="chief")
    _wait(f"trial {first} to complete", lambda: _statuses(run).get(first) == "COMPLETED", procs,
          allow_exit=("chief",))
    _wait("worker0's second trial", lambda: _ongoing(run).get("worker0") not in (None, first), procs,
          allow_exit=("chief",))
    second = _ongoing(run)["worker0"]
    time.sleep(3)
    procs["worker0"].send_signal(signal.SIGKILL)
    procs["worker0"].wait(timeout=30)
    _start(procs, run, "worker0b", port, log["worker0b"], tuner_id="worker0")   # the same id
    _wait("the chief to end", lambda: procs["chief2"].poll() is not None, procs,
          allow_exit=("chief", "chief2", "worker0", "worker0b"))
    assert procs["chief2"].returncode == 0, log["chief2"].read_text()[-3000:]
    procs["worker0b"].wait(timeout=60)
    done = _completions(log["worker0"], log["worker0b"])
    assert sorted(done) == sorted([first, second])             # each once
    assert _completions(log["worker0b"]) == [second]            # it got its own trial back
    assert set(_statuses(run).values()) == {"COMPLETED"}
