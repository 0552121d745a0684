"""The ``tinyengine-tf`` command line.

    tinyengine-tf convert MODEL.tflite -o OUT/ [--name NAME] [--sram 320KB] [--flash 1MB]
    tinyengine-tf report MODEL.tflite [--html report.html]
    tinyengine-tf demo [-o OUT/]
    tinyengine-tf nas ...                 (when the nas package is importable)
    tinyengine-tf data ...                (nas/datasets/cli.py: offline datasets)
    tinyengine-tf ops

Exit codes: 0 success, 1 a TinyEngineError (bad model, unsupported op, does not fit...) or an
OS error such as an unwritable output path, 2 a usage error, 70 an internal error (a bug: the
traceback is printed only with --debug), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path

from tinyengine_tf.errors import TinyEngineError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130
ISSUES = "https://github.com/tinyengine-tf/tinyengine-tf/issues"

# Binary units, as MCU datasheets use them: a "320KB SRAM" part has 327,680 bytes.
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024,
          "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2}
_SIZE_HELP = ("bytes: 320000, 320KB or 1MB (K/KB/KiB = 1024 bytes, M/MB/MiB = 1024*1024, "
              "as in MCU datasheets; write plain digits for decimal sizes)")


def parse_size(text: str) -> int:
    """'320KB' -> 327680, '1MB' -> 1048576, '320_000' -> 320000; argparse type for budgets."""
    m = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use {_SIZE_HELP}")
    value = float(m.group(1).replace("_", "").replace(",", "")) * _UNITS[unit]
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be a positive whole "
                                         "number of bytes")
    return int(value)


def positive_int(text) -> int:
    """argparse type for counts: a whole number of at least 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


# -- commands ---------------------------------------------------------------------------------
def _convert_model(path: str, name: str | None = None, sram=None, flash=None, **patching):
    import tinyengine_tf as te
    return te.convert(path, name=name or _default_name(path), sram=sram, flash=flash, **patching)


def parse_patches(text: str):
    """--patches: auto, none, or SPLIT,ROWS,COLS."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        split, rows, cols = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --patches {text!r}: use auto, none or "
                                         "SPLIT_OP,ROWS,COLS (e.g. 12,4,4)") from None
    return split, rows, cols


def _default_name(path: str) -> str:
    # The file stem makes generated symbols recognisable (kws_ref_model_invoke); the code
    # generator turns it into a C identifier.
    stem = Path(str(path).rstrip("/\\")).stem
    return stem if stem and stem[0].isalpha() else "model"


def _snapshot(directory: Path) -> dict:
    if not directory.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def cmd_convert(args) -> int:
    # Compiling happens entirely before the first write: a model that fails leaves OUT untouched.
    cm = _convert_model(args.model, args.name, args.sram, args.flash, patches=args.patches,
                        max_mac_overhead=args.max_mac_overhead,
                        input_in_arena=not args.input_outside_arena, optimize=args.optimize)
    out = Path(args.output)
    before = _snapshot(out)
    cm.save(out)
    after = _snapshot(out)
    written = sorted(n for n, t in after.items() if before.get(n) != t)
    n_src = len(getattr(cm, "source_graph", cm.graph).ops)
    print(f"{cm.name}: {n_src} ops ({len(cm.graph.ops)} after fusion), "
          f"arena {cm.peak_sram:,} bytes, flash {cm.flash:,} bytes"
          + (f", state {cm.state_bytes:,} bytes (persistent, outside the arena)"
             if getattr(cm, "state_bytes", 0) else ""))
    print(f"wrote {len(written)} files to {out}/: {', '.join(written)}")
    return EXIT_OK


def _memory_report(cm):
    """cm.memory_report(), with a clear message when this installation lacks it."""
    fn = getattr(cm, "memory_report", None)
    if fn is None:
        raise TinyEngineError("the memory report is not available in this installation "
                              "(tinyengine_tf.report is missing); reinstall tinyengine-tf")
    return fn()


def cmd_report(args) -> int:
    cm = _convert_model(args.model, args.name)
    rep = _memory_report(cm)
    print(rep.to_markdown())
    if args.html:
        html = Path(args.html)
        rep.to_html(html)
        print(f"wrote {html}", file=sys.stderr)
    return EXIT_OK


def cmd_demo(args) -> int:
    try:
        from tinyengine_tf.demo import run_demo
    except ImportError as exc:
        raise TinyEngineError(f"the demo is not available in this installation ({exc})") from None
    run_demo(args.output)  # prints its own progress and summary
    return EXIT_OK


def cmd_ops(args) -> int:
    import tinyengine_tf as te
    from tinyengine_tf.kernels.base import KERNELS, VIEW_OPS
    ops = te.supported_ops()
    width = max([len(k) for k in ops] + [len("op")])
    print(f"{'op':<{width}}  implemented by")
    print(f"{'-' * width}  {'-' * 14}")
    for kind in ops:
        if kind in KERNELS:
            where = "kernels." + KERNELS[kind].__module__.rsplit(".", 1)[-1]
        elif kind in VIEW_OPS:
            where = "view (no code: aliases its input)"
        else:
            where = "pass"
        print(f"{kind:<{width}}  {where}")
    print(f"\n{len(ops)} op kinds; each computes exactly what TFLite Micro's kernel computes.")
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------
def _add_nas(sub) -> None:
    """The nas subcommand lives in nas/cli.py; without the nas package there is none."""
    try:
        import nas.cli as nas_cli
    except ModuleNotFoundError as exc:
        if exc.name in ("nas", "nas.cli"):
            return
        _nas_broken(sub, exc)
        return
    except Exception as exc:  # a broken nas package must not take the other commands down
        _nas_broken(sub, exc)
        return
    nas_cli.register(sub)


def _add_data(sub) -> None:
    """`data` (offline datasets) lives in nas/datasets/cli.py; like `nas`, it may be absent."""
    try:
        import nas.datasets.cli as data_cli
    except ModuleNotFoundError as exc:
        if exc.name in ("nas", "nas.datasets", "nas.datasets.cli"):
            return
        _nas_broken(sub, exc, "data", "offline datasets")
        return
    except Exception as exc:
        _nas_broken(sub, exc, "data", "offline datasets")
        return
    data_cli.register(sub)


def _nas_broken(sub, exc, command="nas", what="TinyNAS") -> None:
    p = sub.add_parser(command, help=f"{what} (unavailable: it failed to import)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(_args):
        raise TinyEngineError(f"the nas package failed to import ({type(exc).__name__}: {exc})")
    p.set_defaults(func=fail)


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the subcommand; SUPPRESS keeps the subparser's copy
    # from overwriting a value the main parser already set.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback on an internal error")
    parser = argparse.ArgumentParser(
        prog="tinyengine-tf",
        description="Compile int8 TFLite models to specialized, bit-exact C for microcontrollers.",
        epilog="exit codes: 0 ok, 1 error (bad model, unsupported op, does not fit, I/O), "
               "2 usage, 70 internal error, 130 interrupted")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="print the full traceback on an internal error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("convert", parents=[debug], help="compile a .tflite model to a C project",
                       description="Compile MODEL to a self-contained C project in OUT.")
    p.add_argument("model", metavar="MODEL", help=".tflite file (or SavedModel directory)")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="output directory")
    p.add_argument("--name", help="C symbol prefix (default: the model file's name)")
    p.add_argument("--sram", type=parse_size, metavar="BYTES",
                   help=f"fail unless the arena fits this SRAM budget; {_SIZE_HELP}")
    p.add_argument("--flash", type=parse_size, metavar="BYTES",
                   help=f"fail unless the constants fit this Flash budget (room left under it "
                        f"stores FULLY_CONNECTED and convolution filters as int16 and depthwise "
                        f"records precomputed, for speed); {_SIZE_HELP}")
    p.add_argument("--patches", type=parse_patches, default=None, metavar="auto|none|S,R,C",
                   help="run the first ops patch by patch: auto (least peak SRAM within "
                        "--max-mac-overhead), none (default), or split op index, rows, cols")
    p.add_argument("--max-mac-overhead", type=float, default=0.2, metavar="F",
                   help="extra MACs --patches auto may spend, as a fraction of the model's (0.2)")
    p.add_argument("--input-outside-arena", action="store_true",
                   help="read the input from the caller's buffer (camera frame, external RAM, "
                        "Flash) instead of copying it into the arena")
    p.add_argument("--optimize", choices=("speed", "size"), default="speed",
                   help="speed (default): code specialized per layer; size: conv, depthwise and "
                        "fully-connected layers share one kernel each (less code, more "
                        "instructions)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("report", parents=[debug], help="memory report: TinyEngine vs TFLite Micro",
                       description="Print MODEL's memory report as markdown.")
    p.add_argument("model", metavar="MODEL", help=".tflite file (or SavedModel directory)")
    p.add_argument("--html", metavar="PATH", help="also write the report as an HTML page")
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", parents=[debug], help="run the end-to-end demo",
                       description="Build, compile and check a small model end to end.")
    p.add_argument("-o", "--output", metavar="OUT", default="demo_out",
                   help="output directory (default: ./demo_out)")
    p.set_defaults(func=cmd_demo)

    _add_nas(sub)
    _add_data(sub)

    p = sub.add_parser("ops", parents=[debug], help="list the supported ops",
                       description="List the TFLite op kinds the code generator supports.")
    p.set_defaults(func=cmd_ops)
    return parser


def _internal_error(exc: BaseException, debug: bool) -> int:
    print(f"tinyengine-tf: internal error ({type(exc).__name__}: {exc}); this is a bug, please "
          f"report it at {ISSUES} with the model"
          + ("" if debug else " and the output of the same command with --debug"),
          file=sys.stderr)
    if debug:
        traceback.print_exc()
    return EXIT_INTERNAL


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while parsing or importing: still no traceback
        return EXIT_INTERRUPTED


def _main(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    try:
        code = args.func(args)
        return EXIT_OK if code is None else int(code)
    except TinyEngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`tinyengine-tf ops | head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EXIT_ERROR
    except SystemExit:
        raise
    except Exception as exc:
        return _internal_error(exc, debug)


if __name__ == "__main__":
    sys.exit(main())
