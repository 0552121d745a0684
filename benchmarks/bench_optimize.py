"""convert(optimize="speed") against optimize="size" on a Cortex-M4 under QEMU: the trade-off.

    .venv/bin/python benchmarks/bench_optimize.py [--out benchmarks/results_optimize.md]
                                                  [--models vww_96_int8 ...] [--samples 4]

For each MLPerf Tiny model in ../shared/models and each mode: convert it, link it for a Cortex-M4
(320 KiB SRAM, 1 MiB Flash, arm-none-eabi-gcc -O2, the DSP path), check it against the TFLite
Micro interpreter on a few inputs under QEMU (mps2-an386; a mismatch stops the run), then count
the instructions of one inference from QEMU's trace. Reports code beyond the weights (the linked
image's Flash minus the model's constant arrays, as bench_firmware.py counts it), instructions,
instructions per MAC, the arena (peak SRAM) and the linked image's SRAM. Takes a minute or two.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tinyengine_tf as te  # noqa: E402
from tinyengine_tf import firmware  # noqa: E402
from bench_firmware import FLASH, MODELS, SHARED, SRAM, TARGET, machine, run_firmware  # noqa: E402

MODES = ("speed", "size")
SIZE_LIMIT = 6 * 1024        # issue 12: optimize="size" code beyond weights on VWW


def measure(name: str, samples: int) -> dict:
    from reference import int8_inputs, tflm_run
    data = (SHARED / f"{name}.tflite").read_bytes()
    row = {"model": name}
    for mode in MODES:
        cm = te.convert(data, name=name, optimize=mode)
        x = int8_inputs(tuple(cm.graph.t(cm.graph.inputs[0]).shape[1:]), samples, seed=7)
        want = tflm_run(data, x)
        got = run_firmware(cm, x, dsp=True)
        if not np.array_equal(np.asarray(got).reshape(np.shape(want)), want):
            raise SystemExit(f"{name}: optimize={mode!r} firmware differs from TFLite Micro")
        fw = cm.build_firmware(TARGET, sram=SRAM, flash=FLASH)
        prof = cm.profile(TARGET, sram=SRAM, flash=FLASH)
        row[mode] = {"code": firmware.code_beyond_weights(fw, cm), "where": where_bytes(cm, fw), "instructions": prof.invoke_instructions,
                     "per_mac": prof.per_mac, "arena": cm.peak_sram, "sram": fw.sram_bytes,
                     "flash": fw.flash_bytes}
    return row


def where_bytes(cm, fw) -> dict:
    """Code beyond weights by what it is, from the linked image's symbol sizes (nm)."""
    out = subprocess.run(["arm-none-eabi-nm", "-S", "--size-sort", str(fw.elf)],
                         capture_output=True, text=True, check=True).stdout
    groups: dict = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        size, kind, name = int(parts[1], 16), parts[2], parts[3].split(".")[0]
        m = re.match(rf"{cm.prefix}_[LSH]\d+_(\w+)$", name)   # H: helpers of that family
        if kind in "rR":
            if re.match(rf"{cm.prefix}_L\d+_(w|bias|bias_folded|mult|shift|in\d+)$", name):
                continue                                   # the model's constant arrays
            key = "vectors" if name == "te_vectors" else "read-only tables (size: layer descriptors)"
        elif kind not in "tT":
            continue
        elif m:
            key = f"layer functions: {m.group(1).upper()}"
        elif name.startswith("te_c_") or name == "te_softmax_exp":
            key = "shared kernels (te_c_*, te_softmax_exp)"
        elif name.startswith(("mem", "__aeabi", "__")):
            key = "C library"
        else:
            key = "invoke, start-up, harness"
        groups[key] = groups.get(key, 0) + size
    return groups


def where_table(row) -> str:
    keys = sorted(set(row["speed"]["where"]) | set(row["size"]["where"]))
    out = ["| what | speed (B) | size (B) |", "|---|---:|---:|"]
    for k in keys:
        out.append(f"| {k} | {row['speed']['where'].get(k, 0):,} | {row['size']['where'].get(k, 0):,} |")
    return "\n".join(out)


def table(rows) -> str:
    out = ["| model | code beyond weights (B): speed | size | size / speed | instructions: speed "
           "| size | size / speed | instr/MAC: speed | size | arena (B): speed | size | Flash (B): "
           "speed | size |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, b = r["speed"], r["size"]
        out.append(f"| {r['model']} | {a['code']:,} | {b['code']:,} | {b['code'] / a['code']:.2f} | "
                   f"{a['instructions']:,} | {b['instructions']:,} | "
                   f"{b['instructions'] / a['instructions']:.2f} | {a['per_mac']:.2f} | "
                   f"{b['per_mac']:.2f} | {a['arena']:,} | {b['arena']:,} | {a['flash']:,} | "
                   f"{b['flash']:,} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_optimize.md"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--samples", type=int, default=4, help="inputs checked against TFLM per mode")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    for name in args.models:
        t = time.time()
        rows.append(measure(name, args.samples))
        print(f"{name}: {time.time() - t:.1f} s", file=sys.stderr)
    text = ["# optimize=\"speed\" and optimize=\"size\" on a Cortex-M4 (QEMU)", "",
            "Both modes equal TFLite Micro on every checked input (all -128, all 127, alternating "
            "extremes, random) in the firmware under QEMU. \"speed\" (the default) specializes "
            "each layer's code; \"size\" has every conv, in-place depthwise and fully-connected "
            "layer call one shared kernel of its family with a const table of the layer's "
            "parameters (tinyengine_tf/kernels/compact.py). "
            "Code beyond weights is the linked image's Flash (vectors, text, read-only data) minus "
            "the model's constant arrays (the same arrays in both modes); the parameter tables "
            "count as code. Instructions are one inference, counted exactly from QEMU's trace. "
            "Arena is the peak SRAM of the plan, the same in both modes.", "",
            table(rows), ""]
    vww = next((r for r in rows if r["model"] == "vww_96_int8"), None)
    if vww is not None:
        s = vww["size"]
        text += [f"VWW with optimize=\"size\": {s['code']:,} B of code beyond weights "
                 f"({'within' if s['code'] <= SIZE_LIMIT else 'over'} the {SIZE_LIMIT:,} B target) "
                 f"at {s['instructions']:,} instructions ({s['per_mac']:.2f} per MAC).", "",
                 "## VWW: where the code beyond weights goes", "",
                 "Symbol sizes of the linked image (`arm-none-eabi-nm -S`), grouped; the rows add "
                 "up to the code beyond weights but for alignment padding.", "",
                 where_table(vww), ""]
    text += ["## Machine", "", machine(), "", f"Run time: {time.time() - t0:.0f} s.", ""]
    md = "\n".join(text)
    print(md)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
