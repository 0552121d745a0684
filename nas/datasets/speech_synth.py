"""An offline Speech Commands v2: the keywords and other words spoken by speech synthesisers.

    tinyengine-tf data speech-commands OUT --per-word 200 --seed 0

Every voice of Debian's espeak-ng English voices times its voice variants (and flite's voices
when flite is installed) is one "speaker". Speakers, not clips, are split 80/10/10 into training,
validation and test, so no voice is in two splits. Each clip draws its own speed, pitch,
amplitude, position in the second, room echo and noise from a generator seeded by (seed, word,
clip number): the same seed and synthesisers give the same files, in any order and across
restarts. A killed run resumes where it stopped: complete clips are kept, each clip is written
to a temporary name and renamed, and the split lists are written last.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from nas.datasets.speech_commands import BACKGROUND_DIR, LIST_FILES, WORDS
from nas.datasets.speech_features import CLIP_SAMPLES, SAMPLE_RATE
from nas.datasets.wav import is_complete, read_wav, write_wav
from tinyengine_tf.errors import DatasetError

# The other words of Speech Commands v2: they become the _unknown_ class.
OTHER_WORDS = ("backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward",
               "four", "happy", "house", "learn", "marvin", "nine", "one", "seven", "sheila",
               "six", "three", "tree", "two", "visual", "wow", "zero")
ESPEAK_ENGLISH = ("en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")   # awb_time speaks only times of day
VAL_SHARE = TEST_SHARE = 0.1
# Per-clip ranges (uniform): speaking rate, pitch, signal-to-noise ratio, room echo, level.
SPEED_WPM = (120, 230)
PITCH = (20, 80)
SNR_DB = (10.0, 40.0)
ECHO_PROBABILITY, RT60_S = 0.5, (0.05, 0.4)
PEAK = (0.05, 0.9)
TRIM = 0.02
BACKGROUND_SECONDS = 30
INSTALL = "install it with `apt-get install espeak-ng` (`make sysdeps` does)"


@dataclass(frozen=True)
class Speaker:
    engine: str          # "espeak-ng" or "flite"
    voice: str           # espeak-ng "en-us+Alex", flite "slt"

    @property
    def id(self) -> str:
        """Eight hex digits, like the speaker ids of the real dataset."""
        return hashlib.sha1(f"{self.engine}:{self.voice}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Clip:
    word: str
    speaker: Speaker
    split: str
    n: int               # this speaker's n-th take of this word
    seed: tuple

    @property
    def relpath(self) -> str:
        return f"{self.word}/{self.speaker.id}_nohash_{self.n}.wav"


@dataclass
class SynthesisSummary:
    out: Path
    clips: int
    written: int          # clips synthesised by this run (the rest were already complete)
    seconds: float
    speakers: dict        # split -> number of speakers

    @property
    def clips_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


def speakers(engines=None) -> list:
    """Every available synthetic speaker, in a fixed order."""
    engines = tuple(engines or ("espeak-ng", "flite"))
    found = []
    if "espeak-ng" in engines:
        if shutil.which("espeak-ng") is None:
            raise DatasetError(f"espeak-ng is not installed; {INSTALL}")
        out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                             check=True).stdout
        # The file column names a variant for "+name"; one with a space in it cannot be named.
        files = [line.split(None, 4)[4].strip() for line in out.splitlines()[1:]
                 if len(line.split(None, 4)) == 5]
        variants = sorted({f.split("/", 1)[-1] for f in files if " " not in f})
        found += [Speaker("espeak-ng", v) for v in ESPEAK_ENGLISH]
        found += [Speaker("espeak-ng", f"{v}+{var}") for v in ESPEAK_ENGLISH for var in variants]
    if "flite" in engines and shutil.which("flite"):
        found += [Speaker("flite", v) for v in FLITE_VOICES]
    return found


def split_speakers(all_speakers, seed: int) -> dict:
    """split -> speakers; each speaker in exactly one split, at least one per split."""
    order = sorted(all_speakers, key=lambda s: s.id)
    order = [order[i] for i in np.random.default_rng([seed, 0x5b]).permutation(len(order))]
    if len(order) < 3:
        raise DatasetError(f"only {len(order)} synthetic voice(s) found; three or more are needed "
                           f"to split by voice ({INSTALL})")
    n_val = max(1, round(len(order) * VAL_SHARE))
    n_test = max(1, round(len(order) * TEST_SHARE))
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test],
            "train": order[n_val + n_test:]}


def plan(per_word: int, seed: int, words, pools) -> list:
    """Every clip of the set, fixed by the seed before anything is synthesised."""
    clips = []
    for w_index, word in enumerate(words):
        counts = {"val": max(1, round(per_word * VAL_SHARE)), "test": max(1, round(per_word * TEST_SHARE))}
        counts["train"] = max(1, per_word - counts["val"] - counts["test"])
        takes = {}
        k = 0
        for split in ("train", "val", "test"):
            for _ in range(counts[split]):
                rng = np.random.default_rng([seed, w_index, k])
                spk = pools[split][int(rng.integers(len(pools[split])))]
                n = takes.get(spk, 0)
                takes[spk] = n + 1
                clips.append(Clip(word, spk, split, n, (seed, w_index, k)))
                k += 1
    return clips


def _synthesise(clip: Clip, rng, tmp_dir: Path) -> np.ndarray:
    """The word as float samples at 16 kHz, trimmed to where it is audible."""
    speed = int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1))
    pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=tmp_dir)
    os.close(fd)
    try:
        if clip.speaker.engine == "espeak-ng":
            cmd = ["espeak-ng", "-v", clip.speaker.voice, "-s", str(speed), "-p", str(pitch),
                   "-w", tmp, clip.word]
        else:
            cmd = ["flite", "-voice", clip.speaker.voice, "--setf", f"duration_stretch={175 / speed:.3f}",
                   "--setf", f"int_f0_target_mean={70 + 2 * pitch}", "-t", clip.word, "-o", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DatasetError(f"{clip.speaker.engine} failed on {clip.word!r} with voice "
                               f"{clip.speaker.voice}: {proc.stderr.strip()[:200]}")
        x, rate = read_wav(tmp)
    finally:
        os.unlink(tmp)
    x = x.astype(np.float64)
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly
        g = gcd(rate, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g)
    if TRIM is None:
        return x
    loud = np.flatnonzero(np.abs(x) > TRIM * max(np.abs(x).max(), 1e-9))
    return x[loud[0]:loud[-1] + 1] if loud.size else x


def _room(x: np.ndarray, rng) -> np.ndarray:
    """A small room: an exponentially decaying noise tail, some of the time."""
    if rng.uniform() >= ECHO_PROBABILITY:
        return x
    rt60 = rng.uniform(*RT60_S)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    ir = rng.normal(size=t.size) * np.exp(-6.9 * t / rt60) * rng.uniform(0.05, 0.3)
    ir[0] = 1.0
    return np.convolve(x, ir)


def _noise(kind: str, n: int, rng) -> np.ndarray:
    """Unit-RMS noise: white, pink (1/f), brown (1/f^2), mains hum or a fan's band noise."""
    if kind == "hum":
        f0 = rng.choice([50.0, 60.0])
        t = np.arange(n) / SAMPLE_RATE
        y = sum(rng.uniform(0.2, 1) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3))
                for h in range(1, 8)) + 0.1 * rng.normal(size=n)
    else:
        spec = np.fft.rfft(rng.normal(size=n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        shape = {"white": np.ones_like(f), "pink": f ** -0.5, "brown": f ** -1.0,
                 "fan": np.exp(-0.5 * ((f - rng.uniform(150, 600)) / rng.uniform(60, 300)) ** 2)
                 + 0.05 * f ** -0.5}[kind]
        y = np.fft.irfft(spec * shape, n)
        if kind == "fan":
            t = np.arange(n) / SAMPLE_RATE
            y *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)
    return y / max(np.sqrt(np.mean(y ** 2)), 1e-12)


NOISE_KINDS = ("white", "pink", "brown", "hum", "fan")


def render_clip(clip: Clip, tmp_dir: Path) -> np.ndarray:
    """The clip's int16 samples: the word placed in one second of room noise."""
    rng = np.random.default_rng(clip.seed)
    word = _room(_synthesise(clip, rng, tmp_dir), rng)[:CLIP_SAMPLES]
    lead = int(rng.integers(0, CLIP_SAMPLES - len(word) + 1))
    x = np.zeros(CLIP_SAMPLES)
    x[lead:lead + len(word)] = word / max(np.abs(word).max(), 1e-9)
    speech_rms = np.sqrt(np.mean(word ** 2)) / max(np.abs(word).max(), 1e-9)
    snr_db = rng.uniform(*SNR_DB)
    x += _noise(NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))], CLIP_SAMPLES, rng) \
        * speech_rms * 10 ** (-snr_db / 20)
    x *= rng.uniform(*PEAK) / max(np.abs(x).max(), 1e-9)
    return np.round(x * 32767).astype(np.int16)


def _write_background(out: Path, seed: int) -> None:
    bg = out / BACKGROUND_DIR
    bg.mkdir(parents=True, exist_ok=True)
    n = BACKGROUND_SECONDS * SAMPLE_RATE
    for k, kind in enumerate(NOISE_KINDS + ("room",)):
        path = bg / f"{kind}_noise.wav"
        if is_complete(path, n):
            continue
        rng = np.random.default_rng([seed, 0xB6, k])
        if kind == "room":   # a quiet room: low rumble, hum and hiss together
            y = _noise("brown", n, rng) + 0.3 * _noise("hum", n, rng) + 0.2 * _noise("white", n, rng)
        else:
            y = _noise(kind, n, rng)
        write_wav(path, np.round(y * (0.5 / np.abs(y).max()) * 32767).astype(np.int16))


def _remove_leftovers(out: Path) -> None:
    """Temporary files of a run that was killed: never complete, so never kept."""
    for tmp in out.glob(".synth-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in list(out.glob(".*.tmp-*")) + list(out.glob("*/.*.tmp-*")):
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def synthesize_speech_commands(out, per_word: int = 100, seed: int = 0, *, words=None,
                               other_words=None, engines=None, workers: int | None = None,
                               progress: bool = True) -> SynthesisSummary:
    """Write a Speech Commands v2 folder of synthetic speech to ``out`` (resumable).

    per_word: clips of each word (keywords and other words alike), 80/10/10 by voice.
    words / other_words: default the ten keywords and the 25 other words of v2.
    engines: ("espeak-ng", "flite") by default; flite is used only when installed.
    """
    from tqdm import tqdm

    if per_word < 1:
        raise DatasetError(f"per_word must be at least 1 (got {per_word})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a directory; choose another output path")
    words = tuple(WORDS if words is None else words) + tuple(OTHER_WORDS if other_words is None
                                                              else other_words)
    pools = split_speakers(speakers(engines), seed)
    clips = plan(per_word, seed, words, pools)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    for word in words:
        (out / word).mkdir(exist_ok=True)
    _write_background(out, seed)
    todo = [c for c in clips if not is_complete(out / c.relpath, CLIP_SAMPLES)]
    tmp_dir = Path(tempfile.mkdtemp(prefix=".synth-", dir=out))
    try:
        with tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip",
                  desc="speech-commands", disable=not progress) as bar, \
                ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            def one(clip):
                write_wav(out / clip.relpath, render_clip(clip, tmp_dir))
            for _ in pool.map(one, todo):
                bar.update()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    for split, name in LIST_FILES.items():
        _write_text(out / name, "".join(f"{c.relpath}\n" for c in sorted(clips, key=lambda c: c.relpath)
                                        if c.split == split))
    manifest = {"generator": "tinyengine-tf data speech-commands", "synthetic": True,
                "seed": seed, "per_word": per_word, "words": list(words),
                "engines": _engine_versions(pools),
                "speakers": {s: sorted(f"{p.id} {p.engine}:{p.voice}" for p in v)
                             for s, v in pools.items()}}
    _write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    _write_text(out / "README.txt",
                "SYNTHETIC speech in the Speech Commands v2 layout, made offline by "
                "`tinyengine-tf data speech-commands` with espeak-ng/flite voices; split by voice "
                "(manifest.json lists them). Accuracy on it is not accuracy on Speech Commands.\n")
    seconds = time.perf_counter() - t0
    return SynthesisSummary(out, len(clips), len(todo), seconds,
                            {s: len(v) for s, v in pools.items()})


def _engine_versions(pools) -> dict:
    used = sorted({s.engine for v in pools.values() for s in v})
    versions = {}
    for engine in used:
        proc = subprocess.run([engine, "--version"], capture_output=True, text=True)
        text = (proc.stdout or proc.stderr).strip().splitlines()
        versions[engine] = text[-1].strip() if engine == "flite" and text else (text[0] if text else "")
    return versions
