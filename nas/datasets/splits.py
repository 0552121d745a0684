"""What every loader returns: the three splits, unpackable as ``train, val, test = ...``."""
from __future__ import annotations

from typing import Any, NamedTuple

SPLITS = ("train", "val", "test")


class Splits(NamedTuple):
    """tf.data.Datasets of (features, label), or (x, y) numpy pairs with ``as_numpy=True``."""
    train: Any
    val: Any
    test: Any


def to_numpy(ds, batch: int = 512):
    """Stack a (features, label) tf.data.Dataset (batched or not) into numpy (x, y)."""
    import numpy as np
    if not _is_batched(ds):
        ds = ds.batch(batch)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        spec_x, spec_y = ds.element_spec
        return (np.zeros((0, *spec_x.shape[1:]), spec_x.dtype.as_numpy_dtype),
                np.zeros((0,), spec_y.dtype.as_numpy_dtype))
    return np.concatenate(xs), np.concatenate(ys)


def _is_batched(ds) -> bool:
    spec_x, spec_y = ds.element_spec
    return spec_y.shape.rank == 1
