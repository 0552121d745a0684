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
