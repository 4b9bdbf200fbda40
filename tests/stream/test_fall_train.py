"""Threshold selection of the fall model's training, on small hand-made score tables."""

from __future__ import annotations

import numpy as np

from stream.fall.table import ADL, FALL, WindowTable
from stream.fall.train import choose_threshold, held_out_threshold_alerts, per_recording


def _table(scores_by_recording: list[tuple[str, bool, float]]) -> tuple[WindowTable, np.ndarray]:
    """One window per recording: (subject, is_fall, score)."""
    n = len(scores_by_recording)
    table = WindowTable(
        X=np.zeros((n, 1)),
        rec=np.arange(n, dtype=np.int64),
        anchor=np.zeros(n, dtype=np.int64),
        label=np.asarray([FALL if f else ADL for _, f, _ in scores_by_recording], dtype=np.int64),
        subject=tuple(s for s, _, _ in scores_by_recording),
        activity=tuple("F01" if f else "D01" for _, f, _ in scores_by_recording),
        is_fall=np.asarray([f for _, f, _ in scores_by_recording], dtype=bool),
        seconds=np.full(n, 12.0),
    )
    return table, np.asarray([s for _, _, s in scores_by_recording], dtype=np.float64)


def test_a_subject_does_not_choose_its_own_threshold() -> None:
    # Subjects A and B separate cleanly around 0.5; C's only fall scores 0.3.
    rows = [
        ("A", True, 0.9),
        ("A", False, 0.1),
        ("B", True, 0.85),
        ("B", False, 0.12),
        ("C", True, 0.3),
        ("C", False, 0.05),
    ]
    table, scores = _table(rows)
    pooled, _ = choose_threshold(table, scores)
    assert pooled < 0.3  # with C in view, the pooled threshold bends to catch its fall
    assert per_recording(table, scores, pooled).alerts[4] == 1

    alerts, thresholds = held_out_threshold_alerts(table, scores)
    assert len(thresholds) == 3
    # C judged at a threshold chosen on A and B only: its soft fall is missed.
    assert thresholds[2] > 0.3
    assert alerts[4] == 0
    # A and B are still judged correctly at thresholds chosen without them.
    assert list(alerts[:4]) == [1, 0, 1, 0]
    assert alerts[5] == 0


def test_held_out_alerts_count_every_window_of_a_recording() -> None:
    table, _ = _table([("A", True, 0.9), ("A", False, 0.1), ("B", True, 0.8)])
    # Give B's fall recording a second, also high, window.
    table = WindowTable(
        X=np.zeros((4, 1)),
        rec=np.asarray([0, 1, 2, 2], dtype=np.int64),
        anchor=np.zeros(4, dtype=np.int64),
        label=np.asarray([FALL, ADL, FALL, FALL], dtype=np.int64),
        subject=table.subject,
        activity=table.activity,
        is_fall=table.is_fall,
        seconds=table.seconds,
    )
    alerts, _ = held_out_threshold_alerts(table, np.asarray([0.9, 0.1, 0.8, 0.95]))
    assert list(alerts) == [1, 0, 2]


def test_the_cost_counts_every_false_alert() -> None:
    """One recording that alerts many times costs more than one that alerts once: at a
    low threshold a jog with five high windows would alert five times."""
    rows = [("A", True, 0.9), ("A", False, 0.1), ("B", True, 0.35), ("B", False, 0.1)]
    table, scores = _table(rows)
    # B's daily activity gets five windows scoring 0.3: below them, five false alerts.
    n = len(rows) + 4
    table = WindowTable(
        X=np.zeros((n, 1)),
        rec=np.asarray([0, 1, 2, 3, 3, 3, 3, 3], dtype=np.int64),
        anchor=np.zeros(n, dtype=np.int64),
        label=np.asarray([FALL, ADL, FALL, ADL, ADL, ADL, ADL, ADL], dtype=np.int64),
        subject=table.subject,
        activity=table.activity,
        is_fall=table.is_fall,
        seconds=table.seconds,
    )
    scores = np.asarray([0.9, 0.1, 0.35, 0.3, 0.3, 0.3, 0.3, 0.3])
    threshold, cost = choose_threshold(table, scores)
    # Catching B's soft fall (0.35) costs nothing more than a threshold between 0.3 and
    # 0.35; below 0.3 the five alerts cost 5 / 2 ADL recordings, more than a missed fall.
    assert 0.3 < threshold <= 0.35 and cost == 0.0
    low = per_recording(table, scores, 0.25).alerts
    assert list(low) == [1, 0, 1, 5]
    # With the soft fall below the jog, missing it (2 x 1/2 = 1.0) beats five false
    # alerts on one recording (5/2 = 2.5), though both spoil exactly one recording.
    scores[2] = 0.25
    threshold, cost = choose_threshold(table, scores)
    assert threshold > 0.3 and cost == 1.0
