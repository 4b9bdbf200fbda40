"""The normalized Event: what every device reading becomes (contract).

An Event is produced once, on the gateway, by a codec and the agent; it is the unit that
is queued on disk, published in batches to the central broker, deduplicated by the
processor (``gateway`` + ``seq``) and written to InfluxDB.

Schema version 1 (field names are the JSON keys)::

    v         int    schema version (1)
    gateway   str    gateway id, unique in a deployment
    seq       int    per-gateway sequence number, strictly increasing, >= 1
    time      int    event time, ms since the Unix epoch, UTC (device or gateway clock)
    received  int    when the gateway read it, ms UTC (gateway clock)
    site      str    site id
    device    str    device id, unique within the site
    kind      str    device kind from the profile (pendant, door, footfall, face_terminal...)
    reading   str    what this message is (press, impact, heartbeat, contact, counts, checkin...)
    resident  str?   resident bound to the device, when there is one
    values    map    typed values of the reading (see the device's profile)
    clock_ok  bool   false when the gateway clock was not trustworthy (no time sync yet)
    urgent    bool   alarm-class event: queued and sent ahead of telemetry

Unknown fields are tolerated on decode (a newer gateway may send more) and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from device_profiles.errors import EventError

SCHEMA_VERSION = 1

#: Values a reading may carry: JSON scalars, and lists of them (acceleration windows).
Value = bool | int | float | str | None | list[Any]

# Identifiers appear in MQTT topics and InfluxDB tags: keep them to a safe alphabet.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
# 2001-09-09 .. 2100-01-01 in ms: anything outside is a unit mistake (s vs ms, or 1970).
MIN_TIME_MS = 1_000_000_000_000
MAX_TIME_MS = 4_102_444_800_000


def valid_id(value: str) -> bool:
    """True when ``value`` may be used as a site, gateway, device or resident id."""
    return bool(_ID_RE.match(value))


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One normalized device reading (schema version 1). Validate with :meth:`checked`."""

    gateway: str
    seq: int
    time: int
    received: int
    site: str
    device: str
    kind: str
    reading: str
    values: dict[str, Value] = msgspec.field(default_factory=dict)
    resident: str | None = None
    clock_ok: bool = True
    urgent: bool = False
    v: int = SCHEMA_VERSION

    def checked(self) -> Event:
        """Return ``self`` after checking the invariants msgspec's types cannot express.

        Raises :class:`EventError` naming the field and the value.
        """
        for name in ("gateway", "site", "device"):
            value = getattr(self, name)
            if not valid_id(value):
                raise EventError(f"{name}={value!r} is not a valid id ([A-Za-z0-9_.:-], 1-64)")
        if self.resident is not None and not valid_id(self.resident):
            raise EventError(f"resident={self.resident!r} is not a valid id")
        if not self.kind or not self.reading:
            raise EventError("kind and reading must not be empty")
        if self.seq < 1:
            raise EventError(f"seq={self.seq} must be >= 1")
        if self.v < 1:
            raise EventError(f"v={self.v} must be >= 1")
        for name in ("time", "received"):
            value = getattr(self, name)
            if not MIN_TIME_MS <= value <= MAX_TIME_MS:
                raise EventError(f"{name}={value} is not a plausible time in ms UTC")
        return self

    @property
    def key(self) -> tuple[str, int]:
        """The dedup key: (gateway, seq)."""
        return (self.gateway, self.seq)


class EventBatch(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a gateway publishes on ``.../events``: several Events in seq order."""

    events: list[Event]
    v: int = SCHEMA_VERSION


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(EventBatch)


def encode_event(event: Event) -> bytes:
    """JSON bytes of one Event."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """Parse and validate one Event; raises :class:`EventError` on anything wrong."""
    try:
        return _event_decoder.decode(data).checked()
    except (msgspec.DecodeError, RecursionError) as exc:  # covers ValidationError
        raise EventError(f"malformed event: {exc}") from None


def encode_batch(events: Iterable[Event]) -> bytes:
    """JSON bytes of a batch (the payload of the ``events`` topic)."""
    return _encoder.encode(EventBatch(events=list(events)))


def decode_batch(data: bytes | str) -> list[Event]:
    """Parse and validate a batch; raises :class:`EventError` naming the bad event."""
    try:
        batch = _batch_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        # RecursionError: a deeply nested document in an unknown field (tolerated fields
        # are still parsed). Garbage like any other, never a crash of the reader.
        raise EventError(f"malformed event batch: {exc}") from None
    for i, event in enumerate(batch.events):
        try:
            event.checked()
        except EventError as exc:
            raise EventError(f"events[{i}]: {exc}") from exc
    return batch.events


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain dict of an Event (for printing, CSV, tests)."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


def event_from_mapping(data: Mapping[str, Any]) -> Event:
    """Build and validate an Event from a mapping; raises :class:`EventError`."""
    try:
        return msgspec.convert(dict(data), Event).checked()
    except msgspec.ValidationError as exc:
        raise EventError(f"malformed event: {exc}") from exc
