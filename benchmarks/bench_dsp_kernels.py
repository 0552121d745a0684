"""Issue 12 (DSP kernels): Cortex-M4 instructions per inference before and after, per model.

    .venv/bin/python benchmarks/bench_dsp_kernels.py --before-tree DIR
                                                     [--out benchmarks/results_dsp_kernels.md]

DIR is a checkout of the baseline commit (e.g. `git worktree add /tmp/base <commit>`, or
`git archive <commit> | tar -x -C DIR`); both trees are measured the same way, each in its own
Python process (PYTHONPATH set to the tree): convert each model of ../shared/models, check the
DSP firmware against TFLite Micro on 4 inputs under QEMU (mps2-an386; a mismatch stops the run),
profile one inference (instructions counted from QEMU's translation-block trace, per layer), and
link the firmware (320 KiB SRAM, 1 MiB Flash, -O2) for its code beyond the weights (Flash minus
the model's constant arrays) and the arena (peak SRAM of the activations). About a minute.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "models"
MODELS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant"]
SRAM, FLASH = 320 * 1024, 1024 * 1024


NOTES = [
    "- Depthwise (in place kept, one plane of scratch as before): each tile of up to 6 outputs "
    "(1-4 output rows) is one asm statement that also requantizes (the multiplier, rounding and "
    "shift come from the tile's stack array, so gcc keeps its loop values in registers); the tile "
    "shape is chosen per layer by an instruction count fitted to QEMU; plane words cover the taps "
    "in the fewest instructions (searched, remembered per geometry) and may reach 3 bytes past a "
    "window inside the plane (a tap pair no chosen word holds is charged what it costs: one "
    "more multiply-accumulate from halves of loaded words); weight registers are reloaded from a "
    "per-channel stack array (LDRD); tiles that cover the output exactly also saturate, store "
    "and step their pointers in the asm. Plane rows are gathered by asm loops (8- or 16-byte "
    "steps; rows up to 24 bytes written out, up to 8 bytes several rows a step). Stride-2 layers stay above 3 instructions per MAC: gathering a channel's plane "
    "costs about 2 instructions per input byte, 4 input bytes per output; small planes (6x6, 3x3, "
    "KWS's 25x5) pay about 46 instructions per channel in setup (weights, rounding constants), "
    "of which convert(flash=...) saves about 38 where it has room for the records precomputed "
    "(about 40 bytes a channel: VWW's 6x6 layers under 2.0 per MAC, results_cmsis_nn.md).",
    "- Pointwise convolutions: the \"p\" form, tiles of 3-6 pixels x 1 channel (0.875-1.0 "
    "instructions per MAC in the loop), where its estimate beats the 2x2 \"x\" or 3x2 \"w\" "
    "tiles; the \"e\" form for unpadded 1x1 convs of 8-32 input channels (strided too): filters "
    "and a block of pixels both expanded to int16, 0.75 per MAC in the loop; 6 word steps per "
    "iteration where 6 divides a long run (ResNet 3x3), 2-pixel tiles on 8- and 16-wide rows; "
    "multipliers read after the asm (no spills); first convs' short kernel rows written out, "
    "their rows ended by 2-pixel tiles where 3 would recompute. The \"r\" form for 3x3 convs "
    "of 8-16 input channels (the kernel rows under a block of outputs expanded once per chunk of "
    "channels: ResNet 0.97-1.05 per MAC); windows past 1 KB interleaved for LDRD's reach "
    "(ResNet's 64-channel layer 1.34 -> 1.10); the expanded operands may take 3 KiB of stack "
    "(2 KiB for 1-3 input channels; tests/test_firmware.py checks the deepest call path fits the "
    "4 KiB stack). The \"o\" form for one input channel at stride 2 (KWS's first conv, 1.91 -> "
    "0.92): the padded image expanded once to int16 x - zp, tiles of 5 pixels sharing words; "
    "its row variant for the RGB first convs (VWW's 1.70 -> 1.35, ResNet's at stride 1 1.76 -> "
    "1.37): the kernel rows of one output row expanded into row slots, 4-pixel tiles. The \"s\" "
    "form for flat 1x1 convs of 8 input channels (VWW's second conv 1.91 -> 1.49): one channel's "
    "filter, bias and multipliers in registers against a stream of expanded pixels.",
    "- AVERAGE_POOL_2D: four channels per word summed in 16-bit lanes (SXTAB16, up to 256 taps), "
    "TFLM's rounded division as a multiply-high (KWS's pool 50,273 -> 8,153). ADD/SUB of 512 "
    "elements or more: two 256-entry tables of the rescaled inputs built on the stack with "
    "TFLM's arithmetic, one SMMLAR per element for the output, four elements a loop turn "
    "(ResNet's ADDs 425,993 / 237,575 / 126,982 -> 149,778 / 77,330 / 40,466).",
    "- FULLY_CONNECTED: the \"pair\" form (kernels/fc_tiled.py: two rows share each halfword of "
    "a repacked int8 filter word, one SMLAD + UXTB16 + SMLAD per 4 MACs, LDM loads; AD01 1.41 -> "
    "0.99 per MAC); where convert(flash=...) leaves room, int16 filters (\"w16\", AD01 0.78 for "
    "twice its filter bytes); otherwise the input row expanded to int16 once, tiles of 4 rows.",
    "- Code: layers whose C is identical but for their arrays share one function; layers of other "
    "sizes whose \"p\" or flat \"e\" form asm is the same call one shared function with their "
    "sizes as arguments (VWW: CONV_2D functions 7,640 -> 5,510 B); the softmax's exp and "
    "reciprocal call one out-of-line fixed-point product (about 550 B less on the CNNs).",
    "- Not reached: 1.1 instructions per MAC on VWW here (1.18; 1.05 where convert(flash=1 MiB) "
    "widens its filters and stores the depthwise records, benchmarks/results_cmsis_nn.md); "
    "depthwise at or below 2.0 per MAC everywhere (here stride 1: 1.93 on VWW's 48x48 and 24x24 "
    "layers, 1.98 at 12x12, 2.11 at 6x6, 2.89 at 3x3, 2.01 on KWS; with flash=1 MiB 1.92-1.98 on "
    "every plane of 6x6 and up and KWS, 2.38 at 3x3; stride 2: 3.07-3.78, with flash= "
    "3.04-3.28); code beyond weights at 10 kB (VWW 14.1 kB, 13.0 kB with flash=1 MiB).",
]


def measure(names: list) -> list:
    """In this process (whatever tinyengine_tf it imports): one dict per model."""
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np

    import tinyengine_tf as te
    from reference import int8_inputs, tflm_run
    from tinyengine_tf.compiled import _NP, _sample_shape
    rows = []
    for name in names:
        data = (SHARED / f"{name}.tflite").read_bytes()
        cm = te.convert(data, name=name)
        x = int8_inputs(tuple(cm.graph.t(cm.graph.inputs[0]).shape[1:]), 4, seed=7)
        arrays, n, _ = cm._prepare_inputs(x)
        outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
        cm._run_firmware("cortex-m4", arrays, n, outs, dsp=True, sram=SRAM, flash=FLASH)
        want = tflm_run(data, x)
        if not np.array_equal(outs[0].reshape(np.shape(want)), want):
            raise SystemExit(f"{name}: the DSP firmware differs from TFLite Micro; not profiling it")
        prof = cm.profile("cortex-m4", sram=SRAM, flash=FLASH)
        fw = cm.build_firmware("cortex-m4", sram=SRAM, flash=FLASH)
        rows.append({"model": name, "instructions": prof.invoke_instructions, "macs": prof.macs,
                     "code": fw.flash_bytes - cm.flash, "arena": cm.peak_sram,
                     "sram": fw.sram_bytes, "layers": [(l.step, l.kind, l.op_index, l.instructions,
                                                        l.macs) for l in prof.layers]})
    return rows


def measure_tree(tree: Path, names: list) -> list:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--measure", *names], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"measuring {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def _pm(instr, macs):
    return f"{instr / macs:.2f}" if macs else ""


def model_table(b: dict, a: dict) -> str:
    rows = [("instructions / inference", f"{b['instructions']:,}", f"{a['instructions']:,}",
             f"{a['instructions'] / b['instructions'] - 1:+.1%}"),
            ("instructions / MAC", _pm(b["instructions"], b["macs"]), _pm(a["instructions"], a["macs"]), ""),
            ("code beyond weights (B)", f"{b['code']:,}", f"{a['code']:,}", f"{a['code'] - b['code']:+,}"),
            ("arena (peak SRAM of activations, B)", f"{b['arena']:,}", f"{a['arena']:,}",
             f"{a['arena'] - b['arena']:+,}"),
            ("linked SRAM (B)", f"{b['sram']:,}", f"{a['sram']:,}", f"{a['sram'] - b['sram']:+,}")]
    out = ["| | before | after | change |", "|---|---:|---:|---:|"]
    out += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    return "\n".join(out)


def layer_table(b: dict, a: dict, kinds=("DEPTHWISE_CONV_2D", "CONV_2D")) -> str:
    out = ["| step | op | MACs | instructions before | after | instr/MAC before | after |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for lb, la in zip(b["layers"], a["layers"]):
        if la[1] not in kinds:
            continue
        out.append(f"| {la[0]} | {la[1]} #{la[2]} | {la[4]:,} | {lb[3]:,} | {la[3]:,} | "
                   f"{_pm(lb[3], lb[4])} | {_pm(la[3], la[4])} |")
    return "\n".join(out)


def kind_sums(r: dict, kind: str) -> tuple:
    return (sum(l[3] for l in r["layers"] if l[1] == kind), sum(l[4] for l in r["layers"] if l[1] == kind))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-tree", type=Path, help="checkout of the baseline commit")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_dsp_kernels.md"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    t0 = time.time()
    after = measure_tree(ROOT, args.models)
    before = measure_tree(args.before_tree, args.models) if args.before_tree else after
    text = ["# DSP kernels on Cortex-M4 (issue 12): before and after", "",
            f"Before: {args.before_label}. After: this tree. Every figure is for the DSP path "
            "(arm-none-eabi-gcc -O2 -mcpu=cortex-m4, QEMU mps2-an386), one inference, "
            "instructions counted exactly from QEMU's trace; the firmware equals TFLite Micro "
            "on 4 inputs in both trees (checked by this script before profiling). Code beyond "
            "weights: the linked image's Flash minus the model's constant arrays. Layers that "
            "share one function (identical C but for their arrays) are charged an equal share "
            "of its count.", ""]
    for b, a in zip(before, after):
        text += [f"## {a['model']}", "", model_table(b, a), ""]
        for kind in ("DEPTHWISE_CONV_2D", "CONV_2D"):
            ib, mb = kind_sums(b, kind)
            ia, ma = kind_sums(a, kind)
            if mb:
                text.append(f"- all {kind} layers: {ib:,} -> {ia:,} instructions "
                            f"({_pm(ib, mb)} -> {_pm(ia, ma)} per MAC)")
        text += ["", layer_table(b, a), ""]
    text += ["## What changed", "", *NOTES, "",
             f"Run time: {time.time() - t0:.0f} s ({time.strftime('%Y-%m-%d %H:%M')}).", ""]
    md = "\n".join(text)
    print(md)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
