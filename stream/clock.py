"""Clocks: where the stream runtime gets "now" from, and how it waits for a deadline.

Detectors never read a clock (they get ``now`` as an argument); the runtime does, through
one of these, so that the same code runs on wall-clock time in production, on a manual
clock in unit tests and on a fast clock in integration tests and replays.

All times are integers, milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod

# A wall-clock wait never sleeps longer than this in one go: when the system clock is
# stepped (NTP correction, a VM resumed) the runtime re-reads it at least this often.
MAX_REAL_WAIT_S = 30.0


class Clock(ABC):
    """The runtime's source of time."""

    @abstractmethod
    def now_ms(self) -> int:
        """Current time, ms UTC."""

    @abstractmethod
    async def wait_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        """Return when ``deadline_ms`` is reached, ``wake`` is set, or a while has passed.

        ``None`` means "no deadline": wait for ``wake`` (or a re-check interval). Callers
        re-read :meth:`now_ms` after this returns; an early return is always allowed.
        """


class SystemClock(Clock):
    """Wall-clock time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def wait_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        if deadline_ms is None:
            timeout = MAX_REAL_WAIT_S
        else:
            timeout = min(MAX_REAL_WAIT_S, max(0.0, (deadline_ms - self.now_ms()) / 1000))
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)


class FastClock(Clock):
    """Wall-clock time running ``speed`` times faster from ``epoch_ms`` on.

    ``now = epoch + (wall - epoch) * speed``. Anchoring at a fixed ``epoch_ms`` (given in
    the config) rather than at process start keeps time monotonic across restarts, which
    is what a restart test of escalation timers needs. Before ``epoch_ms`` time runs at
    normal speed.
    """

    def __init__(self, speed: float, epoch_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed={speed} must be > 0")
        self.speed = speed
        self.epoch_ms = time.time_ns() // 1_000_000 if epoch_ms is None else epoch_ms

    def now_ms(self) -> int:
        wall = time.time_ns() // 1_000_000
        if wall <= self.epoch_ms:
            return wall
        return self.epoch_ms + int((wall - self.epoch_ms) * self.speed)

    async def wait_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        if deadline_ms is None:
            timeout = MAX_REAL_WAIT_S
        else:
            timeout = min(MAX_REAL_WAIT_S, max(0.0, (deadline_ms - self.now_ms()) / 1000))
            timeout /= self.speed
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)


class ManualClock(Clock):
    """Time that moves only when a test (or a replay) moves it.

    :meth:`set` and :meth:`advance` wake every coroutine waiting in :meth:`wait_until`, so
    a runtime's timer loop notices the new time at once.
    """

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        # asyncio.Event binds to a loop only when first awaited: safe to make here.
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms``; time never goes backwards."""
        if now_ms < self._now:
            raise ValueError(f"ManualClock cannot go back from {self._now} to {now_ms}")
        self._now = now_ms
        self._moved.set()
        self._moved = asyncio.Event()

    def advance(self, ms: int) -> None:
        """Move time forward by ``ms``."""
        self.set(self._now + ms)

    async def wait_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        if deadline_ms is not None and deadline_ms <= self._now:
            return
        moved = asyncio.ensure_future(self._moved.wait())
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            woken.cancel()


def clock_from_config(kind: str, speed: float = 1.0, epoch_ms: int | None = None) -> Clock:
    """Build the clock a config names: ``system`` or ``fast`` (with ``speed``)."""
    if kind == "system":
        return SystemClock()
    if kind == "fast":
        return FastClock(speed, epoch_ms)
    raise ValueError(f"unknown clock {kind!r} (allowed: system, fast)")
