"""The stream processor's configuration: one YAML file, validated as a whole.

:func:`load_config` reads and checks the file and returns a frozen :class:`StreamConfig`;
every problem is collected (not just the first) and reported with its path in the file
(``policies.default.tiers[1].recipients[0]: unknown recipient 'nurse'``), so
``carewatch stream --check FILE`` can list them all. ``deploy/stream.sample.yaml``
documents every option with its default. A key under a site or a resident that nothing
reads is a warning, not a problem (:func:`review_config`): plugged-in detectors may read
keys of their own, which they declare.

Durations are seconds (``90``) or numbers with units, largest first (``500ms``, ``90s``,
``3m``, ``2h``, ``1d``, ``1h30m``), as in the detectors' options; times of day are
``"HH:MM"`` in the site's timezone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from device_profiles.errors import ConfigError
from device_profiles.events import valid_id
from device_profiles.topics import ROOT
from stream.detectors.base import Severity
from stream.detectors.facts import (
    PROCESSOR_SITE_KEYS,
    key_warnings,
    merge_site,
    resident_problems,
    site_problems,
    unread_keys,
)
from stream.detectors.sitetime import duration_text_ms

SEVERITIES = tuple(Severity)
NOTIFIER_TYPES = ("webhook", "wecom", "dingtalk", "log")

# --- defaults (deploy/stream.sample.yaml shows the same values) ---------------------------
DEFAULT_ACK_TIMEOUT_S = {"critical": 180, "high": 900, "warning": 14_400, "info": 0}
DEFAULT_REMINDER_S = {"critical": 120, "high": 600, "warning": 0, "info": 0}
DEFAULT_NIGHT_PAGING: tuple[str, ...] = ("critical", "high")
NO_NAMES: tuple[str, ...] = ()


class ConfigProblems(ConfigError):
    """Several problems in one config file; ``problems`` holds (path, message) pairs."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"{file}:{p}: {m}" if p else f"{file}: {m}" for p, m in problems]
        super().__init__(
            f"{len(problems)} problem(s) in the stream config:\n  " + "\n  ".join(lines),
            file=None,
        )


# --- the config, as frozen values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Central broker connection."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    client_id: str = "carewatch-stream"
    username: str | None = None
    password: str | None = None
    root: str = ROOT
    keepalive_s: int = 30
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_max_s: float = 30.0
    sites: tuple[str, ...] = ("+",)  # the sites this processor serves ("+": all)


@dataclass(frozen=True, slots=True)
class StateConfig:
    """State database."""

    path: str = "/var/lib/carewatch/stream.sqlite"
    synchronous: str = "full"
    dead_letters_keep: int = 10_000
    retention_days: float = 90.0


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Dedup and lateness."""

    max_lateness_ms: int = 300_000
    dedup_window: int = 4096


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """Where time comes from: ``system``, or ``fast`` (tests, demos)."""

    kind: str = "system"
    speed: float = 1.0
    epoch_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """HTTP API (health, metrics, alerts, silences, absences)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """InfluxDB telemetry."""

    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    api: str = "v1"  # v1: /write (db, rp, u, p); v2: /api/v2/write (org, bucket, token)
    database: str = "carewatch"
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    batch_lines: int = 5000
    flush_interval_ms: int = 1000
    timeout_ms: int = 10_000
    spool_max_lines: int = 5_000_000
    retry_max_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """One delivery channel (a webhook, a group robot...)."""

    name: str
    type: str
    url: str | None = None
    secret: str | None = None
    timeout_ms: int = 10_000
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecipientConfig:
    """Someone on call (a person, a desk, a group chat) and the channels reaching them."""

    name: str
    notifiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Escalation policy: who is paged, when the next tier is, how often reminders come."""

    name: str
    tiers: tuple[tuple[str, ...], ...] = ()
    operations: tuple[str, ...] = ()
    ack_timeout_ms: Mapping[str, int] = field(
        default_factory=lambda: {k: v * 1000 for k, v in DEFAULT_ACK_TIMEOUT_S.items()}
    )
    reminder_ms: Mapping[str, int] = field(
        default_factory=lambda: {k: v * 1000 for k, v in DEFAULT_REMINDER_S.items()}
    )
    night_paging: frozenset[str] = frozenset(DEFAULT_NIGHT_PAGING)


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """One site: timezone, escalation policy, quiet hours, and facts for detectors."""

    id: str
    timezone: str = "Asia/Shanghai"
    policy: str = "default"
    quiet_start_min: int | None = 22 * 60  # minutes after local midnight
    quiet_end_min: int | None = 7 * 60
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How the notification sender retries."""

    max_attempts: int = 12
    backoff_initial_ms: int = 1000
    backoff_max_ms: int = 300_000
    mqtt_alerts: bool = True


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """A detector to run: registry name (or ``module:Class``) and its options."""

    name: str
    target: str
    options: Mapping[str, Any] = field(default_factory=dict)


#: What runs when the config has no ``detectors:`` section: every detector carewatch ships.
DEFAULT_DETECTORS = ("alarm", "inactivity", "noshow", "operations")


def _default_detectors() -> tuple[DetectorConfig, ...]:
    return tuple(DetectorConfig(name, name) for name in DEFAULT_DETECTORS)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log level and format (``text`` or ``json`` lines)."""

    level: str = "info"
    format: str = "text"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """The whole stream processor configuration."""

    file: str = "<defaults>"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    state: StateConfig = field(default_factory=StateConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    detectors: tuple[DetectorConfig, ...] = field(default_factory=_default_detectors)
    notifiers: Mapping[str, NotifierConfig] = field(default_factory=dict)
    recipients: Mapping[str, RecipientConfig] = field(default_factory=dict)
    policies: Mapping[str, PolicyConfig] = field(
        default_factory=lambda: {"default": PolicyConfig("default")}
    )
    sites: Mapping[str, SiteConfig] = field(default_factory=dict)
    residents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_site: SiteConfig = field(default_factory=lambda: SiteConfig("*"))
    #: (section, id, key) of the keys under sites and residents that neither the
    #: processor nor a built-in detector reads (:func:`~stream.detectors.facts.key_warnings`).
    unread_keys: tuple[tuple[str, str, str], ...] = ()

    def site(self, site: str) -> SiteConfig:
        """The site's config, or the defaults (``sites."*"``) for a site not listed."""
        found = self.sites.get(site)
        if found is not None:
            return found
        return SiteConfig(
            id=site,
            timezone=self.default_site.timezone,
            policy=self.default_site.policy,
            quiet_start_min=self.default_site.quiet_start_min,
            quiet_end_min=self.default_site.quiet_end_min,
            raw=self.default_site.raw,
        )

    def policy(self, site: str) -> PolicyConfig:
        """The escalation policy of a site."""
        return self.policies.get(self.site(site).policy) or PolicyConfig("default")


# --- parsing --------------------------------------------------------------------------------

_HHMM_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

T = TypeVar("T")
_MISSING = object()


def parse_duration_ms(value: Any) -> int:
    """``90`` / ``"90s"`` / ``"3m"`` / ``"1h30m"`` / ``"500ms"`` -> milliseconds.

    The same grammar as the detectors' options (:func:`duration_text_ms`); raises
    ValueError.
    """
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must be >= 0")
        return int(value * 1000)
    if isinstance(value, str):
        ms = duration_text_ms(value.strip()) if value.strip() else None
        if ms is not None:
            return ms
    raise ValueError("expected a duration such as 90, '90s', '3m', '2h', '1d' or '500ms'")


def parse_time_ms(value: Any) -> int:
    """An instant: ms since the epoch (int) or an ISO-8601 string with a timezone."""
    if isinstance(value, bool):
        raise ValueError("a time, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("expected ISO-8601 such as 2026-01-01T08:00:00+08:00") from None
    else:
        raise ValueError("expected ms since the epoch or an ISO-8601 time")
    if dt.tzinfo is None:
        raise ValueError("an ISO-8601 time needs a timezone (Z or +08:00)")
    return int(dt.timestamp() * 1000)


class _Reader:
    """Walks the YAML tree, converting values and collecting (path, message) problems."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def mapping(self, data: Any, path: str) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.error(path, f"expected a mapping, got {type(data).__name__}")
            return {}
        return data

    def known(self, data: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.error(where, f"unknown option (allowed: {', '.join(allowed)})")

    def get(
        self,
        data: Mapping[str, Any],
        path: str,
        key: str,
        default: T,
        convert: Callable[[Any], T],
    ) -> T:
        if key not in data or data[key] is None:
            return default
        where = f"{path}.{key}" if path else key
        try:
            return convert(data[key])
        except (ValueError, TypeError) as exc:
            self.error(where, f"{data[key]!r}: {exc}")
            return default


def _str(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return str(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi}")
        return value

    return convert


def _float(lo: float | None = None) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}")
        return float(value)

    return convert


def _choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"allowed: {', '.join(allowed)}")
        return str(value)

    return convert


def _hhmm(value: Any) -> int:
    m = _HHMM_RE.match(str(value))
    if not m:
        raise ValueError("expected a time of day 'HH:MM'")
    return int(m.group(1)) * 60 + int(m.group(2))


def _zone(value: Any) -> str:
    name = _str(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown timezone (use an IANA name such as Asia/Shanghai)") from None
    return name


def _id(value: Any) -> str:
    text = _str(value)
    if not valid_id(text):
        raise ValueError("not a valid id ([A-Za-z0-9_.:-], 1-64 characters)")
    return text


def _site_filter(value: Any) -> tuple[str, ...]:
    names = _names(value)
    if not names:
        raise ValueError("expected '+' (all sites) or a list of site ids")
    for name in names:
        if name != "+" and not valid_id(name):
            raise ValueError(f"{name!r} is not a site id")
    return names


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of names")
    return tuple(value)


def _parse_mqtt(r: _Reader, data: Mapping[str, Any]) -> MqttConfig:
    p = "mqtt"
    r.known(
        data,
        p,
        (
            "url",
            "client_id",
            "username",
            "password",
            "root",
            "keepalive",
            "ca_file",
            "cert_file",
            "key_file",
            "reconnect_max",
            "sites",
        ),
    )
    d = MqttConfig()
    host, port, tls = d.host, d.port, d.tls
    url = r.get(data, p, "url", "mqtt://127.0.0.1:1883", _str)
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        r.error(f"{p}.url", f"{url!r}: expected mqtt://host:port or mqtts://host:port")
    else:
        tls = parts.scheme == "mqtts"
        host = parts.hostname
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            r.error(f"{p}.url", f"{url!r}: bad port")
    client_id = r.get(data, p, "client_id", d.client_id, _str)
    if not client_id:
        r.error(f"{p}.client_id", "persistent_session requires a client_id")
    return MqttConfig(
        host=host,
        port=port,
        tls=tls,
        client_id=client_id,
        username=r.get(data, p, "username", None, _str),
        password=r.get(data, p, "password", None, _str),
        root=r.get(data, p, "root", d.root, _str),
        keepalive_s=r.get(data, p, "keepalive", d.keepalive_s, _int(5, 3600)),
        ca_file=r.get(data, p, "ca_file", None, _str),
        cert_file=r.get(data, p, "cert_file", None, _str),
        key_file=r.get(data, p, "key_file", None, _str),
        reconnect_max_s=r.get(data, p, "reconnect_max", 30_000, parse_duration_ms) / 1000,
        sites=r.get(data, p, "sites", ("+",), _site_filter),
    )


def _severity_map(r: _Reader, data: Any, path: str, defaults: Mapping[str, int]) -> dict[str, int]:
    out = {k: v * 1000 for k, v in defaults.items()}
    if data is None:
        return out
    if isinstance(data, int | float | str) and not isinstance(data, bool):
        try:
            ms = parse_duration_ms(data)
        except ValueError as exc:
            r.error(path, f"{data!r}: {exc}")
            return out
        return dict.fromkeys(out, ms)
    m = r.mapping(data, path)
    r.known(m, path, tuple(s.value for s in SEVERITIES))
    return {key: r.get(m, path, key, value, parse_duration_ms) for key, value in out.items()}


def _read_yaml(path: str | Path) -> Any:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigProblems(file, [("", f"cannot read: {exc.strerror or exc}")]) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigProblems(file, [("", f"not valid YAML: {exc}")]) from exc


def load_config(path: str | Path) -> StreamConfig:
    """Read and validate a stream config file; raises :class:`ConfigProblems`."""
    return parse_config(_read_yaml(path), file=str(path))


def parse_config(data: Any, file: str = "<config>") -> StreamConfig:
    """Validate an already-parsed config mapping; raises :class:`ConfigProblems`."""
    r = _Reader()
    top = r.mapping(data, "")
    sections = (
        "mqtt",
        "state",
        "ingest",
        "clock",
        "api",
        "telemetry",
        "delivery",
        "logging",
        "detectors",
        "notifiers",
        "recipients",
        "policies",
        "sites",
        "residents",
    )
    r.known(top, "", sections)

    mqtt = _parse_mqtt(r, r.mapping(top.get("mqtt"), "mqtt"))

    s = r.mapping(top.get("state"), "state")
    r.known(s, "state", ("path", "synchronous", "dead_letters_keep", "retention"))
    sd = StateConfig()
    state = StateConfig(
        path=r.get(s, "state", "path", sd.path, _str),
        synchronous=r.get(s, "state", "synchronous", sd.synchronous, _choice("full", "normal")),
        dead_letters_keep=r.get(s, "state", "dead_letters_keep", sd.dead_letters_keep, _int(1)),
        retention_days=r.get(s, "state", "retention", 90 * 86_400_000, parse_duration_ms)
        / 86_400_000,
    )

    i = r.mapping(top.get("ingest"), "ingest")
    r.known(i, "ingest", ("max_lateness", "dedup_window"))
    ingest = IngestConfig(
        max_lateness_ms=r.get(i, "ingest", "max_lateness", 300_000, parse_duration_ms),
        dedup_window=r.get(i, "ingest", "dedup_window", 4096, _int(16, 10_000_000)),
    )

    c = r.mapping(top.get("clock"), "clock")
    r.known(c, "clock", ("kind", "speed", "epoch"))
    clock = ClockConfig(
        kind=r.get(c, "clock", "kind", "system", _choice("system", "fast")),
        speed=r.get(c, "clock", "speed", 1.0, _float(0.001)),
        epoch_ms=r.get(c, "clock", "epoch", None, parse_time_ms),
    )

    a = r.mapping(top.get("api"), "api")
    r.known(a, "api", ("enabled", "host", "port", "token"))
    ad = ApiConfig()
    api = ApiConfig(
        enabled=r.get(a, "api", "enabled", ad.enabled, _bool),
        host=r.get(a, "api", "host", ad.host, _str),
        port=r.get(a, "api", "port", ad.port, _int(0, 65535)),
        token=r.get(a, "api", "token", None, _str),
    )

    telemetry = _parse_telemetry(r, r.mapping(top.get("telemetry"), "telemetry"))

    dl = r.mapping(top.get("delivery"), "delivery")
    r.known(dl, "delivery", ("max_attempts", "backoff_initial", "backoff_max", "mqtt_alerts"))
    dd = DeliveryConfig()
    delivery = DeliveryConfig(
        max_attempts=r.get(dl, "delivery", "max_attempts", dd.max_attempts, _int(1)),
        backoff_initial_ms=r.get(dl, "delivery", "backoff_initial", 1000, parse_duration_ms),
        backoff_max_ms=r.get(dl, "delivery", "backoff_max", 300_000, parse_duration_ms),
        mqtt_alerts=r.get(dl, "delivery", "mqtt_alerts", True, _bool),
    )

    lg = r.mapping(top.get("logging"), "logging")
    r.known(lg, "logging", ("level", "format"))
    logging_cfg = LoggingConfig(
        level=r.get(lg, "logging", "level", "info", _choice("debug", "info", "warning", "error")),
        format=r.get(lg, "logging", "format", "text", _choice("text", "json")),
    )

    detectors = _parse_detectors(r, top.get("detectors", _MISSING))
    notifiers = _parse_notifiers(r, r.mapping(top.get("notifiers"), "notifiers"))
    recipients = _parse_recipients(r, r.mapping(top.get("recipients"), "recipients"), notifiers)
    policies = _parse_policies(r, r.mapping(top.get("policies"), "policies"), recipients)
    sites, default_site = _parse_sites(r, r.mapping(top.get("sites"), "sites"), policies)

    residents: dict[str, Mapping[str, Any]] = {}
    for rid, rdata in r.mapping(top.get("residents"), "residents").items():
        if not valid_id(str(rid)):
            r.error(f"residents.{rid}", "not a valid resident id")
        residents[str(rid)] = r.mapping(rdata, f"residents.{rid}")
        for where, message in resident_problems(str(rid), residents[str(rid)]):
            r.error(where, message)

    if r.problems:
        raise ConfigProblems(file, r.problems)
    return StreamConfig(
        file=file,
        mqtt=mqtt,
        state=state,
        ingest=ingest,
        clock=clock,
        api=api,
        telemetry=telemetry,
        delivery=delivery,
        logging=logging_cfg,
        detectors=detectors,
        notifiers=notifiers,
        recipients=recipients,
        policies=policies,
        sites=sites,
        residents=residents,
        default_site=default_site,
        unread_keys=unread_keys(top.get("sites"), top.get("residents")),
    )


def _parse_telemetry(r: _Reader, t: Mapping[str, Any]) -> TelemetryConfig:
    p = "telemetry"
    r.known(
        t,
        p,
        (
            "enabled",
            "url",
            "api",
            "database",
            "retention_policy",
            "username",
            "password",
            "org",
            "bucket",
            "token",
            "batch_lines",
            "flush_interval",
            "timeout",
            "spool_max_lines",
            "retry_max",
        ),
    )
    d = TelemetryConfig()
    cfg = TelemetryConfig(
        enabled=r.get(t, p, "enabled", bool(t), _bool),
        url=r.get(t, p, "url", d.url, _str),
        api=r.get(t, p, "api", d.api, _choice("v1", "v2")),
        database=r.get(t, p, "database", d.database, _str),
        retention_policy=r.get(t, p, "retention_policy", None, _str),
        username=r.get(t, p, "username", None, _str),
        password=r.get(t, p, "password", None, _str),
        org=r.get(t, p, "org", None, _str),
        bucket=r.get(t, p, "bucket", None, _str),
        token=r.get(t, p, "token", None, _str),
        batch_lines=r.get(t, p, "batch_lines", d.batch_lines, _int(1, 1_000_000)),
        flush_interval_ms=r.get(t, p, "flush_interval", 1000, parse_duration_ms),
        timeout_ms=r.get(t, p, "timeout", 10_000, parse_duration_ms),
        spool_max_lines=r.get(t, p, "spool_max_lines", d.spool_max_lines, _int(1000)),
        retry_max_ms=r.get(t, p, "retry_max", 60_000, parse_duration_ms),
    )
    if not urlsplit(cfg.url).scheme.startswith("http"):
        r.error(f"{p}.url", f"{cfg.url!r}: expected http://host:port or https://host:port")
    if cfg.api == "v2" and cfg.enabled and not (cfg.org and cfg.bucket):
        r.error(p, "api v2 needs org and bucket (and usually token)")
    return cfg


def _parse_detectors(r: _Reader, data: Any) -> tuple[DetectorConfig, ...]:
    if data is _MISSING:
        return _default_detectors()
    m = r.mapping(data, "detectors")
    out: list[DetectorConfig] = []
    for name, options in m.items():
        path = f"detectors.{name}"
        if options is False:
            continue  # "inactivity: false" switches a detector off
        opts = dict(r.mapping(options if options is not True else {}, path))
        enabled = opts.pop("enabled", True)
        if not isinstance(enabled, bool):
            r.error(f"{path}.enabled", "expected true or false")
        elif not enabled:
            continue
        target = opts.pop("class", name)
        if not isinstance(target, str):
            r.error(f"{path}.class", "expected 'module:attribute' or a registry name")
            continue
        out.append(DetectorConfig(str(name), target, opts))
    # The built-in detectors' options are checked here, with the rest of the file, so a
    # value a detector cannot use never reaches it (imported late: the registry imports
    # this module).
    from stream.registry import check_options

    for cfg in out:
        for where, message in check_options(cfg):
            r.error(where, message)
    return tuple(out)


def _parse_notifiers(r: _Reader, m: Mapping[str, Any]) -> dict[str, NotifierConfig]:
    out: dict[str, NotifierConfig] = {}
    for name, data in m.items():
        path = f"notifiers.{name}"
        if not valid_id(str(name)) or name == "mqtt":
            r.error(path, "not a valid notifier name ('mqtt' is reserved for the alert topic)")
        n = r.mapping(data, path)
        r.known(n, path, ("type", "url", "secret", "timeout", "headers"))
        ntype = r.get(n, path, "type", "", _choice(*NOTIFIER_TYPES))
        if "type" not in n:
            r.error(f"{path}.type", f"missing (allowed: {', '.join(NOTIFIER_TYPES)})")
        url = r.get(n, path, "url", None, _str)
        if ntype in ("webhook", "wecom", "dingtalk"):
            if url is None:
                r.error(f"{path}.url", f"a {ntype} notifier needs a url")
            elif urlsplit(url).scheme not in ("http", "https"):
                r.error(f"{path}.url", f"{url!r}: expected an http(s) URL")
        headers_raw = r.mapping(n.get("headers"), f"{path}.headers")
        out[str(name)] = NotifierConfig(
            name=str(name),
            type=ntype,
            url=url,
            secret=r.get(n, path, "secret", None, _str),
            timeout_ms=r.get(n, path, "timeout", 10_000, parse_duration_ms),
            headers={str(k): str(v) for k, v in headers_raw.items()},
        )
    return out


def _parse_recipients(
    r: _Reader, m: Mapping[str, Any], notifiers: Mapping[str, NotifierConfig]
) -> dict[str, RecipientConfig]:
    out: dict[str, RecipientConfig] = {}
    for name, data in m.items():
        path = f"recipients.{name}"
        if not valid_id(str(name)):
            r.error(path, "not a valid recipient name")
        rec = r.mapping(data, path)
        r.known(rec, path, ("notifiers",))
        names = r.get(rec, path, "notifiers", NO_NAMES, _names)
        if not names:
            r.error(f"{path}.notifiers", "a recipient needs at least one notifier")
        for j, n in enumerate(names):
            if n not in notifiers:
                r.error(f"{path}.notifiers[{j}]", f"unknown notifier {n!r}")
        out[str(name)] = RecipientConfig(str(name), names)
    return out


def _parse_policies(
    r: _Reader, m: Mapping[str, Any], recipients: Mapping[str, RecipientConfig]
) -> dict[str, PolicyConfig]:
    out: dict[str, PolicyConfig] = {}
    for name, data in m.items():
        path = f"policies.{name}"
        pol = r.mapping(data, path)
        r.known(pol, path, ("tiers", "operations", "ack_timeout", "reminder", "night_paging"))
        tiers: list[tuple[str, ...]] = []
        raw_tiers = pol.get("tiers") or []
        if not isinstance(raw_tiers, list):
            r.error(f"{path}.tiers", "expected a list of tiers")
            raw_tiers = []
        for t, tier in enumerate(raw_tiers):
            tpath = f"{path}.tiers[{t}]"
            tm = r.mapping(tier, tpath)
            r.known(tm, tpath, ("recipients",))
            names = r.get(tm, tpath, "recipients", NO_NAMES, _names)
            if not names:
                r.error(f"{tpath}.recipients", "a tier needs at least one recipient")
            for j, n in enumerate(names):
                if n not in recipients:
                    r.error(f"{tpath}.recipients[{j}]", f"unknown recipient {n!r}")
            tiers.append(names)
        operations = r.get(pol, path, "operations", NO_NAMES, _names)
        for j, n in enumerate(operations):
            if n not in recipients:
                r.error(f"{path}.operations[{j}]", f"unknown recipient {n!r}")
        night = r.get(pol, path, "night_paging", DEFAULT_NIGHT_PAGING, _names)
        for j, sev in enumerate(night):
            if sev not in {s.value for s in SEVERITIES}:
                r.error(f"{path}.night_paging[{j}]", f"unknown severity {sev!r}")
        out[str(name)] = PolicyConfig(
            name=str(name),
            tiers=tuple(tiers),
            operations=operations,
            ack_timeout_ms=_severity_map(
                r, pol.get("ack_timeout"), f"{path}.ack_timeout", DEFAULT_ACK_TIMEOUT_S
            ),
            reminder_ms=_severity_map(
                r, pol.get("reminder"), f"{path}.reminder", DEFAULT_REMINDER_S
            ),
            night_paging=frozenset(night),
        )
    out.setdefault("default", PolicyConfig("default"))
    return out


def _parse_sites(
    r: _Reader, m: Mapping[str, Any], policies: Mapping[str, PolicyConfig]
) -> tuple[dict[str, SiteConfig], SiteConfig]:
    out: dict[str, SiteConfig] = {}
    default = SiteConfig("*")
    # "*" first: its values are the defaults of every other site.
    for name in sorted(m, key=lambda k: k != "*"):
        path = f"sites.{name}"
        if name != "*" and not valid_id(str(name)):
            r.error(path, "not a valid site id")
        sm = r.mapping(m[name], path)
        for where, message in site_problems(str(name), sm):
            r.error(where, message)
        policy = r.get(sm, path, "policy", default.policy, _str)
        if policy not in policies:
            r.error(f"{path}.policy", f"unknown policy {policy!r}")
        quiet_start, quiet_end = default.quiet_start_min, default.quiet_end_min
        if "quiet_hours" in sm:
            qpath = f"{path}.quiet_hours"
            q = sm["quiet_hours"]
            if q is None or q is False:
                quiet_start = quiet_end = None
            else:
                qm = r.mapping(q, qpath)
                r.known(qm, qpath, ("start", "end"))
                quiet_start = r.get(qm, qpath, "start", quiet_start, _hhmm)
                quiet_end = r.get(qm, qpath, "end", quiet_end, _hhmm)
        site = SiteConfig(
            id=str(name),
            timezone=r.get(sm, path, "timezone", default.timezone, _zone),
            policy=policy,
            quiet_start_min=quiet_start,
            quiet_end_min=quiet_end,
            raw=merge_site(
                default.raw, {k: v for k, v in sm.items() if k not in PROCESSOR_SITE_KEYS}
            ),
        )
        if name == "*":
            default = site
        else:
            out[str(name)] = site
    return out, default


@dataclass(frozen=True, slots=True)
class ConfigReview:
    """What ``--check`` says about a file: problems (the processor does not start with
    them) and warnings (it starts; something in the file is probably not what was meant),
    one line each with its path."""

    problems: list[str]
    warnings: list[str]


def check_config(path: str | Path) -> list[str]:
    """Every problem of a config file, one line each, with its path (see :func:`review_config`)."""
    return review_config(path).problems


def review_config(path: str | Path) -> ConfigReview:
    """Every problem and every warning of a config file, with its path (``--check``).

    Besides the schema this instantiates the configured detectors and notifiers, so an
    unknown detector, a bad detector option or a notifier that cannot be built is
    reported too, in the same run as the schema's problems: the detectors and notifiers
    whose own sections are valid are built even when other sections have problems.
    Warnings: keys under a site or a resident that neither the processor, the built-in
    detectors nor a configured detector reads (``sites.c1.capcity``).
    """
    try:
        data = _read_yaml(path)
    except ConfigProblems as exc:
        return ConfigReview([f"{p}: {m}" if p else m for p, m in exc.problems], [])
    problems: list[tuple[str, str]] = []
    cfg: StreamConfig | None = None
    try:
        cfg = parse_config(data, file=str(path))
    except ConfigProblems as exc:
        problems += exc.problems
    top = data if isinstance(data, Mapping) else {}
    if cfg is not None:
        detectors, notifiers = cfg.detectors, dict(cfg.notifiers)
    else:
        # Parse the two sections again on their own (their problems are listed already)
        # and leave out the entries whose sections have problems of their own.
        scratch = _Reader()
        flawed = {tuple(p.split(".")[:2]) for p, _ in problems}
        detectors = tuple(
            d
            for d in _parse_detectors(scratch, top.get("detectors", _MISSING))
            if ("detectors", d.name) not in flawed
        )
        notifiers = {
            name: n
            for name, n in _parse_notifiers(
                scratch, scratch.mapping(top.get("notifiers"), "notifiers")
            ).items()
            if ("notifiers", name) not in flawed
        }
    from stream.notifiers import build_notifiers
    from stream.registry import build_detectors, declared_keys  # imports detector modules

    built: list[Any] = []
    for build in (
        lambda: built.extend(build_detectors(detectors)),
        lambda: build_notifiers(notifiers),
    ):
        try:
            build()
        except ConfigProblems as exc:
            problems += exc.problems
    warnings = key_warnings(
        unread_keys(top.get("sites"), top.get("residents")), *declared_keys(detectors, built)
    )
    return ConfigReview(
        [f"{p}: {m}" if p else m for p, m in problems],
        [f"{p}: {m}" for p, m in warnings],
    )
