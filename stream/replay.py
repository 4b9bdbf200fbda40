"""``carewatch replay``: run the detectors over a recorded event log with a simulated clock.

Usage::

    carewatch replay --events FILE.csv [--config FILE.yaml] [--until TIME] [--clears]

The event log is a CSV file with the header ``time,resident,device,kind,value,placement``
(extra columns are ignored):

``time``
    ISO-8601 (``2024-03-05T09:40:00+08:00``, ``...Z``); a time without an offset is local
    time of the site (``timezone`` in the config, UTC by default).
``kind`` / ``value``
    ``door`` (1 = opened, 0 = closed), ``motion`` (1 = motion, 0 = no more motion; empty
    = 1), ``checkin`` (face terminal; value ignored), ``button`` (SOS press),
    ``pendant`` (heartbeat; value = activity count), ``battery`` (percent), ``tamper``
    (1/0), ``footfall`` (``IN/OUT`` deltas, e.g. ``3/1``), ``gateway`` (1 = online,
    0 = offline), ``device_status`` (1 = up, 0 = down; ``device`` is the device).
``placement``
    where the device is installed (``front_door``, ``bathroom``, ``bedroom``, ``kitchen``,
    ``fridge``...); may be empty. The first non-empty placement of a device is its
    placement for the whole replay (it becomes ``sites.<site>.devices.<device>.placement``
    unless the config already sets one).

Every row becomes an :class:`~device_profiles.events.Event` of one site and one gateway
(``site``/``gateway`` in the config, ``replay``/``replay-gw`` by default). Rows are sorted
by time (stable); a malformed row is reported on stderr with its line and column, counted
and skipped, and the replay goes on.

The clock is simulated (:class:`OfflineRunner`): before each event, and at the end up to
``--until`` (default: the last event), every partition whose deadline has passed is ticked
in deadline order, so each alert carries the time it *would* have been raised. Each alert
is printed as one JSON line: ``time`` (ISO-8601, site local time), ``kind`` (the condition),
``action``, ``update``, ``resident``, ``subject``, ``site``, ``severity``, ``audience``,
``reason``, ``device``, ``details``. A new alert has ``"update": null``. A raise for an
alert already open is printed again only when it raises the severity (a fall found lying
still, an SOS press after a fall), with ``"update": "severity"``: that is when the alert
manager pages again. Other repeats are not printed. Clears are printed with ``--clears``.

The config (YAML) may be the stream processor's own config file (its ``sites``,
``residents`` and ``detectors`` sections are used, ``sites."*"`` gives every site its
defaults, the other sections are ignored), or hold just::

    site: home-12                 # or a mapping of settings with an ``id``
    gateway: gw-12
    timezone: Asia/Shanghai       # shorthand for sites.<site>.timezone
    sites: {home-12: {timezone: ..., capacity: 20, opening_hours: "08:00-17:00", ...}}
    residents: {r1: {lives_alone: true, inactivity: {day_cap: 8h}, absences: [[from, to]]}}
    detectors: {inactivity: {quantile: 0.97}, noshow: {...}, operations: {...}}
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

import msgspec
import yaml

from device_profiles.errors import CarewatchError, ConfigError
from device_profiles.events import Event
from stream.config import DetectorConfig
from stream.context import ConfigContext
from stream.detectors.base import AlertSignal, Detector, DetectorContext, Severity
from stream.detectors.facts import (
    key_warnings,
    merge_site,
    resident_problems,
    site_problems,
    unread_keys,
)
from stream.detectors.options import OptionProblems
from stream.detectors.sitetime import LocalTime
from stream.registry import check_options

log = logging.getLogger(__name__)

COLUMNS = ("time", "resident", "device", "kind", "value", "placement")
DEFAULT_SITE = "replay"
OWN_KEYS = ("site", "gateway", "timezone", "sites", "residents", "detectors")
#: Sections of the stream processor's config that replay does not need (so that
#: ``--config`` may be the processor's own file).
STREAM_KEYS = (
    "mqtt",
    "state",
    "ingest",
    "clock",
    "api",
    "telemetry",
    "delivery",
    "logging",
    "notifiers",
    "recipients",
    "policies",
)
DEFAULT_GATEWAY = "replay-gw"


# --- the offline runner ---------------------------------------------------------------------
class OfflineRunner:
    """Detectors over time-ordered events with a simulated clock (replay, tests, benchmarks).

    Feed events in time order with :meth:`feed`; call :meth:`advance` to move the clock
    without data (``until``). Before an event at time ``t`` every partition whose deadline
    is before ``t`` is ticked, earliest first, with ``now`` = its deadline, so alerts carry
    the time they would have been raised live. A detector that fails on an event or a tick
    is logged and counted in :attr:`errors`, and the replay goes on.
    """

    def __init__(self, detectors: Sequence[Detector[Any]], ctx: DetectorContext) -> None:
        self.detectors = list(detectors)
        self.ctx = ctx
        self.states: dict[tuple[int, str], msgspec.Struct] = {}
        self.now: int | None = None
        self.errors = 0
        self._due: dict[tuple[int, str], int] = {}
        self._heap: list[tuple[int, int, int, str]] = []
        self._seq = 0

    def feed(self, event: Event) -> list[AlertSignal]:
        """Tick what is due before ``event.time``, then fold ``event`` into every detector."""
        alerts = self._fire(event.time, inclusive=False)
        if self.now is None or event.time > self.now:
            self.now = event.time
        for index, detector in enumerate(self.detectors):
            try:
                key = detector.key(event)
                if key is None:
                    continue
                state = self.states.get((index, key))
                if state is None:
                    state = detector.initial_state(key)
                state, out = detector.step(state, event, self.ctx)
                expired = detector.expired(state)
            except Exception:  # one detector's bug must not stop a replay
                self.errors += 1
                log.exception(
                    "detector %s failed on %s:%s", detector.name, event.gateway, event.seq
                )
                continue
            alerts.extend(out)
            if expired:
                self._forget(index, key)
                continue
            self.states[(index, key)] = state
            self._schedule(index, key, detector, state)
        return alerts

    def seed(
        self,
        now: int,
        sites: Mapping[str, Mapping[str, Any]],
        residents: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Create the partitions the config declares (``Detector.configured_keys``) at ``now``.

        Each missing partition gets :meth:`Detector.seed` and its deadline, as the live
        processor does at start, so a member who never checks in is still expected.
        """
        if self.now is None or now > self.now:
            self.now = now
        for index, detector in enumerate(self.detectors):
            try:
                keys = detector.configured_keys(sites, residents)
            except Exception:
                self.errors += 1
                log.exception("detector %s: configured_keys() failed", detector.name)
                continue
            for key in keys:
                if (index, key) in self.states:
                    continue
                try:
                    state = detector.seed(key, now, self.ctx)
                except Exception:
                    self.errors += 1
                    log.exception("detector %s failed seeding %s", detector.name, key)
                    continue
                self.states[(index, key)] = state
                self._schedule(index, key, detector, state)

    def advance(self, now: int) -> list[AlertSignal]:
        """Move the clock to ``now``, ticking every deadline up to and including it."""
        alerts = self._fire(now, inclusive=True)
        if self.now is None or now > self.now:
            self.now = now
        return alerts

    def restore(self, index: int, key: str, state: msgspec.Struct) -> None:
        """Put a partition's state (e.g. decoded from storage) for detector ``index``."""
        self.states[(index, key)] = state
        self._schedule(index, key, self.detectors[index], state)

    def next_deadline(self) -> int | None:
        """The earliest pending deadline, ms UTC."""
        while self._heap:
            due, _, index, key = self._heap[0]
            if self._due.get((index, key)) == due:
                return due
            heapq.heappop(self._heap)
        return None

    def _schedule(self, index: int, key: str, detector: Detector[Any], state: Any) -> None:
        try:
            due = detector.deadline(state)
        except Exception:
            self.errors += 1
            log.exception("detector %s: deadline() failed", detector.name)
            due = None
        if due is None:
            self._due.pop((index, key), None)
            return
        if self._due.get((index, key)) == due:
            return
        self._due[(index, key)] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, index, key))

    def _forget(self, index: int, key: str) -> None:
        """Delete an expired partition (``Detector.expired``): state and deadline."""
        self.states.pop((index, key), None)
        self._due.pop((index, key), None)

    def _fire(self, limit: int, *, inclusive: bool) -> list[AlertSignal]:
        alerts: list[AlertSignal] = []
        while True:
            due = self.next_deadline()
            if due is None or due > limit or (due == limit and not inclusive):
                return alerts
            _, _, index, key = heapq.heappop(self._heap)
            del self._due[(index, key)]
            detector = self.detectors[index]
            now = max(due, self.now or due)
            try:
                state, out = detector.tick(self.states[(index, key)], now, self.ctx)
                expired = detector.expired(state)
            except Exception:
                self.errors += 1
                log.exception("detector %s failed in tick(%s)", detector.name, key)
                continue
            alerts.extend(out)
            if expired:
                self._forget(index, key)
                continue
            self.states[(index, key)] = state
            self._schedule(index, key, detector, state)
            # A deadline that does not move past ``now`` would tick forever: drop it.
            if self._due.get((index, key), now + 1) <= now:
                self.errors += 1
                log.error("detector %s: deadline did not move past %s; dropped", detector.name, now)
                self._due.pop((index, key), None)


def run_offline(
    events: Iterable[Event],
    detectors: Sequence[Detector[Any]],
    ctx: DetectorContext,
    until: int | None = None,
) -> Iterator[AlertSignal]:
    """Replay time-ordered ``events`` through ``detectors``; yield alerts as they happen.

    The clock keeps running after the last event up to ``until`` (default: the last
    event's time), so silence after the last event is judged too.
    """
    runner = OfflineRunner(detectors, ctx)
    for event in events:
        yield from runner.feed(event)
    end = until if until is not None else runner.now
    if end is not None:
        yield from runner.advance(end)


def default_detectors(
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Detector[Any]]:
    """Every detector replay runs, configured from a ``detectors`` config section.

    A section may say ``enabled: false`` to leave a detector out.
    """
    options = options or {}
    factories: list[tuple[str, Callable[..., Detector[Any] | list[Detector[Any]]]]] = []
    from stream.detectors.inactivity import InactivityDetector
    from stream.detectors.noshow import NoShowDetector
    from stream.detectors.operations import operations_detectors

    factories.append(("inactivity", InactivityDetector))
    factories.append(("noshow", NoShowDetector))
    try:
        from stream.detectors.alarm import AlarmDetector
    except ImportError:  # pragma: no cover - the emergency detector is part of the package
        pass
    else:
        factories.append(("alarm", AlarmDetector))
    detectors: list[Detector[Any]] = []
    factories.append(("operations", operations_detectors))  # last: after the others
    for name, factory in factories:
        raw = options.get(name) or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"must be a mapping of options, got {raw!r}", path=f"detectors.{name}"
            )
        section = dict(raw)
        if section.pop("enabled", True) is False:
            continue
        # The stream config's checks: every bad option named, and no option a detector
        # takes only from Python (the fall scorer).
        problems = check_options(DetectorConfig(name, name, section))
        if problems:
            raise OptionProblems(problems)
        try:
            made = factory(**section)
        except ConfigError:
            raise  # already names the option
        except (TypeError, ValueError) as exc:
            # an unknown option (TypeError) or a bad value, e.g. an invalid severity
            raise ConfigError(str(exc), path=f"detectors.{name}") from None
        detectors.extend(made if isinstance(made, list) else [made])
    return detectors


# --- CSV ------------------------------------------------------------------------------------
class RowError(CarewatchError):
    """A row of the event log is malformed; names the line and the column."""

    def __init__(self, line: int, column: str, message: str) -> None:
        self.line = line
        self.column = column
        super().__init__(f"line {line}, column {column!r}: {message}")


@dataclass
class ReplayConfig:
    """What ``--config`` says, with defaults."""

    site: str = DEFAULT_SITE
    gateway: str = DEFAULT_GATEWAY
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    residents: dict[str, dict[str, Any]] = field(default_factory=dict)
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``sites."*"``: merged into every listed site, and the config of any other site.
    default_site: dict[str, Any] = field(default_factory=dict)
    #: "path: message" of each key under a site or a resident that nothing reads (a
    #: misspelt ``capcity``): the replay runs without it, so it is told, not refused.
    warnings: list[str] = field(default_factory=list)

    def site_settings(self) -> dict[str, Any]:
        """The settings of the replayed site (created when missing)."""
        return self.sites.setdefault(self.site, {})

    @classmethod
    def load(cls, path: str | Path) -> ReplayConfig:
        """Read a replay config file; raises ConfigError naming the file and the key."""
        file = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=file) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", file=file) from exc
        return cls.from_mapping(raw or {}, file=file)

    @classmethod
    def from_mapping(cls, raw: Any, file: str | None = None) -> ReplayConfig:
        """Build from a parsed mapping (see the module doc)."""
        if not isinstance(raw, Mapping):
            raise ConfigError("must be a mapping", file=file)
        config = cls()
        for name in ("sites", "residents", "detectors"):
            section = raw.get(name) or {}
            if not isinstance(section, Mapping) or not all(
                isinstance(v, Mapping) for v in section.values()
            ):
                raise ConfigError("must map ids to mappings", file=file, path=name)
            setattr(config, name, {str(k): dict(v) for k, v in section.items()})
        site = raw.get("site", DEFAULT_SITE)
        if isinstance(site, Mapping):
            settings = dict(site)
            config.site = str(settings.pop("id", DEFAULT_SITE))
            config.site_settings().update(settings)
        elif isinstance(site, str) and site:
            config.site = site
        else:
            raise ConfigError(f"{site!r} is not a site id or a mapping", file=file, path="site")
        gateway = raw.get("gateway", DEFAULT_GATEWAY)
        if not isinstance(gateway, str) or not gateway:
            raise ConfigError(f"{gateway!r} is not a gateway id", file=file, path="gateway")
        config.gateway = gateway
        # What the detectors read under sites and residents: checked as the stream
        # config checks it, so a bad value stops the replay instead of being logged.
        problems = [p for sid, cfg in config.sites.items() for p in site_problems(sid, cfg)]
        problems += [
            p for rid, cfg in config.residents.items() for p in resident_problems(rid, cfg)
        ]
        if problems:
            raise OptionProblems(problems, file=file)
        unread = unread_keys(raw.get("sites"), raw.get("residents"))
        if isinstance(site, Mapping):
            own = {k: v for k, v in site.items() if k != "id"}
            unread += tuple(("sites", "", key) for _, _, key in unread_keys({"": own}, None))
        config.warnings = [
            f"{path.replace('sites..', 'site.', 1)}: {message}"
            for path, message in key_warnings(unread)
        ]
        # A stream config's ``sites."*"`` holds the defaults of every site.
        defaults = config.sites.pop("*", None)
        if defaults is not None:
            config.default_site = defaults
            for name in {config.site, *config.sites}:
                config.sites[name] = merge_site(defaults, config.sites.get(name, {}))
        if "timezone" in raw:
            config.site_settings()["timezone"] = raw["timezone"]
        unknown = sorted(str(k) for k in raw if k not in OWN_KEYS and k not in STREAM_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown keys (allowed: {', '.join(OWN_KEYS)}, and the stream config's)",
                file=file,
                path=", ".join(unknown),
            )
        return config

    def context(self) -> ConfigContext:
        """A detector context over this config; absences come from ``residents.*.absences``."""
        spans: dict[str, list[tuple[int, int]]] = {}
        tz = _tz(self.sites.get(self.site, {}).get("timezone"))
        for resident, settings in self.residents.items():
            for i, span in enumerate(settings.get("absences") or []):
                where = f"residents.{resident}.absences[{i}]"
                if not isinstance(span, list | tuple) or len(span) != 2:
                    raise ConfigError("must be [from, to]", path=where)
                start, end = (_config_time(v, tz, where) for v in span)
                spans.setdefault(resident, []).append((start, end))

        def absent(resident: str, at_ms: int) -> bool:
            return any(a <= at_ms < b for a, b in spans.get(resident, ()))

        return ConfigContext(self.sites, self.residents, absent, default_site=self.default_site)


def _tz(name: Any) -> tzinfo:
    return ConfigContext({"s": {"timezone": name}} if isinstance(name, str) else {}).timezone("s")


def _config_time(value: Any, tz: tzinfo, where: str) -> int:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError as exc:
            raise ConfigError(f"{value!r} is not an ISO-8601 time", path=where) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp() * 1000)


def parse_time(text: str, tz: tzinfo) -> int:
    """ms UTC of an ISO-8601 time; a time without an offset is local time in ``tz``."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return round(moment.timestamp() * 1000)


def _int(text: str, line: int, column: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise RowError(line, column, f"{text!r} is not {what}") from None


def _flag(text: str, line: int, default: bool | None = None) -> bool:
    text = text.strip().lower()
    if text in ("1", "true", "on", "open", "yes"):
        return True
    if text in ("0", "false", "off", "closed", "close", "no"):
        return False
    if not text and default is not None:
        return default
    raise RowError(line, "value", f"{text!r} is not 1 or 0")


def row_event(
    row: Mapping[str, str], line: int, seq: int, config: ReplayConfig, tz: tzinfo
) -> Event:
    """The Event of one CSV row; raises :class:`RowError` naming the line and column."""
    text = row.get("time") or ""
    try:
        time = parse_time(text, tz)
    except ValueError:
        raise RowError(line, "time", f"{text!r} is not an ISO-8601 time") from None
    resident = (row.get("resident") or "").strip() or None
    device = (row.get("device") or "").strip()
    kind = (row.get("kind") or "").strip().lower()
    value = (row.get("value") or "").strip()
    if not device:
        raise RowError(line, "device", "is empty")
    urgent = False
    values: dict[str, Any]
    if kind == "door":
        is_open = _flag(value, line)
        kind, reading, values = "door", "contact", {"contact": not is_open, "open": is_open}
    elif kind == "motion":
        reading, values = "occupancy", {"occupancy": _flag(value, line, default=True)}
    elif kind == "checkin":
        kind, reading = "face_terminal", "checkin"
        values = {"person": resident or "", "score": 1.0, "liveness": True, "terminal": device}
    elif kind in ("button", "press", "sos"):
        kind, reading, values, urgent = "pendant", "press", {"button": "sos"}, True
    elif kind == "pendant":
        activity = _int(value or "0", line, "value", "an activity count")
        reading, values = "heartbeat", {"activity": activity}
    elif kind == "battery":
        level = _int(value, line, "value", "a battery percentage")
        if not 0 <= level <= 100:
            raise RowError(line, "value", f"{level} is not a percentage (0-100)")
        reading, values = "battery", {"battery": level, "battery_low": level <= 20}
    elif kind == "tamper":
        reading, values = "tamper", {"tamper": _flag(value, line)}
    elif kind == "footfall":
        parts = value.split("/")
        if len(parts) != 2:
            raise RowError(line, "value", f"{value!r} is not IN/OUT counts (e.g. 3/1)")
        count_in = _int(parts[0], line, "value", "a count")
        count_out = _int(parts[1], line, "value", "a count")
        if count_in < 0 or count_out < 0:
            raise RowError(line, "value", "counts must not be negative")
        reading, values = "counts", {"in": count_in, "out": count_out}
    elif kind == "gateway":
        return Event(
            gateway=device,
            seq=seq,
            time=time,
            received=time,
            site=config.site,
            device=device,
            kind="gateway",
            reading="status",
            values={"online": _flag(value, line)},
        ).checked()
    elif kind == "device_status":
        reading, values = "device_status", {"device": device, "up": _flag(value, line)}
        return Event(
            gateway=config.gateway,
            seq=seq,
            time=time,
            received=time,
            site=config.site,
            device=config.gateway,
            kind="gateway",
            reading=reading,
            values=values,
        ).checked()
    elif not kind:
        raise RowError(line, "kind", "is empty")
    else:
        raise RowError(
            line,
            "kind",
            f"{kind!r} is not a known kind (door, motion, checkin, button, pendant, battery, "
            "tamper, footfall, gateway, device_status)",
        )
    try:
        return Event(
            gateway=config.gateway,
            seq=seq,
            time=time,
            received=time,
            site=config.site,
            device=device,
            kind=kind,
            reading=reading,
            values=values,
            resident=resident,
            urgent=urgent,
        ).checked()
    except CarewatchError as exc:
        column = (
            "time" if "time" in str(exc) else "resident" if "resident" in str(exc) else "device"
        )
        raise RowError(line, column, str(exc)) from None


@dataclass
class LoadedLog:
    """Events read from a CSV log (time-ordered), and the rows that were set aside."""

    events: list[Event]
    errors: list[RowError]
    placements: dict[str, str]


def read_events(
    stream: TextIO, config: ReplayConfig, on_error: Callable[[RowError], None]
) -> LoadedLog:
    """Read a CSV event log; malformed rows go to ``on_error`` and are skipped."""
    tz = _tz(config.sites.get(config.site, {}).get("timezone"))
    reader = csv.DictReader(stream)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header and c != "placement"]
    if missing:
        raise ConfigError(
            f"the header must name {', '.join(COLUMNS)} (missing: {', '.join(missing)})",
            path="line 1",
        )
    reader.fieldnames = header
    events: list[Event] = []
    errors: list[RowError] = []
    placements: dict[str, str] = {}
    seq = 0
    for row in reader:
        line = reader.line_num
        if None in row:  # more fields than the header
            error = RowError(line, str(len(header) + 1), "more fields than the header")
            errors.append(error)
            on_error(error)
            continue
        if all(not (v or "").strip() for v in row.values()):
            continue
        seq += 1
        try:
            event = row_event(row, line, seq, config, tz)
        except RowError as error:
            errors.append(error)
            on_error(error)
            continue
        placement = (row.get("placement") or "").strip()
        if placement and event.device not in placements:
            placements[event.device] = placement
        events.append(event)
    events.sort(key=lambda e: e.time)  # stable: rows of the same time keep their order
    return LoadedLog(events, errors, placements)


def apply_placements(config: ReplayConfig, placements: Mapping[str, str]) -> None:
    """Record the CSV's placements as site device config (the config file wins)."""
    devices = config.site_settings().setdefault("devices", {})
    if not isinstance(devices, dict):
        return
    for device, placement in placements.items():
        entry = devices.get(device)
        if entry is None:
            devices[device] = {"placement": placement}
        elif isinstance(entry, dict) and "placement" not in entry:
            entry["placement"] = placement


def alert_json(alert: AlertSignal, lt: LocalTime, update: str | None = None) -> str:
    """One JSON line for an alert (see the module doc); ``update``: ``"severity"`` when it
    raises the severity of an alert already open."""
    out = {
        "time": lt.iso(alert.time),
        "kind": alert.condition,
        "action": alert.action,
        "update": update,
        "resident": alert.resident,
        "subject": alert.subject,
        "site": alert.site,
        "severity": str(alert.severity),
        "audience": str(alert.audience),
        "reason": alert.reason,
        "device": alert.device,
        "details": dict(alert.details),
    }
    return json.dumps(out, ensure_ascii=False, default=str)


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class AlertLines:
    """Which detector signals replay prints, as the alert manager would act on them.

    One alert is open per dedup key (``AlertSignal.key``). A raise for a key not open is a
    new alert; a raise for an open key is printed only when its severity is higher than
    the highest so far (``"update": "severity"``: the alert manager pages again then);
    a clear closes the key and is printed only with ``clears``.
    """

    def __init__(self, lt: LocalTime, *, clears: bool = False) -> None:
        self.lt = lt
        self.clears = clears
        self.open: dict[str, Severity] = {}

    def lines(self, alerts: Iterable[AlertSignal]) -> Iterator[str]:
        """The JSON lines to print for ``alerts``, in order."""
        for alert in alerts:
            if alert.action == "clear":
                self.open.pop(alert.key, None)
                if self.clears:
                    yield alert_json(alert, self.lt)
                continue
            current = self.open.get(alert.key)
            if current is None:
                self.open[alert.key] = alert.severity
                yield alert_json(alert, self.lt)
            elif _RANK[alert.severity] > _RANK[current]:
                self.open[alert.key] = alert.severity
                yield alert_json(alert, self.lt, update="severity")


# --- command --------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carewatch replay",
        description="Replay an event log (CSV) through the detectors with a simulated clock "
        "and print the alerts they would have raised, one JSON line each.",
    )
    parser.add_argument(
        "--events", required=True, help="CSV: time,resident,device,kind,value,placement"
    )
    parser.add_argument("--config", help="YAML: site settings, residents, detector options")
    parser.add_argument(
        "--until", help="keep the clock running up to this time (ISO-8601; default: last event)"
    )
    parser.add_argument("--clears", action="store_true", help="also print when alerts clear")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``carewatch replay``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="carewatch replay: %(message)s")
    try:
        config = ReplayConfig.load(args.config) if args.config else ReplayConfig()
        for warning in config.warnings:
            print(f"carewatch replay: {args.config}: WARNING {warning}", file=sys.stderr)
        tz = _tz(config.sites.get(config.site, {}).get("timezone"))
        until = None
        if args.until:
            try:
                until = parse_time(args.until, tz)
            except ValueError:
                raise ConfigError(
                    f"{args.until!r} is not an ISO-8601 time", path="--until"
                ) from None
        bad = 0

        def report(error: RowError) -> None:
            nonlocal bad
            bad += 1
            print(f"carewatch replay: {args.events}: {error} (row skipped)", file=sys.stderr)

        try:
            with open(args.events, encoding="utf-8", newline="") as stream:
                loaded = read_events(stream, config, report)
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=args.events) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r}: "
                f"{exc.reason}); save the CSV as UTF-8",
                file=args.events,
            ) from None
        except ConfigError as exc:
            raise ConfigError(exc.message, file=args.events, path=exc.path) from None
        apply_placements(config, loaded.placements)
        ctx = config.context()
        try:
            detectors = default_detectors(config.detectors)
        except ConfigError as exc:
            if exc.file is not None or not args.config:
                raise
            raise ConfigError(exc.message, file=args.config, path=exc.path) from None
    except ConfigError as exc:
        print(f"carewatch replay: {exc}", file=sys.stderr)
        return 2
    lt = LocalTime(ctx.timezone(config.site))
    out = sys.stdout
    printed = 0
    runner = OfflineRunner(detectors, ctx)
    lines = AlertLines(lt, clears=args.clears)

    def emit(alerts: list[AlertSignal]) -> None:
        nonlocal printed
        for line in lines.lines(alerts):
            out.write(line + "\n")
            printed += 1

    try:
        if loaded.events:
            runner.seed(loaded.events[0].time, config.sites, config.residents)
        for event in loaded.events:
            if until is not None and event.time > until:
                break  # --until stops the replay there, even before the log ends
            emit(runner.feed(event))
        end = until if until is not None else runner.now
        if end is not None:
            emit(runner.advance(end))
        out.flush()
    except BrokenPipeError:  # the reader (head, grep -m) has seen enough
        sys.stderr.close()
        return 0
    print(
        f"carewatch replay: {len(loaded.events)} events, {printed} alerts printed, "
        f"{bad} malformed rows skipped, {runner.errors} detector errors",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
