"""The whole carewatch chain on one machine, driven for the end-to-end test (test_chain.py).

Builds on :mod:`carewatch.demo` (its agent and stream configs, its process handling) but
runs against the test session's Mosquitto and InfluxDB under a topic root and a database
of its own, with two sites, each with its own gateway:

``home-li`` (a resident's home)
    a Zigbee motion sensor (Zigbee2MQTT on the site broker) of Mr Li, who lives alone;
``center-1`` (a day-care center, ``type: center``)
    an RS-485 people counter (Modbus RTU over a PTY), a face-recognition check-in terminal
    (MQTT) and the RF receiver (a PTY) of the alarm pendant Mrs Wang wears at the center.

What runs: the simulators on their real transports, one ``carewatch agent`` process per
site, ``carewatch stream`` (every shipped detector, telemetry to InfluxDB), and a
subscriber in this process that records every Event batch and every alert-topic message.
:func:`run_chain` returns a :class:`Chain` holding what was seen; the tests assert on it
and on InfluxDB, which outlives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import yaml

from carewatch.demo import agent_config, spawn, stop_process, stream_config
from carewatch.services import InfluxDBService, MosquittoService
from device_profiles.codecs import codec_for
from device_profiles.errors import EventError
from device_profiles.events import Event, decode_batch
from device_profiles.pendant_trigger import ImpactWindow
from device_profiles.profiles import ProfileRegistry
from simulators.pendant_device import PendantDevice
from simulators.scenario import Environment, Scenario, SimulatorSet, parse_scenario
from simulators.traces import npz_trace

SISFALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "sisfall"
SISFALL_TRAIN = SISFALL / "sisfall_train.npz"
#: The recording replayed as the fall: young adult SA01, F01 (forward slip while walking).
FALL_RECORDING = ("SA01", "F01", 1)

HOME = "home-li"
CENTER = "center-1"
CAPACITY = 10
#: People counted in at the center: more than the room holds.
ENTERING = (7, 6)
#: Mr Li's silence limit, instead of the fixed 6 h that applies while there is no history.
SILENCE_LIMIT_S = 10
#: Both members are expected by a local time this far after the chain starts (rounded up
#: to the minute): past the stream's start, so the no-show is observed live, and soon.
DAYCARE_LEAD_S = 30
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

#: Ceilings of the waits (generous: the machine is shared and loaded).
READY_TIMEOUT_S = 40.0
ALERTS_TIMEOUT_S = 150.0  # the no-show falls due up to DAYCARE_LEAD_S + 60 s after start
INFLUX_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Expected:
    """An alert the run must raise: ``condition`` about ``subject``."""

    condition: str
    subject: str
    site: str


@dataclass
class Chain:
    """What one run of the chain produced (see :func:`run_chain`)."""

    root: str
    database: str
    influx: InfluxDBService
    zone: ZoneInfo
    workdir: Path
    expected: list[Expected]
    daycare_by: str = ""
    #: Every Event seen on ``{root}/+/+/events``, by (gateway, seq).
    events: dict[tuple[str, int], Event] = field(default_factory=dict)
    #: Every document seen on ``{root}/+/alerts/+``, in arrival order.
    alert_messages: list[dict[str, Any]] = field(default_factory=list)
    #: The fall replayed (npz index), None when the dataset is absent.
    fall_index: int | None = None
    #: Whether the stream could load the packaged fall classifier, and its threshold.
    classifier: bool = False
    threshold: float | None = None
    #: Why the packaged model file does not load (None: loads, or none is packaged).
    broken_model: str | None = None
    #: Scenario steps that failed, and why the run stopped waiting, if it did.
    problems: list[str] = field(default_factory=list)

    # -- alerts --------------------------------------------------------------------------
    def alerts(self) -> dict[str, dict[str, Any]]:
        """The newest state of every alert seen on the alert topic, by alert id."""
        out: dict[str, dict[str, Any]] = {}
        for message in self.alert_messages:
            out[str(message["alert"]["id"])] = message["alert"]
        return out

    def messages_for(self, condition: str, subject: str) -> list[dict[str, Any]]:
        """Alert-topic documents (``event``, ``alert``...) about ``condition``/``subject``."""
        return [
            m
            for m in self.alert_messages
            if m["alert"].get("condition") == condition and m["alert"].get("subject") == subject
        ]

    def raised(self, condition: str, subject: str) -> dict[str, Any] | None:
        """The alert as it was raised (its first ``raised`` message), or None."""
        for message in self.messages_for(condition, subject):
            if message.get("event") == "raised":
                alert: dict[str, Any] = message["alert"]
                return alert
        return None

    def missing(self) -> list[Expected]:
        """Expected alerts not raised (yet)."""
        return [e for e in self.expected if self.raised(e.condition, e.subject) is None]

    # -- events --------------------------------------------------------------------------
    def events_of(self, device: str, reading: str) -> list[Event]:
        """Events of ``device`` with ``reading``, in sequence order."""
        found = [e for e in self.events.values() if e.device == device and e.reading == reading]
        return sorted(found, key=lambda e: (e.gateway, e.seq))

    # -- InfluxDB ------------------------------------------------------------------------
    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL SELECT on this run's database."""
        return self.influx.rows(query, self.database)

    def alert_rows(self, alert_id: str) -> list[dict[str, Any]]:
        """The transitions of one alert written to the ``alerts`` measurement."""
        return self.rows(
            'SELECT "alert_id", "transition", "kind", "severity", "site", "resident", "device" '
            f'FROM "alerts" WHERE "alert_id" = \'{_quote(alert_id)}\''
        )

    def event_rows(self, event: Event) -> list[dict[str, Any]]:
        """The telemetry points of ``event`` (measurement = device kind, tags, event_seq)."""
        return self.rows(
            f'SELECT * FROM "{event.kind}" WHERE "gateway" = \'{_quote(event.gateway)}\''
            f" AND \"device\" = '{_quote(event.device)}'"
            f' AND "reading" = \'{_quote(event.reading)}\' AND "event_seq" = {event.seq}'
        )

    def in_influx(self, event: Event) -> bool:
        """True when ``event``'s point is in InfluxDB with the event's own time."""
        return any(row.get("time") == event.time for row in self.event_rows(event))

    def influx_missing(self) -> list[str]:
        """What the tests look for in InfluxDB and is not there (yet)."""
        missing: list[str] = []
        for alert_id, alert in self.alerts().items():
            if not self.alert_rows(alert_id):
                missing.append(f"alert {alert['condition']}/{alert['subject']} ({alert_id})")
        for event in self.key_events():
            if not self.in_influx(event):
                missing.append(f"event {event.device} {event.reading} #{event.seq}")
        return missing

    def key_events(self) -> list[Event]:
        """The device events behind the expected alerts."""
        keys: list[Event] = []
        keys += self.events_of("pendant-wang", "impact")
        keys += [e for e in self.events_of("motion-li", "occupancy") if e.values.get("occupancy")]
        keys += self.events_of("face-gate", "checkin")
        keys += [e for e in self.events_of("counter-hall", "counts") if e.values.get("in")]
        return keys

    # -- diagnostics ---------------------------------------------------------------------
    def logs(self, lines: int = 40) -> str:
        """The tail of every process log of the run, for assertion messages."""
        parts = [f"work directory: {self.workdir}", *self.problems]
        for log in sorted(self.workdir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# -- preparation ---------------------------------------------------------------------------


def noon_zone(now: datetime | None = None) -> ZoneInfo:
    """A fixed-offset zone in which it is now between 12:00 and 13:00.

    Habits, opening hours and check-in times are local: running at local noon keeps the
    test away from midnight (day roll-over), the night limits and the opening hours'
    edges whenever it runs. ``Etc/GMT-3`` is UTC+3 (POSIX signs are inverted).
    """
    now = now or datetime.now(UTC)
    offset = 12 - now.astimezone(UTC).hour  # -11 .. +12, all of which exist
    return ZoneInfo("Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}")


def find_recording(npz: Path, subject: str, activity: str, trial: int) -> int:
    """Index of a recording in a SisFall-format npz file (KeyError when absent)."""
    import numpy as np

    with np.load(npz, allow_pickle=False) as data:
        subjects, activities, trials = data["subject"], data["activity"], data["trial"]
        falls = data["is_fall"]
        for i in range(len(subjects)):
            if (str(subjects[i]), str(activities[i]), int(trials[i])) == (
                subject,
                activity,
                trial,
            ):
                if not bool(falls[i]):
                    raise KeyError(f"{subject} {activity} #{trial} is not a fall recording")
                return i
    raise KeyError(f"{npz}: no recording {subject} {activity} #{trial}")


def packaged_classifier() -> tuple[bool, float | None, str | None]:
    """Whether the stream's alarm detector can load the packaged fall classifier.

    Mirrors :func:`stream.detectors.alarm._default_scorer`: without a loadable model the
    detector alerts impacts unconfirmed. Returns (loaded, threshold, why not) where "why
    not" is set when a model file is packaged but does not load (a broken model must not
    go unnoticed). Imported dynamically: the fall package is optional to the runtime.
    """
    try:
        module: Any = importlib.import_module("stream.fall.model")
    except ImportError:
        return False, None, None
    try:
        classifier = module.FallClassifier.load()
    except Exception as exc:
        packaged = Path(module.shipped_model_path()).is_file()
        return False, None, f"{type(exc).__name__}: {exc}" if packaged else None
    threshold = getattr(classifier, "threshold", None)
    return True, float(threshold) if threshold is not None else 0.5, None


def trigger_windows(profile: str, index: int) -> list[ImpactWindow]:
    """The windows a pendant of ``profile`` uploads for SisFall recording ``index``."""
    trace, rate_hz = npz_trace(SISFALL_TRAIN, index)
    codec: Any = codec_for(ProfileRegistry.load().get(profile))
    return PendantDevice(codec, "00A1B2C3").windows(trace, rate_hz)


def local_ms(zone: ZoneInfo, day: date, hhmm: str) -> int:
    """``hhmm`` on local ``day`` in ``zone``, as ms UTC."""
    hours, minutes = (int(x) for x in hhmm.split(":"))
    at = datetime(day.year, day.month, day.day, hours, minutes, tzinfo=zone)
    return int(at.timestamp() * 1000)


def daycare_by(zone: ZoneInfo, now: datetime | None = None) -> str:
    """``HH:MM`` at least :data:`DAYCARE_LEAD_S` from now, local to ``zone``."""
    at = (now or datetime.now(UTC)).astimezone(zone) + timedelta(seconds=DAYCARE_LEAD_S + 59)
    return f"{at.hour:02d}:{at.minute:02d}"


def scenarios(
    registry: ProfileRegistry, zone: ZoneInfo, tag: str, fall_index: int | None
) -> tuple[Scenario, Scenario]:
    """The home's and the center's scenarios (steps counted from the moment all is ready)."""
    home = parse_scenario(
        {
            "name": "silent-resident",
            "site": HOME,
            "devices": [
                {
                    "id": "motion-li",
                    "profile": "aqara-rtcgq11lm",
                    "resident": "li",
                    # Unique on the shared test broker: retained availability stays there.
                    "options": {"friendly_name": f"li_living_room_{tag}"},
                }
            ],
            # Mr Li moves once in the living room, then nothing more.
            "steps": [{"at": 0, "device": "motion-li", "action": "motion"}],
            "expect": [{"condition": "inactivity", "subject": "li"}],
        },
        registry,
        source="<chain:home>",
    )
    steps: list[dict[str, Any]] = [
        # Mrs Ma never checks in (she is watched from her config alone); Mr Zhou checks
        # in now, before the time they are both expected by.
        {"at": 0, "device": "face-gate", "action": "checkin", "args": {"person": "zhou"}},
        {"at": 0, "device": "counter-hall", "action": "enter", "args": {"n": ENTERING[0]}},
        {"at": 3, "device": "counter-hall", "action": "enter", "args": {"n": ENTERING[1]}},
    ]
    expect: list[dict[str, Any]] = [
        {"condition": "noshow", "subject": "ma"},
        {"condition": "crowding", "subject": CENTER},
    ]
    if fall_index is not None:
        trace = {"npz": str(SISFALL_TRAIN), "index": fall_index}
        steps.append(
            {"at": 1, "device": "pendant-wang", "action": "impact", "args": {"trace": trace}}
        )
        expect.append({"condition": "emergency", "subject": "wang"})
    center = parse_scenario(
        {
            "name": "day-care-center",
            "site": CENTER,
            "devices": [
                {"id": "counter-hall", "profile": "beamcount-irc200"},
                {
                    "id": "face-gate",
                    "profile": "hikvision-ds-k1t341",
                    "options": {"terminal_id": "44:19:b6:00:00:01"},
                },
                {
                    "id": "pendant-wang",
                    "profile": "oem-rf433-button-pendant",
                    "resident": "wang",
                    "options": {"pendant_id": "00A1B2C3"},
                },
            ],
            "steps": steps,
            "expect": expect,
        },
        registry,
        source="<chain:center>",
    )
    return home, center


def stream_doc(
    scenario: Scenario,
    broker: MosquittoService,
    influx: InfluxDBService,
    workdir: Path,
    *,
    root: str,
    tag: str,
    database: str,
    zone: ZoneInfo,
    by: str,
) -> dict[str, Any]:
    """The demo's stream config, with this run's root, database, sites and residents."""
    doc = stream_config(scenario, broker, influx, workdir)
    doc["mqtt"].update({"root": root, "client_id": f"cw-chain-stream-{tag}"})
    doc["state"]["synchronous"] = "normal"  # a test database: no fsync per message
    doc["telemetry"].update({"database": database, "flush_interval": "500ms"})
    doc["sites"] = {
        HOME: {
            "timezone": zone.key,
            "quiet_hours": False,
            "devices": {"motion-li": {"placement": "living_room"}},
        },
        CENTER: {
            "timezone": zone.key,
            "quiet_hours": False,
            "type": "center",
            "capacity": CAPACITY,
            "opening_hours": "08:00-18:00",
            "opening_days": ALL_DAYS,
        },
    }
    limit = f"{SILENCE_LIMIT_S}s"
    schedule = {"site": CENTER, "days": ALL_DAYS, "by": by}
    doc["residents"] = {
        "li": {
            "home": HOME,
            "inactivity": {"default_day_limit": limit, "default_night_limit": limit},
        },
        "ma": {"lives_alone": True, "daycare": schedule},
        "zhou": {"daycare": schedule},
        "wang": {},
    }
    return doc


def agent_doc(
    scenario: Scenario,
    sims: SimulatorSet,
    broker: MosquittoService,
    workdir: Path,
    *,
    root: str,
    tag: str,
) -> dict[str, Any]:
    """The demo's agent config for one site, under this run's topic root."""
    doc = agent_config(scenario, sims, broker, workdir)
    doc["gateway"] = f"gw-{scenario.site}"
    doc["broker"].update({"topic_root": root, "client_id": f"cw-chain-{scenario.site}-{tag}"})
    return doc


# -- the run -------------------------------------------------------------------------------


async def _watch(
    broker: MosquittoService, root: str, chain: Chain, subscribed: asyncio.Event
) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{chain.database}-watch") as c:
        await c.subscribe(f"{root}/+/+/events", qos=1)
        await c.subscribe(f"{root}/+/alerts/+", qos=1)
        subscribed.set()
        async for message in c.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if str(message.topic).endswith("/events"):
                try:
                    batch = decode_batch(payload)
                except EventError as exc:
                    chain.problems.append(f"malformed batch on {message.topic}: {exc}")
                    continue
                for event in batch:
                    chain.events.setdefault((event.gateway, event.seq), event)
            elif payload:  # an empty retained message clears a resolved alert
                try:
                    body = json.loads(payload)
                except ValueError as exc:
                    chain.problems.append(f"malformed alert on {message.topic}: {exc}")
                    continue
                if isinstance(body, dict) and isinstance(body.get("alert"), dict):
                    chain.alert_messages.append(body)


def _health(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, timeout=2) as answer:
        doc: dict[str, Any] = json.loads(answer.read())
    return doc


async def _until(
    check: Callable[[], Awaitable[bool] | bool],
    limit_s: float,
    procs: dict[str, subprocess.Popen[bytes]],
    *,
    every: float = 0.25,
) -> bool:
    """Poll ``check`` until it is true (True), ``limit_s`` passed or a process died (False)."""
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline or any(p.poll() is not None for p in procs.values()):
            return False
        await asyncio.sleep(every)


async def _stream_ready(port: int) -> bool:
    try:
        doc = await asyncio.to_thread(_health, port)
    except OSError:
        return False
    return bool(doc.get("mqtt_connected"))


async def _probe(
    chain: Chain,
    device: str,
    action: Callable[[], Awaitable[Any]] | None,
    procs: dict[str, subprocess.Popen[bytes]],
) -> bool:
    """Until an Event of ``device`` crosses the whole chain, nudge the device now and then.

    An agent opens its serial ports and subscribes on the site broker a moment after it
    starts; what a device sends before that is lost, as with a real gateway booting.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if action is not None:
            await action()
        seen = await _until(
            lambda: any(e.device == device for e in chain.events.values()), 2.0, procs
        )
        if seen:
            return True
        if any(p.poll() is not None for p in procs.values()):
            break
    chain.problems.append(f"no event of {device} crossed the chain")
    return False


@contextlib.contextmanager
def _processes() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield procs
    finally:
        # Agents first: the stream keeps receiving what they flush while stopping.
        for name in sorted(procs, key=lambda n: n == "stream"):
            stop_process(procs[name])


async def run_chain(
    broker: MosquittoService, influx: InfluxDBService, database: str, workdir: Path, tag: str
) -> Chain:
    """Start everything, play both scenarios, wait for the alerts and for InfluxDB."""
    root = f"t-{tag}/carewatch/v1"
    zone = noon_zone()
    by = daycare_by(zone)
    fall_index: int | None = None
    if SISFALL_TRAIN.is_file():
        fall_index = find_recording(SISFALL_TRAIN, *FALL_RECORDING)
    registry = ProfileRegistry.load()
    home, center = scenarios(registry, zone, tag, fall_index)
    expected = [Expected(e.condition, e.subject, s.site) for s in (home, center) for e in s.expect]
    classifier, threshold, broken = packaged_classifier()
    chain = Chain(
        root=root,
        database=database,
        influx=influx,
        zone=zone,
        workdir=workdir,
        expected=expected,
        daycare_by=by,
        fall_index=fall_index,
        classifier=classifier,
        threshold=threshold,
        broken_model=broken,
    )
    sets: dict[str, SimulatorSet] = {}
    subscribed = asyncio.Event()
    watcher = asyncio.create_task(_watch(broker, root, chain, subscribed))
    try:
        with _processes() as procs:
            for scenario in (home, center):
                site_dir = workdir / scenario.site
                site_dir.mkdir(parents=True, exist_ok=True)
                env = Environment(broker.host, broker.port, serial_dir=str(site_dir / "dev"))
                sims = sets[scenario.site] = SimulatorSet(scenario, env)
                await sims.start()
                doc = agent_doc(scenario, sims, broker, site_dir, root=root, tag=tag)
                (workdir / f"agent-{scenario.site}.yaml").write_text(yaml.safe_dump(doc))
            doc = stream_doc(
                center,
                broker,
                influx,
                workdir,
                root=root,
                tag=tag,
                database=database,
                zone=zone,
                by=by,
            )
            (workdir / "stream.yaml").write_text(yaml.safe_dump(doc))
            await asyncio.wait_for(subscribed.wait(), READY_TIMEOUT_S)

            procs["stream"] = spawn(
                ["stream", "--config", str(workdir / "stream.yaml")], workdir / "stream.log"
            )
            port = int(doc["api"]["port"])
            if not await _until(lambda: _stream_ready(port), READY_TIMEOUT_S, procs):
                chain.problems.append("the stream processor did not connect")
                return chain
            for site in (HOME, CENTER):
                config = workdir / f"agent-{site}.yaml"
                procs[site] = spawn(["agent", "--config", str(config)], workdir / f"{site}.log")

            h, c = sets[HOME].sims, sets[CENTER].sims
            pendant: Any = c["pendant-wang"]
            face: Any = c["face-gate"]
            motion: Any = h["motion-li"]
            ready = await asyncio.gather(
                _probe(chain, "pendant-wang", lambda: pendant.heartbeat(activity=0), procs),
                _probe(chain, "face-gate", face.heartbeat, procs),
                _probe(chain, "motion-li", motion.report, procs),
                # Polled: its first poll is the baseline the next ones count people from.
                _probe(chain, "counter-hall", None, procs),
            )
            if not all(ready):
                return chain

            await asyncio.gather(sets[HOME].play(), sets[CENTER].play())
            for sims in sets.values():
                chain.problems += [
                    f"step {s.device}.{s.action} at {at:.0f}s failed: {err}"
                    for at, s, err in sims.log
                    if err
                ]
            if not await _until(lambda: not chain.missing(), ALERTS_TIMEOUT_S, procs):
                chain.problems.append(f"alerts still missing: {chain.missing()}")
            # Telemetry is written in the background: wait until what the tests look
            # for is there (the session InfluxDB keeps it for the assertions).
            if not await _until(
                lambda: asyncio.to_thread(lambda: not chain.influx_missing()),
                INFLUX_TIMEOUT_S,
                procs,
                every=0.5,
            ):
                chain.problems.append(f"not in InfluxDB: {chain.influx_missing()}")
            for name, proc in procs.items():
                if proc.poll() is not None:
                    chain.problems.append(f"{name} exited with {proc.returncode}")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        for sims in sets.values():
            await sims.stop()
    return chain
