"""Backoff for the runtime's loops when the state database fails for a while.

A loop (timers, notification sender, telemetry sink, housekeeping) whose state database
answers "database is locked", "disk I/O error" or "database or disk is full"
(:class:`sqlite3.OperationalError`) waits and tries again, with a doubling delay, counting
each failure (``carewatch_stream_loop_errors_total{loop}``) and logging it. Nothing is
lost meanwhile: every unit of work is one transaction, rolled back whole.

While a loop fails, ``carewatch_stream_loop_failing_seconds{loop}`` says for how long
and ``/health`` names it (status ``degraded``).

A database that keeps failing for :data:`GIVE_UP_S` is not waited out forever: the loop
raises :class:`LoopGaveUp`, the processor stops and exits non-zero, so systemd restarts
it (reopening the file) and operators see the failure. Any other exception is a bug and
ends the loop at once the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

from stream.metrics import Metrics

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
#: A state database failing this long without a single success stops the processor.
GIVE_UP_S = 600.0

#: The errors worth waiting out (locks, I/O, a full disk); anything else is not.
TRANSIENT: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)


class LoopGaveUp(Exception):
    """A loop's state database kept failing for :data:`GIVE_UP_S`."""


class LoopRetry:
    """The backoff state of one loop: call :meth:`failed` on a transient error (it
    waits, or raises once the failures lasted too long) and :meth:`ok` after a pass
    that worked."""

    def __init__(
        self,
        loop: str,
        metrics: Metrics | None,
        stop: asyncio.Event,
        *,
        first_s: float = FIRST_DELAY_S,
        max_s: float = MAX_DELAY_S,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.loop = loop
        self.metrics = metrics
        self.stop = stop
        self.first_s = first_s
        self.max_s = max_s
        self.give_up_s = give_up_s
        self._delay = first_s
        self._since: float | None = None
        self._failures = 0

    def ok(self) -> None:
        """A pass worked: the next failure starts from the first delay again."""
        if self._since is None:
            return
        self._delay = self.first_s
        self._since = None
        self._failures = 0
        if self.metrics is not None:
            self.metrics.loop_failing.labels(self.loop).set(0)
            self.metrics.loops_failing.pop(self.loop, None)
        log.info("%s: state database works again", self.loop)

    async def failed(self, exc: BaseException) -> None:
        """Count and log ``exc``, then wait (until ``stop`` at most) before the next try."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._since >= self.give_up_s:
            lasted = now - self._since
            raise LoopGaveUp(
                f"{self.loop}: state database failing for {lasted:.0f} s: {exc}"
            ) from exc
        self._failures += 1
        if self.metrics is not None:
            self.metrics.loop_errors.labels(self.loop).inc()
            self.metrics.loop_failing.labels(self.loop).set(round(now - self._since, 1))
            self.metrics.loops_failing[self.loop] = {
                "since_monotonic": self._since,
                "failures": self._failures,
                "last_error": f"{type(exc).__name__}: {exc}",
            }
        log.error(
            "%s: state database failed (%s); trying again in %.1f s", self.loop, exc, self._delay
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self._delay)
        self._delay = min(self.max_s, self._delay * 2)
