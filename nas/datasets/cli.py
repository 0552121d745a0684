"""``tinyengine-tf data ...``: make datasets offline.

    tinyengine-tf data speech-commands OUT [--per-word N] [--seed S] [--workers W] [--quiet]
    tinyengine-tf data vww-synthetic OUT [--per-class N] [--resolution R] [--seed S] [--quiet]

tinyengine_tf/cli.py calls ``register(subparsers)``. Both commands resume an interrupted run.
"""
from __future__ import annotations

import argparse


def _positive(text) -> int:
    from tinyengine_tf.cli import positive_int
    return positive_int(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="make datasets offline (synthetic speech, synthetic VWW)",
                              description="Write datasets in the official layouts, with no download.")
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True
    s = sub.add_parser(
        "speech-commands", help="Speech Commands v2 layout, spoken by espeak-ng (and flite)",
        description="Synthesise the ten keywords and the 25 other words of Speech Commands v2 with "
                    "espeak-ng (and flite when installed) across voices, speeds, pitches and "
                    "levels, with room echo and noise; write the v2 layout with split lists, "
                    "split by voice. Resumes an interrupted run.")
    s.add_argument("out", metavar="OUT", help="output folder")
    s.add_argument("--per-word", type=_positive, default=100, metavar="N",
                   help="clips per word (default 100)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="synthesiser processes at once (default: all cores)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_speech_commands)

    v = sub.add_parser(
        "vww-synthetic", help="a SYNTHETIC stand-in for Visual Wake Words (not VWW)",
        description="Render person/ and non_person/ JPEGs (figures vs none on textured "
                    "backgrounds) in MLPerf Tiny's directory form. Not the VWW dataset.")
    v.add_argument("out", metavar="OUT", help="output folder")
    v.add_argument("--per-class", type=_positive, default=500, metavar="N",
                   help="images per class (default 500)")
    v.add_argument("--resolution", type=_positive, default=96, metavar="PX",
                   help="image side in pixels (default 96)")
    v.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_vww_synthetic)


def cmd_speech_commands(args) -> int:
    from nas.datasets.speech_synth import synthesize_speech_commands
    s = synthesize_speech_commands(args.out, per_word=args.per_word, seed=args.seed,
                                   workers=args.workers, progress=not args.quiet)
    print(f"{s.out}: {s.clips:,} clips ({s.written:,} new, {s.clips_per_second:.1f} clips/s), "
          f"voices train/val/test {s.speakers['train']}/{s.speakers['val']}/{s.speakers['test']}")
    return 0


def cmd_vww_synthetic(args) -> int:
    from nas.datasets.synthetic_vww import make_synthetic_vww
    out = make_synthetic_vww(args.out, per_class=args.per_class, resolution=args.resolution,
                             seed=args.seed, progress=not args.quiet)
    print(f"{out}: {2 * args.per_class:,} SYNTHETIC images ({args.resolution}x{args.resolution}); "
          "not Visual Wake Words")
    return 0
