"""The Speech Commands v2 loader on tiny datasets written here in the real layout."""
import math
import wave

import numpy as np
import pytest

from nas.datasets.speech_commands import LABELS, SILENCE, UNKNOWN, WORDS, load_speech_commands, scan
from nas.datasets.speech_features import features
from nas.datasets.wav import read_wav
from tinyengine_tf.errors import DatasetError

OTHERS = ("bed", "cat")
SPEAKERS = ("0a1b2c3d", "1f2e3d4c", "9a8b7c6d")      # one per split: train, val, test


def _write(path, samples, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


def _tone(k, n=16000):
    t = np.arange(n) / 16000
    return np.round(8000 * np.sin(2 * np.pi * (200 + 97 * k) * t) * np.hanning(n)).astype(np.int16)


def make_v2(root, words=WORDS + OTHERS, takes=2, background=True):
    """takes clips per (word, speaker); speaker 1 is listed for validation, speaker 2 for test."""
    val, test = [], []
    for w_i, word in enumerate(words):
        for s_i, spk in enumerate(SPEAKERS):
            for n in range(takes):
                rel = f"{word}/{spk}_nohash_{n}.wav"
                _write(root / rel, _tone(w_i * 7 + s_i * 2 + n, 16000 - 1000 * n))
                (val if s_i == 1 else test if s_i == 2 else []).append(rel)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    if background:
        rng = np.random.default_rng(0)
        _write(root / "_background_noise_" / "white_noise.wav",
               np.round(rng.normal(0, 3000, 3 * 16000)).astype(np.int16))
    return root


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return make_v2(tmp_path_factory.mktemp("sc") / "speech_commands_v0.02")


def test_labels_are_the_mlperf_reference_model_order():
    assert LABELS == ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
                      "_silence_", "_unknown_")


def test_scan_splits_by_the_lists(v2):
    index = scan(v2)
    assert {index.speaker(rel) for rel, _ in index.clips["val"]} == {SPEAKERS[1]}
    assert {index.speaker(rel) for rel, _ in index.clips["test"]} == {SPEAKERS[2]}
    assert {index.speaker(rel) for rel, _ in index.clips["train"]} == {SPEAKERS[0]}
    assert all(len(index.clips[s]) == 2 * len(WORDS + OTHERS) for s in index.clips)
    assert [p.name for p in index.background] == ["white_noise.wav"]


def test_splits_hold_the_listed_clips_their_features_and_silence(v2):
    train, val, test = load_speech_commands(v2, as_numpy=True, augment=False)
    known = 2 * len(WORDS)
    extra = math.ceil(known * 0.10)
    for x, y in (train, val, test):
        assert x.shape == (known + 2 * extra, 49, 10, 1) and x.dtype == np.float32
        assert y.dtype == np.int32
        assert np.bincount(y, minlength=12).tolist() == [2] * 10 + [extra, extra]
    # Every test clip of "yes" appears with exactly the features of the one feature function.
    x, y = test
    for n in range(2):
        clip = read_wav(v2 / f"yes/{SPEAKERS[2]}_nohash_{n}.wav")[0]
        want = features(clip)
        dist = np.abs(x[y == LABELS.index("yes")] - want).max(axis=(1, 2, 3))
        assert dist.min() < 1e-4
    # Silence is background noise, not digital zeros: its features vary over time.
    assert x[y == SILENCE].std(axis=1).mean() > 0.1


def test_keep_every_unknown_clip(v2):
    _, val, _ = load_speech_commands(v2, as_numpy=True, augment=False, unknown_percentage=None,
                                     silence_percentage=0)
    assert (val[1] == UNKNOWN).sum() == 2 * len(OTHERS) and (val[1] == SILENCE).sum() == 0


def test_training_is_augmented_deterministically_and_val_test_never(v2):
    a = load_speech_commands(v2, as_numpy=True, seed=1)
    b = load_speech_commands(v2, as_numpy=True, seed=1)
    plain = load_speech_commands(v2, as_numpy=True, augment=False, seed=1)
    np.testing.assert_array_equal(a.train[0], b.train[0])
    np.testing.assert_array_equal(a.train[1], plain.train[1])
    assert np.abs(a.train[0] - plain.train[0]).max() > 1.0
    np.testing.assert_array_equal(a.test[0], plain.test[0])
    c = load_speech_commands(v2, as_numpy=True, seed=2)
    assert np.abs(a.train[0] - c.train[0]).max() > 1.0


def test_batched_shuffled_tf_data(v2):
    train, val, _ = load_speech_commands(v2, batch_size=8)
    x, y = next(iter(train))
    assert x.shape == (8, 49, 10, 1) and y.shape == (8,)
    first = [yy.numpy().tolist() for _, yy in train]
    second = [yy.numpy().tolist() for _, yy in train]
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second
    v1 = np.concatenate([xx.numpy() for xx, _ in val])
    v2_ = np.concatenate([xx.numpy() for xx, _ in val])
    np.testing.assert_array_equal(v1, v2_)


def test_wrong_layouts_say_what_is_missing(tmp_path):
    root = make_v2(tmp_path / "a", takes=1)
    (root / "testing_list.txt").unlink()
    with pytest.raises(DatasetError, match=r"testing_list\.txt is missing"):
        load_speech_commands(root)
    with pytest.raises(DatasetError, match="no <word>/\\*.wav clips"):
        flat = tmp_path / "flat"
        _write(flat / "yes.wav", _tone(1))
        scan(flat)
    with pytest.raises(DatasetError, match="no such directory"):
        scan(tmp_path / "nowhere")
    partial = make_v2(tmp_path / "b", words=("yes", "no"), takes=1)
    with pytest.raises(DatasetError, match="no clips for down, go"):
        scan(partial)
    root = make_v2(tmp_path / "c", takes=1)
    with open(root / "validation_list.txt", "a") as f:
        f.write("yes/ffffffff_nohash_0.wav\n")
    with pytest.raises(DatasetError, match=r"validation_list\.txt, line \d+: yes/ffffffff_nohash_0"):
        scan(root)
    root = make_v2(tmp_path / "d", takes=1)
    _write(root / "yes" / "recording.wav", _tone(3))
    with pytest.raises(DatasetError, match=r"recording\.wav: not named <speaker>_nohash_<n>"):
        scan(root)


def test_a_corrupt_or_foreign_clip_is_named_and_nothing_changes(tmp_path):
    root = make_v2(tmp_path / "sc", takes=1)
    bad = root / "stop" / f"{SPEAKERS[0]}_nohash_0.wav"
    bad.write_bytes(bad.read_bytes()[:3000])                    # truncated mid-samples
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    with pytest.raises(DatasetError) as err:
        load_speech_commands(root)
    assert str(bad) in str(err.value) and "truncated" in str(err.value)
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(DatasetError, match="not a valid WAV file"):
        scan(root)
    _write(bad, _tone(2, 8000), rate=8000)
    with pytest.raises(DatasetError, match=r"8000 Hz.*expected 16000 Hz mono"):
        scan(root)


def test_micro_frontend_pipeline(v2):
    _, val, _ = load_speech_commands(v2, as_numpy=True, frontend="micro")
    assert val[0].shape[1:] == (49, 40, 1) and np.isfinite(val[0]).all()
    with pytest.raises(DatasetError, match="unknown front end"):
        load_speech_commands(v2, frontend="lpc")
