"""The offline speech set: exact v2 layout, split by voice, deterministic, resumable, and speech
that the MLPerf Tiny KWS reference model, compiled by tinyengine-tf, recognises."""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SHARED_MODELS
from nas.datasets.quantize import quantize
from nas.datasets.speech_commands import LABELS, WORDS, load_speech_commands, scan
from nas.datasets.speech_synth import OTHER_WORDS, synthesize_speech_commands
from nas.datasets.wav import wav_info
from tinyengine_tf.errors import DatasetError

SMALL = dict(words=("yes", "stop"), other_words=("bed",), per_word=4, progress=False)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _speaker(rel):
    return rel.split("/")[1].split("_nohash_")[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = synthesize_speech_commands(out, seed=3, **SMALL)
    return out, summary


def test_layout_is_speech_commands_v2_split_by_voice(small):
    out, summary = small
    assert summary.clips == 12 and summary.written == 12
    lists = {name: (out / name).read_text().split() for name in ("validation_list.txt", "testing_list.txt")}
    clips = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav")
                   if not p.parent.name.startswith("_"))
    assert len(clips) == 12
    for rel in clips:
        assert re.fullmatch(r"(yes|stop|bed)/[0-9a-f]{8}_nohash_\d+\.wav", rel), rel
        info = wav_info(out / rel)
        assert (info.rate, info.channels, info.bits, info.frames) == (16000, 1, 16, 16000)
    val, test = set(lists["validation_list.txt"]), set(lists["testing_list.txt"])
    train = set(clips) - val - test
    assert val <= set(clips) and test <= set(clips) and not val & test
    voices = {name: {_speaker(r) for r in s} for name, s in (("train", train), ("val", val), ("test", test))}
    assert not voices["train"] & voices["test"] and not voices["train"] & voices["val"]
    assert not voices["val"] & voices["test"]
    for word in ("yes", "stop", "bed"):                 # every word in every split
        assert all(any(r.startswith(word + "/") for r in s) for s in (train, val, test))
    noise = sorted((out / "_background_noise_").glob("*.wav"))
    assert len(noise) >= 3 and all(wav_info(p).frames >= 16000 * 10 for p in noise)
    assert "SYNTHETIC" in (out / "README.txt").read_text()


def test_same_seed_same_bytes_and_a_killed_run_resumes(small, tmp_path):
    out, _ = small
    again = tmp_path / "b"
    synthesize_speech_commands(again, seed=3, **SMALL)
    reference = _files(out)
    assert _files(again) == reference
    victims = sorted(again.glob("stop/*.wav"))[:2]
    victims[0].unlink()
    victims[1].write_bytes(victims[1].read_bytes()[:500])     # a clip cut short by a kill
    (again / "testing_list.txt").unlink()
    (again / f".{victims[0].name}.tmp-999").write_bytes(b"partial")
    summary = synthesize_speech_commands(again, seed=3, **SMALL)
    assert summary.written == 2
    assert _files(again) == reference                           # leftovers removed too
    other = tmp_path / "c"
    synthesize_speech_commands(other, seed=4, **SMALL)
    assert _files(other) != reference


def test_a_run_killed_midway_resumes_to_the_same_set(small, tmp_path):
    out, _ = small
    target = tmp_path / "killed"
    code = (f"from nas.datasets.speech_synth import synthesize_speech_commands as s; "
            f"s({str(target)!r}, seed=3, workers=1, **{SMALL!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(target.glob("*/*_nohash_*.wav"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    done = len(list(target.glob("*/*_nohash_*.wav")))
    assert 3 <= done < 12 and not (target / "testing_list.txt").exists()
    summary = synthesize_speech_commands(target, seed=3, **SMALL)
    assert summary.written == 12 - done
    assert _files(target) == _files(out)


def test_bad_arguments_and_missing_synthesiser(tmp_path):
    with pytest.raises(DatasetError, match="per_word must be at least 1"):
        synthesize_speech_commands(tmp_path / "x", per_word=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="exists and is not a directory"):
        synthesize_speech_commands(tmp_path / "file", per_word=1)
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tinyengine_tf", "data", "speech-commands",
                           str(tmp_path / "out"), "--per-word", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: espeak-ng is not installed; install it with `apt-get install espeak-ng` "
        "(`make sysdeps` does)"]
    assert not (tmp_path / "out" / "validation_list.txt").exists()


def test_cli_writes_a_set_the_loader_reads(tmp_path):
    out = tmp_path / "sc"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tinyengine_tf", "data", "speech-commands",
                           str(out), "--per-word", "1", "--seed", "5", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n = 3 * (len(WORDS) + len(OTHER_WORDS))     # at least one clip per word and split
    assert f"{n} clips" in proc.stdout
    index = scan(out)
    assert sum(len(v) for v in index.clips.values()) == n


def test_reference_kws_model_recognises_the_keywords_through_our_c(tmp_path):
    import tinyengine_tf as te
    out = tmp_path / "kw"
    synthesize_speech_commands(out, per_word=8, seed=0, other_words=(), progress=False)
    splits = load_speech_commands(out, as_numpy=True, augment=False, silence_percentage=0)
    x = np.concatenate([s[0] for s in splits])
    y = np.concatenate([s[1] for s in splits])
    assert sorted(set(y.tolist())) == list(range(10))
    cm = te.convert(str(SHARED_MODELS / "kws_ref_model.tflite"))
    x_int8 = quantize(x, cm)
    pred = cm.run(x_int8)
    assert x_int8.dtype == np.int8
    rate = (pred.argmax(axis=1) == y).mean()
    # Chance is 1/12; the full benchmark (benchmarks/results_speech_synth.md) measures more.
    assert rate > 0.3, f"{rate:.1%} of {len(y)} keyword clips recognised ({LABELS[:10]})"
