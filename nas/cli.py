"""``tinyengine-tf nas ...``: TinyNAS from the command line.

    tinyengine-tf nas space --sram 320KB --flash 1MB [--samples N] [--seed S] [--plot PATH]
    tinyengine-tf nas search DATA_DIR --sram 320KB --flash 1MB [--max-trials N] [--epochs E]
                             [--directory RUN] [--workers N | --chief HOST:PORT | --worker ID@HOST:PORT]

tinyengine_tf/cli.py calls ``register(subparsers)``; sizes use its parser (KB = 1024 bytes).
"""
from __future__ import annotations

import argparse
import sys


def _parse_size(text):
    from tinyengine_tf.cli import parse_size
    return parse_size(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("nas", help="TinyNAS: pick a search space, search and train a network for a budget",
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
    _register_search(sub, size_help)


def _register_search(sub, size_help) -> None:
    s = sub.add_parser(
        "search", help="stages 1 + 2: search, train (QAT) and compile a network for an image folder",
        description="TinyNAS on an image-folder dataset (DATA_DIR/<class_name>/*.jpg|png): stage 1 "
                    "picks the resolution and width, stage 2 evolves networks that fit, trains each "
                    "with quantization-aware training and scores the C that tinyengine-tf generates. "
                    "Everything lives in --directory; run the same command again to resume. "
                    "Distributed: start one --chief and any number of --worker processes (KerasTuner's "
                    "chief/worker mode; the directory must be shared by all of them), or let --workers N "
                    "start them on this machine.")
    s.add_argument("data", metavar="DATA_DIR", help="image folders, one per class")
    s.add_argument("--sram", type=_parse_size, required=True, metavar="BYTES", help=f"SRAM budget; {size_help}")
    s.add_argument("--flash", type=_parse_size, required=True, metavar="BYTES", help=f"Flash budget; {size_help}")
    s.add_argument("--directory", "-d", default="tinynas_run", metavar="DIR",
                   help="project directory: state, trials, results (default tinynas_run)")
    s.add_argument("--max-trials", type=_positive, default=20, metavar="N", help="trials in all (default 20)")
    s.add_argument("--epochs", type=_positive, default=10, metavar="E", help="QAT epochs per trial (default 10)")
    s.add_argument("--warmup-epochs", type=int, default=0, metavar="E",
                   help="float epochs before QAT (default 0)")
    s.add_argument("--batch-size", type=_positive, default=32, metavar="B")
    s.add_argument("--resolutions", type=_int_list, default=None, metavar="R,R,...",
                   help="resolutions for stage 1 (default: 48,64,... up to the images' size)")
    s.add_argument("--widths", type=_float_list, default=None, metavar="W,W,...",
                   help="width multipliers for stage 1 (default 0.2,...,1.0); one resolution and one "
                        "width skip stage 1")
    s.add_argument("--stage1-samples", type=_positive, default=1000, metavar="N",
                   help="networks sampled per stage-1 configuration (default 1000)")
    s.add_argument("--val-split", type=float, default=0.2, metavar="F",
                   help="share of each class held out for validation (default 0.2)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lease", type=float, default=120.0, metavar="SECONDS",
                   help="a trial whose worker has not reported for this long goes to another worker")
    role = s.add_mutually_exclusive_group()
    role.add_argument("--workers", type=_positive, default=None, metavar="N",
                      help="run a chief and N worker processes on this machine (127.0.0.1)")
    role.add_argument("--chief", metavar="HOST:PORT",
                      help="serve the search to workers on HOST:PORT (runs stage 1 first)")
    role.add_argument("--worker", metavar="ID@HOST:PORT",
                      help="run trials for the chief at HOST:PORT under tuner id ID")
    s.add_argument("--plot", metavar="PATH", help="write accuracy vs MACs of every trial here (PNG)")
    s.add_argument("--out", metavar="DIR", help="write the best model's C project here")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_search)


def _address(text: str, what: str) -> tuple:
    from tinyengine_tf.errors import TinyEngineError
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TinyEngineError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, port


def cmd_search(args) -> int:
    import os

    from nas.image_folder import load_image_folder
    from tinyengine_tf.errors import TinyEngineError

    if args.chief or args.worker:
        if args.worker:
            tuner_id, sep, addr = args.worker.partition("@")
            if not sep or not tuner_id or "chief" in tuner_id:
                raise TinyEngineError(f"--worker {args.worker!r}: expected ID@HOST:PORT with an ID that "
                                      "does not contain 'chief', e.g. worker1@10.0.0.5:8000")
        else:
            tuner_id, addr = "chief", args.chief
        host, port = _address(addr, "--worker" if args.worker else "--chief")
        os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host,
                          KERASTUNER_ORACLE_PORT=port)
    verbose = 0 if args.quiet else 1
    if args.worker:
        return _run_worker(args, verbose)
    size = None
    if args.resolutions and len(args.resolutions) == 1:
        size = (args.resolutions[0], args.resolutions[0])
    train, val, classes = load_image_folder(args.data, size=size, val_split=args.val_split, seed=args.seed)
    if verbose:
        print(f"{args.data}: {len(train[1]) + len(val[1])} images of {len(classes)} classes "
              f"({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}), "
              f"{len(val[1])} for validation", flush=True)
    kwargs = dict(num_classes=len(classes), sram=args.sram, flash=args.flash, resolutions=args.resolutions,
                  widths=args.widths, max_trials=args.max_trials, epochs=args.epochs,
                  directory=args.directory, seed=args.seed, warmup_epochs=args.warmup_epochs,
                  batch_size=args.batch_size, stage1_samples=args.stage1_samples,
                  lease_seconds=args.lease, verbose=verbose)
    if args.chief:
        from nas.pipeline import (SearchSettings, collect, load_oracle, make_tuner, plan_search,
                                  write_cluster_data)
        spec, arrays, choice = plan_search(train, val, SearchSettings(**kwargs))
        write_cluster_data(args.directory, arrays)
        make_tuner(args.directory, spec, verbose=verbose).search()
        result = collect(args.directory, load_oracle(args.directory), spec, choice)
    else:
        from nas.pipeline import search
        result = search(train, val, workers=args.workers, **kwargs)
    _report(result, args, classes)
    return 0


def _run_worker(args, verbose: int) -> int:
    import time
    from pathlib import Path

    from nas.stage2_worker import run
    from tinyengine_tf.errors import TinyEngineError

    directory = Path(args.directory)
    deadline = time.time() + 3600
    while not ((directory / "search.json").exists() and (directory / "data.npz").exists()):
        if time.time() > deadline:
            raise TinyEngineError(f"{directory}: the chief wrote no search.json/data.npz within an hour; "
                                  "start the chief first, with the same --directory (shared by all)")
        time.sleep(2)
    return run(directory, verbose)


def _report(result, args, classes) -> None:
    if result.arch is None:
        print("no trial completed; see the trials' failure.txt under", args.directory)
        return
    print(result.trials.to_markdown())
    print(f"\nbest: {result.arch.short()} (trial {result.best_trial}): accuracy of the generated C "
          f"{result.accuracy:.4f} on {len(classes)} classes; peak SRAM {result.compiled.peak_sram:,} B, "
          f"Flash {result.compiled.flash:,} B")
    if args.plot:
        result.plot(args.plot)
        print(f"wrote {args.plot}")
    if args.out:
        result.compiled.save(args.out)
        print(f"wrote {args.out}")
    sys.stdout.flush()


def _positive(text) -> int:
    from tinyengine_tf.cli import positive_int
    return positive_int(text)


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
