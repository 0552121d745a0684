"""Cortex-M4 firmware: exact instruction counts under QEMU, portable C against the DSP path.

    .venv/bin/python benchmarks/bench_firmware.py [--out benchmarks/results_firmware.md]
                                                  [--models vww_96_int8 ...] [--samples 4]

For each MLPerf Tiny model in ../shared/models: convert it, link it for a Cortex-M4 with 320 KiB
SRAM and 1 MiB Flash (arm-none-eabi-gcc -O2), check that both builds (portable: -DTE_NO_DSP; DSP:
the Arm DSP extension's dual 16-bit MACs) give TFLM's outputs on a few inputs under QEMU
(mps2-an386), then count the instructions one inference executes from QEMU's translation-block
trace. Reports instructions per inference, MACs, instructions per MAC, the code and tables
beyond the weights (Flash - constants), Flash and SRAM of the linked image. A mismatch with TFLM
stops the run: a wrong result is never profiled. Takes a minute or two.
"""
from __future__ import annotations

import argparse
import platform
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
from tinyengine_tf.compiled import _NP, _sample_shape  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
MODELS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]
TARGET, SRAM, FLASH = "cortex-m4", 320 * 1024, 1024 * 1024
CODE_LIMIT = 16 * 1024       # issue 4: code and tables beyond the weights for VWW


def run_firmware(cm, x, dsp: bool):
    """cm.run(x, target) with the DSP path switched on or off."""
    arrays, n, _ = cm._prepare_inputs(x)
    outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    cm._run_firmware(TARGET, arrays, n, outs, dsp=dsp, sram=SRAM, flash=FLASH)
    return outs[0] if len(outs) == 1 else outs


def check_matches_tflm(name, cm, data, samples: int):
    from reference import int8_inputs, tflm_run
    shape = tuple(cm.graph.t(cm.graph.inputs[0]).shape[1:])
    x = int8_inputs(shape, samples, seed=7)
    want = tflm_run(data, x)
    for dsp in (False, True):
        got = run_firmware(cm, x, dsp)
        if not np.array_equal(np.asarray(got).reshape(np.shape(want)), want):
            raise SystemExit(f"{name}: the {'DSP' if dsp else 'portable'} firmware differs from "
                             "TFLite Micro; not profiling it")


def measure(name: str, samples: int) -> dict:
    data = (SHARED / f"{name}.tflite").read_bytes()
    cm = te.convert(data, name=name)
    check_matches_tflm(name, cm, data, samples)
    row = {"model": name, "weights": cm.flash}
    for dsp in (False, True):
        key = "dsp" if dsp else "portable"
        fw = cm.build_firmware(TARGET, sram=SRAM, flash=FLASH, dsp=dsp)
        prof = cm.profile(TARGET, dsp=dsp, sram=SRAM, flash=FLASH)
        row[key] = {"instructions": prof.invoke_instructions, "macs": prof.macs,
                    "per_mac": prof.per_mac, "code": firmware.code_beyond_weights(fw, cm),
                    "flash": fw.flash_bytes, "sram": fw.sram_bytes, "profile": prof,
                    "library": sum(layer.library for layer in prof.layers)}
    return row


def table(rows) -> str:
    out = ["| model | path | instructions / inference | MACs | instr / MAC | of which library "
           "calls | code beyond weights (B) | Flash (B) | SRAM (B) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for key, label in (("portable", "portable"), ("dsp", "DSP")):
            m = r[key]
            out.append(f"| {r['model']} | {label} | {m['instructions']:,} | {m['macs']:,} | "
                       f"{m['per_mac']:.2f} | {m['library']:,} | {m['code']:,} | {m['flash']:,} | "
                       f"{m['sram']:,} |")
    return "\n".join(out)


def speedups(rows) -> str:
    lines = []
    for r in rows:
        p, d = r["portable"], r["dsp"]
        lines.append(f"- {r['model']}: DSP path {p['instructions'] / d['instructions']:.2f}x fewer "
                     f"instructions than the portable C; code beyond weights {d['code']:,} B "
                     f"(portable {p['code']:,} B)")
    return "\n".join(lines)


def per_layer(row) -> str:
    """The DSP profile of one model, layer by layer, next to the portable one."""
    p, d = row["portable"]["profile"], row["dsp"]["profile"]
    out = ["| step | op | MACs | portable instr/MAC | DSP instructions | DSP instr/MAC |",
           "|---|---|---:|---:|---:|---:|"]
    for lp, ld in zip(p.layers, d.layers):
        if not ld.instructions and not lp.instructions:
            continue
        pm = f"{lp.per_mac:.2f}" if lp.per_mac else ""
        dm = f"{ld.per_mac:.2f}" if ld.per_mac else ""
        out.append(f"| {ld.step} | {ld.kind} #{ld.op_index} | {ld.macs:,} | {pm} | "
                   f"{ld.instructions:,} | {dm} |")
    return "\n".join(out)


def machine() -> str:
    def tool(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "not found"
    return (f"- compiler: {tool(['arm-none-eabi-gcc', '--version'])}, -O2 -mcpu=cortex-m4 -mthumb "
            f"-mfloat-abi=soft\n- emulator: {tool(['qemu-system-arm', '--version'])}, machine "
            f"mps2-an386\n- host: {platform.platform()}, Python {platform.python_version()}\n"
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_firmware.md"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--samples", type=int, default=4, help="inputs checked against TFLM per build")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    for name in args.models:
        t = time.time()
        rows.append(measure(name, args.samples))
        print(f"{name}: {time.time() - t:.1f} s", file=sys.stderr)
    text = ["# Cortex-M4 firmware: instructions per inference under QEMU", "",
            "Both builds equal TFLite Micro on every checked input (all -128, all 127, alternating "
            "extremes, random). Instructions are counted exactly from QEMU's trace for one "
            "inference, every instruction a layer causes charged to it; MACs count convolutions, "
            "depthwise convolutions and fully-connected layers. \"Of which library calls\" are "
            "the instructions the layers spent in functions they called (memset, "
            "memcpy, __aeabi_* helpers, the softmax exponential), included in the totals. Code beyond weights is the linked image's Flash "
            "(text, read-only data, vectors) minus the model's constant arrays.", "",
            table(rows), "", speedups(rows), ""]
    vww = next((r for r in rows if r["model"] == "vww_96_int8"), None)
    if vww is not None:
        code = vww["dsp"]["code"]
        text += [f"VWW code beyond weights with the DSP path: {code:,} B "
                 f"({'within' if code <= CODE_LIMIT else 'over'} the {CODE_LIMIT:,} B limit).", "",
                 "## VWW, layer by layer", "", per_layer(vww), ""]
    text += ["## Machine", "", machine(), "", f"Run time: {time.time() - t0:.0f} s.", ""]
    md = "\n".join(text)
    print(md)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
