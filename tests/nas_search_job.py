"""A small, deterministic TinyNAS search, run as a process by tests/test_nas_stage2_search.py so it
can be killed and restarted: ``python tests/nas_search_job.py DIRECTORY MAX_TRIALS``."""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

MFCC = (49, 10, 1)
SRAM, FLASH = 64 * 1024, 256 * 1024


def mfcc_task(n: int, seed: int):
    """Two classes of 49x10 'MFCC' frames: class 1 has energy in the middle frames."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.5, (n, *MFCC)).astype(np.float32)
    x[y == 1, 15:35, :, :] += 1.5
    return x, y


def search_kwargs(directory, max_trials: int) -> dict:
    # Shallow stages keep each QAT trial short; the space's full depths are exercised elsewhere.
    return dict(num_classes=2, sram=SRAM, flash=FLASH, widths=[0.2], max_trials=max_trials, epochs=1,
                directory=directory, seed=3, batch_size=32, lease_seconds=20.0,
                stage_depths=[(1, 2)] * 5 + [(1,)], kernel_sizes=(3, 5), expand_ratios=(3, 4))


if __name__ == "__main__":
    import nas
    r = nas.search(mfcc_task(96, 0), mfcc_task(48, 1), **search_kwargs(sys.argv[1], int(sys.argv[2])))
    print(f"done: best {r.arch.short()} C accuracy {r.accuracy:.4f}", flush=True)
