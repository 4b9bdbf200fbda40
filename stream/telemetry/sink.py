"""Telemetry spool and backfill: InfluxDB never slows ingest or alerting down.

Every Event's point and every alert transition's point is written to the ``telemetry``
table of the state database IN THE SAME TRANSACTION as the effects of the message
that produced it (:mod:`stream.processor`). This sink drains that spool to InfluxDB in
batches, oldest first, and deletes a batch only after InfluxDB accepted it. So:

- ingest and alerting never wait for InfluxDB (they only insert a row);
- while InfluxDB is down or slow the spool grows on disk (``influx_backlog_lines``)
  and is backfilled when it answers again, in order; a crash at any time loses
  nothing (a batch written but not yet deleted is written again after the restart,
  which InfluxDB treats as an overwrite of identical points: no second point);
- the spool is bounded (``telemetry.spool_max_lines``): beyond it the oldest lines are
  dropped and counted (``influx_lines_dropped{reason="spool_full"}``), so an InfluxDB
  that never returns cannot fill the disk.

Errors follow the writer's classification (:class:`TelemetryError.retryable`):
retryable ones (connection, timeout, 5xx, 429) keep the batch and retry with backoff
up to ``telemetry.retry_max``. A rejected batch (400: points InfluxDB refuses, such as a
field type conflict; InfluxDB writes the valid points of the batch and reports the
rest) is dropped and counted; 413 (too large) splits the batch. Credential and
database errors (401, 403, 404) are retried slowly rather than dropped, because they
are fixed by an operator, not by waiting out the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from stream.clock import Clock
from stream.config import TelemetryConfig
from stream.metrics import Metrics
from stream.retry import TRANSIENT, LoopRetry
from stream.state import StateStore
from stream.telemetry.errors import TelemetryError

log = logging.getLogger(__name__)

OPERATOR_STATUSES = frozenset({401, 403, 404})


class LineWriter(Protocol):
    """What the sink needs from an InfluxDB writer."""

    async def write(self, lines: Sequence[str]) -> None:
        """Write line-protocol lines (ms precision) or raise :class:`TelemetryError`."""
        ...

    async def close(self) -> None:
        """Release the HTTP session."""
        ...


class TelemetrySink:
    """Drains the telemetry spool into InfluxDB (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        writer: LineWriter,
        clock: Clock,
        config: TelemetryConfig,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.wake = asyncio.Event()
        self.healthy: bool | None = None  # None until the first write
        self.last_error: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set (then one last attempt to flush what is due)."""
        backoff_ms = 500
        retry = LoopRetry("telemetry", self.metrics, stop)
        while not stop.is_set():
            try:
                self._trim()
                written = await self.flush_once()
            except TRANSIENT as exc:
                # The state database (the spool) failed: lines written but not deleted
                # are written again later, which InfluxDB treats as an overwrite.
                await retry.failed(exc)
                continue
            except TelemetryError as exc:
                retry.ok()  # the spool answered; InfluxDB did not
                wait_ms = backoff_ms
                if exc.retry_after is not None:  # InfluxDB said when (429, 503)
                    wait_ms = max(wait_ms, int(exc.retry_after * 1000))
                backoff_ms = min(self.config.retry_max_ms, backoff_ms * 2)
                await self._sleep(stop, min(wait_ms, self.config.retry_max_ms) / 1000, wake=False)
                continue
            retry.ok()
            backoff_ms = 500
            if written == 0:
                self.wake.clear()
                await self._sleep(stop, self.config.flush_interval_ms / 1000, wake=True)

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wake: bool) -> None:
        waiters = {asyncio.ensure_future(stop.wait())}
        if wake:
            waiters.add(asyncio.ensure_future(self.wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _trim(self) -> None:
        with self.store.transaction():
            dropped = self.store.spool_trim(self.config.spool_max_lines)
        if dropped:
            self.metrics.influx_dropped.labels("spool_full").inc(dropped)
            log.error("telemetry spool full: dropped the %d oldest lines", dropped)

    async def flush_once(self) -> int:
        """Write the oldest spooled batch(es), up to ``batch_lines`` lines.

        Returns the number of lines handled (0: spool empty). Raises
        :class:`TelemetryError` for a failure worth retrying; the lines stay spooled.
        """
        ids, lines = self.store.spool_take(self.config.batch_lines)
        if not lines:
            return 0
        try:
            await self._write(lines)
        except TelemetryError as exc:
            self.healthy = False
            self.last_error = str(exc)
            if exc.retryable or exc.status in OPERATOR_STATUSES:
                self.metrics.influx_writes.labels("retry").inc()
                log.warning("InfluxDB write failed, %d lines kept for later: %s", len(lines), exc)
                raise
            # A partial write says how many points InfluxDB dropped; the rest are in.
            dropped = exc.dropped if exc.dropped is not None else len(lines)
            self.metrics.influx_writes.labels("rejected").inc()
            self.metrics.influx_dropped.labels("rejected").inc(dropped)
            log.error("InfluxDB rejected %d of %d lines: %s", dropped, len(lines), exc)
        else:
            self.healthy = True
            self.last_error = None
            self.metrics.influx_writes.labels("ok").inc()
            self.metrics.influx_lines.inc(len(lines))
        with self.store.transaction():
            self.store.spool_delete(ids)
        return len(lines)

    async def _write(self, lines: Sequence[str]) -> None:
        try:
            await self.writer.write(lines)
        except TelemetryError as exc:
            if exc.status == 413 and len(lines) > 1:
                half = len(lines) // 2
                await self._write(lines[:half])
                await self._write(lines[half:])
                return
            raise

    async def close(self) -> None:
        """Close the writer."""
        with contextlib.suppress(Exception):
            await self.writer.close()
