"""Visual Wake Words loaders on tiny datasets of both official forms, and the synthetic stand-in."""
import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SHARED_MODELS
from nas.datasets.quantize import quantize
from nas.datasets.synthetic_vww import make_synthetic_vww
from nas.datasets.vww import load_vww, preprocess, scan
from tinyengine_tf.errors import DatasetError

# Person images are reddish, the others bluish, so a label can be checked from the pixels.
COLOURS = {1: (200, 40, 40), 0: (40, 40, 200)}


def _jpeg(label, k, size=(120, 90)):
    rng = np.random.default_rng(k)
    img = np.clip(np.array(COLOURS.get(label, (128, 128, 128))) + rng.normal(0, 10, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _example(tf, label, k):
    """A record with the fields build_visualwakewords_data.py writes."""
    data = _jpeg(label, k)
    f = tf.train.Feature
    ints = lambda *v: f(int64_list=tf.train.Int64List(value=list(v)))       # noqa: E731
    bytes_ = lambda *v: f(bytes_list=tf.train.BytesList(value=list(v)))     # noqa: E731
    floats = lambda *v: f(float_list=tf.train.FloatList(value=list(v)))     # noqa: E731
    return tf.train.Example(features=tf.train.Features(feature={
        "image/height": ints(90), "image/width": ints(120),
        "image/filename": bytes_(f"COCO_{k:012d}.jpg".encode()),
        "image/source_id": bytes_(str(k).encode()),
        "image/key/sha256": bytes_(hashlib.sha256(data).hexdigest().encode()),
        "image/encoded": bytes_(data), "image/format": bytes_(b"jpeg"),
        "image/class/label": ints(label),
        "image/object/bbox/xmin": floats(0.1), "image/object/bbox/xmax": floats(0.5),
        "image/object/bbox/ymin": floats(0.2), "image/object/bbox/ymax": floats(0.9),
        "image/object/area": floats(100.0)})).SerializeToString()


def make_tfrecords(root, n_train=40, n_val=10, shards=2):
    import tensorflow as tf
    root.mkdir(parents=True)
    k = 0
    for split, n, n_shards in (("train", n_train, shards), ("val", n_val, 1)):
        writers = [tf.io.TFRecordWriter(str(root / f"{split}.record-{i:05d}-of-{n_shards:05d}"))
                   for i in range(n_shards)]
        for i in range(n):
            writers[i % n_shards].write(_example(tf, i % 2, k))
            k += 1
        for w in writers:
            w.close()
    return root


def make_directory(root, per_class=30):
    for label, cls in ((1, "person"), (0, "non_person")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            (root / cls / f"COCO_{label}_{i:05d}.jpg").write_bytes(_jpeg(label, 1000 * label + i))
    return root


def _labels_match_colours(x, y):
    red_minus_blue = x[..., 0].mean(axis=(1, 2)) - x[..., 2].mean(axis=(1, 2))
    return np.array_equal(red_minus_blue > 0, y == 1)


def test_tfrecord_shards(tmp_path):
    root = make_tfrecords(tmp_path / "vww")
    assert scan(root).form == "tfrecord"
    train, val, test = load_vww(root, resolution=32, as_numpy=True, augment=False)
    assert (len(train[1]), len(val[1]), len(test[1])) == (36, 4, 10)   # every 10th train record is val
    for x, y in (train, val, test):
        assert x.shape[1:] == (32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert _labels_match_colours(x, y)
    ds = load_vww(root, resolution=48, batch_size=8).train
    xb, yb = next(iter(ds))
    assert xb.shape == (8, 48, 48, 3) and yb.shape == (8,)


def test_directory_form_split_is_stable(tmp_path):
    root = make_directory(tmp_path / "vw_coco2014_96")
    index = scan(root)
    assert index.form == "directory"
    before = {s: set(p for p, _ in v) for s, v in index.files.items()}
    assert sum(map(len, before.values())) == 60 and all(before.values())
    (root / "person" / "COCO_new.jpg").write_bytes(_jpeg(1, 99))
    after = {s: set(p for p, _ in v) for s, v in scan(root).files.items()}
    assert all(before[s] <= after[s] for s in before)                   # nothing moved
    splits = load_vww(root, resolution=96, as_numpy=True, augment=False)
    assert sum(len(y) for _, y in splits) == 61
    for x, y in splits:
        assert _labels_match_colours(x, y)


def test_training_augmentation_is_seeded(tmp_path):
    root = make_directory(tmp_path / "d", per_class=8)
    a = load_vww(root, resolution=32, as_numpy=True, seed=1).train
    b = load_vww(root, resolution=32, as_numpy=True, seed=1).train
    plain = load_vww(root, resolution=32, as_numpy=True, augment=False, seed=1).train
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], plain[1])
    assert np.abs(a[0] - plain[0]).max() > 0.05
    assert _labels_match_colours(a[0], a[1])


def test_preprocess_feeds_the_vww_model_exactly_its_int8():
    img = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    path = SHARED_MODELS / "vww_96_int8.tflite"
    q = preprocess(img, 96, quantize=path)
    # The model's input is (1/255, -128): each pixel p must arrive as p - 128.
    np.testing.assert_array_equal(q, img.astype(np.int16) - 128)
    np.testing.assert_array_equal(q, quantize(preprocess(img, 96), path))
    assert preprocess(img[0], 40).shape == (40, 40, 3)


def test_wrong_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: not a Visual Wake Words folder.*person/\*\.jpg"):
        scan(tmp_path / "empty")
    only = tmp_path / "only_person"
    (only / "person").mkdir(parents=True)
    (only / "person" / "a.jpg").write_bytes(_jpeg(1, 0))
    with pytest.raises(DatasetError, match="not a Visual Wake Words folder"):
        scan(only)
    root = make_tfrecords(tmp_path / "tf", n_train=4, n_val=2)
    for p in root.glob("val.record-*"):
        p.unlink()
    with pytest.raises(DatasetError, match=r"val\.record-\* shards are missing"):
        scan(root)
    with pytest.raises(DatasetError, match="no such directory"):
        load_vww(tmp_path / "nowhere")


def test_a_corrupt_image_or_shard_is_named(tmp_path):
    root = make_directory(tmp_path / "d", per_class=4)
    bad = root / "non_person" / "COCO_0_00002.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DatasetError) as err:
        load_vww(root)
    assert str(bad) in str(err.value) and "not a readable image" in str(err.value)
    assert len(list(root.rglob("*.jpg"))) == 8                            # nothing removed
    root = make_tfrecords(tmp_path / "tf", n_train=6, n_val=2, shards=1)
    shard = root / "train.record-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF                                        # flip a byte: CRC fails
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train\.record-00000-of-00001: corrupt TFRecord shard"):
        load_vww(root)


def test_a_shard_of_other_records_is_named(tmp_path):
    import tensorflow as tf
    root = make_tfrecords(tmp_path / "tf", n_train=2, n_val=1, shards=1)
    val = root / "val.record-00000-of-00001"
    with tf.io.TFRecordWriter(str(val)) as w:                 # a record without the VWW fields
        w.write(tf.train.Example().SerializeToString())
    with pytest.raises(DatasetError, match=r"val\.record-00000-of-00001: not a Visual Wake Words shard"):
        load_vww(root)
    with tf.io.TFRecordWriter(str(val)) as w:
        w.write(_example(tf, 2, 0))                            # a label VWW does not have
    with pytest.raises(DatasetError, match=r"val\.record-00000-of-00001: image/class/label 2 found"):
        load_vww(root)


def test_synthetic_stand_in_is_labelled_deterministic_and_resumable(tmp_path):
    a = make_synthetic_vww(tmp_path / "a", per_class=6, resolution=64, seed=2, progress=False)
    b = make_synthetic_vww(tmp_path / "b", per_class=6, resolution=64, seed=2, progress=False)
    files = lambda r: {p.relative_to(r).as_posix(): p.read_bytes() for p in sorted(r.rglob("*.jpg"))}  # noqa: E731
    assert files(a) == files(b) and len(files(a)) == 12
    assert "SYNTHETIC" in (a / "README.txt").read_text() and "NOT the VWW dataset" in (a / "README.txt").read_text()
    victim = b / "person" / "00003.jpg"
    victim.write_bytes(victim.read_bytes()[:100])
    (b / "non_person" / "00001.jpg").unlink()
    make_synthetic_vww(b, per_class=6, resolution=64, seed=2, progress=False)
    assert files(a) == files(b)
    c = make_synthetic_vww(tmp_path / "c", per_class=6, resolution=64, seed=3, progress=False)
    assert files(c) != files(a)
    train, val, test = load_vww(a, resolution=64, as_numpy=True, augment=False, val_fraction=0.2)
    assert sum(len(y) for _, y in (train, val, test)) == 12
    assert sorted(np.concatenate([train[1], val[1], test[1]]).tolist()) == [0] * 6 + [1] * 6


@pytest.mark.slow
def test_synthetic_person_is_learnable(tmp_path):
    """The label must be in the picture: a tiny CNN learns it and is right on held-out images."""
    import tf_keras as keras
    root = make_synthetic_vww(tmp_path / "s", per_class=200, resolution=64, seed=0, progress=False)
    train, _, test = load_vww(root, resolution=64, as_numpy=True, augment=False,
                              val_fraction=0.0, test_fraction=0.25)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Conv2D(16, 3, strides=2, activation="relu", input_shape=(64, 64, 3)),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(*train, epochs=20, batch_size=32, verbose=0)
    acc = model.evaluate(*test, verbose=0)[1]
    assert acc > 0.7, f"{acc:.1%} on {len(test[1])} held-out synthetic images"


def test_cli_vww_synthetic(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tinyengine_tf", "data", "vww-synthetic",
                           str(tmp_path / "v"), "--per-class", "3", "--resolution", "48", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout
    assert len(list((tmp_path / "v").rglob("*.jpg"))) == 6
    with Image.open(tmp_path / "v" / "person" / "00000.jpg") as im:
        assert im.size == (48, 48)
