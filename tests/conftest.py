import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
SHARED_MODELS = ROOT.parent / "shared" / "models"
# Tests get their own build cache so a stale user cache can never hide a bug.
os.environ.setdefault("TINYENGINE_CACHE", str(ROOT / ".te_cache"))


@pytest.fixture(scope="session")
def shared_models():
    if not SHARED_MODELS.is_dir():
        pytest.fail(f"{SHARED_MODELS} is missing: the conformance models must sit in ../shared/models")
    return SHARED_MODELS


# Under pytest-xdist `make test` runs `-n 2 --dist loadfile --no-loadscope-reorder`: a file stays
# on one worker, so its module fixtures (Keras models, QEMU builds) are built once and at most one
# stage-2 cluster runs at a time; files are handed out in this order, the slowest first (measured
# with --durations=0 on 2 cores, 2026-12-02), so no worker is left with a long file at the end.
SLOWEST_FIRST = (
    "test_nas_cost.py", "test_patches.py", "test_nas_patches.py", "test_compact.py",
    "test_nas_stage1.py", "test_dsp.py", "test_keras_models.py", "test_nas_stage2_search.py",
    "test_kernels_elementwise.py", "test_kernels_conv.py", "test_reader_fuzz.py",
    "test_keras_converter.py", "test_notebooks.py", "test_kernels_depthwise.py",
    "test_nas_cli_search.py", "test_kernels_softmax.py", "test_shared_models.py",
    "test_kernels_pooling.py", "test_cli.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = Path(str(item.fspath)).name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
    items.sort(key=rank)
