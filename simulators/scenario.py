"""Scenarios: scripted days at a site, played by the simulators on their real transports.

A scenario is a YAML file (or a dict) with the devices of one site, the steps to play
(who presses, which door opens, how many people enter, which fault to inject) and the
ground truth the chain should detect. The same file drives ``carewatch simulate``,
``carewatch demo`` and the end-to-end tests::

    name: morning-at-the-center
    site: demo-site
    time_scale: 1            # scenario seconds per real second (60: a minute a second)
    devices:
      - id: pendant-r1       # device id in the gateway config
        profile: oem-rf433-button-pendant
        resident: r1
        options: {pendant_id: 4097}   # simulator options (friendly_name, terminal_id...)
    steps:
      - {at: 2s, device: pendant-r1, action: press}
      - {at: 1m, device: door-r1, action: open_door}
      - {at: 90s, device: door-r1, fault: garbage}
      - {at: 2m, device: counter-1, action: enter, args: {n: 12}}
    expect:                  # ground truth: what carewatch should raise
      - {at: 2s, condition: sos, subject: r1}

Times are seconds (``12``), durations with units (``90s``, ``5m``, ``1h30m``) or, with a
``start`` time of day in the scenario, times of day (``"09:15"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from device_profiles.errors import ConfigError, ProfileError
from device_profiles.events import valid_id
from device_profiles.profiles import Profile, ProfileRegistry
from simulators.base import FAULTS, Simulator

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_time(value: Any, *, start_of_day_s: float | None = None) -> float:
    """Seconds from a number, a duration (``1h30m``, ``90s``) or a time of day (``09:15``).

    A time of day needs the scenario's ``start`` and is counted from it. Raises ValueError
    with the offending value.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"time must be >= 0, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    clock = _CLOCK.match(value)
    if clock:
        h, m, s = int(clock[1]), int(clock[2]), int(clock[3] or 0)
        if h > 23 or m > 59 or s > 59:
            raise ValueError(f"not a time of day: {value!r}")
        if start_of_day_s is None:
            raise ValueError(f"time of day {value!r} needs a 'start' time in the scenario")
        offset = h * 3600 + m * 60 + s - start_of_day_s
        if offset < 0:
            raise ValueError(f"{value!r} is before the scenario's start")
        return float(offset)
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        raise ValueError(f"not a time: {value!r} (use 12, 90s, 5m, 1h30m or 09:15)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device: its id, profile, resident and simulator options."""

    id: str
    profile: Profile
    resident: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at`` seconds, call ``action(**args)`` on ``device`` (or inject ``fault``)."""

    at: float
    device: str
    action: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Expectation:
    """Ground truth: at ``at`` seconds the chain should raise ``condition`` for ``subject``."""

    at: float
    condition: str
    subject: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A checked scenario. Build with :func:`load_scenario` or :func:`parse_scenario`."""

    name: str
    site: str
    time_scale: float
    devices: tuple[DeviceSpec, ...]
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...] = ()
    start_of_day_s: float | None = None
    source: str = "<scenario>"

    @property
    def duration(self) -> float:
        """Scenario seconds until the last step."""
        return max((s.at for s in self.steps), default=0.0)

    def device(self, device_id: str) -> DeviceSpec:
        """The device spec called ``device_id``."""
        for spec in self.devices:
            if spec.id == device_id:
                return spec
        raise KeyError(device_id)


_TOP = frozenset({"name", "site", "time_scale", "start", "devices", "steps", "expect"})


def parse_scenario(
    data: Any, registry: ProfileRegistry | None = None, source: str = "<scenario>"
) -> Scenario:
    """Check a parsed scenario document; raises ConfigError naming the file and key path."""

    def err(message: str, path: str | None = None) -> ConfigError:
        return ConfigError(message, file=source, path=path)

    if not isinstance(data, Mapping):
        raise err("a scenario must be a mapping at the top level")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise err(f"unknown key(s) {unknown}; allowed: {sorted(_TOP)}")
    registry = registry or ProfileRegistry.load()
    site = data.get("site", "demo-site")
    if not isinstance(site, str) or not valid_id(site):
        raise err(f"not a valid site id: {site!r}", "site")
    scale = data.get("time_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
        raise err(f"must be a number > 0, got {scale!r}", "time_scale")
    start_of_day: float | None = None
    if "start" in data:
        clock = _CLOCK.match(str(data["start"]))
        if not clock:
            raise err(f"must be a time of day like '08:00', got {data['start']!r}", "start")
        start_of_day = int(clock[1]) * 3600 + int(clock[2]) * 60 + int(clock[3] or 0)

    devices: list[DeviceSpec] = []
    raw_devices = data.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise err("must be a non-empty list", "devices")
    for i, raw in enumerate(raw_devices):
        path = f"devices[{i}]"
        if not isinstance(raw, Mapping):
            raise err("must be a mapping", path)
        bad = sorted(set(raw) - {"id", "profile", "resident", "options"})
        if bad:
            raise err(f"unknown key(s) {bad}", path)
        dev_id = raw.get("id")
        if not isinstance(dev_id, str) or not valid_id(dev_id):
            raise err(f"not a valid device id: {dev_id!r}", f"{path}.id")
        if any(d.id == dev_id for d in devices):
            raise err(f"duplicate device id {dev_id!r}", f"{path}.id")
        try:
            profile = registry.get(str(raw.get("profile")))
        except ProfileError as exc:
            raise err(exc.message, f"{path}.profile") from None
        if profile.codec not in BUILDERS:
            raise err(f"no simulator for codec {profile.codec!r}", f"{path}.profile")
        resident = raw.get("resident")
        if resident is not None and (not isinstance(resident, str) or not valid_id(resident)):
            raise err(f"not a valid resident id: {resident!r}", f"{path}.resident")
        options = raw.get("options") or {}
        if not isinstance(options, Mapping):
            raise err("must be a mapping", f"{path}.options")
        devices.append(DeviceSpec(dev_id, profile, resident, MappingProxyType(dict(options))))

    known = {d.id for d in devices}
    steps: list[Step] = []
    for i, raw in enumerate(data.get("steps") or []):
        path = f"steps[{i}]"
        if not isinstance(raw, Mapping):
            raise err("must be a mapping", path)
        bad = sorted(set(raw) - {"at", "device", "action", "fault", "args"})
        if bad:
            raise err(f"unknown key(s) {bad}", path)
        try:
            at = parse_time(raw.get("at", 0), start_of_day_s=start_of_day)
        except ValueError as exc:
            raise err(str(exc), f"{path}.at") from None
        device = raw.get("device")
        if device not in known:
            raise err(f"unknown device {device!r}; devices: {sorted(known)}", f"{path}.device")
        if ("action" in raw) == ("fault" in raw):
            raise err("needs exactly one of 'action' or 'fault'", path)
        args = raw.get("args") or {}
        if not isinstance(args, Mapping):
            raise err("must be a mapping", f"{path}.args")
        if "fault" in raw:
            if raw["fault"] not in FAULTS:
                raise err(
                    f"unknown fault {raw['fault']!r}; faults: {list(FAULTS)}", f"{path}.fault"
                )
            steps.append(Step(at, str(device), "inject", MappingProxyType({"fault": raw["fault"]})))
            continue
        action = raw["action"]
        if not isinstance(action, str) or action.startswith("_"):
            raise err(f"not an action: {action!r}", f"{path}.action")
        steps.append(Step(at, str(device), action, MappingProxyType(dict(args))))

    expect: list[Expectation] = []
    for i, raw in enumerate(data.get("expect") or []):
        path = f"expect[{i}]"
        if not isinstance(raw, Mapping) or "condition" not in raw or "subject" not in raw:
            raise err("must be a mapping with 'condition' and 'subject'", path)
        try:
            at = parse_time(raw.get("at", 0), start_of_day_s=start_of_day)
        except ValueError as exc:
            raise err(str(exc), f"{path}.at") from None
        expect.append(
            Expectation(at, str(raw["condition"]), str(raw["subject"]), str(raw.get("note", "")))
        )

    return Scenario(
        name=str(data.get("name", Path(source).stem)),
        site=site,
        time_scale=float(scale),
        devices=tuple(devices),
        steps=tuple(sorted(steps, key=lambda s: s.at)),
        expect=tuple(expect),
        start_of_day_s=start_of_day,
        source=source,
    )


def load_scenario(path: str | Path, registry: ProfileRegistry | None = None) -> Scenario:
    """Load and check a scenario YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=str(p)) from exc
    return parse_scenario(data, registry, source=str(p))


@dataclass
class Environment:
    """Where simulators put their transports: the site MQTT broker, shared serial links."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    #: Directory for the serial ports' stable symlinks (None: a temporary directory).
    serial_dir: str | None = None
    #: Shared transports created while building (e.g. one RF receiver for many pendants),
    #: keyed by the builder; stopped by :meth:`SimulatorSet.stop`.
    shared: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[DeviceSpec, Environment], Simulator]
BUILDERS: dict[str, Builder] = {}


def builder(codec: str) -> Callable[[Builder], Builder]:
    """Register the simulator factory for profiles of ``codec``."""

    def register(fn: Builder) -> Builder:
        BUILDERS[codec] = fn
        return fn

    return register


@builder("modbus_counter")
def _footfall(spec: DeviceSpec, env: Environment) -> Simulator:
    from simulators.footfall_modbus import FootfallModbusSimulator

    return FootfallModbusSimulator(
        spec.profile, spec.id, transport=dict(spec.options.get("transport", {}))
    )


@builder("zigbee2mqtt")
def _zigbee(spec: DeviceSpec, env: Environment) -> Simulator:
    from simulators.zigbee import Zigbee2MqttSimulator

    opts = {k: v for k, v in spec.options.items() if k in {"friendly_name", "base_topic"}}
    return Zigbee2MqttSimulator(
        spec.profile, spec.id, host=env.mqtt_host, port=env.mqtt_port, **opts
    )


@builder("face_terminal")
def _face(spec: DeviceSpec, env: Environment) -> Simulator:
    from simulators.face_terminal import FaceTerminalSimulator

    opts = {k: v for k, v in spec.options.items() if k in {"terminal_id", "topic"}}
    return FaceTerminalSimulator(
        spec.profile, spec.id, host=env.mqtt_host, port=env.mqtt_port, **opts
    )


@builder("pendant_frame")
def _rf_pendant(spec: DeviceSpec, env: Environment) -> Simulator:
    from simulators.pendant_serial import PendantSerialSimulator

    # One RF receiver (one serial port) hears every pendant of its profile at the site.
    key = f"rf:{spec.profile.name}"
    receiver = env.shared.get(key)
    if receiver is None:
        receiver = PendantSerialSimulator(
            spec.profile, f"rf-{spec.profile.name}", pendants=(), link_dir=env.serial_dir
        )
        env.shared[key] = receiver
    pendant_id = spec.options.get("pendant_id", f"{0xA10000 + len(receiver.pendants):06X}")
    address = receiver.add_pendant(pendant_id)
    view: Simulator = receiver.view(address, spec.id)
    return view


@builder("chirpstack_pendant")
def _lora_pendant(spec: DeviceSpec, env: Environment) -> Simulator:
    from simulators.pendant_lorawan import PendantLoRaWanSimulator

    opts = {
        k: v for k, v in spec.options.items() if k in {"dev_eui", "application_id", "device_name"}
    }
    return PendantLoRaWanSimulator(
        spec.profile, spec.id, host=env.mqtt_host, port=env.mqtt_port, **opts
    )


class SimulatorSet:
    """The running simulators of one scenario, by device id."""

    def __init__(self, scenario: Scenario, env: Environment):
        self.scenario = scenario
        self.env = env
        self.sims: dict[str, Simulator] = {
            spec.id: BUILDERS[spec.profile.codec](spec, env) for spec in scenario.devices
        }
        self.log: list[tuple[float, Step, str | None]] = []  # (scenario time, step, error)

    async def start(self) -> None:
        """Start every simulator (transports open, readers may connect)."""
        for sim in self.sims.values():
            await sim.start()

    async def stop(self) -> None:
        """Stop every simulator and shared transport; errors do not stop the others."""
        for sim in self.sims.values():
            # Best effort: one device failing to stop must not leave the others running.
            with contextlib.suppress(Exception):
                await sim.stop()
        for shared in self.env.shared.values():
            close = getattr(shared, "close", None) or getattr(shared, "stop", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    async def play(
        self,
        *,
        time_scale: float | None = None,
        on_step: Callable[[float, Step, str | None], None] | None = None,
    ) -> None:
        """Play every step at its time. A failing step is logged and the others go on.

        Each step played is appended to :attr:`log` as (time, step, error or None) and
        passed to ``on_step`` as it happens.
        """
        scale = time_scale or self.scenario.time_scale
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for step in self.scenario.steps:
            delay = t0 + step.at / scale - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sim = self.sims[step.device]
            method = getattr(sim, step.action, None)
            if method is None or not callable(method):
                self._record(step, f"{type(sim).__name__} has no {step.action!r}", on_step)
                continue
            args = dict(step.args)
            if step.action == "impact" and isinstance(args.get("trace"), Mapping):
                from simulators.traces import resolve_trace

                try:
                    args["trace"], args["rate_hz"] = resolve_trace(args["trace"])
                except (ValueError, OSError, KeyError) as exc:
                    self._record(step, f"trace: {exc}", on_step)
                    continue
            try:
                result = method(**args)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # a bad step must not end the scenario: it is logged
                self._record(step, f"{type(exc).__name__}: {exc}", on_step)
            else:
                self._record(step, None, on_step)

    def _record(
        self,
        step: Step,
        error: str | None,
        on_step: Callable[[float, Step, str | None], None] | None,
    ) -> None:
        self.log.append((step.at, step, error))
        if on_step is not None:
            on_step(step.at, step, error)
