"""Sequence-number dedup and gap detection (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.dedup import SeqVerdict, SeqWindow

R = 1_767_225_600_000


def test_in_order_then_duplicates() -> None:
    w = SeqWindow()
    assert [w.accept(s, R + s).verdict for s in (1, 2, 3)] == [SeqVerdict.NEW] * 3
    assert w.low == 3 and not w.above
    assert w.accept(2, R + 2).verdict is SeqVerdict.DUPLICATE
    assert w.accept(3, R + 3).verdict is SeqVerdict.DUPLICATE


def test_gap_reported_then_filled_out_of_order() -> None:
    w = SeqWindow()
    w.accept(1, R)
    result = w.accept(5, R + 5)
    assert result.verdict is SeqVerdict.NEW
    assert result.gap == (2, 4)
    assert w.missing() == 3
    for s in (3, 2, 4):
        assert w.accept(s, R + s).verdict is SeqVerdict.NEW
    assert w.low == 5 and w.missing() == 0
    assert w.accept(4, R + 4).verdict is SeqVerdict.DUPLICATE


def test_window_bounds_memory_and_counts_lost() -> None:
    w = SeqWindow(window=10)
    w.accept(1, R)
    result = w.accept(100, R + 100)
    # 2..90 fall out of the window: given up as lost
    assert result.lost == 89
    assert w.low == 90
    assert w.above == {100}
    assert w.accept(50, R + 50).verdict is SeqVerdict.DUPLICATE
    assert w.accept(95, R + 95).verdict is SeqVerdict.NEW


def test_reset_detected_by_newer_receive_time() -> None:
    w = SeqWindow()
    for s in range(1, 101):
        w.accept(s, R + s)
    # a copy of an old event carries its old receive time: duplicate
    assert w.accept(7, R + 7).verdict is SeqVerdict.DUPLICATE
    # numbering restarted on a wiped gateway: much newer receive time
    assert w.accept(1, R + 3_600_000).verdict is SeqVerdict.RESET
    assert w.accept(2, R + 3_600_001).verdict is SeqVerdict.NEW
    assert w.accept(1, R + 3_600_000).verdict is SeqVerdict.DUPLICATE


def test_dump_load_round_trip() -> None:
    w = SeqWindow()
    for s in (1, 2, 5, 9):
        w.accept(s, R + s)
    again = SeqWindow.load(w.dump())
    assert again.low == w.low and again.above == w.above
    assert again.max_received == w.max_received
    assert SeqWindow.load(None).low == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), max_size=400))
def test_each_number_is_new_exactly_once(seqs: list[int]) -> None:
    # With receive times tied to the number (copies carry the original's), every number
    # is NEW exactly once and the window never grows past its bound.
    w = SeqWindow(window=64)
    new: list[int] = []
    for s in seqs:
        if w.accept(s, R + s).verdict is not SeqVerdict.DUPLICATE:
            new.append(s)
        assert len(w.above) <= 64
    assert len(new) == len(set(new))
