"""The stream processor, wired: broker link, processor, timers, notifications, telemetry, API.

:class:`StreamService` owns the pieces and their tasks::

    MqttLink ──message──▶ Processor.handle_message (one SQLite transaction) ──▶ PUBACK
    timer loop ─────────▶ Processor.run_due        (detector deadlines, escalations)
    OutboxSender ───────▶ notifiers (MQTT alert topic, webhooks, WeCom, DingTalk)
    TelemetrySink ──────▶ InfluxDB (from the on-disk spool)
    ApiServer ──────────▶ /health, /metrics, alerts, silences, absences

Everything runs on one event loop; SQLite work is synchronous and short, and no
transaction spans an ``await``. A restart resumes from the state database: detector
deadlines and alert timers that passed while the processor was down fire on the first
timer pass, pending notifications and spooled telemetry are sent, and the broker
redelivers what was not acknowledged.

Replays do not need this class: :func:`stream.replay.run_offline` runs the same
detectors over recorded events with a simulated clock, and :class:`stream.processor.
Processor` can be driven directly with a :class:`~stream.clock.ManualClock` (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from stream.clock import Clock, clock_from_config
from stream.config import StreamConfig
from stream.detectors.base import Detector
from stream.detectors.facts import key_warnings
from stream.ingest import MqttLink
from stream.metrics import Metrics
from stream.notifiers import Notifier, build_notifiers
from stream.notifiers.mqtt import MqttAlertNotifier
from stream.outbox import OutboxSender
from stream.processor import Processor
from stream.registry import build_detectors, declared_keys
from stream.retry import TRANSIENT, LoopRetry
from stream.state import StateStore
from stream.telemetry.sink import LineWriter, TelemetrySink

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 3600.0


class TaskFailed(Exception):
    """A loop of the running processor failed (see :meth:`StreamService.run`)."""


#: Ingest has caught up with the broker's backlog after this long without a message...
CATCHUP_QUIET_S = 1.0
#: ...or this long after connecting, whichever comes first (a steady load never pauses).
CATCHUP_MAX_S = 15.0
CATCHUP_POLL_S = 0.25


def make_writer(config: StreamConfig) -> LineWriter:
    """The InfluxDB writer for the ``telemetry`` config section."""
    from stream.telemetry.influx import InfluxTarget, InfluxWriter

    t = config.telemetry
    target = InfluxTarget(
        url=t.url,
        api="v2" if t.api == "v2" else "v1",
        database=t.database,
        retention_policy=t.retention_policy,
        username=t.username,
        password=t.password,
        org=t.org,
        bucket=t.bucket,
        token=t.token,
    )
    return InfluxWriter(target, timeout=t.timeout_ms / 1000, batch_lines=t.batch_lines)


class StreamService:
    """One running stream processor (see the module docstring)."""

    def __init__(
        self,
        config: StreamConfig,
        *,
        clock: Clock | None = None,
        detectors: Sequence[Detector[Any]] | None = None,
        writer: LineWriter | None = None,
        extra_notifiers: dict[str, Notifier] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or clock_from_config(
            config.clock.kind, config.clock.speed, config.clock.epoch_ms
        )
        self.metrics = Metrics()
        # What the config can get wrong first (ConfigProblems), before the database is
        # opened and locked.
        self.detectors = (
            list(detectors) if detectors is not None else build_detectors(config.detectors)
        )
        # Keys under a site or a resident that nothing reads: a typo (capcity) would
        # silently leave out what it sets, so say so (--check lists them too).
        for path, message in key_warnings(
            config.unread_keys, *declared_keys(config.detectors, self.detectors)
        ):
            log.warning("%s: %s: %s", config.file, path, message)
        notifiers: dict[str, Notifier] = build_notifiers(config.notifiers)
        self.store = StateStore(
            config.state.path,
            synchronous=config.state.synchronous,
            dedup_window=config.ingest.dedup_window,
        )
        self.metrics.watch_store(self.store, self.clock.now_ms)
        self.processor = Processor(config, self.store, self.clock, self.detectors, self.metrics)
        self.link = MqttLink(
            config.mqtt, self._handle, on_state=self._mqtt_state, metrics=self.metrics
        )
        notifiers["mqtt"] = MqttAlertNotifier(self.link.publish, config.mqtt.root)
        notifiers.update(extra_notifiers or {})
        self.sender = OutboxSender(
            self.store,
            notifiers,
            self.clock,
            config.delivery,
            on_result=self._delivery,
            metrics=self.metrics,
        )
        self.sink: TelemetrySink | None = None
        if config.telemetry.enabled:
            self.sink = TelemetrySink(
                self.store, writer or make_writer(config), self.clock, config.telemetry,
                self.metrics,
            )  # fmt: skip
        self.api = None
        if config.api.enabled:
            from stream.api import ApiServer

            self.api = ApiServer(self)
        self.stop_event = asyncio.Event()
        self.timer_wake = asyncio.Event()
        self.started = asyncio.Event()
        self._link_up = False
        self._catching_up = True
        self._connected_at = 0.0
        self._last_message = 0.0

    # --- wiring callbacks ---------------------------------------------------------------
    def _handle(self, topic: str, payload: bytes) -> None:
        self._last_message = time.monotonic()
        self.processor.handle_message(topic, payload)
        self.kick()

    def detectors_live(self) -> bool:
        """True when detector timers may fire: ingest is connected and has caught up.

        A silence is only a silence if carewatch could have heard the noise. While the
        central broker is unreachable no event arrives from any gateway, and after a
        (re)connect the broker first delivers what it queued for the persistent session:
        an inactivity or no-show timer that fired in either case would raise a false
        alarm for every resident at once. So detector deadlines wait (they are kept, and
        fire late rather than never) until the link is up and the backlog is drained: no
        message for ``CATCHUP_QUIET_S``, or ``CATCHUP_MAX_S`` after connecting under
        steady load. Alert timers (escalations, reminders) never wait.
        """
        if not self._link_up:
            return False
        if self._catching_up:
            now = time.monotonic()
            quiet = now - max(self._last_message, self._connected_at) >= CATCHUP_QUIET_S
            if quiet or now - self._connected_at >= CATCHUP_MAX_S:
                self._catching_up = False
        return not self._catching_up

    def kick(self) -> None:
        """Something changed: re-check timers and the outbox now."""
        self.timer_wake.set()
        self.sender.wake.set()

    def _mqtt_state(self, connected: bool) -> None:
        self.metrics.mqtt_connected.set(1 if connected else 0)
        self._link_up = connected
        if connected:
            self._connected_at = time.monotonic()
            self._catching_up = True
            # Alert-topic rows waiting (with backoff) for the broker: send them now.
            with self.store.transaction():
                self.store.retry_now("mqtt", self.clock.now_ms())
            self.sender.wake.set()

    def _delivery(self, notifier: str, outcome: str) -> None:
        self.metrics.notifications.labels(notifier, outcome).inc()
        if outcome != "sent":
            self.metrics.notifier_failures.labels(notifier).inc()

    # --- loops --------------------------------------------------------------------------
    async def _timers(self) -> None:
        retry = LoopRetry("timers", self.metrics, self.stop_event)
        seeded = False
        while not self.stop_event.is_set():
            self.timer_wake.clear()
            live = self.detectors_live()
            try:
                if not seeded:
                    self.processor.seed_configured()
                    seeded = True
                handled = self.processor.run_due(detectors=live)
                deadline = None if handled else self.processor.next_deadline(detectors=live)
            except TRANSIENT as exc:
                await retry.failed(exc)
                continue
            retry.ok()
            if handled:
                self.sender.wake.set()
                continue
            waits = {
                asyncio.ensure_future(self.clock.wait_until(deadline, self.timer_wake)),
                asyncio.ensure_future(self.stop_event.wait()),
            }
            if not live:  # look again soon: catching up ends without an event to wake us
                waits.add(asyncio.ensure_future(asyncio.sleep(CATCHUP_POLL_S)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    async def _housekeeping(self) -> None:
        retry = LoopRetry("housekeeping", self.metrics, self.stop_event)
        while not self.stop_event.is_set():
            now = self.clock.now_ms()
            keep_ms = int(self.config.state.retention_days * 86_400_000)
            try:
                with self.store.transaction():
                    pruned = self.store.prune(now - keep_ms)
                    pruned["silences"] = self.store.prune_silences(now - keep_ms)
            except TRANSIENT as exc:
                await retry.failed(exc)
                continue
            retry.ok()
            if any(pruned.values()):
                log.info("housekeeping: pruned %s", pruned)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), HOUSEKEEPING_S)

    # --- lifecycle ----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (SIGTERM does this)."""
        self.stop_event.set()

    async def run(self) -> None:
        """Run until :meth:`request_stop`; then close everything cleanly.

        Raises :class:`TaskFailed` (after the clean shutdown) when a loop failed: a bug,
        or a state database that kept failing (:mod:`stream.retry`). Failures of one
        message, signal, alert or partition are contained where they happen and do not
        end a loop.
        """
        await self.sender.start()
        if self.api is not None:
            await self.api.start()
        tasks: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(self.link.run(self.stop_event)): "mqtt",
            asyncio.ensure_future(self._timers()): "timers",
            asyncio.ensure_future(self.sender.run(self.stop_event)): "outbox",
            asyncio.ensure_future(self._housekeeping()): "housekeeping",
        }
        if self.sink is not None:
            tasks[asyncio.ensure_future(self.sink.run(self.stop_event))] = "telemetry"
        self.started.set()
        log.info("stream processor running (%d detectors)", len(self.detectors))
        failed: list[str] = []
        try:
            stopper = asyncio.ensure_future(self.stop_event.wait())
            done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is stopper:
                    continue
                error = task.exception()
                if error is not None:
                    log.error("%s task failed: %r", tasks[task], error, exc_info=error)
                    failed.append(f"{tasks[task]}: {type(error).__name__}: {error}")
                elif not self.stop_event.is_set():
                    log.error("%s task ended unexpectedly", tasks[task])
                    failed.append(f"{tasks[task]}: ended unexpectedly")
            self.stop_event.set()
            stopper.cancel()
            # Give the loops a moment to finish what they are doing, then cancel.
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            await self.close()
        if failed:
            log.error("stream processor stopped after a failure: %s", "; ".join(failed))
            raise TaskFailed("; ".join(failed))
        log.info("stream processor stopped")

    async def close(self) -> None:
        """Close the API, notifiers, telemetry writer and database."""
        if self.api is not None:
            await self.api.close()
        await self.sender.close()
        if self.sink is not None:
            await self.sink.close()
        self.store.close()


async def serve(config: StreamConfig) -> None:
    """Run a :class:`StreamService` until SIGTERM or SIGINT."""
    service = StreamService(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, service.request_stop)
    await service.run()
