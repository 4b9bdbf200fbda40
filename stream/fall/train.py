"""Train the fall model: leave-one-subject-out model selection, threshold, export.

Every decision is made on per-recording results of leave-one-subject-out (LOSO)
cross-validation: the windows of a recording are near duplicates and one person's
movements resemble each other, so a random split of windows would grade the model on
people it has already seen. A recording counts as detected (a fall) or as a false alarm
(a daily activity) when any window the pendant uploads for it scores above the threshold,
which is exactly how ``carewatch fall eval`` counts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_profiles.pendant_trigger import TriggerConfig
from stream.fall.data import Recordings, load_recordings
from stream.fall.errors import ModelError
from stream.fall.features import FEATURE_NAMES, FEATURE_VERSION
from stream.fall.model import (
    MODEL_FILENAME,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    FallClassifier,
    members_digest,
)
from stream.fall.table import ADL, FALL, UNLABELLED, WindowTable, build_table, default_cache_dir
from stream.fall.trees import TreeEnsemble, export_hist_gradient_boosting

FloatArray = npt.NDArray[np.float64]

#: Features whose effect on the fall score may only go one way (physics, not data): a
#: harder impact, a longer free fall or more stillness afterwards never make a fall less
#: likely. Constraining them keeps the model sane for people and devices unlike the
#: training set (e.g. a harder impact than any seen in training).
MONOTONIC: dict[str, int] = {
    "peak_g": 1,
    "window_max_g": 1,
    "impact_energy": 1,
    "jerk_max": 1,
    "freefall_s": 1,
    "fall_velocity_mag": -1,
    "after_still_frac": 1,
}

#: Candidate hyper-parameters, compared by LOSO (the first is the default).
PARAM_GRID: tuple[dict[str, Any], ...] = (
    {
        "max_iter": 200,
        "learning_rate": 0.1,
        "max_leaf_nodes": 8,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
    },
    {
        "max_iter": 150,
        "learning_rate": 0.1,
        "max_leaf_nodes": 6,
        "min_samples_leaf": 40,
        "l2_regularization": 2.0,
    },
)

#: Ensemble members (bagging over seeds) averaged in the shipped model.
N_MEMBERS = 3

#: Scorers ``carewatch fall train`` can fit (see :mod:`stream.fall.model`); the first is
#: the default.
SCORERS = ("shapes", "trees")
#: Inverse L2 strengths of the shape model's logistic regression, compared by LOSO.
#: 0.1 and 0.3 joined once 0.03, then the largest, had the lowest cost: an optimum at the
#: edge of a grid says the grid is too small.
SHAPE_C_GRID: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)

DEFAULT_TRIGGER = TriggerConfig()


@dataclass
class RecordingResult:
    """Per-recording decision counts at a threshold (used by CV and eval)."""

    alerts: npt.NDArray[np.int64]
    max_score: FloatArray


@dataclass
class CVResult:
    """Out-of-fold scores of every window and the per-recording summary."""

    params: dict[str, Any]
    window_scores: FloatArray
    max_score: FloatArray
    summary: dict[str, Any] = field(default_factory=dict)


def _make_estimator(params: Mapping[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    cst = [MONOTONIC.get(name, 0) for name in FEATURE_NAMES]
    return HistGradientBoostingClassifier(
        **params, monotonic_cst=cst, early_stopping=False, random_state=seed
    )


def _fit_members(
    X: FloatArray, y: npt.NDArray[np.int64], params: Mapping[str, Any], seed: int, n: int
) -> list[Any]:
    """``n`` models on bootstrap-free subsamples of the rows (bagging by seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if n == 1:
            idx = np.arange(len(X))
        else:
            # 85 % subsamples, stratified, so the members differ and their mean is smoother.
            idx = np.concatenate(
                [
                    rng.choice(cls, size=max(1, int(0.85 * len(cls))), replace=False)
                    for cls in (np.flatnonzero(y == FALL), np.flatnonzero(y == ADL))
                ]
            )
        est = _make_estimator(params, seed + k)
        est.fit(X[idx], y[idx])
        out.append(est)
    return out


def _members_proba(models: Sequence[Any], X: FloatArray) -> FloatArray:
    return np.asarray(np.mean([m.predict_proba(X)[:, 1] for m in models], axis=0))


def per_recording(
    table: WindowTable, window_scores: FloatArray, threshold: float
) -> RecordingResult:
    """Alerts and highest score per recording for window scores at a threshold."""
    alerts = np.zeros(table.n_recordings, dtype=np.int64)
    np.add.at(alerts, table.rec, (window_scores >= threshold).astype(np.int64))
    mx = np.zeros(table.n_recordings)
    np.maximum.at(mx, table.rec, window_scores)
    return RecordingResult(alerts, mx)


def summarize(
    is_fall: npt.NDArray[np.bool_],
    activity: Sequence[str],
    seconds: FloatArray,
    alerts: npt.NDArray[np.int64],
    max_score: FloatArray,
) -> dict[str, Any]:
    """The metrics ``carewatch fall eval`` prints, from per-recording alert counts."""
    fall = np.asarray(is_fall, dtype=bool)
    n_fall = int(fall.sum())
    n_adl = int((~fall).sum())
    adl_hours = float(seconds[~fall].sum()) / 3600.0
    per_activity: dict[str, dict[str, Any]] = {}
    acts = np.asarray(activity)
    for act in sorted(set(activity)):
        sel = acts == act
        alerted = int(np.sum(alerts[sel] > 0))
        falls_here = bool(fall[sel].all())
        entry: dict[str, Any] = {
            "recordings": int(sel.sum()),
            "is_fall": falls_here,
            "alerted": alerted,
            "alerts": int(alerts[sel].sum()),
        }
        if falls_here:
            entry["sensitivity"] = alerted / int(sel.sum())
        else:
            entry["specificity"] = 1.0 - alerted / int(sel.sum())
        entry["mean_max_score"] = round(float(np.mean(max_score[sel])), 4)
        per_activity[act] = entry
    return {
        "recordings": len(fall),
        "falls": n_fall,
        "adls": n_adl,
        "sensitivity": (float(np.sum(alerts[fall] > 0)) / n_fall) if n_fall else None,
        "specificity": (float(np.sum(alerts[~fall] == 0)) / n_adl) if n_adl else None,
        "false_alarms_per_hour": (float(alerts[~fall].sum()) / adl_hours) if adl_hours else None,
        "adl_hours": round(adl_hours, 3),
        "missed_falls": int(np.sum(alerts[fall] == 0)),
        "adl_recordings_with_alarm": int(np.sum(alerts[~fall] > 0)),
        "per_activity": per_activity,
    }


#: A missed fall weighs this many false alarms (as fractions of their classes) when the
#: threshold is chosen: a false alarm costs a responder's call, a missed fall can cost a
#: life lying on the floor for hours.
MISS_WEIGHT = 2.0


def choose_threshold(
    table: WindowTable, window_scores: FloatArray, miss_weight: float = MISS_WEIGHT
) -> tuple[float, float]:
    """Threshold with the lowest per-recording cost, centred on its plateau in log-odds.

    Returns (threshold, cost) with cost = ``miss_weight`` x miss rate + false alerts per
    daily-activity recording. False alerts are counted one by one, as the false alarms
    per hour are and as responders receive them: a model that alerts ten times on one
    jog is worse than one that alerts once, though each spoils one recording. (With at
    most one alert per recording this is the share of recordings alarmed.) The centre of
    the range of equally good thresholds leaves the widest margin for other people and
    devices, whose scores drift.
    """
    candidates = np.linspace(0.02, 0.98, 193)
    fall = table.is_fall
    errs = []
    for thr in candidates:
        res = per_recording(table, window_scores, float(thr))
        miss = float(np.mean(res.alerts[fall] == 0)) if fall.any() else 0.0
        fa = float(np.mean(res.alerts[~fall])) if (~fall).any() else 0.0
        errs.append(miss_weight * miss + fa)
    e = np.asarray(errs)
    best = float(e.min())
    ok = np.flatnonzero(e <= best + 1e-12)
    # The longest run of consecutive optimal candidates, then its middle in log-odds.
    runs: list[list[int]] = [[int(ok[0])]]
    for k in ok[1:]:
        if k == runs[-1][-1] + 1:
            runs[-1].append(int(k))
        else:
            runs.append([int(k)])
    run = max(runs, key=len)
    lo, hi = candidates[run[0]], candidates[run[-1]]
    logit = (math.log(lo / (1 - lo)) + math.log(hi / (1 - hi))) / 2
    return 1.0 / (1.0 + math.exp(-logit)), best


def held_out_threshold_alerts(
    table: WindowTable, window_scores: FloatArray, miss_weight: float = MISS_WEIGHT
) -> tuple[npt.NDArray[np.int64], list[float]]:
    """Per-recording alerts when each subject's threshold is chosen without that subject.

    :func:`choose_threshold` on all out-of-fold scores picks the threshold with the
    held-out subjects' own results in view, which flatters the figures. Here, for every
    subject, the threshold is chosen on the other subjects' scores only and then applied
    to that subject's windows, as it would be to a new person. Returns the alert count of
    every recording and the threshold used for each subject (sorted by subject).
    """
    subjects = np.asarray(table.subject)
    alerts = np.zeros(table.n_recordings, dtype=np.int64)
    thresholds: list[float] = []
    for subj in sorted(set(table.subject)):
        keep = subjects != subj
        remap = np.full(table.n_recordings, -1, dtype=np.int64)
        remap[keep] = np.arange(int(keep.sum()))
        rows = keep[table.rec]
        others = WindowTable(
            X=table.X[rows],
            rec=remap[table.rec[rows]],
            anchor=table.anchor[rows],
            label=table.label[rows],
            subject=tuple(subjects[keep]),
            activity=tuple(np.asarray(table.activity)[keep]),
            is_fall=table.is_fall[keep],
            seconds=table.seconds[keep],
        )
        thr, _ = choose_threshold(others, window_scores[rows], miss_weight)
        thresholds.append(thr)
        held = ~rows
        np.add.at(alerts, table.rec[held], (window_scores[held] >= thr).astype(np.int64))
    return alerts, thresholds


def relabel_falls(table: WindowTable, window_scores: FloatArray) -> tuple[WindowTable, int]:
    """Move each fall recording's FALL label to its best-scoring window (out-of-fold).

    The first labels come from a heuristic (:func:`stream.fall.table.label_windows`);
    scores from models that never saw the recording's subject then pick, among the
    recording's windows, the one that looks most like the falls of everybody else
    (one round of multiple-instance self-training). Returns the table and how many
    recordings changed.
    """
    label = table.label.copy()
    changed = 0
    for i in np.flatnonzero(table.is_fall):
        rows = np.flatnonzero(table.rec == i)
        if len(rows) < 2:
            continue
        best = rows[int(np.argmax(window_scores[rows]))]
        if label[best] != FALL:
            changed += 1
        label[rows] = UNLABELLED
        label[best] = FALL
    return dataclasses.replace(table, label=label), changed


def loso_cv(
    table: WindowTable,
    params: Mapping[str, Any],
    *,
    seed: int = 0,
    members: int = 1,
    progress: Callable[[str], None] | None = None,
) -> CVResult:
    """Leave-one-subject-out scores of every window (models never see the subject)."""
    subjects = np.asarray(table.subject)
    window_subject = subjects[table.rec]
    scores = np.zeros(len(table.X))
    for k, subj in enumerate(sorted(set(table.subject))):
        test = window_subject == subj
        train = (~test) & (table.label >= 0)
        if not test.any():
            continue
        models = _fit_members(table.X[train], table.label[train], params, seed, members)
        scores[test] = _members_proba(models, table.X[test])
        if progress is not None:
            progress(f"  fold {k + 1}: held out {subj}")
    mx = per_recording(table, scores, 1.0).max_score
    return CVResult(dict(params), scores, mx)


def training_labels(
    table: WindowTable, params: Mapping[str, Any] = PARAM_GRID[0], seed: int = 0
) -> tuple[WindowTable, int]:
    """The labels training uses: the heuristic's, then one out-of-fold relabelling round
    (:func:`relabel_falls`) scored by one-member trees of ``params``. Returns the table and
    how many fall recordings changed. The benchmarks call it too, so that they judge the
    fall windows training chose."""
    first = loso_cv(table, params, seed=seed, members=1)
    return relabel_falls(table, first.window_scores)


def train(
    data: str | Path,
    out_dir: str | Path,
    *,
    trigger: TriggerConfig = DEFAULT_TRIGGER,
    grid: Sequence[Mapping[str, Any]] = PARAM_GRID,
    members: int = N_MEMBERS,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    scorer: str = SCORERS[0],
    c_grid: Sequence[float] = SHAPE_C_GRID,
) -> dict[str, Any]:
    """Select, fit and write a model to ``out_dir/fall_model.json``; returns its document.

    ``scorer`` is ``shapes`` (logistic regression on shape features, ``c_grid`` compared
    by LOSO) or ``trees`` (gradient-boosted trees on the hand-made features, ``grid``
    compared by LOSO, ``members`` bagged). Either way the fall window of each fall
    recording is first located by trees trained without its subject.
    """
    if scorer not in SCORERS:
        raise ModelError(f"unknown scorer {scorer!r}; known: {', '.join(SCORERS)}")
    say = progress or (lambda _msg: None)
    rec = load_recordings(data)
    say(f"{len(rec)} recordings, {rec.rate_hz:g} Hz -> {trigger.rate_hz} Hz")
    table = build_table(rec, trigger, cache_dir=cache_dir, progress=say)
    n_fall = int(np.sum(table.label == FALL))
    n_adl = int(np.sum(table.label == ADL))
    say(f"{len(table.X)} windows ({n_fall} fall, {n_adl} daily activity)")
    if n_fall < 2 or n_adl < 2 or len(set(table.subject)) < 2:
        raise ModelError("training needs fall and daily-activity windows from several subjects")

    say("LOSO cross-validation to locate the fall in each fall recording")
    table, changed = training_labels(table, grid[0], seed)
    say(f"  fall window moved in {changed} fall recordings")
    if scorer == "shapes":
        return _train_shapes(
            data, out_dir, rec, table, trigger, c_grid=c_grid, seed=seed, changed=changed, say=say
        )

    results: list[tuple[float, int, CVResult, float]] = []
    for k, params in enumerate(grid):
        say(f"LOSO cross-validation, candidate {k + 1}/{len(grid)}: {dict(params)}")
        cv = loso_cv(table, params, seed=seed, members=1)
        thr, err = choose_threshold(table, cv.window_scores)
        results.append((err, k, cv, thr))
        say(f"  per-recording cost {err:.4f} at threshold {thr:.3f}")
    err, best_k, best_cv, _ = min(results, key=lambda r: (r[0], r[1]))
    params = dict(grid[best_k])

    say(f"LOSO cross-validation of the chosen model ({members} members)")
    cv = loso_cv(table, params, seed=seed, members=members) if members > 1 else best_cv
    threshold, cv_err = choose_threshold(table, cv.window_scores)
    res = per_recording(table, cv.window_scores, threshold)
    cv_summary = summarize(table.is_fall, table.activity, table.seconds, res.alerts, res.max_score)
    say(
        f"  LOSO: sensitivity {cv_summary['sensitivity']:.4f}, specificity "
        f"{cv_summary['specificity']:.4f}, {cv_summary['false_alarms_per_hour']:.3f} false "
        f"alarms/h at threshold {threshold:.3f}"
    )

    train_rows = table.label >= 0
    X, y = table.X[train_rows], table.label[train_rows]
    say("fitting the final model on all subjects")
    models = _fit_members(X, y, params, seed, members)
    ensembles: list[TreeEnsemble] = [export_hist_gradient_boosting(m, X) for m in models]
    # Self-test rows: a spread of real windows of both classes with sklearn's own scores.
    rng = np.random.default_rng(seed)
    pick = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == cls), size=min(8, int(np.sum(y == cls))), replace=False)
            for cls in (FALL, ADL)
        ]
    )
    selftest_X = X[pick]
    selftest_scores = _members_proba(models, selftest_X)

    doc: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "threshold": round(threshold, 6),
        "trigger": trigger.to_options(),
        "estimator": {
            "kind": "HistGradientBoostingClassifier (exported trees, mean of members)",
            "params": params,
            "monotonic": MONOTONIC,
            "members": members,
            "seed": seed,
        },
        "training": _provenance(data, rec, table),
        "cv": {
            "protocol": "leave-one-subject-out, per recording, any window >= threshold",
            "miss_weight": MISS_WEIGHT,
            "fall_windows_relabelled": changed,
            "candidates": [
                {"params": dict(grid[k]), "errors": round(e, 6), "threshold": round(t, 4)}
                for e, k, _, t in sorted(results, key=lambda r: r[1])
            ],
            "errors": round(cv_err, 6),
            **{k: v for k, v in cv_summary.items()},
        },
        "members": [e.to_dict() for e in ensembles],
        "members_sha256": members_digest([e.to_dict() for e in ensembles]),
        "selftest": {
            "features": selftest_X.tolist(),
            "scores": [float(s) for s in selftest_scores],
        },
    }
    return _write_model(doc, out_dir, say)


def _write_model(
    doc: dict[str, Any], out_dir: str | Path, say: Callable[[str], None]
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / MODEL_FILENAME
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    FallClassifier.load(target)  # the written file must load and pass its own self-test
    say(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB)")
    return doc


def _provenance(data: str | Path, rec: Recordings, table: WindowTable) -> dict[str, Any]:
    import sklearn

    return {
        "data_file": Path(data).name,
        "data_sha256": rec.sha256,
        "recordings": len(rec),
        "subjects": sorted(set(rec.subject)),
        "source_rate_hz": rec.rate_hz,
        "windows_fall": int(np.sum(table.label == FALL)),
        "windows_adl": int(np.sum(table.label == ADL)),
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


def held_out_summary(table: WindowTable, scores: FloatArray) -> dict[str, Any]:
    """Figures with each subject's threshold chosen without it (see
    :func:`held_out_threshold_alerts`): the expected figures for a new person."""
    alerts, thresholds = held_out_threshold_alerts(table, scores)
    mx = per_recording(table, scores, 1.0).max_score
    s = summarize(table.is_fall, table.activity, table.seconds, alerts, mx)
    keep = (
        "sensitivity",
        "specificity",
        "false_alarms_per_hour",
        "missed_falls",
        "adl_recordings_with_alarm",
    )
    return {
        "thresholds": [round(min(thresholds), 3), round(max(thresholds), 3)],
        **{k: round(s[k], 4) if isinstance(s[k], float) else s[k] for k in keep},
    }


def _train_shapes(
    data: str | Path,
    out_dir: str | Path,
    rec: Recordings,
    table: WindowTable,
    trigger: TriggerConfig,
    *,
    c_grid: Sequence[float],
    seed: int,
    changed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from stream.fall.shapes import (
        SHAPE_VERSION,
        channels,
        fit_shape_model,
        n_features,
        segments,
        shape_loso,
    )

    if table.windows is None:
        raise ModelError("the window table holds no windows (rebuild it without a cache)")
    n = trigger.pre_n + trigger.post_n
    segs = segments(trigger.pre_n, n, trigger.rate_hz)
    ch = channels(table.windows)
    groups = np.asarray(table.subject)[table.rec]
    say(f"LOSO cross-validation of the shape model, C in {list(c_grid)}")
    oof = shape_loso(ch, groups, table.label, segs, Cs=c_grid, seed=seed, progress=say).scores
    results = []
    for k, c in enumerate(c_grid):
        thr, err = choose_threshold(table, oof[float(c)])
        results.append((err, k, float(c), thr))
        say(f"  C={c}: per-recording cost {err:.4f} at threshold {thr:.3f}")
    cv_err, _, best_c, threshold = min(results)
    scores = oof[best_c]
    res = per_recording(table, scores, threshold)
    cv_summary = summarize(table.is_fall, table.activity, table.seconds, res.alerts, res.max_score)
    held = held_out_summary(table, scores)
    say(
        f"  LOSO, C={best_c}: sensitivity {cv_summary['sensitivity']:.4f}, specificity "
        f"{cv_summary['specificity']:.4f}, {cv_summary['false_alarms_per_hour']:.3f} false "
        f"alarms/h at threshold {threshold:.3f}; each subject at a threshold chosen without "
        f"it: {held['sensitivity']:.4f} / {held['specificity']:.4f} / "
        f"{held['false_alarms_per_hour']:.3f}"
    )
    say("fitting the final model on all subjects")
    rows = table.label >= 0
    model = fit_shape_model(ch[rows], table.label[rows], segs, C=best_c, seed=seed)
    # Self-test: real windows of both classes (1 mg steps, as uploaded) with their scores.
    y = table.label
    rng = np.random.default_rng(seed)
    pick = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == cls), size=min(4, int(np.sum(y == cls))), replace=False)
            for cls in (FALL, ADL)
        ]
    )
    windows = np.round(table.windows[pick].astype(np.float64), 3)
    selftest_scores = model.score(channels(windows))
    shape = model.to_dict()
    doc: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "kind": "shapes",
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "threshold": round(threshold, 6),
        "trigger": trigger.to_options(),
        "estimator": {
            "kind": "L2 logistic regression on random-convolution PPV shape features",
            "shape_version": SHAPE_VERSION,
            "features": n_features(trigger.pre_n, n, trigger.rate_hz),
            "C": best_c,
            "seed": seed,
        },
        "training": _provenance(data, rec, table),
        "cv": {
            "protocol": "leave-one-subject-out, per recording, any window >= threshold",
            "miss_weight": MISS_WEIGHT,
            "fall_windows_relabelled": changed,
            "candidates": [
                {"C": c, "errors": round(e, 6), "threshold": round(t, 4)}
                for e, _, c, t in sorted(results, key=lambda r: r[1])
            ],
            "errors": round(cv_err, 6),
            **cv_summary,
            "held_out_threshold": held,
        },
        "shape": shape,
        "shape_sha256": members_digest(shape),
        "selftest": {
            "windows": windows.tolist(),
            "trigger_index": [trigger.pre_n] * len(windows),
            "scores": [float(v) for v in selftest_scores],
        },
    }
    return _write_model(doc, out_dir, say)


def default_cache() -> Path:
    """Cache directory for window tables (see :func:`stream.fall.table.default_cache_dir`)."""
    return default_cache_dir()
