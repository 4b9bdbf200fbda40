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


def test_numbers_behind_the_window_stay_expected() -> None:
    w = SeqWindow(window=10)
    w.accept(1, R)
    result = w.accept(100, R + 100)
    # 2..90 fall behind the window: kept as one range of expected numbers, not lost
    assert result.lost == 0
    assert (w.low, w.above, w.holes) == (90, {100}, [(2, 90)])
    assert w.missing() == 98
    assert w.accept(50, R + 50).verdict is SeqVerdict.NEW
    assert w.accept(50, R + 50).verdict is SeqVerdict.DUPLICATE
    assert w.holes == [(2, 49), (51, 90)]
    assert w.accept(95, R + 95).verdict is SeqVerdict.NEW
    assert w.accept(2, R + 2).verdict is SeqVerdict.NEW
    assert w.accept(90, R + 90).verdict is SeqVerdict.NEW
    assert w.holes == [(3, 49), (51, 89)]


def test_backlog_behind_an_urgent_event_is_accepted_exactly_once() -> None:
    # The agent sends the urgent event 10,001 first, then its backlog oldest first.
    w = SeqWindow(window=64)
    assert w.accept(10_001, R + 10_001).gap == (1, 10_000)
    verdicts = [w.accept(s, R + s).verdict for s in range(1, 10_001)]
    assert verdicts == [SeqVerdict.NEW] * 10_000
    assert (w.low, w.above, w.holes, w.missing()) == (10_001, set(), [], 0)
    assert w.accept(5_000, R + 5_000).verdict is SeqVerdict.DUPLICATE


def test_too_many_pending_ranges_give_up_the_lowest() -> None:
    w = SeqWindow(window=4, max_holes=3)
    # every other number arrives: each missing one becomes a range once behind the window
    lost = [w.accept(s, R + s).lost for s in range(2, 40, 2)]
    # 1..33 are behind the window (38 - 4): the odd ones are 17 ranges; 3 are kept and
    # the 14 lowest given up, reported as lost (never silently)
    assert w.holes == [(29, 29), (31, 31), (33, 33)]
    assert sum(lost) == 14
    assert w.accept(29, R).verdict is SeqVerdict.NEW
    assert w.accept(1, R + 1).verdict is SeqVerdict.DUPLICATE  # given up: counted lost


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
@given(
    st.lists(st.integers(min_value=1, max_value=3000), max_size=400),
    st.integers(min_value=16, max_value=128),
)
def test_each_number_is_new_exactly_once(seqs: list[int], window: int) -> None:
    # With receive times tied to the number (copies carry the original's), every number
    # is NEW exactly once, nothing is lost while the ranges fit, and memory stays bounded.
    w = SeqWindow(window=window, max_holes=8)
    new: list[int] = []
    lost = 0
    for s in seqs:
        result = w.accept(s, R + s)
        lost += result.lost
        if result.verdict is not SeqVerdict.DUPLICATE:
            new.append(s)
        assert len(w.above) <= window and len(w.holes) <= 8
    assert len(new) == len(set(new))
    if lost == 0:
        assert set(new) == set(seqs)


def test_clock_corrected_copy_is_a_duplicate_only_within_the_horizon() -> None:
    w = SeqWindow()
    for s in range(1, 11):
        w.accept(s, R + s)
    for s in range(11, 21):  # booted without a clock: estimated receive times
        w.accept(s, R + 100 + s, clock_ok=False, now=R)
    assert w.untrusted == [(11, 20, R)]
    # NTP answered: the same events again, 2 h later by their corrected stamps
    copy = w.accept(15, R + 7_200_000 + 15, now=R + 60_000)
    assert (copy.verdict, copy.corrected) == (SeqVerdict.DUPLICATE, True)
    # a newer receive time on a number that came with a trusted clock: a reset
    assert w.accept(5, R + 7_200_000, now=R + 60_000).verdict is SeqVerdict.RESET
    assert w.untrusted == []


def test_untrusted_stretches_are_forgotten_after_a_day() -> None:
    w = SeqWindow()
    for s in range(1, 21):
        w.accept(s, R + s, clock_ok=s > 5, now=R)
    again = SeqWindow.load(w.dump())
    assert again.untrusted == [(1, 5, R)]
    # a new numbering (lost disk) a month later starts at 1: recognized at once
    month = 30 * 86_400_000
    assert again.accept(1, R + month, now=R + month).verdict is SeqVerdict.RESET
