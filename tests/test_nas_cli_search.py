"""``tinyengine-tf nas search``: image folders in, one clear line and a non-zero exit for bad input,
a searched and compiled model out."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.image_folder import ImageFolderError, load_image_folder

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tinyengine_tf", "nas", "search", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _folder(root: Path, n=6, size=32, classes=("cat", "dog")):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            img[8:24, 8:24, c % 3] = 255          # a class-coloured square
            Image.fromarray(img).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_loads_stratified_and_scaled(tmp_path):
    root = _folder(tmp_path / "data", n=10)
    (train, val, classes) = load_image_folder(root, val_split=0.2)
    assert classes == ["cat", "dog"]
    assert train[0].shape == (16, 32, 32, 3) and val[0].shape == (4, 32, 32, 3)
    assert sorted(np.bincount(val[1])) == [2, 2]
    assert -1.0 <= train[0].min() and train[0].max() <= 1.0
    # the red square of class 0 survives: its pixels are at the top of the range
    assert train[0][train[1] == 0][:, 10:22, 10:22, 0].mean() > 0.9   # (JPEGs blur it a little)
    (t2, _, _) = load_image_folder(root, size=(20, 24))
    assert t2[0].shape[1:] == (20, 24, 3)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ImageFolderError, match="no such directory"):
        load_image_folder(tmp_path / "missing")
    root = _folder(tmp_path / "one", classes=("only",))
    with pytest.raises(ImageFolderError, match="at least two"):
        load_image_folder(root)
    root = _folder(tmp_path / "corrupt")
    (root / "dog" / "bad.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageFolderError, match=r"bad\.jpg: cannot read this image"):
        load_image_folder(root)
    root = _folder(tmp_path / "empty")
    (root / "bird").mkdir()
    with pytest.raises(ImageFolderError, match=r"bird: no images"):
        load_image_folder(root)


@pytest.mark.parametrize("args, words", [
    (["{missing}", "--sram", "64KB", "--flash", "256KB"], "no such directory"),
    (["{data}", "--sram", "64 apples", "--flash", "256KB"], "invalid size"),
    (["{data}", "--sram", "64KB", "--flash", "256KB", "--worker", "nohost"], "ID@HOST:PORT"),
    (["{data}", "--sram", "64KB", "--flash", "256KB", "--chief", "host:notaport"], "HOST:PORT"),
    (["{data}", "--sram", "64KB", "--flash", "256KB", "--workers", "2", "--chief", "h:1"], "not allowed with"),
    (["{data}", "--sram", "1KB", "--flash", "256KB", "--resolutions", "32", "--widths", "0.2"],
     "B of SRAM and"),
])
def test_bad_arguments_get_one_line_and_a_nonzero_exit(tmp_path, args, words):
    data = _folder(tmp_path / "data")
    args = [a.format(missing=tmp_path / "nope", data=data) for a in args]
    r = _cli(*args)
    assert r.returncode != 0
    assert words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.slow
def test_search_command_runs_and_writes_the_best_model(tmp_path):
    data = _folder(tmp_path / "data", n=12)
    out, plot = tmp_path / "best", tmp_path / "search.png"
    r = _cli(data, "--sram", "64KB", "--flash", "256KB", "--resolutions", "32", "--widths", "0.2",
             "--max-trials", "1", "--epochs", "1", "--directory", tmp_path / "run", "--plot", plot,
             "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "24 images of 2 classes" in r.stdout and "best: r32-w0.2" in r.stdout
    assert (out / "model.c").exists() and plot.stat().st_size > 10_000
