"""``carewatch fall eval``: score a recordings file as pendants and the processor would.

Each recording (any rate, any scale) is converted to g, resampled to the pendant's rate,
run whole through the pendant's on-device trigger, and every window it uploads is scored
by the classifier. A fall recording is detected when at least one of its windows is a
fall alert; a daily-activity recording is a false alarm when any is; every alert in a
daily-activity recording counts in ``false_alarms_per_hour``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.fall.data import Recordings, load_recordings, trigger_windows
from stream.fall.features import impact_window_array, window_features
from stream.fall.model import FallClassifier
from stream.fall.train import summarize


@dataclass(frozen=True)
class RecordingScore:
    """The classifier's view of one recording."""

    index: int
    subject: str
    activity: str
    is_fall: bool
    windows: int
    alerts: int
    max_score: float
    seconds: float

    def line(self) -> dict[str, Any]:
        """The ``--per-recording`` JSON object (contract fields first)."""
        return {
            "index": self.index,
            "subject": self.subject,
            "activity": self.activity,
            "is_fall": self.is_fall,
            "alerts": self.alerts,
            "max_score": round(self.max_score, 6),
            "windows": self.windows,
        }


def score_recordings(rec: Recordings, clf: FallClassifier) -> Iterator[RecordingScore]:
    """Score every recording in file order."""
    cfg = clf.trigger
    for i in range(len(rec)):
        windows = trigger_windows(rec.at_rate(i, cfg.rate_hz), cfg)
        if windows:
            X = np.vstack(
                [
                    window_features(impact_window_array(w), w.trigger_index, cfg.rate_hz)
                    for w in windows
                ]
            )
            scores = clf.score_features(X)
        else:
            scores = np.zeros(0)
        yield RecordingScore(
            index=i,
            subject=rec.subject[i],
            activity=rec.activity[i],
            is_fall=rec.is_fall[i],
            windows=len(windows),
            alerts=int(np.sum(scores >= clf.threshold)),
            max_score=float(scores.max()) if len(scores) else 0.0,
            seconds=rec.seconds(i),
        )


def evaluate(
    data: str | Path,
    clf: FallClassifier,
    *,
    on_recording: Callable[[RecordingScore], None] | None = None,
) -> dict[str, Any]:
    """Summary metrics of ``clf`` over a recordings file (see module doc)."""
    rec = load_recordings(data)
    results = []
    for r in score_recordings(rec, clf):
        results.append(r)
        if on_recording is not None:
            on_recording(r)
    summary = summarize(
        np.asarray([r.is_fall for r in results], dtype=bool),
        [r.activity for r in results],
        np.asarray([r.seconds for r in results]),
        np.asarray([r.alerts for r in results], dtype=np.int64),
        np.asarray([r.max_score for r in results]),
    )
    summary["threshold"] = clf.threshold
    summary["rate_hz"] = clf.trigger.rate_hz
    summary["source_rate_hz"] = rec.rate_hz
    summary["windows"] = int(sum(r.windows for r in results))
    return summary
