"""Speech Commands v2 on disk -> tf.data pipelines for the 12-class keyword-spotting task.

The layout (Google's release, and what ``tinyengine-tf data speech-commands`` writes)::

    ROOT/<word>/<speaker>_nohash_<n>.wav     16 kHz mono 16-bit, up to one second
    ROOT/validation_list.txt                 relative paths of the validation clips
    ROOT/testing_list.txt                    relative paths of the test clips; the rest is training
    ROOT/_background_noise_/*.wav            long noise recordings: silence clips and augmentation

    train, val, test = load_speech_commands(ROOT, batch_size=100)     # (49, 10, 1) float, label
    x_test, y_test = load_speech_commands(ROOT, as_numpy=True).test

Labels follow the MLPerf Tiny reference model's output order (``LABELS``). As in Google's
training script, ``_unknown_`` is a sample of the other words and ``_silence_`` one-second cuts of
the background noise, each ``*_percentage`` percent of a split's keyword clips; training clips are
shifted in time and mixed with background noise at a random level.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nas.datasets.speech_features import CLIP_SAMPLES, SAMPLE_RATE, feature_shape, features
from nas.datasets.splits import SPLITS, Splits, to_numpy
from nas.datasets.wav import check_clip, read_wav
from tinyengine_tf.errors import DatasetError

LABELS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
          "_silence_", "_unknown_")
WORDS = LABELS[:10]
SILENCE, UNKNOWN = 10, 11
BACKGROUND_DIR = "_background_noise_"
LIST_FILES = {"val": "validation_list.txt", "test": "testing_list.txt"}
CLIP_NAME = re.compile(r"^([0-9A-Za-z]+)_nohash_([0-9]+)\.wav$")
LAYOUT = ("<word>/<speaker>_nohash_<n>.wav clips, validation_list.txt, testing_list.txt and "
          "optionally _background_noise_/*.wav")


@dataclass
class SpeechCommandsIndex:
    """The clips of each split as (relative path, word) and the background noise files."""
    root: Path
    clips: dict = field(default_factory=dict)     # split -> [(relpath, word)]
    background: list = field(default_factory=list)

    def speaker(self, relpath: str) -> str:
        return CLIP_NAME.match(Path(relpath).name).group(1)


def scan(root, validate: bool = True) -> SpeechCommandsIndex:
    """Check the layout (and, with ``validate``, every WAV header); DatasetError names what is wrong."""
    root = Path(root)
    make = f"make one offline with `tinyengine-tf data speech-commands {root}`"
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory; pass the Speech Commands v2 folder ({LAYOUT}), "
                           f"or {make}")
    words = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        wavs = sorted(d.glob("*.wav"))
        if wavs:
            words[d.name] = wavs
    if not words:
        raise DatasetError(f"{root}: no <word>/*.wav clips; not a Speech Commands v2 folder "
                           f"(expected {LAYOUT}); {make}")
    missing = [w for w in WORDS if w not in words]
    if missing:
        raise DatasetError(f"{root}: no clips for {', '.join(missing)}; the 12-class task needs a "
                           f"folder of clips for each of {', '.join(WORDS)}")
    listed = {}
    for split, name in LIST_FILES.items():
        path = root / name
        if not path.is_file():
            raise DatasetError(f"{path} is missing: a Speech Commands v2 folder lists its "
                               f"{'validation' if split == 'val' else 'test'} clips there "
                               f"(expected {LAYOUT}); {make}")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            if not (root / rel).is_file():
                raise DatasetError(f"{path}, line {lineno}: {rel} does not exist; the list and the "
                                   "clips disagree (restore the clip or regenerate the folder)")
            if rel in listed:
                raise DatasetError(f"{path}, line {lineno}: {rel} is also in "
                                   f"{LIST_FILES[listed[rel]]}; a clip belongs to one split")
            listed[rel] = split
    index = SpeechCommandsIndex(root, {s: [] for s in SPLITS})
    for word, wavs in words.items():
        for wav in wavs:
            if not CLIP_NAME.match(wav.name):
                raise DatasetError(f"{wav}: not named <speaker>_nohash_<n>.wav as Speech Commands "
                                   "clips are; rename or remove it")
            if validate:
                check_clip(wav, rate=SAMPLE_RATE)
            rel = f"{word}/{wav.name}"
            index.clips[listed.get(rel, "train")].append((rel, word))
    bg = root / BACKGROUND_DIR
    if bg.is_dir():
        index.background = sorted(bg.glob("*.wav"))
        if not index.background:
            raise DatasetError(f"{bg} holds no .wav files; add noise recordings or remove the folder")
        for wav in index.background:
            check_clip(wav, rate=SAMPLE_RATE)
    return index


def label_of(word: str) -> int:
    return LABELS.index(word) if word in WORDS else UNKNOWN


@dataclass
class _Rows:
    """One split as columns: clip path ('' for silence), label, and a fixed background cut."""
    paths: list
    labels: list
    bg_file: list
    bg_offset: list
    bg_volume: list


def _split_rows(index, split, rng, bg_lengths, silence_percentage, unknown_percentage) -> _Rows:
    known = [(str(index.root / rel), label_of(w)) for rel, w in index.clips[split] if w in WORDS]
    others = [(str(index.root / rel), UNKNOWN) for rel, w in index.clips[split] if w not in WORDS]
    if unknown_percentage is not None:
        others = [others[i] for i in rng.permutation(len(others))]
        others = sorted(others[:math.ceil(len(known) * unknown_percentage / 100)])
    n_silence = math.ceil(len(known) * silence_percentage / 100)
    rows = known + others
    rows_n = len(rows) + n_silence
    bg_file = [0] * rows_n
    bg_offset = [0] * rows_n
    bg_volume = [0.0] * rows_n
    for k in range(len(rows), rows_n):
        if bg_lengths:
            f = int(rng.integers(len(bg_lengths)))
            bg_file[k] = f
            bg_offset[k] = int(rng.integers(max(bg_lengths[f] - CLIP_SAMPLES, 0) + 1))
            bg_volume[k] = float(rng.uniform(0, 1))
    rows += [("", SILENCE)] * n_silence
    return _Rows([p for p, _ in rows], [y for _, y in rows], bg_file, bg_offset, bg_volume)


def _background(index) -> tuple[np.ndarray, list, list]:
    """All noise files in one float array in [-1, 1] (each at least a clip long), starts, lengths."""
    parts, starts, lengths, at = [], [], [], 0
    for wav in index.background:
        x = read_wav(wav)[0].astype(np.float32) / 32768.0
        x = np.pad(x, (0, max(CLIP_SAMPLES - len(x), 0)))
        parts.append(x)
        starts.append(at)
        lengths.append(len(x))
        at += len(x)
    return (np.concatenate(parts) if parts else np.zeros(CLIP_SAMPLES, np.float32)), starts, lengths


def load_speech_commands(root, *, batch_size: int | None = None, augment: bool = True,
                         as_numpy: bool = False, seed: int = 0, silence_percentage: float = 10.0,
                         unknown_percentage: float | None = 10.0, time_shift_ms: float = 100.0,
                         background_volume: float = 0.1, background_frequency: float = 0.8,
                         frontend: str = "mfcc", validate: bool = True) -> Splits:
    """(train, val, test) of the 12-class task, features from ``speech_features.features``.

    Each split is a tf.data.Dataset of (float32 (49, 10, 1), int32 label) (``frontend="micro"``:
    (49, 40, 1), TFLM's micro frontend), batched when
    ``batch_size`` is given; or an (x, y) numpy pair with ``as_numpy`` (training augmented once).
    Only training is shuffled and augmented; val and test are the same on every pass.
    ``unknown_percentage=None`` keeps every non-keyword clip.
    """
    import tensorflow as tf

    feature_shape(frontend)             # an unknown front end fails before any file is read
    index = scan(root, validate=validate)
    bg, starts, lengths = _background(index)
    bg_t, starts_t, lengths_t = tf.constant(bg), tf.constant(starts or [0], tf.int64), \
        tf.constant(lengths or [CLIP_SAMPLES], tf.int64)
    shift = int(round(time_shift_ms * SAMPLE_RATE / 1000))

    def cut(f, offset):
        begin = tf.gather(starts_t, f) + offset
        return bg_t[begin:begin + CLIP_SAMPLES]

    def example(row, r=None):
        audio = tf.cond(tf.strings.length(row["path"]) > 0,
                        lambda: tf.audio.decode_wav(tf.io.read_file(row["path"]), desired_channels=1,
                                                    desired_samples=CLIP_SAMPLES).audio[:, 0],
                        lambda: tf.zeros([CLIP_SAMPLES]))
        # Peak-normalise first so that noise levels are relative to the word, as in MLPerf Tiny.
        audio = audio / tf.maximum(tf.reduce_max(audio), 1e-9)
        if r is not None and shift:
            s = tf.random.stateless_uniform([], [r, 0], -shift, shift + 1, tf.int64)
            audio = tf.pad(audio, [[shift, shift]])[shift - s:shift - s + CLIP_SAMPLES]
        audio += cut(row["bg_file"], row["bg_offset"]) * row["bg_volume"]
        if r is not None and index.background:
            u = tf.random.stateless_uniform([3], [r, 1], dtype=tf.float32)
            f = tf.minimum(tf.cast(u[0] * len(lengths), tf.int64), len(lengths) - 1)
            room = tf.maximum(tf.gather(lengths_t, f) - CLIP_SAMPLES, 0) + 1
            offset = tf.random.stateless_uniform([], [r, 2], 0, room, tf.int64)
            volume = tf.where(u[1] < background_frequency, u[2] * background_volume, 0.0)
            audio += cut(f, offset) * volume
            # Only mixing can leave [-1, 1]; an eval clip stays exactly what features() sees on a device.
            audio = tf.clip_by_value(audio, -1.0, 1.0)
        return features(audio, frontend=frontend), row["label"]

    out = []
    for k, split in enumerate(SPLITS):
        rows = _split_rows(index, split, np.random.default_rng([seed, k]), lengths,
                           silence_percentage, unknown_percentage)
        ds = tf.data.Dataset.from_tensor_slices({
            "path": tf.constant(rows.paths, tf.string),
            "label": tf.constant(rows.labels, tf.int32),
            "bg_file": tf.constant(rows.bg_file, tf.int64),
            "bg_offset": tf.constant(rows.bg_offset, tf.int64),
            "bg_volume": tf.constant(rows.bg_volume, tf.float32)})
        training = split == "train"
        if training and not as_numpy:
            ds = ds.shuffle(max(len(rows.paths), 1), seed=seed, reshuffle_each_iteration=True)
        if training and augment:
            ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed,
                                                                rerandomize_each_iteration=True))
        ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if batch_size:
            ds = ds.batch(batch_size)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        out.append(to_numpy(ds) if as_numpy else ds)
    return Splits(*out)
