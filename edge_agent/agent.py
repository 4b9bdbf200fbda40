"""The edge agent of one gateway: sources -> ingest -> durable queue -> uplink.

:class:`Agent` wires the parts together and runs them until stopped:

- one supervised task per :class:`~edge_agent.sources.Source` (a failing source is
  retried with backoff and reported; the others keep running);
- the :class:`~edge_agent.uplink.Uplink` (central broker, heartbeat);
- a housekeeping task: device-down checks, queue expiry, persisting the last trusted
  time, giving free pages back to the file system.

``SIGHUP`` reloads the config file: the new sources are built first (a config that
fails, sources included, is refused and the old one keeps running), then the running
sources are stopped and replaced, the uplink is
restarted only when the broker settings changed (after its in-flight batches are
acknowledged), and the queue is never touched, so nothing is lost or sent twice. The
site, gateway and queue path cannot change by reload (they name the queue): such a
reload is refused with a log line. ``SIGTERM``/``SIGINT`` stop it cleanly: sources
first, then the pending commits, then in-flight batches and the ``offline`` status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from device_profiles.errors import CarewatchError
from device_profiles.profiles import ProfileRegistry
from edge_agent.clock import Clock
from edge_agent.config import AgentConfig, load_config
from edge_agent.health import DeviceHealth, Transition, cpu_temperature
from edge_agent.ingest import Bound, Ingest, SeenMessages
from edge_agent.queue import LAST_ISSUED, EventQueue
from edge_agent.sources import Source
from edge_agent.uplink import Uplink

log = logging.getLogger(__name__)

SOURCE_BACKOFF_FIRST_S = 0.5
SOURCE_BACKOFF_CAP_S = 5.0
HOUSEKEEPING_S = 1.0
STOP_TIMEOUT_S = 10.0
_LAST_TRUSTED = "clock.last_trusted_ms"


def build_sources(ingest: Ingest, devices: Iterable[Bound] | None = None) -> list[Source]:
    """One source per serial port, Modbus bus and site broker, from the bound devices.

    ``devices`` defaults to every device bound by ``ingest``. Nothing is opened: a
    source opens its port or connection in ``run()``.
    """
    from edge_agent.sources.modbus import ModbusSource
    from edge_agent.sources.mqtt import MqttSource
    from edge_agent.sources.serial import SerialSource

    serial_ports: dict[str, list[Bound]] = {}
    buses: dict[str, list[Bound]] = {}
    brokers: dict[str, list[Bound]] = {}
    for dev in ingest.devices.values() if devices is None else devices:
        t = dev.config.transport
        if dev.config.section == "serial":
            serial_ports.setdefault(str(t["port"]), []).append(dev)
        elif dev.config.section == "modbus":
            buses.setdefault(str(t["port"]), []).append(dev)
        else:
            brokers.setdefault(str(t["broker"]), []).append(dev)
    sources: list[Source] = []
    sources += [SerialSource(port, devs, ingest) for port, devs in serial_ports.items()]
    sources += [ModbusSource(port, devs, ingest) for port, devs in buses.items()]
    sources += [
        MqttSource(name, ingest.config.site_brokers[name], devs, ingest)
        for name, devs in brokers.items()
    ]
    return sources


def source_problems(config: AgentConfig, registry: ProfileRegistry) -> list[tuple[str, str]]:
    """Build (without opening) the sources of a config: ``(path, message)`` per failure.

    Some settings are only checked where a source is built from its devices (a custom
    MQTT profile naming no topic, a codec that cannot read a byte stream): the config
    check and a reload must find them before anything starts or stops. The path names
    the device when one device alone fails, else ``devices``.
    """
    try:
        ingest = Ingest(
            config,
            cast(EventQueue, None),  # sources only keep it; nothing is submitted here
            clock=Clock(trust="never"),
            health=DeviceHealth(),
            registry=registry,
        )
    except Exception as exc:
        return [("devices", str(exc) or type(exc).__name__)]
    index = {d.id: i for i, d in enumerate(config.devices)}
    problems: list[tuple[str, str]] = []
    for dev in ingest.devices.values():
        try:
            build_sources(ingest, [dev])
        except Exception as exc:
            path = f"devices[{index.get(dev.id, '?')}].{dev.config.section}"
            problems.append((path, str(exc) or type(exc).__name__))
    if not problems:
        try:
            build_sources(ingest)
        except Exception as exc:
            problems.append(("devices", str(exc) or type(exc).__name__))
    return problems


class Agent:
    """Runs one gateway; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        registry: ProfileRegistry | None = None,
        clock_factory: Callable[[int | None, int | None], Clock] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or ProfileRegistry.load(*config.profile_dirs)
        self._clock_factory = clock_factory
        self.health = DeviceHealth()
        self.sources: list[Source] = []
        self._source_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.started_mono = time.monotonic()
        self.queue: EventQueue | None = None
        self.uplink: Uplink | None = None
        self.ingest: Ingest | None = None
        self.clock: Clock | None = None
        self.ready = asyncio.Event()

    # -- control --------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the agent to shut down cleanly (SIGTERM)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the agent to re-read its config file (SIGHUP)."""
        self._reload.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    # -- run ------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`request_stop`."""
        cfg = self.config
        q = cfg.queue
        self.queue = queue = await EventQueue.open(
            q.path,
            gateway=cfg.gateway,
            site=cfg.site,
            max_bytes=q.max_bytes,
            max_age_s=q.max_age_s,
            quarantine_max=q.quarantine_max,
        )
        try:
            await self._run(queue)
        finally:
            await queue.close()
            log.info("agent: stopped")

    async def _run(self, queue: EventQueue) -> None:
        cfg = self.config
        stored = await queue.call(queue.store.meta, _LAST_TRUSTED)
        last_trusted = int(stored) if stored else None
        issued = await queue.call(queue.store.meta, LAST_ISSUED)
        last_issued = int(issued) if issued else None
        if self._clock_factory is not None:
            self.clock = clock = self._clock_factory(last_trusted, last_issued)
        else:
            self.clock = clock = Clock(
                trust=cfg.clock.trust,
                last_trusted_ms=last_trusted,
                last_issued_ms=last_issued,
                sync_file=cfg.clock.sync_file,
            )
        # Queue ages are stamped and compared with this clock, never the raw wall clock.
        queue.now_ms = clock.now_ms
        corrections: list[int] = []
        clock.on_trusted = corrections.append
        states = await queue.call(queue.store.states)
        seen = await queue.call(queue.store.seen_digests)
        self.ingest = ingest = Ingest(
            cfg,
            queue,
            clock=clock,
            health=self.health,
            registry=self.registry,
            states=states,
            on_transition=self._on_transition,
        )
        ingest.seen_messages = SeenMessages(seen)
        self.uplink = uplink = Uplink(cfg, queue, self.heartbeat)
        uplink_task = asyncio.create_task(uplink.run(), name="uplink")
        self._start_sources()
        housekeeping = asyncio.create_task(self._housekeeping(corrections), name="housekeeping")
        log.info(
            "agent: site %s gateway %s: %d devices, %d sources; queue %s (%d queued, next seq %d)",
            cfg.site,
            cfg.gateway,
            len(ingest.devices),
            len(self.sources),
            cfg.queue.path,
            queue.store.depth,
            queue.store.next_seq,
        )
        self.ready.set()
        try:
            while not self._stop.is_set():
                stop = asyncio.ensure_future(self._stop.wait())
                reload = asyncio.ensure_future(self._reload.wait())
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                reload.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    uplink_task = await self._do_reload(uplink_task)
        finally:
            await self._stop_sources()
            ingest.flush_idle(time.monotonic(), everything=True)
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await queue.flush()
            await self._stop_uplink(uplink_task)
            with contextlib.suppress(Exception):
                stamp = self.clock.now()
                # the next run continues from here even if NTP stays unreachable
                await queue.call(queue.store.set_meta, LAST_ISSUED, str(stamp.ms))
                if stamp.ok:
                    await queue.call(queue.store.set_meta, _LAST_TRUSTED, str(stamp.ms))

    async def _stop_uplink(self, task: asyncio.Task[None]) -> None:
        assert self.uplink is not None
        await self.uplink.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("agent: uplink did not finish in %.0f s; closing anyway", STOP_TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _do_reload(self, uplink_task: asyncio.Task[None]) -> asyncio.Task[None]:
        assert self.ingest is not None and self.queue is not None
        try:
            new = load_config(self.config.file)
            registry = ProfileRegistry.load(*new.profile_dirs)
        except CarewatchError as exc:
            log.error("agent: reload refused, keeping the running config: %s", exc)
            return uplink_task
        old = self.config
        if (new.site, new.gateway, new.queue.path) != (old.site, old.gateway, old.queue.path):
            log.error(
                "agent: reload refused: site, gateway and queue.path can only change by a restart"
            )
            return uplink_task
        # Build the new sources before stopping the running ones: a source that cannot
        # be built must leave the agent running with the old config, not without sources.
        problems = source_problems(new, registry)
        if problems:
            log.error(
                "agent: reload refused, keeping the running config: %s",
                "; ".join(f"{path}: {msg}" for path, msg in problems),
            )
            return uplink_task
        log.info("agent: reloading %s", new.file)
        await self._stop_sources()
        await self.queue.flush()
        self.config = new
        self.registry = registry
        self.ingest.registry = registry
        self.ingest.configure(new)
        self.queue.store.max_bytes = new.queue.max_bytes
        self.queue.store.max_age_s = new.queue.max_age_s
        self.queue.store.quarantine_max = new.queue.quarantine_max
        if (new.broker, new.topic_root, new.queue, new.health) != (
            old.broker,
            old.topic_root,
            old.queue,
            old.health,
        ):
            await self._stop_uplink(uplink_task)
            self.uplink = Uplink(new, self.queue, self.heartbeat)
            uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")
        else:
            assert self.uplink is not None
            self.uplink.config = new
        self._start_sources()
        log.info(
            "agent: reloaded: %d devices on %d sources", len(self.ingest.devices), len(self.sources)
        )
        return uplink_task

    # -- sources --------------------------------------------------------------------
    def _start_sources(self) -> None:
        assert self.ingest is not None
        self.sources = build_sources(self.ingest)
        for s in self.sources:
            s.on_up = self._source_up
        self._source_tasks = [
            asyncio.create_task(self._supervise(s), name=s.name) for s in self.sources
        ]

    async def _stop_sources(self) -> None:
        for t in self._source_tasks:
            t.cancel()
        for t in self._source_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._source_tasks = []

    async def _supervise(self, source: Source) -> None:
        """Run a source forever: report and retry with backoff when it fails."""
        delay = SOURCE_BACKOFF_FIRST_S
        while True:
            started = time.monotonic()
            source.state = "starting"
            try:
                await source.run()
                raise CarewatchError("stopped by itself")
            except asyncio.CancelledError:
                source.state = "stopped"
                await source.close()
                raise
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                if time.monotonic() - started > 30:
                    delay = SOURCE_BACKOFF_FIRST_S  # it ran fine for a while: retry fast
                if source.last_error != reason or source.state != "failed":
                    log.warning("%s: failed: %s; retrying in %.1f s", source.name, reason, delay)
                source.state, source.last_error = "failed", reason
                source.restarts += 1
                for dev in source.devices:
                    self.health.source_errors[dev.id] = f"{source.name}: {reason}"
            await source.close()
            await asyncio.sleep(delay)
            delay = min(SOURCE_BACKOFF_CAP_S, delay * 2)

    def _source_up(self, source: Source) -> None:
        if source.last_error is not None:
            log.info("%s: running again", source.name)
            source.last_error = None
            for dev in source.devices:
                self.health.source_errors.pop(dev.id, None)
        if self.uplink is not None:
            self.uplink.poke_health()  # the heartbeat tells when data can flow

    def all_sources_up(self) -> bool:
        """True when every source is open and reading."""
        return all(s.state == "running" for s in self.sources)

    def _on_transition(self, t: Transition) -> None:
        if t.up:
            self.health.source_errors.pop(t.device, None)
        if self.uplink is not None:
            self.uplink.poke_health()

    # -- housekeeping ---------------------------------------------------------------
    async def _housekeeping(self, corrections: list[int]) -> None:
        assert self.queue is not None and self.ingest is not None and self.clock is not None
        queue, clock = self.queue, self.clock
        last_persist = 0.0
        last_expire = 0.0
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                self.ingest.transitions(self.health.check())
                self.ingest.flush_idle(time.monotonic())
                stamp = clock.now()
                while corrections:
                    delta = corrections.pop(0)
                    await queue.flush()
                    n = await queue.call(queue.store.correct_times, delta, clock.now_ms())
                    if n:
                        log.info("clock: corrected %d queued events by %+d ms", n, delta)
                now = time.monotonic()
                if now - last_persist > 60:
                    last_persist = now
                    await queue.call(queue.store.set_meta, LAST_ISSUED, str(stamp.ms))
                    if stamp.ok:
                        await queue.call(queue.store.set_meta, _LAST_TRUSTED, str(stamp.ms))
                if now - last_expire > 60:
                    last_expire = now
                    n = await queue.call(queue.store.expire, stamp.ms)
                    if n:
                        log.warning("queue: dropped %d events older than max_age", n)
                    if queue.store.depth == 0:
                        await queue.call(queue.store.vacuum, 2000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("agent: housekeeping failed; will retry")

    # -- heartbeat --------------------------------------------------------------------
    async def heartbeat(self) -> dict[str, Any]:
        """The health document published on ``.../health``."""
        assert self.queue is not None and self.clock is not None
        stats = await self.queue.stats()
        stamp = self.clock.now()
        counters = stats.counters
        drops = {k: v for k, v in counters.items() if k.startswith(("dropped_", "urgent_"))}
        decode_errors: dict[str, dict[str, int]] = {}
        for name, n in counters.items():
            if name.startswith("decode_errors."):
                device, _, fault = name[len("decode_errors.") :].rpartition(".")
                decode_errors.setdefault(device, {})[fault] = n
        doc: dict[str, Any] = {
            "site": self.config.site,
            "gateway": self.config.gateway,
            "time": stamp.ms,
            "clock_ok": stamp.ok,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "pid": os.getpid(),
            "queue": {
                "depth": stats.depth,
                "urgent": stats.urgent,
                "bytes": stats.bytes,
                "max_bytes": self.config.queue.max_bytes,
                "oldest_age_s": None
                if stats.oldest_ms is None
                else round(max(0, stamp.ms - stats.oldest_ms) / 1000, 1),
                "next_seq": stats.next_seq,
                "sent": counters.get("sent", 0),
            },
            "drops": drops,
            # site messages delivered again by their broker and recognized as stored
            "redeliveries_skipped": counters.get("site_redeliveries_skipped", 0),
            # group commits tried again after a passing fault, and those that failed for
            # good (disk full, I/O error) with the readings they held: the site broker
            # delivers MQTT ones again, serial and Modbus ones are lost
            "commit_retried": counters.get("commit_retried", 0),
            "commit_failed": counters.get("commit_failed", 0),
            "commit_failed_events": counters.get("commit_failed_events", 0),
            "decode_errors": decode_errors,
            "devices": self.health.snapshot(),
            "sources": {
                s.name: {
                    "state": s.state,
                    **({"error": s.last_error} if s.last_error else {}),
                    "restarts": s.restarts,
                }
                for s in self.sources
            },
        }
        temp = cpu_temperature()
        if temp is not None:
            doc["cpu_temp_c"] = temp
        return doc
