"""Per-gateway duplicate and gap detection over sequence numbers, in bounded memory.

Gateways send each Event at least once, with a per-gateway sequence number that only
grows (ARCHITECTURE.md, "Delivery"). They do NOT send in sequence order: the edge agent
sends urgent events (SOS presses, fall windows) before the telemetry queued ahead of
them (docs/edge_queue.md), so after an outage the processor can see number 20,001 long
before 1..20,000 arrive. A :class:`SeqWindow` therefore remembers:

- ``low``: every number at or below it is settled (seen, or still expected in
  ``holes``, or given up);
- ``above``: the numbers seen above ``low``, at most ``window`` numbers behind the
  highest one seen (out-of-order arrivals fill the holes between them);
- ``holes``: the numbers at or below ``low`` that have NOT arrived yet, as sorted,
  disjoint ``(first, last)`` ranges. When ``above`` would span more than ``window``
  numbers, ``low`` moves up and the numbers it passes that were not seen become ranges
  here: they are still accepted, each exactly once, whenever they arrive. A backlog of
  any length behind an urgent event is one range that shrinks as the backlog arrives.

Memory is bounded by ``window`` (``above``) and ``max_holes`` (ranges, not numbers).
Only when more than ``max_holes`` ranges are pending are the lowest ones given up:
those numbers are counted as lost (reported by the caller, metric and log), and a copy
arriving after that is dropped as a duplicate. The agent sends oldest first, so the
lowest ranges are the ones its backlog already went past.

A gateway that lost its disk restarts numbering at 1. Its new events would all look
like duplicates; a true duplicate, though, is a copy of an event seen before and so
carries a receive time no later than the newest one seen. An event numbered at or
below the highest one seen, already seen, but received clearly after everything seen
so far therefore means the numbering was reset: the window starts over (counted as a
reset).

One kind of copy does carry a newer receive time: a gateway that booted without a
trusted clock stamps events with estimates (``clock_ok=false``); when NTP answers, the
agent corrects the stamps of the events still queued, including ones already published
but not yet acknowledged, and marks them ``clock_ok=true``. Resent after a reconnect,
such a copy looks newer than everything. So the window also remembers, as a few ranges
(``untrusted``), which numbers first arrived with an untrusted clock, and when: a copy
of one of them arriving with a trusted clock within :data:`CORRECTION_HORIZON_MS` is a
duplicate whatever its receive time. A real reset is still recognized on its first
number outside those ranges (new numbering starts at 1, and an untrusted stretch is the
few minutes after a boot, so at worst those few numbers of a new numbering are taken for
copies, and only if the old numbering's untrusted boot was less than a day before).

A position rule ("a reset must be far below the newest number") was rejected: it misses
the reset of a gateway younger than the window, and the clock-corrected copies of a
backlog can themselves be far below the newest number (urgent events overtake it).
An explicit signal from the agent (an id of its queue file in every batch) would make
both cases certain; the Event schema has none yet.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_WINDOW = 4096
#: Ranges of numbers still expected below the window, per gateway. An in-order backlog
#: needs one; each urgent event sent ahead of it, or each run of telemetry the agent
#: dropped from a full queue, splits a range. 256 ranges are a few KB per gateway.
DEFAULT_MAX_HOLES = 256
# A reset needs the receive time to move past the newest one seen by more than this:
# a gateway's clock jitters a little between a message and its copy on no real system.
RESET_SLACK_MS = 1_000
#: How long numbers that arrived with an untrusted clock are remembered (a clock-
#: corrected copy is resent after a reconnect: minutes, at most hours, later).
CORRECTION_HORIZON_MS = 86_400_000
#: Untrusted stretches remembered per gateway (one per boot without a clock).
MAX_UNTRUSTED = 16


class SeqVerdict(StrEnum):
    """What :meth:`SeqWindow.accept` decided about one sequence number."""

    NEW = "new"  # first time seen: process it
    DUPLICATE = "duplicate"  # seen before (or given up as lost): no second effect
    RESET = "reset"  # numbering restarted on the gateway: window reset, process it


@dataclass(slots=True)
class SeqResult:
    """The verdict plus what it revealed: numbers newly missing, numbers given up."""

    verdict: SeqVerdict
    gap: tuple[int, int] | None = None  # (first, last) missing numbers opened by this one
    lost: int = 0  # numbers given up (more than ``max_holes`` ranges were pending)
    corrected: bool = False  # a duplicate whose receive time the gateway corrected


@dataclass(slots=True)
class SeqWindow:
    """Seen sequence numbers of one gateway (see the module docstring)."""

    low: int = 0
    above: set[int] = field(default_factory=set)
    holes: list[tuple[int, int]] = field(default_factory=list)
    # (first, last, seen at) of numbers that first arrived with an untrusted clock
    untrusted: list[tuple[int, int, int]] = field(default_factory=list)
    max_received: int = 0
    window: int = DEFAULT_WINDOW
    max_holes: int = DEFAULT_MAX_HOLES

    @property
    def high(self) -> int:
        """Highest number seen (``low`` when nothing is above it)."""
        return max(self.above) if self.above else self.low

    def missing(self) -> int:
        """Numbers below :attr:`high` not seen yet and still expected."""
        pending = sum(last - first + 1 for first, last in self.holes)
        return pending + self.high - self.low - len(self.above)

    def _hole_index(self, seq: int) -> int | None:
        i = bisect_right(self.holes, (seq, seq)) - 1
        if i >= 0 and self.holes[i][0] <= seq <= self.holes[i][1]:
            return i
        if i + 1 < len(self.holes) and self.holes[i + 1][0] == seq:
            return i + 1
        return None

    def seen(self, seq: int) -> bool:
        """True when ``seq`` was seen or given up."""
        if seq > self.low:
            return seq in self.above
        return self._hole_index(seq) is None

    def accept(self, seq: int, received: int, *, clock_ok: bool = True, now: int = 0) -> SeqResult:
        """Record ``seq`` and say what it is.

        ``received`` and ``clock_ok`` are the event's; ``now`` is the processor's clock
        (ms), used to forget untrusted stretches after :data:`CORRECTION_HORIZON_MS`.
        """
        if seq <= self.low:
            i = self._hole_index(seq)
            if i is not None:
                self._fill(i, seq)
                self.max_received = max(self.max_received, received)
                self._note_clock(seq, clock_ok, now)
                return SeqResult(SeqVerdict.NEW, lost=self._trim_holes())
            return self._seen_again(seq, received, clock_ok, now)
        if seq in self.above:
            return self._seen_again(seq, received, clock_ok, now)
        high = self.high
        gap = (high + 1, seq - 1) if seq > high + 1 else None
        lost = self._add(seq, received)
        self._note_clock(seq, clock_ok, now)
        return SeqResult(SeqVerdict.NEW, gap=gap, lost=lost)

    def _seen_again(self, seq: int, received: int, clock_ok: bool, now: int) -> SeqResult:
        if received > self.max_received + RESET_SLACK_MS and seq < self.high:
            if clock_ok and self._first_untrusted(seq, now):
                # A copy whose stamps the gateway corrected once its clock was trusted.
                return SeqResult(SeqVerdict.DUPLICATE, corrected=True)
            self.low, self.above, self.holes, self.untrusted = 0, set(), [], []
            self._add(seq, received)
            self._note_clock(seq, clock_ok, now)
            return SeqResult(SeqVerdict.RESET)
        return SeqResult(SeqVerdict.DUPLICATE)

    def _first_untrusted(self, seq: int, now: int) -> bool:
        return any(
            first <= seq <= last and now - at <= CORRECTION_HORIZON_MS
            for first, last, at in self.untrusted
        )

    def _note_clock(self, seq: int, clock_ok: bool, now: int) -> None:
        """Remember ``seq`` among the numbers that arrived with an untrusted clock."""
        if clock_ok:
            return
        for i, (first, last, _at) in enumerate(self.untrusted):
            if first - 1 <= seq <= last + 1:
                self.untrusted[i] = (min(first, seq), max(last, seq), now)
                return
        self.untrusted.append((seq, seq, now))
        # Keep the most recent stretches (by when they were seen).
        self.untrusted.sort(key=lambda r: r[2])
        del self.untrusted[:-MAX_UNTRUSTED]

    def _fill(self, i: int, seq: int) -> None:
        first, last = self.holes[i]
        pieces = [(a, b) for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
        self.holes[i : i + 1] = pieces

    def _add(self, seq: int, received: int) -> int:
        self.max_received = max(self.max_received, received)
        self.above.add(seq)
        self._compact()
        floor = self.high - self.window
        if floor <= self.low:
            return 0
        # Bound ``above``: the numbers between low and floor that were not seen become
        # ranges of still expected numbers (they may be a backlog on its way).
        start = self.low + 1
        for s in sorted(s for s in self.above if s <= floor):
            if s > start:
                self._add_hole(start, s - 1)
            start = s + 1
        if start <= floor:
            self._add_hole(start, floor)
        self.above = {s for s in self.above if s > floor}
        self.low = floor
        self._compact()
        return self._trim_holes()

    def _add_hole(self, first: int, last: int) -> None:
        # New ranges always lie above the existing ones (they come from above ``low``).
        if self.holes and self.holes[-1][1] + 1 == first:
            self.holes[-1] = (self.holes[-1][0], last)
        else:
            self.holes.append((first, last))

    def _trim_holes(self) -> int:
        lost = 0
        while len(self.holes) > self.max_holes:
            first, last = self.holes.pop(0)
            lost += last - first + 1
        return lost

    def _compact(self) -> None:
        while self.low + 1 in self.above:
            self.low += 1
            self.above.discard(self.low)

    # --- persistence (a small JSON-friendly dict) ----------------------------------------
    def dump(self) -> dict[str, object]:
        """Plain data for the state store."""
        return {
            "low": self.low,
            "above": sorted(self.above),
            "holes": [list(h) for h in self.holes],
            "untrusted": [list(u) for u in self.untrusted],
            "max_received": self.max_received,
        }

    @classmethod
    def load(
        cls,
        data: dict[str, object] | None,
        window: int = DEFAULT_WINDOW,
        max_holes: int = DEFAULT_MAX_HOLES,
    ) -> SeqWindow:
        """Inverse of :meth:`dump`; ``None`` gives an empty window."""
        if not data:
            return cls(window=window, max_holes=max_holes)
        low = data.get("low", 0)
        above = data.get("above", [])
        holes = data.get("holes", [])
        untrusted = data.get("untrusted", [])
        max_received = data.get("max_received", 0)
        assert isinstance(low, int) and isinstance(above, list) and isinstance(holes, list)
        assert isinstance(untrusted, list) and isinstance(max_received, int)
        return cls(
            low=low,
            above={int(s) for s in above},
            holes=[(int(h[0]), int(h[1])) for h in holes],
            untrusted=[(int(u[0]), int(u[1]), int(u[2])) for u in untrusted],
            max_received=max_received,
            window=window,
            max_holes=max_holes,
        )
