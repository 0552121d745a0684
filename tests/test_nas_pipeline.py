"""nas.pipeline without training: data checks (numpy and tf.data), default resolutions, and the
refusal to resume a different search in the same directory."""
import numpy as np
import pytest

from nas.pipeline import DataError, _check_same_search, _write_json, as_arrays, default_resolutions
from tinyengine_tf.errors import TinyEngineError


def test_numpy_pairs_get_a_channel_axis_and_int_labels():
    x, y = as_arrays((np.zeros((5, 49, 10)), np.array([0, 1, 1, 0, 1.0])), "train", 2)
    assert x.shape == (5, 49, 10, 1) and x.dtype == np.float32 and y.dtype == np.int64


@pytest.mark.parametrize("data, words", [
    ((np.zeros((4, 8, 8, 3)), np.array([0, 1, 2, 1])), r"labels must be in \[0, 1\]"),
    ((np.zeros((4, 8, 8, 3)), np.array([0, -1, 0, 1])), "found -1"),
    ((np.zeros((4, 8, 8, 3)), np.array([0.5, 1, 0, 1])), "class indices"),
    ((np.zeros((4, 8)), np.array([0, 1, 0, 1])), "height, width"),
    ((np.full((2, 8, 8, 3), np.nan), np.array([0, 1])), "NaN"),
    ((np.zeros((0, 8, 8, 3)), np.zeros(0, int)), "no samples"),
    ("images/", "numpy arrays or a tf.data.Dataset"),
])
def test_bad_data_is_refused_with_its_reason(data, words):
    with pytest.raises(DataError, match=words):
        as_arrays(data, "train", 2)


def test_tf_data_batched_and_unbatched():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).normal(size=(10, 12, 12, 3)).astype(np.float32)
    y = np.arange(10) % 3
    for ds in (tf.data.Dataset.from_tensor_slices((x, y)),
               tf.data.Dataset.from_tensor_slices((x, y)).batch(4)):
        xa, ya = as_arrays(ds, "val", 3)
        np.testing.assert_array_equal(xa, x)
        np.testing.assert_array_equal(ya, y)
    with pytest.raises(DataError, match="pairs"):
        as_arrays(tf.data.Dataset.from_tensor_slices(x), "val", 3)


def test_default_resolutions():
    assert default_resolutions((96, 96, 3)) == [48, 64, 80, 96]
    assert default_resolutions((32, 32, 3)) == [32]
    assert default_resolutions((49, 10, 1)) == [49]


def test_a_different_search_in_the_same_directory_is_refused(tmp_path):
    _write_json(tmp_path / "search.json", {"sram": 1, "flash": 2})
    _check_same_search(tmp_path, {"sram": 1, "flash": 2})
    with pytest.raises(TinyEngineError, match="sram: 1 -> 5"):
        _check_same_search(tmp_path, {"sram": 5, "flash": 2})


def test_a_misspelt_or_missing_setting_is_named_before_any_work(tmp_path):
    import nas
    data = (np.zeros((4, 8, 8, 1), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(TypeError, match=r"unexpected setting\(s\) max_trial;.*max_trials"):
        nas.search(data, data, num_classes=2, sram=1 << 16, flash=1 << 18, max_trial=3,
                   directory=tmp_path / "run")
    with pytest.raises(TypeError, match="needs flash"):
        nas.search(data, data, num_classes=2, sram=1 << 16, directory=tmp_path / "run")
    assert not (tmp_path / "run").exists()
