"""``python -m nas.stage2_worker DIRECTORY``: one process of a distributed stage-2 search.

The search's settings come from DIRECTORY/search.json and its data from DIRECTORY/data.npz (both
written by nas.search or ``tinyengine-tf nas search``); the role comes from KerasTuner's
environment: KERASTUNER_TUNER_ID ("chief" serves the oracle, any other id runs trials),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT. Every process must see the same DIRECTORY.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run(directory, verbose: int = 1) -> int:
    import numpy as np

    from nas.pipeline import make_tuner

    directory = Path(directory)
    spec = json.loads((directory / "search.json").read_text())
    tuner = make_tuner(directory, spec, verbose=verbose)
    if "chief" in os.environ.get("KERASTUNER_TUNER_ID", ""):
        tuner.search()
        return 0
    with np.load(directory / "data.npz") as d:
        data = (d["x_train"], d["y_train"], d["x_val"], d["y_val"])
    tuner.search(*data)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nas.stage2_worker")
    p.add_argument("directory")
    p.add_argument("--verbose", type=int, default=1)
    args = p.parse_args(argv)
    for var in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        if not os.environ.get(var):
            print(f"error: {var} is not set (see KerasTuner's distributed mode)", file=sys.stderr)
            return 2
    return run(args.directory, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
