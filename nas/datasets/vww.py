"""Visual Wake Words on disk -> tf.data pipelines of (image, person?) at a model's resolution.

Both official forms are read:

- the TFRecord shards of ``build_visualwakewords_data.py`` (``train.record-00000-of-000NN``,
  ``val.record-...``; tf.train.Example with ``image/encoded`` JPEG and ``image/class/label``
  1 = person): training comes from the train shards (``val_fraction`` of them held out for
  validation), test from the val shards, as the VWW paper reports;
- MLPerf Tiny's directory form ``ROOT/{person,non_person}/*.jpg``, split by a stable hash of the
  file name (``val_fraction``, ``test_fraction``), so adding images never moves old ones.

    train, val, test = load_vww(ROOT, resolution=96, batch_size=64)
    x_int8 = preprocess(images, 96, quantize=cm)     # what the deployed model is fed

Training images are flipped, zoomed/shifted and brightness-jittered (MLPerf Tiny's recipe);
val and test are only resized.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nas.datasets.splits import SPLITS, Splits, to_numpy
from tinyengine_tf.errors import DatasetError

CLASSES = ("non_person", "person")        # label 0, 1: VWW's image/class/label
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SHARD = re.compile(r"^(train|val)\.record(-\d{5}-of-\d{5})?$")
LAYOUTS = ("TFRecord shards train.record-*/val.record-* from build_visualwakewords_data.py, or "
           "person/*.jpg and non_person/*.jpg")


def preprocess(images, resolution: int = 96, quantize=None):
    """uint8 RGB image(s) (..., H, W, 3) -> float32 in [0, 1] at (resolution, resolution, 3).

    The one image function: training, evaluation and the int8 input of the deployed model.
    quantize: a compiled model, a .tflite path or (scale, zero_point) -> int8 numpy (eager only).
    """
    import tensorflow as tf

    as_tensor = tf.is_tensor(images)
    x = tf.image.resize(tf.cast(tf.convert_to_tensor(images), tf.float32) / 255.0,
                        [resolution, resolution], method="bilinear", antialias=True)
    x = tf.clip_by_value(x, 0.0, 1.0)
    if quantize is not None:
        from nas.datasets.quantize import quantize as to_int8
        return to_int8(x.numpy(), quantize)
    return x if as_tensor else x.numpy()


@dataclass
class VWWIndex:
    root: Path
    form: str                                    # "tfrecord" or "directory"
    files: dict = field(default_factory=dict)    # tfrecord: split -> shards; directory: split -> [(path, label)]


def _stable_fraction(name: str) -> float:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2 ** 32


def scan(root, val_fraction: float = 0.1, test_fraction: float = 0.1,
         validate: bool = True) -> VWWIndex:
    """Find which form ``root`` holds and check it; DatasetError names the file at fault."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory; pass a Visual Wake Words folder ({LAYOUTS}), "
                           f"or make a synthetic stand-in with `tinyengine-tf data vww-synthetic {root}`")
    shards = {"train": [], "val": []}
    for p in sorted(root.iterdir()):
        m = SHARD.match(p.name)
        if m and p.is_file():
            shards[m.group(1)].append(p)
    if shards["train"] or shards["val"]:
        for split in ("train", "val"):
            if not shards[split]:
                raise DatasetError(f"{root}: {split}.record-* shards are missing (found only "
                                   f"{'val' if split == 'train' else 'train'} shards); "
                                   "build_visualwakewords_data.py writes both")
        index = VWWIndex(root, "tfrecord", shards)
        if validate:
            for shard in shards["train"] + shards["val"]:
                _check_shard(shard)
        return index
    class_dirs = {c: root / c for c in CLASSES}
    if not all(d.is_dir() for d in class_dirs.values()):
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) or "nothing"
        raise DatasetError(f"{root}: not a Visual Wake Words folder (found {found}); expected "
                           f"{LAYOUTS}")
    files = {s: [] for s in SPLITS}
    for label, cls in enumerate(CLASSES):
        images = sorted(p for p in class_dirs[cls].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{class_dirs[cls]} holds no .jpg/.png images; both classes need some")
        for p in images:
            if validate:
                _check_image(p)
            u = _stable_fraction(f"{cls}/{p.name}")
            split = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
            files[split].append((str(p), label))
    return VWWIndex(root, "directory", files)


def _check_image(path: Path) -> None:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # PIL raises many types for damaged files
        raise DatasetError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); "
                           "replace or delete it") from None


def _check_shard(path: Path) -> None:
    """Read every record of one shard (CRCs, the two fields, labels 0/1) in one tf.data pass."""
    import tensorflow as tf
    try:
        ds = tf.data.TFRecordDataset(str(path)).map(_parse).map(lambda _, y: y).batch(4096)
        for labels in ds.as_numpy_iterator():
            if not np.isin(labels, (0, 1)).all():
                bad = sorted(set(labels.tolist()) - {0, 1})
                raise DatasetError(f"{path}: image/class/label {bad[0]} found; Visual Wake Words "
                                   "labels are 0 (no person) and 1 (person)")
    except tf.errors.InvalidArgumentError as exc:
        raise DatasetError(f"{path}: not a Visual Wake Words shard ({_first_line(exc)}); records "
                           "need image/encoded and image/class/label") from None
    except tf.errors.OpError as exc:
        raise DatasetError(f"{path}: corrupt TFRecord shard ({_first_line(exc)}); "
                           "rebuild or remove it") from None


def _first_line(exc) -> str:
    return (exc.message or str(exc)).strip().splitlines()[0][:200]


def load_vww(root, resolution: int = 96, *, batch_size: int | None = None, augment: bool = True,
             as_numpy: bool = False, seed: int = 0, val_fraction: float = 0.1,
             test_fraction: float = 0.1, validate: bool = True) -> Splits:
    """(train, val, test) of (float32 (resolution, resolution, 3) in [0, 1], int32 label).

    tf.data.Datasets, batched when ``batch_size`` is given, or (x, y) numpy with ``as_numpy``
    (training augmented once). ``test_fraction`` applies to the directory form only.
    """
    import tensorflow as tf

    index = scan(root, val_fraction, test_fraction, validate)

    def decode(data):
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        img.set_shape([None, None, 3])
        return img

    def augmented(img, r):
        img = tf.image.stateless_random_flip_left_right(img, [r, 0])
        h, w = tf.shape(img)[0], tf.shape(img)[1]
        u = tf.random.stateless_uniform([4], [r, 1])
        side = 0.85 + 0.15 * u[0]             # zoom in by up to 15%, shift by what it frees
        ch = tf.maximum(tf.cast(tf.cast(h, tf.float32) * side, tf.int32), 1)
        cw = tf.maximum(tf.cast(tf.cast(w, tf.float32) * side, tf.int32), 1)
        oy = tf.cast(u[1] * tf.cast(h - ch, tf.float32), tf.int32)
        ox = tf.cast(u[2] * tf.cast(w - cw, tf.float32), tf.int32)
        img = tf.image.crop_to_bounding_box(img, oy, ox, ch, cw)
        x = preprocess(img, resolution)
        return tf.clip_by_value(x + (u[3] - 0.5) * 0.2, 0.0, 1.0)

    def example(data, label, r=None):
        img = decode(data)
        x = preprocess(img, resolution) if r is None else augmented(img, r)
        return x, label

    out = []
    for k, split in enumerate(SPLITS):
        if index.form == "tfrecord":
            shards = index.files["val" if split == "test" else "train"]
            ds = tf.data.TFRecordDataset([str(p) for p in shards]).map(_parse)
            if split != "test":
                # Every k-th training record is validation: fixed, and spread over all shards.
                every = max(int(round(1 / val_fraction)), 2) if val_fraction > 0 else None
                keep_val = split == "val"
                if every is None:
                    ds = ds.take(0) if keep_val else ds
                else:
                    ds = ds.enumerate().filter(
                        lambda i, ex: tf.equal(tf.equal(i % every, 0), keep_val)
                    ).map(lambda i, ex: ex)
        else:
            rows = index.files[split]
            ds = tf.data.Dataset.from_tensor_slices(
                (tf.constant([p for p, _ in rows], tf.string), tf.constant([y for _, y in rows], tf.int32)))
            ds = ds.map(lambda p, y: (tf.io.read_file(p), y))
        training = split == "train"
        if training and not as_numpy:
            ds = ds.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
        if training and augment:
            ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed + k,
                                                                rerandomize_each_iteration=True))
            ds = ds.map(lambda xy, r: example(xy[0], xy[1], r), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
        if batch_size:
            ds = ds.batch(batch_size)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        out.append(to_numpy(ds) if as_numpy else ds)
    return Splits(*out)


def _parse(record):
    import tensorflow as tf
    ex = tf.io.parse_single_example(record, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64)})
    return ex["image/encoded"], tf.cast(ex["image/class/label"], tf.int32)

