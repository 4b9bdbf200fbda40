"""Leave-one-subject-out figures of the shape-feature fall model (stream/fall/shapes.py).

    .venv/bin/python bench/fall_shapes_cv.py [--data FILE.npz] [--C 0.01 ...] [--seeds 0 ...]
        [--per-conv K] [--no-reference]

The same windows, labels and decision rules as ``bench/fall_cv.py`` (the shipped
pendant trigger over every whole recording; the fall window of each fall recording
chosen by one out-of-fold relabelling round), scored by a logistic regression on the
random-convolution PPV features of three orientation-invariant channels instead of
gradient-boosted trees on the hand-made features. For every held-out subject the biases
and the regression are fitted on the other 26 only. Prints one JSON line per ``--C`` and
bias ``--seed``, one for the mean of the seeds' scores when several are given, and one
for the shipped trees (reference), each at the threshold chosen on all out-of-fold scores
("pooled", as the model card's first row) and with each subject's threshold chosen
without it ("held_out_threshold"). A benchmark, not a test: about 10 minutes per seed on
2 cores (the window table is cached after the first run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # fair on a shared machine; as fast here

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.fall.data import load_recordings  # noqa: E402
from stream.fall.model import FallClassifier  # noqa: E402
from stream.fall.shapes import channels, segments, shape_loso  # noqa: E402
from stream.fall.table import WindowTable, build_table, default_cache_dir  # noqa: E402
from stream.fall.train import (  # noqa: E402
    PARAM_GRID,
    choose_threshold,
    held_out_summary,
    loso_cv,
    per_recording,
    summarize,
    training_labels,
)


def figures(name: str, table: WindowTable, scores: np.ndarray) -> dict[str, object]:
    """Per-recording figures at the pooled and at the held-out thresholds."""
    threshold, _ = choose_threshold(table, scores)
    res = per_recording(table, scores, threshold)
    s = summarize(table.is_fall, table.activity, table.seconds, res.alerts, res.max_score)
    subjects = np.asarray(table.subject)
    activities = np.asarray(table.activity)

    def listed(sel: np.ndarray) -> list[str]:
        return [f"{subjects[i]}/{activities[i]}" for i in np.flatnonzero(sel)]

    return {
        "model": name,
        "threshold": round(threshold, 3),
        "sensitivity": round(s["sensitivity"], 4),
        "specificity": round(s["specificity"], 4),
        "false_alarms_per_hour": round(s["false_alarms_per_hour"], 3),
        "missed_falls": s["missed_falls"],
        "adl_recordings_with_alarm": s["adl_recordings_with_alarm"],
        "missed": listed(table.is_fall & (res.alerts == 0)),
        "alarmed": listed(~table.is_fall & (res.alerts > 0)),
        "held_out_threshold": held_out_summary(table, scores),
    }


def main() -> int:
    default = REPO.parent / "shared" / "datasets" / "sisfall" / "sisfall_train.npz"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=default)
    p.add_argument("--C", type=float, nargs="+", default=[0.01], help="inverse L2 strengths")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="bias seeds")
    p.add_argument(
        "--per-conv", type=int, default=1, help="biases per convolution (MiniRocket-style)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the trees' line")
    args = p.parse_args()

    def say(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    clf = FallClassifier.load()
    trigger = clf.trigger
    rec = load_recordings(args.data)
    table = build_table(rec, trigger, cache_dir=default_cache_dir(), progress=say)
    if table.windows is None:
        raise SystemExit("the window table holds no windows")
    ch = channels(table.windows)
    table, changed = training_labels(table)
    say(f"{len(table.X)} windows, {changed} fall recordings relabelled")
    if not args.no_reference:
        # The shipped model's tree parameters when it is a tree model, else the ones the
        # tree training chose by LOSO (the more regularised candidate; model card, "Model").
        params = dict(clf.metadata["estimator"].get("params") or PARAM_GRID[1])
        ref = loso_cv(table, params, members=3).window_scores
        print(json.dumps(figures("trees (shipped pipeline, 3 members)", table, ref)), flush=True)
    segs = segments(trigger.pre_n, trigger.pre_n + trigger.post_n, trigger.rate_hz)
    groups = np.asarray(table.subject)[table.rec]
    by_c: dict[float, list[np.ndarray]] = {float(c): [] for c in args.C}
    for seed in args.seeds:
        t0 = time.monotonic()
        out = shape_loso(
            ch,
            groups,
            table.label,
            segs,
            Cs=args.C,
            seed=seed,
            per_conv=args.per_conv,
            progress=say,
        )
        for c, scores in out.scores.items():
            by_c[c].append(scores)
            name = f"shapes C={c} seed={seed}" + (
                f" per_conv={args.per_conv}" if args.per_conv > 1 else ""
            )
            line = figures(name, table, scores)
            line["seconds"] = round(time.monotonic() - t0, 1)
            print(json.dumps(line), flush=True)
    if len(args.seeds) > 1:
        for c, runs in by_c.items():
            name = f"shapes C={c} mean of seeds {args.seeds}"
            print(json.dumps(figures(name, table, np.mean(runs, axis=0))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
