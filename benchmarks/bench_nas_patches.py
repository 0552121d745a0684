"""TinyNAS stage 1 with patch-based inference: does the chosen space grow when networks may fit
only with patches?

    .venv/bin/python benchmarks/bench_nas_patches.py [--samples 16] [--sram 262144] [--flash 1048576]

Runs nas.optimize_search_space on the full MCUNet grid twice with the same seed and samples:
op by op (patches=False) and with patches="auto" at the MAC limit (patches=True), and writes
benchmarks/results_nas_patches.md: both choices, the top of both tables and the time taken.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nas  # noqa: E402
from nas.stage1 import _name  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sram", type=int, default=256 * 1024)
    ap.add_argument("--flash", type=int, default=1024 * 1024)
    ap.add_argument("--max-mac-overhead", type=float, default=0.2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_nas_patches.md"))
    args = ap.parse_args(argv)
    runs = {}
    for patches in (False, True):
        t = time.perf_counter()
        runs[patches] = (nas.optimize_search_space(
            args.sram, args.flash, samples=args.samples, seed=args.seed, workers=args.workers,
            patches=patches, max_mac_overhead=args.max_mac_overhead, raise_if_none=False),
            time.perf_counter() - t)
        c = runs[patches][0]
        print(f"patches={patches}: {_name(c.resolution, c.width) if c.resolution else 'none'} "
              f"in {runs[patches][1]:.0f} s", flush=True)
    out = [f"# TinyNAS stage 1 with patch-based inference", "",
           f"SRAM {args.sram:,} B, Flash {args.flash:,} B; 12 resolutions x 9 widths, "
           f"{args.samples} networks each, seed {args.seed}; patches: `patches=\"auto\"` with "
           f"`max_mac_overhead={args.max_mac_overhead}`, input in the arena. A network counts as "
           "fitting with patches when a patch setting within the MAC limit compiles to a peak "
           "within the SRAM budget (`tinyengine_tf.patch_search.first_fit`).", "",
           "| stage 1 | chosen space | mean MACs of the fitting networks | fit ratio | fit only with patches | time |",
           "|---|---|---:|---:|---:|---:|"]
    for patches in (False, True):
        c, secs = runs[patches]
        b = c.best or {}
        out.append(f"| {'with patches' if patches else 'op by op'} | "
                   f"{_name(c.resolution, c.width) if c.resolution else 'none'} | "
                   f"{b.get('mean_macs', 0) / 1e6:.1f} M | {b.get('fit_ratio', 0):.2f} | "
                   f"{b.get('fit_with_patches', 0)} | {secs:.0f} s |")
    for patches in (False, True):
        c, _ = runs[patches]
        out += ["", f"## {'With patches' if patches else 'Op by op'}: the top of the table", "",
                c.to_markdown(top=8)]
    text = "\n".join(out) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
