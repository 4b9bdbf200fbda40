"""InfluxDB line protocol: pure encoding of points, Events and alert transitions.

One line per point::

    measurement,tag=value,tag2=value2 field=1i,field2="text",field3=0.5 1700000000000

Times are milliseconds since the epoch (write with ``precision=ms``). The encoding is
exact for everything it accepts: what goes in comes back unchanged from an InfluxQL
query (an integration test checks this with generated strings). What line protocol
cannot carry raises :class:`LineProtocolError` (names, tags) or is skipped and counted
(individual field values), so one odd value never loses a whole point:

- measurement: ``,`` and space are escaped; a newline, a NUL, a leading tab or ``#``
  (a comment line) or a backslash before an escapable character or at the end is refused.
- tag keys and values, field keys: ``,``, ``=`` and space are escaped; the same
  backslash, newline, NUL and leading-tab rules apply. Tags with an empty value are
  left out (InfluxDB has no empty tag values). ``time`` is not allowed as a tag key
  (InfluxDB rejects the point) and is skipped as a field key (InfluxDB drops it).
- field values: ``bool`` -> ``true``/``false``; ``int`` -> ``123i`` (signed 64 bit,
  others skipped); ``float`` -> shortest exact repr (NaN and infinities skipped);
  ``str`` -> double-quoted with ``"`` and ``\\`` escaped. Anything else is skipped.

Events map to one point each (:func:`event_to_point`): measurement = device kind, tags
site / gateway / device / resident / reading, fields = scalar values plus ``event_seq``;
list values (acceleration windows) are not stored, their length becomes ``samples``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stream.telemetry.errors import LineProtocolError

if TYPE_CHECKING:
    from device_profiles.events import Event

#: Python types a field value may have after conversion.
FieldValue = bool | int | float | str

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Measurement that alert transitions are written to.
ALERTS_MEASUREMENT = "alerts"

_RESERVED_KEYS = frozenset({"time"})

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
# InfluxDB 1.x keeps a backslash literally unless it precedes one of these characters,
# in which case the pair is read as an escape: such a backslash cannot be written. A
# doubled backslash is refused too: later InfluxDB versions may read it as one.
_AMBIGUOUS_AFTER_BACKSLASH = frozenset(',= "\\')


@dataclass
class SkipCounts:
    """Field values left out while encoding, by reason (for metrics and logs)."""

    nonfinite: int = 0
    """NaN or +-infinity floats."""
    out_of_range: int = 0
    """Integers outside signed 64 bit."""
    unsupported: int = 0
    """Values of a type line protocol has no field type for (None excluded, dicts...)."""
    bad_key: int = 0
    """Field keys that cannot be written (``time``, newlines, backslash rules)."""
    bad_points: int = 0
    """Whole points refused (bad measurement or tag, or no field left)."""

    def total(self) -> int:
        """Sum of all counters."""
        return (
            self.nonfinite + self.out_of_range + self.unsupported + self.bad_key + self.bad_points
        )


def _check_name(part: str, value: str) -> None:
    if not value:
        raise LineProtocolError(f"{part} must not be empty")
    if "\n" in value or "\r" in value:
        raise LineProtocolError(f"{part} {value!r} contains a line break")
    if value[0] == "\t":
        # InfluxDB skips tabs between the sections of a line: a leading tab would vanish.
        raise LineProtocolError(f"{part} {value!r} starts with a tab")
    if "\x00" in value:
        # InfluxDB 1.x stores a field key "\x00" as "": NUL in a name is refused outright.
        raise LineProtocolError(f"{part} {value!r} contains a NUL character")
    if "\\" in value:
        # A backslash at the end would escape the separator that follows it; one before
        # an escapable character would be read as part of an escape sequence.
        for i, char in enumerate(value):
            if char == "\\" and (i + 1 == len(value) or value[i + 1] in _AMBIGUOUS_AFTER_BACKSLASH):
                raise LineProtocolError(
                    f"{part} {value!r} has a backslash at position {i} that line protocol "
                    'cannot carry (at the end or before one of , = space " \\)'
                )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LineProtocolError(f"{part} {value!r} is not valid Unicode: {exc}") from None


def escape_measurement(name: str) -> str:
    """Escape a measurement name; raises :class:`LineProtocolError` when impossible."""
    _check_name("measurement", name)
    if name.startswith("#"):
        raise LineProtocolError(f"measurement {name!r} starts with '#' (a comment line)")
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(value: str, part: str = "tag") -> str:
    """Escape a tag key, tag value or field key; raises :class:`LineProtocolError`."""
    _check_name(part, value)
    return value.translate(_KEY_ESCAPES)


def quote_string(value: str) -> str:
    """A double-quoted string field value; raises :class:`LineProtocolError` on bad Unicode."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LineProtocolError(f"string field {value!r} is not valid Unicode: {exc}") from None
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def format_field_value(value: object, skipped: SkipCounts | None = None) -> str | None:
    """The line protocol text of one field value, or None when it must be left out.

    Left-out values are counted in ``skipped`` (``None`` values are not counted: they
    mean "absent").
    """
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return f"{value}i"
        if skipped is not None:
            skipped.out_of_range += 1
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        if skipped is not None:
            skipped.nonfinite += 1
        return None
    if isinstance(value, str):
        try:
            return quote_string(value)
        except LineProtocolError:
            if skipped is not None:
                skipped.unsupported += 1
            return None
    if value is not None and skipped is not None:
        skipped.unsupported += 1
    return None


def encode_line(
    measurement: str,
    tags: Mapping[str, str | None],
    fields: Mapping[str, object],
    time_ms: int | None = None,
    skipped: SkipCounts | None = None,
) -> str:
    """One line of line protocol.

    Tags are sorted by key (InfluxDB's preferred order), empty or None tag values are
    left out. Field values that cannot be written are skipped and counted in
    ``skipped``; a point with no field left, a bad measurement or a bad tag raises
    :class:`LineProtocolError`.
    """
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        tag_value = tags[key]
        if tag_value is None or tag_value == "":
            continue
        if key in _RESERVED_KEYS:
            raise LineProtocolError(f"tag key {key!r} is reserved by InfluxDB")
        parts.append(f"{escape_key(key, 'tag key')}={escape_key(tag_value, 'tag value')}")
    rendered: list[str] = []
    for key, value in fields.items():
        text = format_field_value(value, skipped)
        if text is None:
            continue
        if key in _RESERVED_KEYS:
            if skipped is not None:
                skipped.bad_key += 1
            continue
        try:
            rendered.append(f"{escape_key(key, 'field key')}={text}")
        except LineProtocolError:
            if skipped is not None:
                skipped.bad_key += 1
    if not rendered:
        raise LineProtocolError(f"point in measurement {measurement!r} has no field to write")
    line = ",".join(parts) + " " + ",".join(rendered)
    if time_ms is not None:
        line += f" {int(time_ms)}"
    return line


@dataclass(frozen=True)
class Point:
    """One InfluxDB point: measurement, tags, fields and a time in ms (or None: "now")."""

    measurement: str
    tags: Mapping[str, str | None] = field(default_factory=dict)
    fields: Mapping[str, object] = field(default_factory=dict)
    time_ms: int | None = None

    def to_line(self, skipped: SkipCounts | None = None) -> str:
        """This point as one line (see :func:`encode_line`)."""
        return encode_line(self.measurement, self.tags, self.fields, self.time_ms, skipped)


def event_to_point(event: Event) -> Point:
    """The point of one Event.

    Measurement: the device kind. Tags: site, gateway, device, resident (when bound),
    reading. Fields: the scalar values, ``event_seq`` (so a point can be traced to its
    Event), and ``samples`` (length of the longest list value) instead of list values,
    which a time series field cannot hold. Time: the event time.
    """
    fields: dict[str, object] = {}
    samples = 0
    for key, value in event.values.items():
        if isinstance(value, list):
            samples = max(samples, len(value))
        else:
            fields[key] = value
    if samples and "samples" not in fields:
        fields["samples"] = samples
    fields.setdefault("event_seq", event.seq)
    tags = {
        "site": event.site,
        "gateway": event.gateway,
        "device": event.device,
        "resident": event.resident,
        "reading": event.reading,
    }
    return Point(event.kind, tags, fields, event.time)


def events_to_points(events: Iterable[Event]) -> list[Point]:
    """One point per Event, in order (see :func:`event_to_point`)."""
    return [event_to_point(event) for event in events]


def points_to_lines(points: Iterable[Point], skipped: SkipCounts | None = None) -> list[str]:
    """Encode points; points that cannot be encoded are left out and counted.

    Counted in ``skipped.bad_points`` so a runtime can expose it as a metric; the other
    points of the batch are still written.
    """
    lines: list[str] = []
    for point in points:
        try:
            lines.append(point.to_line(skipped))
        except LineProtocolError:
            if skipped is not None:
                skipped.bad_points += 1
    return lines


def events_to_lines(events: Iterable[Event], skipped: SkipCounts | None = None) -> list[str]:
    """Line protocol for a batch of Events, ready for ``InfluxWriter.write``."""
    return points_to_lines(events_to_points(events), skipped)


def alert_to_point(
    *,
    alert_id: str,
    site: str,
    kind: str,
    severity: str,
    state: str,
    time_ms: int,
    resident: str | None = None,
    device: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Point:
    """The point of one alert transition (measurement ``alerts``).

    Tags (few distinct values, good for grouping on dashboards): site, kind, severity,
    state, resident, device. Fields: ``alert_id`` (unique per alert, so a field rather
    than a tag: tags are indexed and every distinct value makes a series), ``state``
    again as a field (so a dashboard can show it as an annotation's text), and ``extra``
    (escalation tier, who acknowledged, ...). ``extra`` never overrides those two.
    """
    fields: dict[str, object] = dict(extra or {})
    fields["alert_id"] = alert_id
    fields["state"] = state
    tags = {
        "site": site,
        "kind": kind,
        "severity": severity,
        "state": state,
        "resident": resident,
        "device": device,
    }
    return Point(ALERTS_MEASUREMENT, tags, fields, time_ms)
