import functools
import os
import re
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


# Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`): a file with module-scoped
# fixtures stays on one worker, so its expensive set-up (Keras models, QEMU builds) runs once.
# The longest groups go first, so no worker is left with a long file at the end.
FIRST = ("test_nas_stage2_search.py", "test_notebooks.py", "test_nas_cli_search.py")
_MODULE_FIXTURE = re.compile(r"""scope\s*=\s*["']module["']""")


@functools.lru_cache(maxsize=None)
def _has_module_fixture(path: Path) -> bool:
    return bool(_MODULE_FIXTURE.search(path.read_text()))


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if _has_module_fixture(path) and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(path.stem))
    items.sort(key=lambda it: FIRST.index(Path(str(it.fspath)).name)
               if Path(str(it.fspath)).name in FIRST else len(FIRST))
