"""An image-folder dataset (``DATA_DIR/<class_name>/*.jpg|jpeg|png|bmp``) as float arrays for
``tinyengine-tf nas search``: classes in sorted folder order, pixels scaled to [-1, 1], a
deterministic stratified train/validation split."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyengine_tf.errors import TinyEngineError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class ImageFolderError(TinyEngineError):
    """A data directory that is not an image-folder dataset, or an image that cannot be read."""


def list_image_folder(root) -> tuple:
    """(class names, [(path, label), ...]) of an image-folder dataset, or ImageFolderError."""
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f"{root}: no such directory; expected DATA_DIR/<class_name>/*.jpg|png")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ImageFolderError(f"{root}: found {len(classes)} class folder(s); an image-folder dataset "
                               "needs at least two (DATA_DIR/<class_name>/*.jpg|png)")
    items = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageFolderError(f"{root / name}: no images (.jpg, .jpeg, .png or .bmp) in this class folder")
        items += [(p, label) for p in files]
    return classes, items


def load_image_folder(root, size=None, val_split: float = 0.2, seed: int = 0):
    """((x_train, y_train), (x_val, y_val), class names). size=(H, W) resizes every image (default:
    the first image's size). Each class contributes val_split of its images to validation."""
    from PIL import Image, UnidentifiedImageError

    classes, items = list_image_folder(root)
    if not 0.0 < val_split < 1.0:
        raise ImageFolderError(f"val_split must be between 0 and 1, got {val_split}")
    xs, ys = [], []
    for path, label in items:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size is None:
                    size = (im.height, im.width)
                if (im.height, im.width) != tuple(size):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                xs.append(np.asarray(im, np.float32) / 127.5 - 1.0)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ImageFolderError(f"{path}: cannot read this image ({exc}); remove or replace it") from None
        ys.append(label)
    x, y = np.stack(xs), np.asarray(ys, np.int64)
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), bool)
    for label in range(len(classes)):
        idx = np.flatnonzero(y == label)
        if len(idx) < 2:
            raise ImageFolderError(f"{Path(root) / classes[label]}: needs at least 2 images (one to "
                                   "train on, one to validate)")
        k = max(1, int(round(len(idx) * val_split)))
        val[rng.permutation(idx)[:k]] = True
    return (x[~val], y[~val]), (x[val], y[val]), classes
