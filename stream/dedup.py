"""Per-gateway duplicate and gap detection over sequence numbers, in bounded memory.

Gateways send each Event at least once, with a per-gateway sequence number that only
grows (ARCHITECTURE.md, "Delivery"). A :class:`SeqWindow` remembers which numbers were
seen as a *high-water mark* (every number at or below ``low`` is done: seen, or given
up as lost) plus the numbers seen above it. Out-of-order arrivals fill the holes; when
the set above the mark would outgrow ``window`` entries, the oldest holes are declared
lost (reported, counted) and the mark moves on, so memory stays bounded whatever a
gateway sends.

A gateway that lost its disk restarts numbering at 1. Its new events would all look
like duplicates; a true duplicate, though, is a copy of an event seen before and so
carries a receive time no later than the newest one seen. An event numbered at or
below the mark but received clearly after everything seen so far therefore means the
numbering was reset: the window starts over (counted as a reset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_WINDOW = 4096
# A reset needs the receive time to move past the newest one seen by more than this:
# a gateway's clock jitters a little between a message and its copy on no real system.
RESET_SLACK_MS = 1_000


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
    lost: int = 0  # numbers declared lost (never arrived within the window)


@dataclass(slots=True)
class SeqWindow:
    """Seen sequence numbers of one gateway (see the module docstring)."""

    low: int = 0
    above: set[int] = field(default_factory=set)
    max_received: int = 0
    window: int = DEFAULT_WINDOW

    @property
    def high(self) -> int:
        """Highest number seen (``low`` when nothing is above it)."""
        return max(self.above) if self.above else self.low

    def missing(self) -> int:
        """Numbers below :attr:`high` not seen yet (open holes)."""
        return self.high - self.low - len(self.above)

    def seen(self, seq: int) -> bool:
        """True when ``seq`` was seen or given up."""
        return seq <= self.low or seq in self.above

    def accept(self, seq: int, received: int) -> SeqResult:
        """Record ``seq`` (with the event's receive time) and say what it is."""
        if self.seen(seq):
            if received > self.max_received + RESET_SLACK_MS and seq < self.high:
                self.low, self.above = 0, set()
                self._add(seq, received)
                return SeqResult(SeqVerdict.RESET)
            return SeqResult(SeqVerdict.DUPLICATE)
        high = self.high
        gap = (high + 1, seq - 1) if seq > high + 1 else None
        lost = self._add(seq, received)
        return SeqResult(SeqVerdict.NEW, gap=gap, lost=lost)

    def _add(self, seq: int, received: int) -> int:
        self.max_received = max(self.max_received, received)
        self.above.add(seq)
        self._compact()
        lost = 0
        # Bound memory: holes further back than ``window`` numbers are given up.
        floor = self.high - self.window
        if floor > self.low:
            kept = {s for s in self.above if s > floor}
            lost = (floor - self.low) - (len(self.above) - len(kept))
            self.low, self.above = floor, kept
            self._compact()
        return lost

    def _compact(self) -> None:
        while self.low + 1 in self.above:
            self.low += 1
            self.above.discard(self.low)

    # --- persistence (a small JSON-friendly tuple) ---------------------------------------
    def dump(self) -> dict[str, object]:
        """Plain data for the state store."""
        return {"low": self.low, "above": sorted(self.above), "max_received": self.max_received}

    @classmethod
    def load(cls, data: dict[str, object] | None, window: int = DEFAULT_WINDOW) -> SeqWindow:
        """Inverse of :meth:`dump`; ``None`` gives an empty window."""
        if not data:
            return cls(window=window)
        low = data.get("low", 0)
        above = data.get("above", [])
        max_received = data.get("max_received", 0)
        assert isinstance(low, int) and isinstance(above, list)
        assert isinstance(max_received, int)
        return cls(low=low, above={int(s) for s in above}, max_received=max_received, window=window)
