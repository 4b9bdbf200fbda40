"""The codec interface: small converters between raw device input and readings.

A codec handles one *family* of devices (``pendant_frame``, ``modbus_counter``...);
the profile says which model and parameterizes it, so a new model of an existing kind
needs only a new YAML file. A codec is pure: no I/O, no clock reads.

Three hooks, called by the edge agent (and by the simulators, for ``encode``):

- :meth:`Codec.decode` turns one raw input (a frame, a register block, an MQTT message)
  into :class:`Reading` objects. Garbage raises :class:`~device_profiles.errors.DecodeError`
  naming the device and the fault; nothing else may escape.
- :meth:`Codec.track` turns decoded readings into the readings that become Events, with an
  explicit, JSON-serializable per-device state the agent persists: counter deltas,
  edge-triggered alarm presses. The default passes readings through unchanged.
- :meth:`Codec.encode` is the inverse of ``decode``, used by the simulators so the
  device layer and the simulators cannot drift apart.

Byte-stream transports (serial) also need :meth:`StreamCodec.split`, which cuts frames
out of a receive buffer and resynchronizes after garbage.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from device_profiles.errors import DecodeError, ProfileError
from device_profiles.events import Value
from device_profiles.profiles import Profile

log = logging.getLogger(__name__)

JsonState = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """A raw message from a site-local MQTT broker."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Reading:
    """What a codec decoded from one raw input, before it becomes an Event.

    ``reading`` names the message (press, impact, heartbeat, contact, counts, checkin,
    availability...), ``values`` are typed per the profile's resources, ``time`` is
    the device's own timestamp in ms UTC when the device sends one (None: use the
    gateway's receive time), ``urgent`` marks alarm-class readings (button presses,
    fall windows) that jump the queue, and ``source`` is the device address the
    codec found in the input (a pendant id in a frame, a Zigbee2MQTT friendly name,
    a LoRaWAN DevEUI) when one input channel serves several devices.
    """

    reading: str
    values: Mapping[str, Value] = field(default_factory=dict)
    time: int | None = None
    urgent: bool = False
    source: str | None = None


Raw = bytes | Sequence[int] | MqttMessage


class Codec(ABC):
    """Base of all codecs. Subclasses set :attr:`name` and :attr:`protocols`.

    The constructor receives the profile and must validate ``codec_options`` and every
    resource's ``read`` block, raising :class:`ProfileError` naming the key.
    """

    name: ClassVar[str]
    protocols: ClassVar[frozenset[str]]

    def __init__(self, profile: Profile):
        if profile.protocol not in self.protocols:
            raise ProfileError(
                f"codec {self.name!r} does not speak protocol {profile.protocol!r}; "
                f"it handles {sorted(self.protocols)}",
                file=profile.source,
                path="protocol",
            )
        self.profile = profile

    @abstractmethod
    def decode(self, raw: Raw, device: str) -> list[Reading]:
        """Decode one raw input from ``device``; raise DecodeError on garbage."""

    @abstractmethod
    def encode(self, reading: Reading, device: str) -> Raw:
        """Encode one reading into the raw form the device would send."""

    def initial_state(self) -> JsonState:
        """The per-device tracking state before the first reading."""
        return {}

    def track(self, state: JsonState, reading: Reading) -> tuple[JsonState, list[Reading]]:
        """Turn one decoded reading into the readings to emit; returns the new state."""
        return state, [reading]

    # -- helpers for subclasses -------------------------------------------------------

    def check_value(self, device: str, name: str, value: Any) -> Value:
        """Coerce and range-check ``value`` against the resource ``name``.

        Raises DecodeError (fault ``type`` or ``range``) naming the resource.
        """
        res = self.profile.resource(name)
        if res.type == "bool":
            if not isinstance(value, bool):
                raise DecodeError(device, "type", f"{name}: expected bool, got {value!r}")
            return value
        if res.type == "str":
            if not isinstance(value, str):
                raise DecodeError(device, "type", f"{name}: expected string, got {value!r}")
            return value
        if res.type == "list":
            if not isinstance(value, list):
                raise DecodeError(
                    device, "type", f"{name}: expected list, got {type(value).__name__}"
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError(device, "type", f"{name}: expected number, got {value!r}")
        number: int | float
        if res.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise DecodeError(device, "type", f"{name}: expected integer, got {value!r}")
            number = int(value)
        else:
            number = float(value)
        if not res.in_range(number):
            raise DecodeError(
                device,
                "range",
                f"{name}={number!r} outside [{res.min}, {res.max}] {res.unit or ''}".rstrip(),
            )
        return number


class StreamCodec(Codec):
    """A codec for byte-stream transports: adds frame splitting."""

    @abstractmethod
    def split(self, buffer: bytes) -> tuple[list[bytes], bytes, bytes]:
        """Cut complete frames out of ``buffer``.

        Returns ``(frames, rest, garbage)``: frames to :meth:`decode` (they may still fail
        their checksum), the incomplete tail to keep for the next read, and bytes skipped
        while resynchronizing (counted and quarantined by the agent).
        """


def unknown_fields(
    device: str,
    data: Mapping[str, Any],
    known: frozenset[str],
    ignored: frozenset[str] = frozenset(),
) -> list[str]:
    """Names in ``data`` that are neither known nor deliberately ignored.

    Ignored-but-known fields are logged at debug, unknown ones at warning (a newer
    firmware may add fields; that is worth a look, not a rejection).
    """
    extra = [k for k in data if k not in known]
    unknown = [k for k in extra if k not in ignored]
    if extra and log.isEnabledFor(logging.DEBUG):
        log.debug("%s: ignoring fields %s", device, [k for k in extra if k in ignored])
    if unknown:
        log.warning("%s: unknown fields %s", device, unknown)
    return unknown
