"""Leave-one-subject-out figures of the fall classifier, also for a "moved" sensor.

The scorer is the shipped model's kind (shapes: logistic regression on shape features,
its C and bias seed; trees: gradient-boosted trees, ``--members``), refitted per fold.

    .venv/bin/python bench/fall_cv.py [--data FILE.npz] [--members N] \
        [--test-transform none rotate gain+5 gain-5 offset noise] \
        [--trigger-profile NAME [--min-turn-deg DEG ...]]

For every subject, models are trained on the other subjects' original recordings and
tested on the held-out subject's recordings as a different sensor would see them:
``rotate`` (worn at a random angle, a new one per recording), ``gain+5``/``gain-5``
(sensitivity 5 % off), ``offset`` (a 0.05 g calibration bias in a random direction),
``noise`` (0.02 g of extra white noise). The pendant trigger runs again on the changed
signal, so triggering is part of the test. Prints one JSON line per transform with the
per-recording metrics (the same definitions as ``carewatch fall eval``) at the shipped
model's threshold; for the untransformed data also with each subject judged at a
threshold chosen without it (``held_out_threshold``).

``--trigger-profile NAME`` (e.g. ``oem-lorawan-pendant``) adds one JSON line judging, from
the same out-of-fold scores of the untransformed data, only the windows that profile's
trigger uploads (its ``min_turn_deg`` posture filter keeps the others back): windows are
matched by (recording, impact sample), which the filter leaves unchanged. It also gives
the daily-activity windows per hour with and without the filter (the airtime cost), the
falls the classifier detects that the filter loses, and the least posture change of a
detected fall (each by its most-turned alerted window: the margin left to the filter).
``--min-turn-deg`` compares other settings of that filter. This is a benchmark, not a
test: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from device_profiles.pendant_trigger import TriggerConfig, posture_change_deg  # noqa: E402
from stream.fall.data import Recordings, load_recordings, run_trigger  # noqa: E402
from stream.fall.errors import ModelError  # noqa: E402
from stream.fall.evaluate import profile_trigger  # noqa: E402
from stream.fall.model import FallClassifier  # noqa: E402
from stream.fall.shapes import ShapeLoso, channels, segments, shape_loso  # noqa: E402
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
    held_out_summary,
    loso_cv,
    per_recording,
    summarize,
    training_labels,
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


def _profile_line(
    rec: Recordings,
    table: WindowTable,
    scores: np.ndarray,
    *,
    threshold: float,
    model_trigger: TriggerConfig,
    name: str,
    min_turn_deg: float | None = None,
) -> dict[str, object]:
    """Figures when only the windows profile ``name``'s trigger uploads are judged.

    ``min_turn_deg`` replaces the profile's posture filter (to compare settings).
    """
    t0 = time.monotonic()
    cfg = profile_trigger(name)
    if min_turn_deg is not None:
        cfg = dataclasses.replace(cfg, min_turn_deg=min_turn_deg)
    if dataclasses.replace(cfg, min_turn_deg=model_trigger.min_turn_deg) != model_trigger or (
        cfg.min_turn_deg < model_trigger.min_turn_deg
    ):
        raise SystemExit(
            f"profile {name}'s trigger {cfg.to_options()} differs from the model's "
            f"{model_trigger.to_options()} in more than a stricter min_turn_deg: its windows "
            "are not a subset of the scored ones"
        )
    row = {
        (int(r), int(a)): k for k, (r, a) in enumerate(zip(table.rec, table.anchor, strict=True))
    }
    keep = np.zeros(len(table.X), dtype=bool)
    suppressed = 0
    for i in range(len(rec)):
        windows, n_sup = run_trigger(rec.at_rate(i, cfg.rate_hz), cfg)
        suppressed += n_sup
        for w in windows:
            anchor = w.start_sample + w.trigger_index
            k = row.get((i, anchor))
            if k is None:
                raise SystemExit(f"recording {i}: uploaded window at {anchor} was never scored")
            keep[k] = True
    if int(keep.sum()) + suppressed != len(table.X):
        raise SystemExit(
            f"{int(keep.sum())} uploaded + {suppressed} suppressed != {len(table.X)} windows"
        )
    sub = dataclasses.replace(
        table,
        X=table.X[keep],
        rec=table.rec[keep],
        anchor=table.anchor[keep],
        label=table.label[keep],
        windows=None if table.windows is None else table.windows[keep],
    )
    sub_scores = scores[keep]
    full = per_recording(table, scores, threshold)
    res = per_recording(sub, sub_scores, threshold)
    s = summarize(sub.is_fall, sub.activity, sub.seconds, res.alerts, res.max_score)
    fall = table.is_fall
    adl_hours = float(table.seconds[~fall].sum()) / 3600.0
    adl_all = int(np.sum(~fall[table.rec]))
    adl_up = int(np.sum(~fall[sub.rec]))
    acts = np.asarray(table.activity)
    per_act = []
    for act in sorted(set(acts[~fall])):
        hours = float(table.seconds[acts == act].sum()) / 3600.0
        n_up = int(np.sum(acts[sub.rec] == act))
        per_act.append((n_up / hours if hours else 0.0, act))
    # How far the filter is from losing a detected fall: the posture change of each
    # detected fall recording's most-turned alerted window, at its smallest.
    turn = np.full(len(table.X), np.nan)
    plain = dataclasses.replace(cfg, min_turn_deg=0)
    for r in np.flatnonzero(fall & (full.alerts > 0)).tolist():
        for w in run_trigger(rec.at_rate(r, cfg.rate_hz), plain)[0]:
            k = row[(r, w.start_sample + w.trigger_index)]
            deg = posture_change_deg(w, cfg.rate_hz)
            turn[k] = 180.0 if deg is None else deg  # undefined: the trigger uploads it
    alerted = np.where(scores >= threshold, turn, -1.0)
    most = np.full(len(fall), -1.0)
    np.maximum.at(most, table.rec, np.nan_to_num(alerted, nan=-1.0))
    least_turn = float(most[fall & (full.alerts > 0)].min())
    return {
        "trigger_profile": name,
        "min_turn_deg": cfg.min_turn_deg,
        "threshold": threshold,
        "recordings": s["recordings"],
        "sensitivity": round(s["sensitivity"], 4),
        "specificity": round(s["specificity"], 4),
        "false_alarms_per_hour": round(s["false_alarms_per_hour"], 3),
        "missed_falls": s["missed_falls"],
        "adl_recordings_with_alarm": s["adl_recordings_with_alarm"],
        # Fall recordings the classifier detects on every window, not on the uploaded ones.
        "detected_falls_lost": int(np.sum(fall & (full.alerts > 0) & (res.alerts == 0))),
        "detected_falls_least_turn_deg": round(least_turn, 1),
        "fall_recordings_without_upload": int(
            np.sum(fall & (np.bincount(sub.rec, minlength=len(fall)) == 0))
        ),
        "windows": {"all": len(table.X), "uploaded": int(keep.sum()), "suppressed": suppressed},
        "adl_windows_per_hour": {
            "all": round(adl_all / adl_hours, 1),
            "uploaded": round(adl_up / adl_hours, 1),
        },
        "worst_adl_by_uploads_per_hour": [f"{k}:{v:.0f}" for v, k in sorted(per_act)[::-1][:3]],
        "held_out_threshold": held_out_summary(sub, sub_scores),
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> int:
    default = REPO / ".." / "shared" / "datasets" / "sisfall" / "sisfall_train.npz"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=default)
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--test-transform", nargs="+", default=["none"], choices=sorted(TRANSFORMS))
    p.add_argument(
        "--trigger-profile",
        default=None,
        metavar="NAME",
        help="also judge only the windows this pendant profile's trigger uploads",
    )
    p.add_argument(
        "--min-turn-deg",
        type=float,
        nargs="+",
        default=None,
        metavar="DEG",
        help="with --trigger-profile: one line per posture filter setting instead of its own",
    )
    args = p.parse_args()

    try:
        clf: FallClassifier | None = FallClassifier.load()
    except ModelError as exc:  # e.g. features changed since the shipped model was trained
        print(f"shipped model not usable ({exc}); using training defaults", file=sys.stderr)
        clf = None
    trigger = clf.trigger if clf else TriggerConfig()
    # Tree parameters: the shipped tree model's, else (a shape model, no model) the
    # training default.
    params = (
        dict(clf.metadata["estimator"].get("params") or PARAM_GRID[0])
        if clf
        else dict(PARAM_GRID[0])
    )
    rec = load_recordings(args.data)
    cache = default_cache_dir()
    base = build_table(rec, trigger, cache_dir=cache)
    base, _ = training_labels(base)
    shapes = clf is not None and clf.kind == "shapes"
    subjects = np.asarray(base.subject)
    loso: ShapeLoso | None = None
    if shapes:
        assert clf is not None and base.windows is not None
        est = clf.metadata["estimator"]
        C, bias_seed = float(est["C"]), int(est["seed"])
        segs = segments(trigger.pre_n, trigger.pre_n + trigger.post_n, trigger.rate_hz)
        ch = channels(base.windows)
        loso = shape_loso(ch, subjects[base.rec], base.label, segs, Cs=[C], seed=bias_seed)
        base_scores = loso.scores[C]
    else:
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
                windows=test.windows,
            )
            if loso is not None and test.windows is not None:
                # the LOSO's own fold models score the changed windows of their subject
                scores = loso.cross(C, channels(test.windows), np.asarray(test.subject)[test.rec])
            else:
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
            "scorer": clf.kind if clf else "trees",
            "members": None if shapes else args.members,
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
            out["held_out_threshold"] = held_out_summary(test, scores)
        print(json.dumps(out), flush=True)
    if args.trigger_profile is not None:
        for deg in args.min_turn_deg or [None]:
            line = _profile_line(
                rec,
                base,
                base_scores,
                threshold=threshold,
                model_trigger=trigger,
                name=args.trigger_profile,
                min_turn_deg=deg,
            )
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
