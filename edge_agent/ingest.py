"""From decoded readings to queued Events: the part every source shares.

:class:`Ingest` owns the per-device codec tracking state (counter baselines, latched SOS
flags), stamps readings with the gateway clock, binds residents, picks the queue
priority, and hands drafts to the :class:`~edge_agent.queue.EventQueue` together with
the new tracking state (one transaction). Bad input is counted per device and fault,
kept in the quarantine, and logged (the first few of each kind, then every 100th):
it never stops a source.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from device_profiles.codecs import Codec, Reading, codec_for
from device_profiles.errors import CarewatchError, DecodeError
from device_profiles.events import MAX_TIME_MS, MIN_TIME_MS, valid_id
from device_profiles.profiles import Profile, ProfileRegistry
from edge_agent.clock import Clock, Stamp
from edge_agent.config import AgentConfig, DeviceConfig
from edge_agent.health import DeviceHealth, Transition
from edge_agent.queue import (
    SEEN_MAX,
    AppendResult,
    Draft,
    EventQueue,
    JsonState,
    Priority,
    QuarantineEntry,
)

log = logging.getLogger(__name__)

DEVICE_HEALTH = "device_health"
#: A device clock this far ahead of the gateway's (trusted) clock is not believed.
MAX_DEVICE_AHEAD_MS = 24 * 3600 * 1000
_LOG_FIRST = 5
_LOG_EVERY = 100


def message_digest(topic: str, payload: bytes, mid: int | None = None) -> int:
    """A 64-bit signed digest of a site message (fits an SQLite INTEGER).

    With ``mid`` (the QoS 1 packet id the site broker gave it) the digest names one
    delivery: a redelivery keeps its packet id, while a new message with the same bytes
    (Zigbee2MQTT payloads carry no counter) gets another one.
    """
    prefix = b"" if mid is None else mid.to_bytes(4, "big") + b"\0"
    h = hashlib.blake2b(prefix + topic.encode() + b"\0" + payload, digest_size=8).digest()
    return int.from_bytes(h, "big", signed=True)


class SeenMessages:
    """The newest stored site messages (digests), to recognize a broker's redelivery."""

    def __init__(self, digests: Iterable[int] = (), cap: int = SEEN_MAX) -> None:
        self._order: deque[int] = deque(maxlen=cap)
        self._set: set[int] = set()
        for d in digests:
            self.add(d)

    def add(self, digest: int) -> None:
        """Remember a stored message."""
        if digest in self._set:
            return
        if len(self._order) == self._order.maxlen:
            self._set.discard(self._order[0])
        self._order.append(digest)
        self._set.add(digest)

    def __contains__(self, digest: object) -> bool:
        return digest in self._set

    def __len__(self) -> int:
        return len(self._order)


@dataclass(frozen=True, slots=True)
class Bound:
    """A configured device with its profile and codec."""

    config: DeviceConfig
    profile: Profile
    codec: Codec

    @property
    def id(self) -> str:
        """The device id."""
        return self.config.id


class Ingest:
    """Turns readings and faults into queue submissions; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        queue: EventQueue,
        *,
        clock: Clock,
        health: DeviceHealth,
        registry: ProfileRegistry,
        states: Mapping[str, JsonState] | None = None,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.health = health
        self.registry = registry
        self.states: dict[str, JsonState] = dict(states or {})
        #: Each device's codec state as of its last successful commit: restored when a
        #: commit fails, since the failed one's state never reached the disk.
        self._committed: dict[str, JsonState] = dict(states or {})
        self.on_transition = on_transition
        self.devices: dict[str, Bound] = {}
        self._fault_counts: dict[tuple[str, str], int] = {}
        self.received = 0  # readings turned into drafts (committed or not)
        #: Site messages already stored (shared by MQTT sources, kept across reloads).
        self.seen_messages = SeenMessages()
        self.configure(config)

    def configure(self, config: AgentConfig) -> None:
        """(Re)bind devices to profiles and codecs (at start and on reload)."""
        self.config = config
        self.low_priority = frozenset(config.queue.low_priority_readings)
        devices: dict[str, Bound] = {}
        codecs: dict[str, Codec] = {}
        for dev in config.devices:
            if not dev.enabled:
                continue
            profile = self.registry.get(dev.profile)
            codec = codecs.get(profile.name)
            if codec is None:
                codec = codecs[profile.name] = codec_for(profile)
            devices[dev.id] = Bound(dev, profile, codec)
        self.devices = devices
        h = config.health
        self.health.configure(
            {
                d.id: (d.profile.kind, h.down_factor * d.profile.report_interval_s + h.down_grace_s)
                for d in devices.values()
            }
        )

    # -- readings -------------------------------------------------------------------
    def readings(
        self, device: Bound, readings: Sequence[Reading], stamp: Stamp | None = None
    ) -> asyncio.Future[AppendResult]:
        """Track, stamp and submit the readings of one device; returns the commit future."""
        stamp = stamp or self.clock.now()
        dev = device.config
        drafts: list[Draft] = []
        state = self.states.get(dev.id)
        if state is None:
            state = device.codec.initial_state()
        changed = False
        counters: dict[str, int] = {}
        quarantine: list[QuarantineEntry] = []
        for reading in readings:
            try:
                state, out = device.codec.track(state, reading)
            except DecodeError as exc:
                self._fault(dev.id, exc.fault, exc.detail, b"", stamp.ms, counters, quarantine)
                continue
            except CarewatchError as exc:
                self._fault(dev.id, "track", str(exc), b"", stamp.ms, counters, quarantine)
                continue
            except Exception as exc:  # a codec bug: counted, the device keeps its state
                log.exception("%s: codec track() failed", dev.id)
                self._fault(dev.id, "codec_bug", repr(exc), b"", stamp.ms, counters, quarantine)
                continue
            changed = True
            for r in out:
                drafts.append(self._draft(device, r, stamp, counters))
        transition = self.health.seen(dev.id, stamp.ms)
        if transition is not None:
            drafts.append(self._health_draft(transition, stamp))
        for r in readings:
            if r.reading == "availability" and r.values.get("online") is False:
                t = self.health.mark_down(dev.id, "its bridge reports it offline")
                if t is not None:
                    drafts.append(self._health_draft(t, stamp))
                    transition = t
        if changed:
            self.states[dev.id] = state
        self.received += len(drafts)
        fut = self.queue.submit(
            drafts,
            states={dev.id: state} if changed else None,
            counters=counters,
            quarantine=quarantine,
        )
        if changed:
            fut.add_done_callback(functools.partial(self._settled, dev.id, state))
        if transition is not None and self.on_transition is not None:
            self.on_transition(transition)
        return fut

    def _settled(self, device: str, state: JsonState, fut: asyncio.Future[AppendResult]) -> None:
        """Keep a device's codec state in step with what its commit made durable."""
        if not fut.cancelled() and fut.exception() is None:
            self._committed[device] = state
            return
        # Not stored: the readings come again (a site broker redelivers what was not
        # acknowledged), so track() must start from the last stored state.
        if device in self._committed:
            self.states[device] = self._committed[device]
        else:
            self.states.pop(device, None)

    def _draft(self, device: Bound, r: Reading, stamp: Stamp, counters: dict[str, int]) -> Draft:
        dev = device.config
        time_ms, device_time = stamp.ms, False
        if r.time is not None:
            limit = stamp.ms + MAX_DEVICE_AHEAD_MS if stamp.ok else MAX_TIME_MS
            if MIN_TIME_MS <= r.time <= min(limit, MAX_TIME_MS):
                time_ms, device_time = r.time, True
            else:
                counters[f"device_time_invalid.{dev.id}"] = (
                    counters.get(f"device_time_invalid.{dev.id}", 0) + 1
                )
        resident = dev.resident
        if resident is None:
            person = r.values.get("person")
            # A face terminal serves many people: the recognized person is the resident.
            if isinstance(person, str) and valid_id(person):
                resident = person
        if r.urgent:
            prio = Priority.URGENT
        elif r.reading in self.low_priority:
            prio = Priority.TELEMETRY
        else:
            prio = Priority.NORMAL
        return Draft(
            device=dev.id,
            kind=device.profile.kind,
            reading=r.reading,
            time=time_ms,
            received=stamp.ms,
            values=dict(r.values),
            resident=resident,
            clock_ok=stamp.ok,
            urgent=r.urgent,
            priority=prio,
            device_time=device_time,
        )

    def _health_draft(self, t: Transition, stamp: Stamp) -> Draft:
        bound = self.devices.get(t.device)
        return Draft(
            device=t.device,
            kind=t.kind,
            reading=DEVICE_HEALTH,
            time=stamp.ms,
            received=stamp.ms,
            values={"up": t.up, "reason": t.reason},
            resident=bound.config.resident if bound else None,
            clock_ok=stamp.ok,
            priority=Priority.NORMAL,
        )

    def flush_idle(self, now_mono: float, *, everything: bool = False) -> None:
        """Let codecs emit what they hold back for a device that went quiet.

        Pendant codecs reassemble impact windows from fragments; a window whose last
        fragments never came is emitted (marked incomplete by the codec) once the
        pendant has been quiet for ``codec_options.impact.reassembly_timeout_s``, and
        at shutdown (``everything``).
        """
        for device in self.devices.values():
            flush = getattr(device.codec, "flush", None)
            pending = getattr(device.codec, "pending_windows", None)
            state = self.states.get(device.id)
            if flush is None or pending is None or not state or not pending(state):
                continue
            impact = device.profile.codec_options.get("impact") or {}
            timeout = float(impact.get("reassembly_timeout_s", 10.0))
            st = self.health.devices.get(device.id)
            seen = st.last_seen_mono if st is not None else None
            if not everything and seen is not None and now_mono - seen < timeout:
                continue
            try:
                state, out = flush(state)
            except CarewatchError as exc:
                self.fault(device.id, "flush", str(exc))
                continue
            self.states[device.id] = state
            stamp = self.clock.now()
            counters: dict[str, int] = {}
            drafts = [self._draft(device, r, stamp, counters) for r in out]
            self.received += len(drafts)
            self.queue.submit(drafts, states={device.id: state}, counters=counters)

    def transitions(self, transitions: Sequence[Transition]) -> asyncio.Future[AppendResult] | None:
        """Queue ``device_health`` Events for transitions found by the health check."""
        if not transitions:
            return None
        stamp = self.clock.now()
        fut = self.queue.submit([self._health_draft(t, stamp) for t in transitions])
        if self.on_transition is not None:
            for t in transitions:
                self.on_transition(t)
        return fut

    # -- faults ---------------------------------------------------------------------
    def fault(
        self, device: str, fault: str, detail: str, raw: bytes | Sequence[int] = b""
    ) -> asyncio.Future[AppendResult]:
        """Count and quarantine one bad input of ``device`` (a device id or a link name)."""
        counters: dict[str, int] = {}
        quarantine: list[QuarantineEntry] = []
        data = bytes(raw) if isinstance(raw, bytes | bytearray) else repr(list(raw)).encode()
        self._fault(device, fault, detail, data, self.clock.now().ms, counters, quarantine)
        return self.queue.submit([], counters=counters, quarantine=quarantine)

    def _fault(  # noqa: PLR0917 (internal helper shared by two callers)
        self,
        device: str,
        fault: str,
        detail: str,
        raw: bytes,
        now_ms: int,
        counters: dict[str, int],
        quarantine: list[QuarantineEntry],
    ) -> None:
        key = f"decode_errors.{device}.{fault}"
        counters[key] = counters.get(key, 0) + 1
        quarantine.append(QuarantineEntry(now_ms, device, fault, detail, raw))
        self.health.error(device, fault)
        n = self._fault_counts.get((device, fault), 0) + 1
        self._fault_counts[(device, fault)] = n
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            log.warning("%s: %s: %s (%d so far)", device, fault, detail, n)
