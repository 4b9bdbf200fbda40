"""Face-recognition check-in terminals that push JSON events over MQTT.

Care centers put a face terminal at the entrance; each recognition is a check-in of a
day-care member. Vendors push their own JSON documents; the profile says where each
value is, as a dotted JSON path (``AccessControllerEvent.employeeNoString``; a numeric
segment indexes a list), so another vendor needs only a YAML file.

Every decoded check-in is a ``checkin`` reading with values:

``person`` (str)
    the person id the terminal matched (its enrolled employee/person number);
``score`` (float 0-1)
    the match similarity, when the terminal reports one;
``liveness`` (bool, or a 0-1 score)
    the anti-spoofing verdict, when reported;
``verified`` (bool)
    the terminal's own pass/fail verdict, when the format has one;
``terminal`` (str)
    the terminal's id in the payload (also Reading.source).

A low score or a failed liveness check still yields a reading carrying those values:
the stream processor decides what counts. Reading.time is the capture time, an
ISO-8601 timestamp with a UTC offset (``2024-03-01T08:30:05+08:00``) converted to ms UTC;
a capture time that is not ISO-8601 raises ``DecodeError(fault="time")``.

Resource ``read`` keys: ``path`` (required), ``optional`` (absent, null or "" values are
then left out instead of raising ``missing``), ``map`` (a list of ``[raw, value]`` pairs:
the raw JSON value, matched with its type, becomes ``value``). A resource ``scale`` is
applied to numbers (``0.01`` for a vendor that reports similarity in percent).

``codec_options``:

``time``
    ``{path: <dotted path>, naive_offset: "+08:00"}``: where the capture time is; a time
    without an offset is rejected unless ``naive_offset`` says which zone it is in;
    ``encode_offset`` (default ``+08:00``) is the offset :meth:`encode` writes;
``when``
    ``{<path>: value or [values]}``: conditions a message must meet to be a check-in;
    other events (door opened, alarms) are dropped with a debug log;
``heartbeat_when``
    the same for the terminal's keep-alive messages, which become ``heartbeat`` readings
    (the agent counts them for device health);
``template``
    constant fields :meth:`encode` writes into every event (what the real terminal
    always sends);
``ignore``
    dotted paths of known fields carewatch does not use (debug); unknown fields in the
    objects carewatch reads from are logged at warning.

``transport.topic`` is the MQTT topic, with ``{device}`` standing for the device id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Final

import msgspec

from device_profiles.codecs.base import Codec, MqttMessage, Raw, Reading, unknown_fields
from device_profiles.codecs.zigbee2mqtt import as_message, load_json_object
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.events import MAX_TIME_MS, MIN_TIME_MS, Value
from device_profiles.profiles import Profile, Resource

log = logging.getLogger(__name__)

CHECKIN = "checkin"
HEARTBEAT = "heartbeat"
DEFAULT_TOPIC = "faceterminal/{device}/event"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# ISO-8601 date and time (extended format), optional fraction and offset. The regex keeps
# fromisoformat from accepting date-only strings or non-ASCII digits.
_ISO_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?", re.ASCII
)
_OFFSET_RE: Final = re.compile(r"([+-])(\d{2}):(\d{2})", re.ASCII)


class _Missing:
    """Sentinel for a path that is not in the document."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def split_path(path: Any, file: str, where: str) -> tuple[str, ...]:
    """Check and split a dotted JSON path."""
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ProfileError(f"must be a dotted JSON path, got {path!r}", file=file, path=where)
    return tuple(path.split("."))


def get_path(data: Any, path: tuple[str, ...], device: str) -> Any:
    """The value at ``path`` in ``data``, or :data:`MISSING`.

    Raises DecodeError (``type``) when the path runs into a scalar: the document has the
    wrong shape, which is garbage rather than an optional field left out.
    """
    cur = data
    for i, seg in enumerate(path):
        if isinstance(cur, dict):
            cur = cur.get(seg, MISSING)
        elif isinstance(cur, list) and seg.isdigit():
            idx = int(seg)
            cur = cur[idx] if idx < len(cur) else MISSING
        elif cur is None:
            return MISSING
        else:
            raise DecodeError(
                device,
                "type",
                f"{'.'.join(path[:i])} is {type(cur).__name__}, expected an object",
            )
        if cur is MISSING:
            return MISSING
    return cur


def set_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``path`` in ``obj``, creating objects on the way."""
    cur = obj
    for seg in path[:-1]:
        nxt = cur.get(seg)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[seg] = nxt
        cur = nxt
    cur[path[-1]] = value


def thaw(value: Any) -> Any:
    """A mutable, JSON-encodable copy of a frozen profile value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equal and of the same JSON type (so ``1`` is not ``true`` and ``"75"`` is not 75)."""
    return type(a) is type(b) and bool(a == b)


def _parse_offset(value: Any, file: str, where: str) -> timezone:
    m = _OFFSET_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m.group(2)) > 23 or int(m.group(3)) > 59:
        raise ProfileError(
            f"must be a UTC offset like +08:00, got {value!r}", file=file, path=where
        )
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def parse_iso_time(value: Any, device: str, naive_tz: timezone | None = None) -> int:
    """An ISO-8601 timestamp with offset -> ms since the epoch, UTC.

    Raises DecodeError (fault ``time``) for anything else, for a time without an offset
    when ``naive_tz`` is None, and for times outside carewatch's plausible range.
    """
    if not isinstance(value, str) or not _ISO_RE.fullmatch(value):
        raise DecodeError(device, "time", f"capture time {value!r} is not ISO-8601")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise DecodeError(device, "time", f"capture time {value!r}: {exc}") from None
    if dt.tzinfo is None:
        if naive_tz is None:
            raise DecodeError(device, "time", f"capture time {value!r} has no UTC offset")
        dt = dt.replace(tzinfo=naive_tz)
    ms = (dt - _EPOCH) // timedelta(milliseconds=1)
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise DecodeError(device, "time", f"capture time {value!r} is not a plausible date")
    return ms


def format_iso_time(ms: int, tz: timezone) -> str:
    """ms UTC -> ISO-8601 in zone ``tz``; milliseconds only when there are any."""
    dt = (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)
    return dt.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")


class _Read:
    """A checked resource ``read`` block."""

    __slots__ = ("map", "optional", "path", "res")

    def __init__(self, res: Resource, file: str, where: str):
        bad = sorted(set(res.read) - {"path", "optional", "map"})
        if bad:
            raise ProfileError(
                f"unknown key(s) {bad}; allowed: map, optional, path", file=file, path=where
            )
        self.res = res
        self.path = split_path(res.read.get("path"), file, f"{where}.path")
        optional = res.read.get("optional", False)
        if not isinstance(optional, bool):
            raise ProfileError("must be true or false", file=file, path=f"{where}.optional")
        self.optional = optional
        pairs = res.read.get("map")
        self.map: tuple[tuple[Any, Any], ...] | None = None
        if pairs is not None:
            if not isinstance(pairs, tuple) or not all(
                isinstance(p, tuple) and len(p) == 2 for p in pairs
            ):
                raise ProfileError(
                    "must be a list of [raw, value] pairs", file=file, path=f"{where}.map"
                )
            self.map = tuple((p[0], p[1]) for p in pairs)


class FaceTerminalCodec(Codec):
    """Decode face-terminal check-in events per the profile (see the module docstring).

    ``topic`` overrides the profile's ``transport.topic`` template.
    """

    name: ClassVar[str] = "face_terminal"
    protocols: ClassVar[frozenset[str]] = frozenset({"mqtt-json"})

    def __init__(self, profile: Profile, topic: str | None = None):
        super().__init__(profile)
        src = profile.source
        opts = profile.codec_options
        template = profile.transport.get("topic", DEFAULT_TOPIC) if topic is None else topic
        if not isinstance(template, str) or "{device}" not in template or "#" in template:
            raise ProfileError(
                f"must be a topic containing {{device}}, got {template!r}",
                file=src,
                path="transport.topic",
            )
        self.topic_template = template
        self.reads = [
            _Read(res, src, f"resources[{i}].read") for i, res in enumerate(profile.resources)
        ]
        time_opts = opts.get("time")
        if not isinstance(time_opts, Mapping):
            raise ProfileError(
                "required: {path: <dotted path of the capture time>}",
                file=src,
                path="codec_options.time",
            )
        self.time_path = split_path(time_opts.get("path"), src, "codec_options.time.path")
        naive = time_opts.get("naive_offset")
        self.naive_tz = (
            None if naive is None else _parse_offset(naive, src, "codec_options.time.naive_offset")
        )
        self.encode_tz = _parse_offset(
            time_opts.get("encode_offset", "+08:00"), src, "codec_options.time.encode_offset"
        )
        self.when = self._conditions(opts.get("when", {}), "codec_options.when")
        self.heartbeat_when = self._conditions(
            opts.get("heartbeat_when", {}), "codec_options.heartbeat_when"
        )
        tmpl = opts.get("template", {})
        if not isinstance(tmpl, Mapping):
            raise ProfileError("must be a mapping", file=src, path="codec_options.template")
        self.template: Mapping[str, Any] = tmpl
        ignore = opts.get("ignore", ())
        if not isinstance(ignore, tuple | list):
            raise ProfileError("must be a list of paths", file=src, path="codec_options.ignore")
        ignored = [split_path(p, src, "codec_options.ignore") for p in ignore]
        # Unknown-field checks run on every object carewatch reads from: for each such
        # object (by its path), the keys that are known and the keys that are ignored.
        read_paths = [r.path for r in self.reads] + [self.time_path]
        read_paths += [p for p, _ in (*self.when, *self.heartbeat_when)]
        self.containers: dict[tuple[str, ...], tuple[frozenset[str], frozenset[str]]] = {}
        parents = {p[:-1] for p in read_paths}
        for parent in parents:
            depth = len(parent)
            known = frozenset(p[depth] for p in read_paths if p[:depth] == parent)
            skip = frozenset(
                p[depth] for p in ignored if len(p) == depth + 1 and p[:depth] == parent
            )
            self.containers[parent] = (known, skip)
        self.terminal_read = next((r for r in self.reads if r.res.name == "terminal"), None)

    def _conditions(
        self, raw: Any, where: str
    ) -> tuple[tuple[tuple[str, ...], tuple[Any, ...]], ...]:
        if not isinstance(raw, Mapping):
            raise ProfileError(
                "must be a mapping of path: value", file=self.profile.source, path=where
            )
        out = []
        for path, expected in raw.items():
            values = expected if isinstance(expected, tuple) else (expected,)
            out.append((split_path(path, self.profile.source, f"{where}.{path}"), values))
        return tuple(out)

    # -- decode ----------------------------------------------------------------------

    def _matches(
        self, data: Any, conds: tuple[tuple[tuple[str, ...], tuple[Any, ...]], ...], device: str
    ) -> bool:
        for path, expected in conds:
            value = get_path(data, path, device)
            if value is MISSING:
                return False
            if not any(type(value) is type(e) for e in expected):
                raise DecodeError(
                    device,
                    "type",
                    f"{'.'.join(path)}={value!r}: expected {type(expected[0]).__name__}",
                )
            if not any(same(value, e) for e in expected):
                return False
        return True

    def _value(self, read: _Read, data: Any, device: str) -> Value | _Missing:
        raw = get_path(data, read.path, device)
        if raw is MISSING or raw is None or raw == "":
            if read.optional:
                return MISSING
            raise DecodeError(device, "missing", f"{read.res.name}: no {'.'.join(read.path)}")
        if read.map is not None:
            for key, mapped in read.map:
                if same(raw, key):
                    raw = mapped
                    break
            else:
                raise DecodeError(
                    device, "value", f"{read.res.name}: unexpected {'.'.join(read.path)}={raw!r}"
                )
        scale = read.res.scale
        if scale != 1.0 and isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = raw * scale
        return self.check_value(device, read.res.name, raw)

    def decode(self, raw: Raw, device: str) -> list[Reading]:
        """Decode one event message: a check-in, a heartbeat, or nothing (other events)."""
        msg = as_message(raw, device)
        data = load_json_object(msg.payload, device)
        if self.heartbeat_when and self._matches(data, self.heartbeat_when, device):
            values: dict[str, Value] = {}
            if self.terminal_read is not None:
                term = self._value(self.terminal_read, data, device)
                if not isinstance(term, _Missing):
                    values["terminal"] = term
            source = values.get("terminal")
            return [Reading(HEARTBEAT, values, source=source if isinstance(source, str) else None)]
        if not self._matches(data, self.when, device):
            log.debug("%s: not a check-in event, dropped", device)
            return []
        values = {}
        for read in self.reads:
            value = self._value(read, data, device)
            if not isinstance(value, _Missing):
                values[read.res.name] = value
        time_ms = parse_iso_time(get_path(data, self.time_path, device), device, self.naive_tz)
        for parent, (known, skip) in self.containers.items():
            obj = get_path(data, parent, device) if parent else data
            if isinstance(obj, dict):
                unknown_fields(device, obj, known, skip)
        source = values.get("terminal")
        return [
            Reading(
                CHECKIN, values, time=time_ms, source=source if isinstance(source, str) else None
            )
        ]

    # -- encode ----------------------------------------------------------------------

    def _raw(self, read: _Read, value: Any, device: str) -> Any:
        if read.map is not None:
            for key, mapped in read.map:
                if same(value, mapped):
                    return key
            raise EncodeError(f"{device}: {read.res.name}={value!r} has no raw form")
        scale = read.res.scale
        if scale != 1.0 and isinstance(value, int | float) and not isinstance(value, bool):
            return value / scale
        return value

    def encode(self, reading: Reading, device: str) -> MqttMessage:
        """The event document the terminal would push for ``reading``.

        Needs ``reading.time`` (the capture time); the template's constant fields come
        first, then each value at its path.
        """
        if reading.time is None:
            raise EncodeError(f"{device}: a terminal event needs a capture time")
        if reading.reading == CHECKIN:
            obj: dict[str, Any] = thaw(self.template)
            for path, expected in self.when:
                set_path(obj, path, expected[0])
        elif reading.reading == HEARTBEAT and self.heartbeat_when:
            obj = {}
            for path, expected in self.heartbeat_when:
                set_path(obj, path, expected[0])
        else:
            raise EncodeError(f"{device}: {self.profile.name!r} has no reading {reading.reading!r}")
        by_name = {r.res.name: r for r in self.reads}
        for key, value in reading.values.items():
            read = by_name.get(key)
            if read is None:
                raise EncodeError(f"{device}: {self.profile.name!r} has no value {key!r}")
            set_path(obj, read.path, self._raw(read, value, device))
        set_path(obj, self.time_path, format_iso_time(reading.time, self.encode_tz))
        topic = self.topic_template.replace("{device}", device)
        return MqttMessage(topic, msgspec.json.encode(obj), retain=False)
