"""Leave-one-subject-out figures of the fall classifier, also for a "moved" sensor.

    .venv/bin/python bench/fall_cv.py [--data FILE.npz] [--members N] \
        [--test-transform none rotate gain+5 gain-5 offset noise]

For every subject, models are trained on the other subjects' original recordings and
tested on the held-out subject's recordings as a different sensor would see them:
``rotate`` (worn at a random angle, a new one per recording), ``gain+5``/``gain-5``
(sensitivity 5 % off), ``offset`` (a 0.05 g calibration bias in a random direction),
``noise`` (0.02 g of extra white noise). The pendant trigger runs again on the changed
signal, so triggering is part of the test. Prints one JSON line per transform with the
per-recording metrics (the same definitions as ``carewatch fall eval``) at the shipped
model's threshold; for the untransformed data also with each subject judged at a
threshold chosen without it (``held_out_threshold``). This is a benchmark, not a test:
it takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # fair on a shared machine; as fast here

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device_profiles.pendant_trigger import TriggerConfig  # noqa: E402
from stream.fall.data import load_recordings  # noqa: E402
from stream.fall.errors import ModelError  # noqa: E402
from stream.fall.model import FallClassifier  # noqa: E402
from stream.fall.table import (  # noqa: E402
    UNLABELLED,
    WindowTable,
    build_table,
    default_cache_dir,
    random_rotation,
    rotate_recording,
)
from stream.fall.train import (  # noqa: E402
    PARAM_GRID,
    _fit_members,
    _members_proba,
    choose_threshold,
    held_out_threshold_alerts,
    loso_cv,
    per_recording,
    relabel_falls,
    summarize,
)

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _gain(f: float) -> Transform:
    return lambda a, rng: a * f


def _offset(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return a + 0.05 * random_rotation(rng)[:, 0]


def _noise(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return a + rng.normal(0.0, 0.02, a.shape)


TRANSFORMS: dict[str, Transform | None] = {
    "none": None,
    "rotate": rotate_recording,
    "gain+5": _gain(1.05),
    "gain-5": _gain(0.95),
    "offset": _offset,
    "noise": _noise,
}


def _cross(
    train: WindowTable, test: WindowTable, params: dict[str, object], members: int
) -> np.ndarray:
    subjects = np.asarray(train.subject)
    scores = np.zeros(len(test.X))
    for subj in sorted(set(train.subject)):
        tr = (subjects[train.rec] != subj) & (train.label >= 0)
        te = subjects[test.rec] == subj
        if te.any():
            models = _fit_members(train.X[tr], train.label[tr], params, 0, members)
            scores[te] = _members_proba(models, test.X[te])
    return scores


def main() -> int:
    default = REPO / ".." / "shared" / "datasets" / "sisfall" / "sisfall_train.npz"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=default)
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--test-transform", nargs="+", default=["none"], choices=sorted(TRANSFORMS))
    args = p.parse_args()

    try:
        clf: FallClassifier | None = FallClassifier.load()
    except ModelError as exc:  # e.g. features changed since the shipped model was trained
        print(f"shipped model not usable ({exc}); using training defaults", file=sys.stderr)
        clf = None
    trigger = clf.trigger if clf else TriggerConfig()
    params = dict(clf.metadata["estimator"]["params"]) if clf else dict(PARAM_GRID[0])
    rec = load_recordings(args.data)
    cache = default_cache_dir()
    base = build_table(rec, trigger, cache_dir=cache)
    # The same labelling as training: heuristic, then one out-of-fold relabelling round
    # with the first candidate of the grid (as `carewatch fall train` does).
    first = loso_cv(base, PARAM_GRID[0], members=1)
    base, _ = relabel_falls(base, first.window_scores)
    base_scores = loso_cv(base, params, members=args.members).window_scores
    threshold = clf.threshold if clf else round(choose_threshold(base, base_scores)[0], 6)
    for name in args.test_transform:
        t0 = time.monotonic()
        fn = TRANSFORMS[name]
        if fn is None:
            test, scores = base, base_scores
        else:
            test = build_table(rec, trigger, transform=fn, transform_name=name, cache_dir=cache)
            test = WindowTable(
                X=test.X,
                rec=test.rec,
                anchor=test.anchor,
                label=np.full(len(test.X), UNLABELLED),
                subject=test.subject,
                activity=test.activity,
                is_fall=test.is_fall,
                seconds=test.seconds,
            )
            scores = _cross(base, test, params, args.members)
        res = per_recording(test, scores, threshold)
        s = summarize(test.is_fall, test.activity, test.seconds, res.alerts, res.max_score)
        worst_adl = sorted(
            ((v["alerts"], k) for k, v in s["per_activity"].items() if not v["is_fall"]),
            reverse=True,
        )[:3]
        worst_fall = sorted(
            ((v["sensitivity"], k) for k, v in s["per_activity"].items() if v["is_fall"])
        )[:3]
        out = {
            "transform": name,
            "threshold": threshold,
            "members": args.members,
            "recordings": s["recordings"],
            "sensitivity": round(s["sensitivity"], 4),
            "specificity": round(s["specificity"], 4),
            "false_alarms_per_hour": round(s["false_alarms_per_hour"], 3),
            "missed_falls": s["missed_falls"],
            "adl_recordings_with_alarm": s["adl_recordings_with_alarm"],
            "worst_adl_by_alerts": [f"{k}:{n}" for n, k in worst_adl],
            "worst_falls_by_sensitivity": [f"{k}:{v:.3f}" for v, k in worst_fall],
            "seconds": round(time.monotonic() - t0, 1),
        }
        if fn is None:
            # The same scores, each subject judged at a threshold chosen without it.
            alerts, thrs = held_out_threshold_alerts(test, scores)
            h = summarize(test.is_fall, test.activity, test.seconds, alerts, res.max_score)
            out["held_out_threshold"] = {
                "thresholds": [round(min(thrs), 3), round(max(thrs), 3)],
                "sensitivity": round(h["sensitivity"], 4),
                "specificity": round(h["specificity"], 4),
                "false_alarms_per_hour": round(h["false_alarms_per_hour"], 3),
                "missed_falls": h["missed_falls"],
                "adl_recordings_with_alarm": h["adl_recordings_with_alarm"],
            }
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
