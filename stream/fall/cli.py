"""``carewatch fall``: train, evaluate and inspect the fall classifier.

    carewatch fall train --data FILE.npz --out DIR [--scorer shapes|trees] [--quick]
                         [--cache DIR | --no-cache]
    carewatch fall eval --data FILE.npz [--per-recording] [--model DIR_OR_FILE] [--profile NAME]
    carewatch fall info [--model DIR_OR_FILE]

``eval`` prints one JSON object (or, with ``--per-recording``, one JSON line per
recording) on stdout; ``--profile`` runs the on-device trigger of that device profile
(e.g. ``oem-lorawan-pendant``, which uploads only windows with a posture change) instead
of the one the model was trained with. Progress and errors go to stderr. Exit status: 0
on success, 2 on bad arguments, unreadable data, an unknown profile or an unusable model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device_profiles.errors import CarewatchError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carewatch fall", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model on a recordings file (SisFall npz format)")
    t.add_argument("--data", required=True, type=Path, help="recordings file (.npz)")
    t.add_argument("--out", required=True, type=Path, help="directory for fall_model.json")
    t.add_argument("--quick", action="store_true", help="one candidate, one member (tests)")
    t.add_argument(
        "--scorer",
        choices=("shapes", "trees"),
        default="shapes",
        help="shapes (default: logistic regression on shape features) or trees",
    )
    t.add_argument(
        "--members", type=int, default=None, help="tree ensemble members (default 3; trees)"
    )
    t.add_argument("--seed", type=int, default=0)
    cache = t.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path, default=None, help="feature cache directory")
    cache.add_argument("--no-cache", action="store_true", help="do not cache features")

    e = sub.add_parser("eval", help="evaluate a model on a recordings file")
    e.add_argument("--data", required=True, type=Path, help="recordings file (.npz)")
    e.add_argument("--model", type=Path, default=None, help="model file or directory")
    e.add_argument(
        "--per-recording", action="store_true", help="one JSON line per recording instead"
    )
    e.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help="use this pendant profile's on-device trigger instead of the model's",
    )

    i = sub.add_parser("info", help="print a model's metadata and version notes")
    i.add_argument("--model", type=Path, default=None, help="model file or directory")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``carewatch fall``."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if args.cmd == "train":
            from stream.fall.table import default_cache_dir
            from stream.fall.train import N_MEMBERS, PARAM_GRID, SHAPE_C_GRID, train

            grid = PARAM_GRID[:1] if args.quick else PARAM_GRID
            members = args.members if args.members is not None else (1 if args.quick else N_MEMBERS)
            if members < 1:
                print("carewatch fall train: --members must be >= 1", file=sys.stderr)
                return 2
            cache = None if args.no_cache else (args.cache or default_cache_dir())
            train(
                args.data,
                args.out,
                grid=grid,
                members=members,
                seed=args.seed,
                cache_dir=cache,
                progress=progress,
                scorer=args.scorer,
                c_grid=(0.01,) if args.quick else SHAPE_C_GRID,
            )
            return 0

        from stream.fall.model import FallClassifier

        clf = FallClassifier.load(args.model)
        for note in clf.notes:
            progress(f"note: {note}")
        if args.cmd == "info":
            print(json.dumps(clf.metadata | {"notes": clf.notes}, indent=2))
            return 0

        from stream.fall.evaluate import RecordingScore, evaluate, profile_trigger

        if args.profile is not None:
            cfg = profile_trigger(args.profile)
            model_opts = clf.trigger.to_options()
            differ = sorted(
                k
                for k, v in cfg.to_options().items()
                if k != "min_turn_deg" and model_opts.get(k) != v
            )
            if differ:
                progress(
                    f"note: profile {args.profile} triggers unlike the model's training "
                    f"({', '.join(differ)}): its windows are not what the model learnt from"
                )

        if args.per_recording:

            def emit(r: RecordingScore) -> None:
                print(json.dumps(r.line()), flush=True)

            evaluate(args.data, clf, trigger_profile=args.profile, on_recording=emit)
        else:
            print(json.dumps(evaluate(args.data, clf, trigger_profile=args.profile)))
        return 0
    except CarewatchError as exc:
        print(f"carewatch fall {args.cmd}: {exc}", file=sys.stderr)
        return 2
