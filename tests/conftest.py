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


# Under pytest-xdist `make test` runs `-n 2 --dist loadfile`: a file stays on one worker, so its
# module fixtures (Keras models, QEMU builds) are built once and at most one stage-2 cluster runs
# at a time. The files that take longest go first, so no worker is left with one at the end.
FIRST = ("test_nas_stage2_search.py", "test_notebooks.py", "test_nas_cli_search.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = Path(str(item.fspath)).name
        return FIRST.index(name) if name in FIRST else len(FIRST)
    items.sort(key=rank)
