"""The gateway configuration: one YAML file per gateway, checked once, then frozen.

Installers are not programmers, so :func:`check_config` collects *every* problem in a
file, each with its path inside the file (``devices[3].profile: unknown profile 'x';
known: [...]``), and :func:`load_config` refuses a file with any problem. The rest of
the agent trusts the frozen :class:`AgentConfig` it returns.

``deploy/agent.sample.yaml`` documents every option with its default. Durations accept
seconds as a number or a string with a unit (``500ms``, ``30s``, ``5m``, ``2h``, ``7d``);
sizes accept bytes or ``KB``/``MB``/``GB`` (powers of 1024).

Device transports: a device's ``serial:``, ``modbus:`` or ``mqtt:`` section (by its
profile's protocol) is laid over the profile's ``transport:`` defaults, so a site only
writes what differs from the device model's defaults.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from device_profiles.errors import CarewatchError, ConfigError
from device_profiles.events import valid_id
from device_profiles.profiles import Profile, ProfileRegistry
from device_profiles.topics import RESERVED, ROOT

# Which device section a profile protocol uses.
PROTOCOL_SECTION: Mapping[str, str] = MappingProxyType(
    {
        "serial-frame": "serial",
        "modbus-rtu": "modbus",
        "zigbee2mqtt": "mqtt",
        "mqtt-json": "mqtt",
        "chirpstack-v4": "mqtt",
    }
)

DEFAULT_QUEUE_PATH = "/var/lib/carewatch/agent-queue.db"
DEFAULT_SYNC_FILE = "/run/systemd/timesync/synchronized"
DEFAULT_LOW_PRIORITY = ("heartbeat", "battery", "availability")


# --- problems ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file: where (``devices[0].serial.port``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class _Problems:
    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(ConfigProblem(path, message))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; allowed: {allowed}"


# --- value parsers -----------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``500ms``, ``30s``, ``5m``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30, '30s', '5m', '7d'; got {value!r}")


def parse_size(value: Any) -> int:
    """Bytes from a number or a string such as ``64MB`` (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"expected a size such as 1048576 or '256MB'; got {value!r}")


# --- frozen config values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS files of an MQTT connection (``mqtts://``). Paths are absolute after load."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How to reach one MQTT broker (the central one or a site-local one)."""

    url: str
    host: str
    port: int
    tls: TlsConfig | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""
    keepalive_s: int = 30


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The durable queue (see :mod:`edge_agent.queue` for the contract)."""

    path: str = DEFAULT_QUEUE_PATH
    max_bytes: int = 256 * 1024**2
    max_age_s: float = 7 * 86400.0
    linger_s: float = 0.05
    batch_size: int = 500
    batch_max_bytes: int = 256 * 1024
    inflight: int = 8
    low_priority_readings: tuple[str, ...] = DEFAULT_LOW_PRIORITY
    quarantine_max: int = 200


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Heartbeat and device-down detection."""

    heartbeat_interval_s: float = 30.0
    # A device is down after ``down_factor * report_interval_s + down_grace_s`` of silence.
    down_factor: float = 2.0
    down_grace_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """Clock sanity (see :mod:`edge_agent.clock`)."""

    sync_file: str = DEFAULT_SYNC_FILE
    # "auto": trust the clock once sync_file exists or the kernel says it is synchronized;
    # "always": trust any time past the floor (gateways with an RTC); "never": tests.
    trust: str = "auto"


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One device instance: its profile, resident binding and effective transport."""

    id: str
    profile: str
    protocol: str
    section: str  # "serial" | "modbus" | "mqtt"
    transport: Mapping[str, Any]
    resident: str | None = None
    address: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A whole, checked gateway configuration."""

    file: str
    site: str
    gateway: str
    broker: BrokerConfig
    topic_root: str
    queue: QueueConfig
    health: HealthConfig
    clock: ClockConfig
    profile_dirs: tuple[str, ...]
    site_brokers: Mapping[str, BrokerConfig]
    devices: tuple[DeviceConfig, ...]
    log_level: str = "INFO"

    def device(self, device_id: str) -> DeviceConfig:
        """The device called ``device_id``; raises KeyError."""
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)


# --- the checker -------------------------------------------------------------------

_TOP_KEYS = [
    "site",
    "gateway",
    "broker",
    "queue",
    "health",
    "clock",
    "profiles",
    "site_brokers",
    "devices",
    "log_level",
]
_BROKER_KEYS = [
    "url",
    "username",
    "password",
    "password_file",
    "client_id",
    "keepalive",
    "tls",
    "topic_root",
]
_SITE_BROKER_KEYS = [k for k in _BROKER_KEYS if k != "topic_root"]
_TLS_KEYS = ["ca_file", "cert_file", "key_file", "insecure"]
_QUEUE_KEYS = [
    "path",
    "max_bytes",
    "max_age",
    "linger",
    "batch_size",
    "batch_max_bytes",
    "inflight",
    "low_priority_readings",
    "quarantine_max",
]
_HEALTH_KEYS = ["heartbeat_interval", "down_factor", "down_grace"]
_CLOCK_KEYS = ["sync_file", "trust"]
_PROFILES_KEYS = ["dirs"]
_DEVICE_KEYS = ["id", "profile", "resident", "enabled", "serial", "modbus", "mqtt"]
# Keys each transport section understands (a profile's own transport keys are added).
TRANSPORT_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "serial": ("port", "baudrate", "bytesize", "parity", "stopbits", "address", "read_size"),
        "modbus": (
            "port",
            "baudrate",
            "bytesize",
            "parity",
            "stopbits",
            "unit_id",
            "poll_interval_s",
            "timeout_s",
            "retries",
        ),
        "mqtt": ("broker", "address", "topics", "qos"),
    }
)
_PARITIES = ("N", "E", "O", "M", "S")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Checker:
    """Walks a parsed YAML document, collecting problems and building config values."""

    def __init__(self, file: Path, registry_loader: Callable[[tuple[str, ...]], ProfileRegistry]):
        self.file = file
        self.base = file.parent
        self.p = _Problems()
        self.registry_loader = registry_loader
        self.codec_checked: dict[str, str | None] = {}

    # helpers ------------------------------------------------------------------------
    def mapping(self, value: Any, path: str, allowed: list[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.p.add(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                self.p.add(_join(path, str(key)), _did_you_mean(str(key), allowed))
        return value

    def string(
        self, data: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.p.add(_join(path, key), "missing")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.p.add(_join(path, key), f"must be a string, got {value!r}")
            return None
        text = str(value)
        if required and not text:
            self.p.add(_join(path, key), "must not be empty")
            return None
        return text

    def ident(self, data: Mapping[str, Any], key: str, path: str, *, required: bool) -> str | None:
        text = self.string(data, key, path, required=required)
        if text is not None and not valid_id(text):
            self.p.add(
                _join(path, key),
                f"{text!r} is not a valid id (letters, digits, _ . : -; 1-64 characters)",
            )
            return None
        return text

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        parse: Callable[[Any], float] = parse_duration,
        minimum: float | None = None,
        strict_min: bool = True,
        maximum: float | None = None,
    ) -> float:
        if data.get(key) is None:
            return default
        try:
            value = parse(data[key])
        except ValueError as exc:
            self.p.add(_join(path, key), str(exc))
            return default
        if minimum is not None and (value <= minimum if strict_min else value < minimum):
            self.p.add(_join(path, key), f"must be {'>' if strict_min else '>='} {minimum:g}")
            return default
        if maximum is not None and value > maximum:
            self.p.add(_join(path, key), f"must be <= {maximum:g}")
            return default
        return value

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        parse: Callable[[Any], int] | None = None,
    ) -> int:
        if data.get(key) is None:
            return default
        raw = data[key]
        if parse is not None:
            try:
                value = parse(raw)
            except ValueError as exc:
                self.p.add(_join(path, key), str(exc))
                return default
        elif isinstance(raw, bool) or not isinstance(raw, int):
            self.p.add(_join(path, key), f"must be an integer, got {raw!r}")
            return default
        else:
            value = raw
        if minimum is not None and value < minimum:
            self.p.add(_join(path, key), "must be > 0" if minimum == 1 else f"must be >= {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.p.add(_join(path, key), f"must be <= {maximum}")
            return default
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.p.add(_join(path, key), f"must be true or false, got {value!r}")
            return default
        return value

    def file_path(self, value: str) -> str:
        p = Path(value)
        return str(p if p.is_absolute() else (self.base / p))

    # sections -----------------------------------------------------------------------
    def broker(
        self, data: Any, path: str, allowed: list[str], default_client_id: str
    ) -> BrokerConfig | None:
        if data is None:
            self.p.add(path, "missing")
            return None
        m = self.mapping(data, path, allowed)
        if not m:
            if isinstance(data, Mapping):
                self.p.add(_join(path, "url"), "missing")
            return None
        url = self.string(m, "url", path, required=True)
        host, port, secure = "", 0, False
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("mqtt", "mqtts"):
                self.p.add(
                    _join(path, "url"),
                    f"scheme {parts.scheme!r} not supported; use mqtt://host:port "
                    "or mqtts://host:port",
                )
            else:
                secure = parts.scheme == "mqtts"
                host = parts.hostname or ""
                if not host:
                    self.p.add(_join(path, "url"), f"no host in {url!r}")
                try:
                    port = parts.port or (8883 if secure else 1883)
                except ValueError:
                    self.p.add(_join(path, "url"), f"bad port in {url!r}")
                if parts.path not in ("", "/"):
                    self.p.add(_join(path, "url"), "must not have a path")
        username = self.string(m, "username", path)
        password = self.string(m, "password", path)
        if url is not None and "@" in url:
            parts = urlsplit(url)
            username = username or (unquote(parts.username) if parts.username else None)
            password = password or (unquote(parts.password) if parts.password else None)
        pw_file = self.string(m, "password_file", path)
        if pw_file is not None:
            if password is not None:
                self.p.add(_join(path, "password_file"), "give password or password_file, not both")
            else:
                try:
                    password = Path(self.file_path(pw_file)).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    self.p.add(_join(path, "password_file"), f"cannot read: {exc.strerror}")
        if password is not None and username is None:
            self.p.add(_join(path, "password"), "a password requires a username")
        client_id = self.string(m, "client_id", path) or default_client_id
        keepalive = self.integer(m, "keepalive", path, 30, minimum=5, maximum=65535)
        tls: TlsConfig | None = None
        tls_data = self.mapping(m.get("tls"), _join(path, "tls"), _TLS_KEYS)
        if tls_data and not secure and url is not None:
            self.p.add(_join(path, "tls"), "TLS settings need an mqtts:// url")
        if secure:
            files: dict[str, str | None] = {}
            for key in ("ca_file", "cert_file", "key_file"):
                value = self.string(tls_data, key, _join(path, "tls"))
                if value is not None:
                    value = self.file_path(value)
                    if not Path(value).is_file():
                        self.p.add(_join(_join(path, "tls"), key), f"file not found: {value}")
                files[key] = value
            if (files["cert_file"] is None) != (files["key_file"] is None):
                self.p.add(_join(path, "tls"), "cert_file and key_file go together")
            tls = TlsConfig(
                ca_file=files["ca_file"],
                cert_file=files["cert_file"],
                key_file=files["key_file"],
                insecure=self.boolean(tls_data, "insecure", _join(path, "tls"), False),
            )
        return BrokerConfig(
            url=url or "",
            host=host,
            port=port,
            tls=tls,
            username=username,
            password=password,
            client_id=client_id,
            keepalive_s=keepalive,
        )

    def queue(self, data: Any) -> QueueConfig:
        m = self.mapping(data, "queue", _QUEUE_KEYS)
        d = QueueConfig()
        path = self.string(m, "path", "queue") or d.path
        low = d.low_priority_readings
        if m.get("low_priority_readings") is not None:
            raw = m["low_priority_readings"]
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                self.p.add("queue.low_priority_readings", "must be a list of reading names")
            else:
                low = tuple(raw)
        return QueueConfig(
            path=self.file_path(path),
            max_bytes=self.integer(
                m, "max_bytes", "queue", d.max_bytes, minimum=1, parse=parse_size
            ),
            max_age_s=self.number(m, "max_age", "queue", d.max_age_s, minimum=0),
            linger_s=self.number(m, "linger", "queue", d.linger_s, minimum=0, strict_min=False),
            batch_size=self.integer(
                m, "batch_size", "queue", d.batch_size, minimum=1, maximum=10000
            ),
            batch_max_bytes=self.integer(
                m,
                "batch_max_bytes",
                "queue",
                d.batch_max_bytes,
                minimum=1024,
                maximum=64 * 1024**2,
                parse=parse_size,
            ),
            inflight=self.integer(m, "inflight", "queue", d.inflight, minimum=1, maximum=100),
            low_priority_readings=low,
            quarantine_max=self.integer(
                m, "quarantine_max", "queue", d.quarantine_max, minimum=1, maximum=100000
            ),
        )

    def health(self, data: Any) -> HealthConfig:
        m = self.mapping(data, "health", _HEALTH_KEYS)
        d = HealthConfig()
        return HealthConfig(
            heartbeat_interval_s=self.number(
                m, "heartbeat_interval", "health", d.heartbeat_interval_s, minimum=0
            ),
            down_factor=self.number(
                m,
                "down_factor",
                "health",
                d.down_factor,
                parse=parse_duration,
                minimum=1,
                strict_min=False,
            ),
            down_grace_s=self.number(
                m, "down_grace", "health", d.down_grace_s, minimum=0, strict_min=False
            ),
        )

    def clock(self, data: Any) -> ClockConfig:
        m = self.mapping(data, "clock", _CLOCK_KEYS)
        d = ClockConfig()
        trust = self.string(m, "trust", "clock") or d.trust
        if trust not in ("auto", "always", "never"):
            self.p.add("clock.trust", f"must be one of auto, always, never; got {trust!r}")
            trust = d.trust
        return ClockConfig(
            sync_file=self.string(m, "sync_file", "clock") or d.sync_file, trust=trust
        )

    def profile_dirs(self, data: Any) -> tuple[str, ...]:
        m = self.mapping(data, "profiles", _PROFILES_KEYS)
        raw = m.get("dirs")
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            self.p.add("profiles.dirs", "must be a list of directories")
            return ()
        dirs: list[str] = []
        for i, d in enumerate(raw):
            full = self.file_path(d)
            if not Path(full).is_dir():
                self.p.add(f"profiles.dirs[{i}]", f"directory not found: {full}")
            else:
                dirs.append(full)
        return tuple(dirs)

    def device(
        self,
        i: int,
        data: Any,
        registry: ProfileRegistry | None,
        site_brokers: Mapping[str, BrokerConfig],
    ) -> DeviceConfig | None:
        path = f"devices[{i}]"
        if not isinstance(data, Mapping):
            self.p.add(path, "must be a mapping with at least id and profile")
            return None
        self.mapping(data, path, _DEVICE_KEYS)
        dev_id = self.ident(data, "id", path, required=True)
        # Paths keep the index (devices[3].profile): it is what an installer can find.
        path_named = path
        prof_name = self.string(data, "profile", path_named, required=True)
        resident = self.ident(data, "resident", path_named, required=False)
        enabled = self.boolean(data, "enabled", path_named, True)
        profile: Profile | None = None
        if prof_name is not None and registry is not None:
            if prof_name in registry:
                profile = registry.get(prof_name)
            else:
                names = registry.names()
                close = difflib.get_close_matches(prof_name, names, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.p.add(
                    _join(path_named, "profile"),
                    f"unknown profile {prof_name!r}{hint}; known: {names}",
                )
        if profile is None or dev_id is None:
            return None
        if profile.name not in self.codec_checked:
            self.codec_checked[profile.name] = _codec_problem(profile)
        if self.codec_checked[profile.name]:
            self.p.add(_join(path, "profile"), str(self.codec_checked[profile.name]))
            return None
        section = PROTOCOL_SECTION.get(profile.protocol)
        if section is None:
            self.p.add(_join(path, "profile"), f"protocol {profile.protocol!r} not supported")
            return None
        for other in ("serial", "modbus", "mqtt"):
            if other != section and data.get(other) is not None:
                self.p.add(
                    _join(path, other),
                    f"profile {profile.name!r} speaks {profile.protocol}: "
                    f"configure it under '{section}:'",
                )
        spath = _join(path, section)
        raw_section = data.get(section)
        allowed = sorted(set(TRANSPORT_KEYS[section]) | set(profile.transport))
        sec = self.mapping(raw_section, spath, allowed)
        merged: dict[str, Any] = {**dict(profile.transport), **dict(sec)}
        transport = self.transport(section, merged, spath, site_brokers)
        address = merged.get("address")
        if address is None and section == "mqtt":
            # The Zigbee2MQTT friendly name / DevEUI / terminal id defaults to the id.
            address = dev_id
        return DeviceConfig(
            id=dev_id,
            profile=profile.name,
            protocol=profile.protocol,
            section=section,
            transport=MappingProxyType(transport),
            resident=resident,
            address=None if address is None else str(address),
            enabled=enabled,
        )

    def transport(
        self,
        section: str,
        t: dict[str, Any],
        path: str,
        site_brokers: Mapping[str, BrokerConfig],
    ) -> dict[str, Any]:
        out = dict(t)
        if section in ("serial", "modbus"):
            port = self.string(t, "port", path, required=True)
            out["port"] = port
            out["baudrate"] = self.integer(t, "baudrate", path, 9600, minimum=50, maximum=4_000_000)
            out["bytesize"] = self.integer(t, "bytesize", path, 8, minimum=5, maximum=8)
            parity = str(t.get("parity", "N")).upper()
            if parity not in _PARITIES:
                self.p.add(_join(path, "parity"), f"must be one of {list(_PARITIES)}")
                parity = "N"
            out["parity"] = parity
            stopbits = t.get("stopbits", 1)
            if stopbits not in (1, 1.5, 2):
                self.p.add(_join(path, "stopbits"), "must be 1, 1.5 or 2")
                stopbits = 1
            out["stopbits"] = stopbits
        if section == "serial":
            out["read_size"] = self.integer(t, "read_size", path, 4096, minimum=1)
        elif section == "modbus":
            out["unit_id"] = self.integer(t, "unit_id", path, 1, minimum=1, maximum=247)
            out["poll_interval_s"] = self.number(t, "poll_interval_s", path, 10.0, minimum=0)
            out["timeout_s"] = self.number(t, "timeout_s", path, 1.0, minimum=0)
            out["retries"] = self.integer(t, "retries", path, 1, minimum=0, maximum=10)
        elif section == "mqtt":
            broker = t.get("broker")
            if broker is None:
                if len(site_brokers) == 1:
                    broker = next(iter(site_brokers))
                elif not site_brokers:
                    self.p.add(
                        _join(path, "broker"),
                        "no site_brokers configured; add one (e.g. site_brokers: "
                        "{local: {url: mqtt://127.0.0.1:1883}})",
                    )
                else:
                    self.p.add(
                        _join(path, "broker"),
                        f"missing: several site brokers, name one of {sorted(site_brokers)}",
                    )
            elif broker not in site_brokers:
                self.p.add(
                    _join(path, "broker"),
                    f"unknown site broker {broker!r}; known: {sorted(site_brokers)}",
                )
            out["broker"] = broker
            out["qos"] = self.integer(t, "qos", path, 1, minimum=0, maximum=1)
            topics = t.get("topics")
            if topics is not None and (
                not isinstance(topics, list | tuple)
                or not topics
                or not all(isinstance(x, str) and x for x in topics)
            ):
                self.p.add(_join(path, "topics"), "must be a non-empty list of topic filters")
                out.pop("topics")
        return out


def _codec_problem(profile: Profile) -> str | None:
    """Why the profile's codec cannot be built (None when it can)."""
    from device_profiles.codecs import codec_for

    try:
        codec_for(profile)
    except CarewatchError as exc:
        return f"profile {profile.name!r} is unusable: {exc}"
    except ImportError as exc:
        return f"profile {profile.name!r}: codec {profile.codec!r} is not installed ({exc})"
    return None


def _default_registry_loader(dirs: tuple[str, ...]) -> ProfileRegistry:
    return ProfileRegistry.load(*dirs)


def _check(
    file: str | Path,
    registry_loader: Callable[[tuple[str, ...]], ProfileRegistry] = _default_registry_loader,
) -> tuple[list[ConfigProblem], AgentConfig | None]:
    path = Path(file)
    ck = _Checker(path.resolve(), registry_loader)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [ConfigProblem("", f"cannot read {path}: {exc.strerror}")], None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [ConfigProblem("", f"not valid YAML: {exc}")], None
    if not isinstance(data, Mapping):
        return [ConfigProblem("", "the file must be a YAML mapping (site:, gateway:, ...)")], None
    ck.mapping(data, "", _TOP_KEYS)
    site = ck.ident(data, "site", "", required=True)
    gateway = ck.ident(data, "gateway", "", required=True)
    if gateway in RESERVED:
        ck.p.add("gateway", f"{gateway!r} is reserved in the topic tree")
    client_id = f"carewatch-{site}-{gateway}"
    broker = ck.broker(data.get("broker"), "broker", _BROKER_KEYS, client_id)
    topic_root = ROOT
    if isinstance(data.get("broker"), Mapping):
        root = ck.string(data["broker"], "topic_root", "broker")
        if root is not None:
            if (
                not root
                or root.startswith("/")
                or root.endswith("/")
                or any(c in root for c in "+#")
            ):
                ck.p.add("broker.topic_root", f"{root!r} is not a valid topic prefix")
            else:
                topic_root = root
    queue = ck.queue(data.get("queue"))
    health = ck.health(data.get("health"))
    clock = ck.clock(data.get("clock"))
    log_level = str(data.get("log_level", "INFO")).upper()
    if log_level not in _LOG_LEVELS:
        ck.p.add("log_level", f"must be one of {list(_LOG_LEVELS)}")
        log_level = "INFO"
    dirs = ck.profile_dirs(data.get("profiles"))
    registry: ProfileRegistry | None = None
    try:
        registry = registry_loader(dirs)
    except CarewatchError as exc:
        ck.p.add("profiles", f"cannot load device profiles: {exc}")

    site_brokers: dict[str, BrokerConfig] = {}
    raw_sb = data.get("site_brokers")
    if raw_sb is not None:
        if not isinstance(raw_sb, Mapping):
            ck.p.add("site_brokers", "must be a mapping of name -> broker")
        else:
            for name, raw in raw_sb.items():
                if not isinstance(name, str) or not valid_id(name):
                    ck.p.add(f"site_brokers.{name}", "name must be a valid id")
                    continue
                sb = ck.broker(
                    raw,
                    f"site_brokers.{name}",
                    _SITE_BROKER_KEYS,
                    f"carewatch-{site}-{gateway}-{name}",
                )
                if sb is not None:
                    site_brokers[name] = sb

    devices: list[DeviceConfig] = []
    raw_devices = data.get("devices")
    if raw_devices is None:
        raw_devices = []
    if not isinstance(raw_devices, list):
        ck.p.add("devices", "must be a list")
        raw_devices = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_devices):
        dev = ck.device(i, raw, registry, site_brokers)
        if dev is None:
            continue
        if dev.id in seen:
            ck.p.add(
                f"devices[{i}].id", f"duplicate device id {dev.id!r} (also devices[{seen[dev.id]}])"
            )
            continue
        seen[dev.id] = i
        devices.append(dev)
    _check_shared_links(ck, devices, seen, registry)
    if ck.p.items or site is None or gateway is None or broker is None:
        return ck.p.items, None
    return ck.p.items, AgentConfig(
        file=str(path.resolve()),
        site=site,
        gateway=gateway,
        broker=broker,
        topic_root=topic_root,
        queue=queue,
        health=health,
        clock=clock,
        profile_dirs=dirs,
        site_brokers=MappingProxyType(site_brokers),
        devices=tuple(devices),
        log_level=log_level,
    )


def _check_shared_links(
    ck: _Checker,
    devices: list[DeviceConfig],
    index: Mapping[str, int],
    registry: ProfileRegistry | None,
) -> None:
    """Devices that share a serial port or Modbus bus must agree on its settings."""
    by_port: dict[str, DeviceConfig] = {}
    units: dict[tuple[str, int], str] = {}
    addresses: dict[tuple[str, str], str] = {}
    for dev in devices:
        if not dev.enabled:
            continue
        path = f"devices[{index[dev.id]}]"
        t = dev.transport
        if dev.section in ("serial", "modbus") and t.get("port"):
            port = str(t["port"])
            first = by_port.get(port)
            if first is None:
                by_port[port] = dev
            else:
                if first.section != dev.section:
                    ck.p.add(
                        f"{path}.{dev.section}.port",
                        f"{port} is already used by {first.id!r} as a {first.section} link",
                    )
                    continue
                for key in ("baudrate", "bytesize", "parity", "stopbits"):
                    if t.get(key) != first.transport.get(key):
                        ck.p.add(
                            f"{path}.{dev.section}.{key}",
                            f"{t.get(key)!r} differs from {first.id!r} on the same port "
                            f"({first.transport.get(key)!r})",
                        )
                if dev.section == "serial" and registry is not None:
                    a, b = registry.get(first.profile), registry.get(dev.profile)
                    if a.codec != b.codec:
                        ck.p.add(
                            f"{path}.profile",
                            f"codec {b.codec!r} differs from {first.id!r} on the same port "
                            f"({a.codec!r}): one receiver speaks one frame format",
                        )
            if dev.section == "modbus":
                unit_key = (port, int(t.get("unit_id", 1)))
                if unit_key in units:
                    ck.p.add(
                        f"{path}.modbus.unit_id",
                        f"unit {unit_key[1]} on {port} is already {units[unit_key]!r}",
                    )
                units[unit_key] = dev.id
        link = None
        if dev.section == "serial":
            link = f"serial:{t.get('port')}"
        elif dev.section == "mqtt":
            link = f"mqtt:{t.get('broker')}:{dev.protocol}"
        if link is not None and dev.address is not None:
            if (link, dev.address) in addresses:
                ck.p.add(
                    f"{path}.{dev.section}.address",
                    f"address {dev.address!r} is already {addresses[(link, dev.address)]!r}",
                )
            addresses[(link, dev.address)] = dev.id
    # Several devices on one serial port need addresses to tell their frames apart.
    per_link: dict[str, list[DeviceConfig]] = {}
    for dev in devices:
        if dev.enabled and dev.section == "serial":
            per_link.setdefault(str(dev.transport.get("port")), []).append(dev)
    for port, devs in per_link.items():
        if len(devs) > 1:
            for dev in devs:
                if dev.address is None:
                    ck.p.add(
                        f"devices[{index[dev.id]}].serial.address",
                        f"missing: {len(devs)} devices share {port}; each needs the address "
                        "its frames carry",
                    )


def check_config(
    file: str | Path,
    registry_loader: Callable[[tuple[str, ...]], ProfileRegistry] = _default_registry_loader,
) -> list[ConfigProblem]:
    """Every problem in a gateway config file, each with its path; empty when it is good."""
    problems, config = _check(file, registry_loader)
    if problems or config is None:
        return problems
    # The sources check what only they know (e.g. an MQTT profile naming no topic):
    # build them, without opening anything, so --check finds what start would.
    from edge_agent.agent import source_problems  # lazy: agent imports this module

    try:
        registry = registry_loader(config.profile_dirs)
    except CarewatchError as exc:
        return [ConfigProblem("profiles", f"cannot load device profiles: {exc}")]
    return [ConfigProblem(path, message) for path, message in source_problems(config, registry)]


def load_config(
    file: str | Path,
    registry_loader: Callable[[tuple[str, ...]], ProfileRegistry] = _default_registry_loader,
) -> AgentConfig:
    """Load and check a config; raises :class:`ConfigError` listing every problem."""
    problems, config = _check(file, registry_loader)
    if problems or config is None:
        lines = "\n  ".join(str(p) for p in problems) or "invalid configuration"
        raise ConfigError(
            f"{len(problems)} problem(s):\n  {lines}",
            file=str(file),
            path=problems[0].path if problems else None,
        )
    return config
