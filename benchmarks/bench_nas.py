"""TinyNAS stage 1 on the full MCUNet grid: the choice for two budgets and the sensitivity map.

    .venv/bin/python benchmarks/bench_nas.py [--samples 1000]

Writes benchmarks/results_nas.md and the figures under benchmarks/figures/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nas  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
FIG = ROOT / "benchmarks" / "figures"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    FIG.mkdir(parents=True, exist_ok=True)
    out = [f"Samples per configuration: {args.samples}; 12 resolutions x 9 widths; seed {args.seed}.", ""]
    for sram, flash, tag in ((320 * KiB, 1 * MiB, "320KiB_1MiB"), (512 * KiB, 2 * MiB, "512KiB_2MiB")):
        choice = nas.optimize_search_space(sram=sram, flash=flash, samples=args.samples, seed=args.seed)
        png = FIG / f"nas_cdf_{tag}.png"
        choice.plot(png)
        n = len(choice.table) * args.samples
        out += [f"### {sram // KiB} KiB SRAM / {flash // MiB} MiB Flash", "",
                f"{n:,} networks in {choice.seconds:.1f} s ({n / choice.seconds:,.0f} networks/s) on "
                "this 2-core machine.", "", choice.to_markdown(top=12), "",
                f"![MACs CDF]({png.relative_to(ROOT / 'benchmarks')})", ""]
        print(out[-5], flush=True)
    srams = [128 * KiB, 192 * KiB, 256 * KiB, 320 * KiB, 384 * KiB, 448 * KiB, 512 * KiB]
    flashes = [512 * KiB, 1 * MiB, int(1.5 * MiB), 2 * MiB]
    sens = nas.sensitivity(srams=srams, flashes=flashes, samples=args.samples, seed=args.seed)
    png = FIG / "nas_sensitivity.png"
    sens.plot(png)
    out += ["### Sensitivity: the chosen space across budgets", "", sens.to_markdown(), "",
            f"![sensitivity]({png.relative_to(ROOT / 'benchmarks')})", ""]
    text = "\n".join(out) + "\n"
    (ROOT / "benchmarks" / "results_nas.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
