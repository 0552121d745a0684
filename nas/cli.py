"""``tinyengine-tf nas ...``: TinyNAS from the command line.

    tinyengine-tf nas space --sram 320KB --flash 1MB [--samples N] [--seed S] [--plot PATH]

tinyengine_tf/cli.py calls ``register(subparsers)``; sizes use its parser (KB = 1024 bytes).
"""
from __future__ import annotations

import argparse
import sys


def _parse_size(text):
    from tinyengine_tf.cli import parse_size
    return parse_size(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("nas", help="TinyNAS: pick a search space for an SRAM/Flash budget",
                              description="TinyNAS (MCUNet) on tinyengine-tf's own memory model.")
    sub = p.add_subparsers(dest="nas_command", metavar="NAS_COMMAND")
    sub.required = True
    s = sub.add_parser(
        "space", help="stage 1: choose the input resolution and width multiplier",
        description="Sample networks of every (resolution, width) configuration of the MCUNet "
                    "space, keep those that fit both budgets when compiled by tinyengine-tf, and "
                    "choose the configuration whose fitting networks have the largest mean MACs.")
    size_help = "bytes: 320000, 320KB or 1MB (KB = 1024 bytes, MB = 1024*1024)"
    s.add_argument("--sram", type=_parse_size, required=True, metavar="BYTES", help=f"SRAM budget; {size_help}")
    s.add_argument("--flash", type=_parse_size, required=True, metavar="BYTES", help=f"Flash budget; {size_help}")
    s.add_argument("--samples", type=_positive, default=1000, metavar="N",
                   help="networks sampled per configuration (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--plot", metavar="PATH", help="write the MACs CDF plot (PNG, SVG or PDF) here")
    s.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="worker processes (default: all cores)")
    s.add_argument("--num-classes", type=_positive, default=1000, metavar="N",
                   help="classifier outputs; the Dense layer's weights count against Flash (default 1000)")
    s.add_argument("--min-fit-ratio", type=float, default=None, metavar="F",
                   help="ignore configurations where fewer than this fraction of samples fit (default 0.1)")
    s.add_argument("--resolutions", type=_int_list, default=None, metavar="R,R,...",
                   help="resolutions to consider (default 48,64,...,224)")
    s.add_argument("--widths", type=_float_list, default=None, metavar="W,W,...",
                   help="width multipliers to consider (default 0.2,0.3,...,1.0)")
    s.add_argument("--qat", action="store_true",
                   help="cost the networks as tfmot quantization-aware training exports them "
                        "(Dense quantized per tensor) instead of post-training quantization")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_space)


def _positive(text) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _int_list(text) -> list:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None


def _float_list(text) -> list:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None


def cmd_space(args) -> int:
    from nas.stage1 import DEFAULT_MIN_FIT_RATIO, optimize_search_space
    from nas.space import RESOLUTIONS, WIDTHS

    choice = optimize_search_space(
        sram=args.sram, flash=args.flash, samples=args.samples, seed=args.seed,
        resolutions=args.resolutions or RESOLUTIONS, widths=args.widths or WIDTHS,
        workers=args.workers, num_classes=args.num_classes,
        min_fit_ratio=DEFAULT_MIN_FIT_RATIO if args.min_fit_ratio is None else args.min_fit_ratio,
        progress=not args.quiet, qat=args.qat)
    print(choice.to_markdown())
    print(f"\nchosen: resolution {choice.resolution}, width {choice.width:g} "
          f"({choice.networks:,} networks in {choice.seconds:.1f} s)")
    if args.plot:
        choice.plot(args.plot)
        print(f"wrote {args.plot}")
    sys.stdout.flush()
    return 0
