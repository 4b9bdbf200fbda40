"""The processor core: one input in, all of its effects committed in one transaction.

:class:`Processor` is synchronous and does no network I/O: the MQTT link
(:mod:`stream.ingest`) hands it each message and acknowledges the message to the broker
only after :meth:`Processor.handle_message` returned, i.e. after the transaction with
every effect of the message committed. The timer loop calls :meth:`Processor.run_due`.

Per message, in one transaction:

1. decode and validate (a malformed event is dead-lettered with the reason; the rest of
   its batch is still processed);
2. dedup by gateway + sequence number (:mod:`stream.dedup`): a duplicate has no second
   effect; gaps are logged and counted;
3. event-time lateness per gateway: an event older than the gateway's newest
   non-urgent event time minus ``ingest.max_lateness`` is *late*: it is stored as
   telemetry but only urgent events (SOS presses, fall windows) still go to the
   detectors, whose state assumes roughly ordered input. Urgent events do not move
   that watermark: the agent sends them ahead of its queued backlog;
4. the detectors' ``step`` over their state partitions; the new states and their
   deadlines (the timers index) are stored;
5. the alert manager applies the detectors' signals (alerts, transitions, outbox rows);
6. the telemetry lines of the events and of the alert transitions are spooled.

Gateway status (``.../status``, retained, "online"/"offline"), device health (events of
reading ``device_health`` and the heartbeat on ``.../health``) become synthetic
``kind="gateway"`` events (see :mod:`stream.detectors.base`) when they change.
Acknowledgements arrive on ``.../acks/{alert_id}`` as JSON ``{"by": "...", "action":
"ack" | "resolve", "note": "..."}``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from device_profiles.errors import CarewatchError, EventError, TopicError
from device_profiles.events import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    SCHEMA_VERSION,
    Event,
    decode_batch,
    event_from_mapping,
    event_to_dict,
    valid_id,
)
from device_profiles.topics import ParsedTopic, parse_topic
from stream.alerts import AlertManager, AlertNotFound, AlertStateError
from stream.clock import Clock
from stream.config import StreamConfig
from stream.context import ConfigContext
from stream.dedup import SeqVerdict
from stream.detectors.base import AlertSignal, Detector
from stream.metrics import Metrics
from stream.state import AlertRecord, GatewayRecord, StateStore, database_failure
from stream.telemetry.line_protocol import (
    SkipCounts,
    alert_to_point,
    encode_line,
    events_to_lines,
)

log = logging.getLogger(__name__)

DEVICE_HEALTH = "device_health"  # reading of the edge agent's device up/down events
MAX_ACK_BYTES = 4096


class _RawBatch(msgspec.Struct):
    events: list[Any]
    v: int = SCHEMA_VERSION


_raw_batch = msgspec.json.Decoder(_RawBatch)


class AckPayload(msgspec.Struct, forbid_unknown_fields=False):
    """What a responder app publishes on ``.../acks/{alert_id}``."""

    by: str
    action: str = "ack"
    note: str | None = None


_ack_decoder = msgspec.json.Decoder(AckPayload)


@dataclass(slots=True)
class Outcome:
    """What one message did (tests, logs)."""

    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    dead: int = 0
    signals: int = 0


class Processor:
    """Applies MQTT messages and timers to the state store (see the module docstring)."""

    def __init__(
        self,
        config: StreamConfig,
        store: StateStore,
        clock: Clock,
        detectors: Sequence[Detector[Any]],
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.detectors = list(detectors)
        self._by_name = {d.name: d for d in self.detectors}
        self.metrics = metrics or Metrics()
        self.telemetry = config.telemetry.enabled
        self.skipped = SkipCounts()
        sites = {sid: {**s.raw, "timezone": s.timezone} for sid, s in config.sites.items()}
        default = config.default_site
        self.ctx = ConfigContext(
            sites,
            config.residents,
            absences=store.is_absent,
            default_timezone=default.timezone,
            # sites."*": the detector settings (capacity, opening hours, overrides...) of
            # every site not listed, as carewatch replay applies them.
            default_site={**default.raw, "timezone": default.timezone},
        )
        self.alerts = AlertManager(
            store, config, on_transition=self._on_transition, on_error=self._contained
        )
        self._tx_lines: list[str] = []
        self._last_alert_point = 0  # time (ms) of the newest alert transition point
        self._lost_log: dict[tuple[str, str], tuple[int, float]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {
            d.name: msgspec.json.Decoder(d.state_type) for d in self.detectors
        }

    # --- messages -----------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes) -> Outcome:
        """Apply one MQTT message; returns after its effects are committed.

        Bad input is dead-lettered (committed too) and never raises. A failing state
        database raises :class:`sqlite3.Error`: the caller must NOT acknowledge the
        message then (the broker will redeliver it).
        """
        now = self.clock.now_ms()
        try:
            parsed = parse_topic(topic, self.config.mqtt.root)
        except TopicError as exc:
            self._dead(now, topic, "topic", str(exc), payload)
            return Outcome(dead=1)
        self.metrics.messages.labels(parsed.channel).inc()
        try:
            with self.store.transaction():
                self._tx_lines = []
                if parsed.channel == "events":
                    outcome = self._events(parsed, topic, payload, now)
                elif parsed.channel == "status":
                    outcome = self._status(parsed, topic, payload, now)
                elif parsed.channel == "health":
                    outcome = self._health(parsed, topic, payload, now)
                elif parsed.channel == "acks":
                    outcome = self._ack(parsed, topic, payload, now)
                else:
                    self._dead_in_tx(now, topic, "topic", "not a channel this reads", payload)
                    outcome = Outcome(dead=1)
                if self.telemetry and self._tx_lines:
                    self.store.spool_add(self._tx_lines, now)
        except sqlite3.Error:
            raise
        except Exception as exc:  # a bug on one message must not stop ingest
            log.exception("processing a message on %s failed; dead-lettered", topic)
            self._dead(now, topic, "internal", f"{type(exc).__name__}: {exc}", payload)
            return Outcome(dead=1)
        finally:
            self._tx_lines = []
        return outcome

    def _events(self, topic: ParsedTopic, raw_topic: str, payload: bytes, now: int) -> Outcome:
        assert topic.gateway is not None
        outcome = Outcome()
        try:
            candidates: list[Any] = decode_batch(payload)  # fast path: a well-formed batch
        except EventError:
            # Something in it is wrong: take the batch apart and keep what is good.
            try:
                candidates = _raw_batch.decode(payload).events
            except msgspec.DecodeError as exc:
                self._dead_in_tx(now, raw_topic, "json", f"malformed event batch: {exc}", payload)
                outcome.dead += 1
                return outcome
        events: list[Event] = []
        for i, candidate in enumerate(candidates):
            if isinstance(candidate, Event):
                if candidate.gateway == topic.gateway and candidate.site == topic.site:
                    events.append(candidate)
                    continue
                item: Any = event_to_dict(candidate)
            else:
                item = candidate
            try:
                if not isinstance(item, dict):
                    raise EventError("an event must be a JSON object")
                event = event_from_mapping(item)
            except CarewatchError as exc:
                self._dead_in_tx(
                    now, raw_topic, "event", f"events[{i}]: {exc}", json.dumps(item).encode()
                )
                outcome.dead += 1
                continue
            # ACLs let a gateway publish under its own site/gateway only: an event that
            # claims another one is not trusted.
            if event.gateway != topic.gateway or event.site != topic.site:
                self._dead_in_tx(
                    now,
                    raw_topic,
                    "topic_mismatch",
                    f"events[{i}]: gateway {event.gateway!r} / site {event.site!r} published"
                    f" on {raw_topic!r}",
                    json.dumps(item).encode(),
                )
                outcome.dead += 1
                continue
            events.append(event)
        if not events:
            return outcome
        gw = self.store.get_gateway(topic.gateway, topic.site)
        accepted: list[Event] = []
        for event in events:
            verdict = self._dedup(gw, event, now)
            if verdict is SeqVerdict.DUPLICATE:
                outcome.duplicates += 1
                continue
            accepted.append(event)
        outcome.accepted = len(accepted)
        self.metrics.events.labels("duplicate").inc(outcome.duplicates)
        for event in accepted:
            late = self._late(gw, event, now)
            if late:
                outcome.late += 1
                gw.late += 1
                self.metrics.events.labels("late").inc()
            else:
                self.metrics.events.labels("accepted").inc()
            gw.events += 1
            if late and not event.urgent:
                log.info(
                    "late event %s:%s (%s ms behind) stored, not sent to detectors",
                    event.gateway,
                    event.seq,
                    gw.max_time - event.time,
                )
            else:
                outcome.signals += self._run_detectors(event, now)
            if event.reading == DEVICE_HEALTH:
                self._device_health(gw, event, now)
        gw.last_seen = now
        self.store.put_gateway(gw)
        if accepted:
            newest = max(e.received for e in accepted)
            self.metrics.lag.set(max(0.0, (now - newest) / 1000))
            if self.telemetry:
                self._tx_lines += events_to_lines(accepted, self.skipped)
        return outcome

    def _dedup(self, gw: GatewayRecord, event: Event, now: int) -> SeqVerdict:
        result = gw.seqs.accept(event.seq, event.received, clock_ok=event.clock_ok, now=now)
        name = f"{gw.site}/{gw.gateway}"
        if result.verdict is SeqVerdict.DUPLICATE:
            gw.duplicates += 1
            if result.corrected:
                log.info(
                    "gateway %s: seq %s sent again with a corrected clock; duplicate",
                    name,
                    event.seq,
                )
            return result.verdict
        if result.verdict is SeqVerdict.RESET:
            gw.resets += 1
            self.metrics.seq_resets.inc()
            log.warning(
                "gateway %s restarted its sequence numbers (seq %s received after %s)",
                name,
                event.seq,
                gw.seqs.max_received,
            )
        if result.gap is not None:
            first, last = result.gap
            self.metrics.seq_missing.inc(last - first + 1)
            # Often just reordering (urgent events overtake telemetry on the gateway):
            # these numbers stay expected; only what the bounded window has to give up
            # is reported as lost below.
            log.info("gateway %s: seq %d..%d missing so far (got %d)", name, first, last, event.seq)
        if result.lost:
            gw.lost += result.lost
            self.metrics.seq_lost.inc(result.lost)
            self._log_lost((gw.site, gw.gateway), result.lost)
        return result.verdict

    def _log_lost(self, gateway: tuple[str, str], lost: int) -> None:
        # A gateway with many holes (its agent dropping telemetry from a full queue)
        # gives numbers up often: log a sum at most once a minute per gateway (the
        # counter has every one).
        pending, last = self._lost_log.get(gateway, (0, 0.0))
        pending += lost
        mono = time.monotonic()
        if mono - last >= 60.0:
            log.error(
                "gateway %s: %d missing sequence numbers given up as lost (too many holes"
                " pending; a copy arriving later is dropped as a duplicate)",
                "/".join(gateway),
                pending,
            )
            self._lost_log[gateway] = (0, mono)
        else:
            self._lost_log[gateway] = (pending, last)

    def _late(self, gw: GatewayRecord, event: Event, now: int) -> bool:
        lateness = self.config.ingest.max_lateness_ms
        if not event.clock_ok:
            return False  # an untrusted clock neither moves the watermark nor is late
        late = gw.max_time > 0 and event.time < gw.max_time - lateness
        if not event.urgent:
            # Only the ordered stream moves the watermark: the agent sends urgent events
            # ahead of the telemetry queued before them, and an SOS after an outage must
            # not make the whole backlog behind it "late". A gateway clock far ahead
            # must not make everything after it "late" either.
            gw.max_time = max(gw.max_time, min(event.time, now + lateness))
        return late

    # --- detectors ----------------------------------------------------------------------
    def _run_detectors(self, event: Event, now: int) -> int:
        signals = 0
        for detector in self.detectors:
            try:
                key = detector.key(event)
                if key is None:
                    continue
                state = self._load(detector, key)
                state, out = detector.step(state, event, self.ctx)
                deadline = detector.deadline(state)
                encoded = msgspec.json.encode(state)
                expired = detector.expired(state)
            except Exception as exc:
                if database_failure(exc):
                    raise
                self.metrics.detector_errors.labels(detector.name).inc()
                log.exception(
                    "detector %s failed on %s:%s", detector.name, event.gateway, event.seq
                )
                continue
            if expired:
                self.store.delete_partition(detector.name, key)
            else:
                self.store.put_partition(detector.name, key, encoded, deadline, now)
            signals += self._apply(out, now)
        return signals

    def _load(self, detector: Detector[Any], key: str) -> Any:
        raw = self.store.get_partition(detector.name, key)
        if raw is None:
            return detector.initial_state(key)
        try:
            return self._decoders[detector.name].decode(raw)
        except msgspec.DecodeError:
            # A state written by another version of the detector: start the partition
            # over rather than stop processing it forever.
            log.warning("detector %s: state of %s unreadable, starting over", detector.name, key)
            self.metrics.detector_errors.labels(detector.name).inc()
            return detector.initial_state(key)

    def _apply(self, signals: Sequence[AlertSignal], now: int) -> int:
        """Apply signals, each on its own: one that fails (a bug, a bad signal) is rolled
        back, logged and counted, and neither the others nor the rest of the message or
        timer pass are lost."""
        applied = 0
        for signal in signals:
            try:
                with self.store.savepoint():
                    self.alerts.apply(signal, now)
            except Exception as exc:
                if database_failure(exc):
                    raise
                log.exception("applying the signal %r failed; skipped", signal)
                self._contained("signal")
                continue
            applied += 1
        return applied

    def _contained(self, where: str) -> None:
        self.metrics.internal_errors.labels(where).inc()

    def synthetic(self, gw: GatewayRecord, reading: str, values: dict[str, Any], at: int) -> Event:
        """A ``kind="gateway"`` event (not deduplicated: seq 0)."""
        return Event(
            gateway=gw.gateway,
            seq=0,
            time=at,
            received=at,
            site=gw.site,
            device=gw.gateway,
            kind="gateway",
            reading=reading,
            values=values,
        )

    # --- gateway status and health ------------------------------------------------------
    def _status(self, topic: ParsedTopic, raw_topic: str, payload: bytes, now: int) -> Outcome:
        assert topic.gateway is not None
        if not payload:
            return Outcome()  # a cleared retained message
        online = _parse_status(payload)
        if online is None:
            self._dead_in_tx(now, raw_topic, "status", "expected online or offline", payload)
            return Outcome(dead=1)
        gw = self.store.get_gateway(topic.gateway, topic.site)
        outcome = Outcome()
        if gw.online != online:
            gw.online = online
            gw.status_at = now
            log.info("gateway %s/%s is %s", gw.site, gw.gateway, "online" if online else "offline")
            event = self.synthetic(gw, "status", {"online": online}, now)
            outcome.signals = self._run_detectors(event, now)
            if self.telemetry:
                self._tx_lines.append(
                    encode_line(
                        "gateway_status",
                        {"site": gw.site, "gateway": gw.gateway},
                        {"online": online},
                        now,
                    )
                )
        self.store.put_gateway(gw)
        return outcome

    def _device_health(self, gw: GatewayRecord, event: Event, now: int) -> None:
        up = event.values.get("up")
        if not isinstance(up, bool):
            return
        reason = event.values.get("reason")
        self._device_state(gw, event.device, up, str(reason or ""), at=event.time, now=now)

    def _device_state(
        self, gw: GatewayRecord, device: str, up: bool, reason: str, *, at: int, now: int
    ) -> None:
        devices = dict(gw.devices or {})
        if devices.get(device) == up:
            return
        devices[device] = up
        gw.devices = devices
        event = self.synthetic(
            gw, "device_status", {"device": device, "up": up, "reason": reason}, at
        )
        self._run_detectors(event, now)

    def _health(self, topic: ParsedTopic, raw_topic: str, payload: bytes, now: int) -> Outcome:
        assert topic.gateway is not None
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self._dead_in_tx(now, raw_topic, "health", f"malformed heartbeat: {exc}", payload)
            return Outcome(dead=1)
        gw = self.store.get_gateway(topic.gateway, topic.site)
        gw.last_seen = now
        devices = doc.get("devices")
        if isinstance(devices, dict):
            for device, info in devices.items():
                state = info.get("state") if isinstance(info, dict) else None
                if state in ("up", "down") and valid_id(str(device)):
                    reason = str(info.get("reason") or "")
                    self._device_state(gw, str(device), state == "up", reason, at=now, now=now)
        self.store.put_gateway(gw)
        if self.telemetry:
            # The heartbeat's own time makes a redelivered heartbeat the same point.
            stamp = doc.get("time")
            at = stamp if isinstance(stamp, int) and MIN_TIME_MS <= stamp <= MAX_TIME_MS else now
            self._tx_lines += _health_lines(gw, doc, at, self.skipped)
        return Outcome()

    # --- acknowledgements ---------------------------------------------------------------
    def _ack(self, topic: ParsedTopic, raw_topic: str, payload: bytes, now: int) -> Outcome:
        assert topic.alert_id is not None
        try:
            if len(payload) > MAX_ACK_BYTES:
                raise ValueError(f"larger than {MAX_ACK_BYTES} bytes")
            ack = _ack_decoder.decode(payload)
            if not ack.by.strip() or len(ack.by) > 128:
                raise ValueError("'by' must name who acknowledged (1-128 characters)")
            if ack.action not in ("ack", "resolve"):
                raise ValueError(f"action={ack.action!r} (allowed: ack, resolve)")
        except (msgspec.DecodeError, ValueError) as exc:
            self._dead_in_tx(now, raw_topic, "ack", f"malformed acknowledgement: {exc}", payload)
            self.metrics.acks.labels("mqtt", "rejected").inc()
            return Outcome(dead=1)
        try:
            if ack.action == "ack":
                _, changed = self.alerts.acknowledge(
                    topic.alert_id, ack.by, now, source="mqtt", note=ack.note, site=topic.site
                )
            else:
                _, changed = self.alerts.resolve(
                    topic.alert_id, ack.by, now, source="mqtt", note=ack.note, site=topic.site
                )
        except (AlertNotFound, AlertStateError) as exc:
            log.warning("acknowledgement on %s refused: %s", raw_topic, exc)
            self.metrics.acks.labels("mqtt", "refused").inc()
            return Outcome()
        self.metrics.acks.labels("mqtt", "applied" if changed else "repeated").inc()
        return Outcome()

    # --- timers -------------------------------------------------------------------------
    def next_deadline(self, *, detectors: bool = True) -> int | None:
        """The earliest detector or alert timer (alert timers only with ``detectors=False``)."""
        partitions = self.store.next_partition_deadline() if detectors else None
        times = [t for t in (partitions, self.alerts.next_deadline()) if t is not None]
        return min(times) if times else None

    def run_due(self, now: int | None = None, batch: int = 500, *, detectors: bool = True) -> int:
        """Fire every detector deadline and alert timer at or before ``now``.

        Deadlines that passed while the processor was down fire here on the first run
        after a restart. With ``detectors=False`` only alert timers (escalations,
        reminders) run: the runtime holds detector timers back while ingest is not live
        (see ``StreamService.detectors_live``). Returns the number of partitions and
        alerts handled.
        """
        now = self.clock.now_ms() if now is None else now
        handled = 0
        while True:
            with self.store.transaction():
                self._tx_lines = []
                due = self.store.due_partitions(now, batch) if detectors else []
                for name, key, _deadline in due:
                    self._tick_guarded(name, key, now)
                changed = self.alerts.tick(now)
                if self.telemetry and self._tx_lines:
                    self.store.spool_add(self._tx_lines, now)
                self._tx_lines = []
            handled += len(due) + changed
            if len(due) < batch and changed == 0:
                return handled

    def seed_configured(self, now: int | None = None) -> int:
        """Create the partitions the config declares and that are not stored yet.

        Runs at start (see ``Detector.configured_keys`` and ``Detector.seed``), so timers
        run for residents and devices that have not sent anything yet. Seeding raises no
        alert. Idempotent: stored partitions are left alone. Returns the number created.
        """
        now = self.clock.now_ms() if now is None else now
        sites = {sid: {**s.raw, "timezone": s.timezone} for sid, s in self.config.sites.items()}
        created = 0
        with self.store.transaction():
            self._tx_lines = []
            for detector in self.detectors:
                try:
                    keys = detector.configured_keys(sites, self.config.residents)
                except Exception:
                    self.metrics.detector_errors.labels(detector.name).inc()
                    log.exception("detector %s: configured_keys() failed", detector.name)
                    continue
                for key in keys:
                    if self.store.get_partition(detector.name, key) is not None:
                        continue
                    try:
                        state = detector.seed(key, now, self.ctx)
                        deadline = detector.deadline(state)
                    except Exception:
                        self.metrics.detector_errors.labels(detector.name).inc()
                        log.exception("detector %s failed seeding %s", detector.name, key)
                        continue
                    self.store.put_partition(
                        detector.name, key, msgspec.json.encode(state), deadline, now
                    )
                    created += 1
            if self.telemetry and self._tx_lines:
                self.store.spool_add(self._tx_lines, now)
            self._tx_lines = []
        return created

    def _tick_guarded(self, name: str, key: str, now: int) -> None:
        # Whatever fails in one partition's timer stays there: rolled back, counted, and
        # its timer dropped (a deadline that keeps failing would fire in a tight loop).
        try:
            with self.store.savepoint():
                self._tick(name, key, now)
        except Exception as exc:
            if database_failure(exc):
                raise
            log.exception("detector %s: timer of %s failed; its timer is dropped", name, key)
            self._contained("detector_timer")
            self.store.disarm_partition(name, key)

    def _tick(self, name: str, key: str, now: int) -> None:
        detector = self._by_name.get(name)
        if detector is None:
            # A detector no longer configured: forget its timer, keep its state.
            raw = self.store.get_partition(name, key)
            if raw is not None:
                self.store.put_partition(name, key, raw, None, now)
            return
        state = self._load(detector, key)
        try:
            state, out = detector.tick(state, now, self.ctx)
            deadline = detector.deadline(state)
            expired = detector.expired(state)
        except Exception:
            self.metrics.detector_errors.labels(name).inc()
            log.exception("detector %s failed in tick(%s); its timer is dropped", name, key)
            raw = self.store.get_partition(name, key)
            if raw is not None:
                self.store.put_partition(name, key, raw, None, now)
            return
        if expired:
            self.store.delete_partition(name, key)
            self._apply(out, now)
            return
        if deadline is not None and deadline <= now:
            # A deadline that does not move past now would fire forever.
            self.metrics.detector_errors.labels(name).inc()
            log.error("detector %s: deadline of %s did not move past now; dropped", name, key)
            deadline = None
        self.store.put_partition(name, key, msgspec.json.encode(state), deadline, now)
        self._apply(out, now)

    # --- responders through the API -----------------------------------------------------
    def acknowledge(self, alert_id: str, by: str, note: str | None) -> tuple[AlertRecord, bool]:
        """Acknowledge from the API (committed before returning)."""
        now = self.clock.now_ms()
        with self.store.transaction():
            self._tx_lines = []
            result = self.alerts.acknowledge(alert_id, by, now, source="api", note=note)
            self._flush_lines(now)
        self.metrics.acks.labels("api", "applied" if result[1] else "repeated").inc()
        return result

    def resolve(self, alert_id: str, by: str, note: str | None) -> tuple[AlertRecord, bool]:
        """Resolve from the API (committed before returning)."""
        now = self.clock.now_ms()
        with self.store.transaction():
            self._tx_lines = []
            result = self.alerts.resolve(alert_id, by, now, source="api", note=note)
            self._flush_lines(now)
        self.metrics.acks.labels("api", "applied" if result[1] else "repeated").inc()
        return result

    def _flush_lines(self, now: int) -> None:
        if self.telemetry and self._tx_lines:
            self.store.spool_add(self._tx_lines, now)
        self._tx_lines = []

    # --- helpers ------------------------------------------------------------------------
    def _on_transition(self, alert: AlertRecord, kind: str, at: int) -> None:
        self.metrics.transitions.labels(kind).inc()
        if not self.telemetry:
            return
        extra: dict[str, object] = {"transition": kind, "tier": alert.tier + 1}
        if alert.acked_by and kind == "acknowledged":
            extra["by"] = alert.acked_by
        if alert.resolved_by and kind == "resolved":
            extra["by"] = alert.resolved_by
        # InfluxDB keeps one point per series and time: the transitions of one message or
        # timer pass share ``at`` and often their tags ("raised" and "updated" of one
        # alert; two gateways going offline in one pass). Each alert point gets its own
        # millisecond, in transition order, so none overwrites another.
        stamp = max(at, self._last_alert_point + 1)
        self._last_alert_point = stamp
        point = alert_to_point(
            alert_id=alert.id,
            site=alert.site,
            kind=alert.condition,
            severity=alert.severity,
            state=alert.state,
            time_ms=stamp,
            resident=alert.resident,
            device=alert.device,
            extra=extra,
        )
        try:
            self._tx_lines.append(point.to_line(self.skipped))
        except CarewatchError:
            self.skipped.bad_points += 1

    def _dead(self, now: int, topic: str, reason: str, detail: str, payload: bytes) -> None:
        with self.store.transaction():
            self._dead_in_tx(now, topic, reason, detail, payload)

    def _dead_in_tx(self, now: int, topic: str, reason: str, detail: str, payload: bytes) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        log.warning("dead letter (%s) on %s: %s", reason, topic, detail)
        self.store.add_dead_letter(
            now, topic, f"{reason}: {detail}", payload, keep=self.config.state.dead_letters_keep
        )


def _parse_status(payload: bytes) -> bool | None:
    text = payload.strip().lower()
    if text in (b"online", b"1", b"true"):
        return True
    if text in (b"offline", b"0", b"false"):
        return False
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if isinstance(doc, dict):
        online = doc.get("online")
        if isinstance(online, bool):
            return online
        state = str(doc.get("state", doc.get("status")))
        if state in ("online", "offline"):
            return state == "online"
    return None


def _health_lines(
    gw: GatewayRecord, doc: dict[str, Any], now: int, skipped: SkipCounts
) -> list[str]:
    fields: dict[str, object] = {}
    queue = doc.get("queue")
    if isinstance(queue, dict):
        for key in ("depth", "urgent", "bytes", "oldest_age_s", "sent"):
            value = queue.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields[f"queue_{key}"] = value
    for key in ("uptime_s", "cpu_temp_c"):
        value = doc.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fields[key] = value
    devices = doc.get("devices")
    if isinstance(devices, dict):
        states = [d.get("state") for d in devices.values() if isinstance(d, dict)]
        fields["devices_up"] = states.count("up")
        fields["devices_down"] = states.count("down")
    if not fields:
        return []
    try:
        line = encode_line(
            "gateway_health", {"site": gw.site, "gateway": gw.gateway}, fields, now, skipped
        )
    except CarewatchError:
        skipped.bad_points += 1
        return []
    return [line]
