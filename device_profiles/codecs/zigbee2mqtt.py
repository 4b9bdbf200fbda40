"""Zigbee2MQTT devices: door/window contacts, PIR motion sensors and their kin.

Zigbee2MQTT (Z2M) bridges a Zigbee network to MQTT. For every device it publishes:

- ``<base>/<friendly_name>``: the device's *whole* cached state as one JSON object
  (``{"contact": true, "battery": 91, "linkquality": 120, "voltage": 3005, ...}``), each
  time any attribute changes or the device checks in;
- ``<base>/<friendly_name>/availability`` (retained): ``{"state": "online"}`` or
  ``{"state": "offline"}`` in Zigbee2MQTT >= 1.27; older releases (and
  ``legacy_availability_payload: true``) send the bare strings ``online`` / ``offline``.
  Both are accepted.

``<base>`` defaults to ``zigbee2mqtt``; ``<base>/bridge/...`` belongs to the bridge, and
``.../set`` / ``.../get`` are commands to devices: :func:`parse_topic` ignores them.
Friendly names may contain ``/`` (Z2M allows it to build folders).

The codec is generic: the profile says which JSON property each resource comes from
(``read: {path: contact}``), which values are derived (``read: {not: contact}`` gives
``open``), and which property is the *primary* reading (``codec_options.primary``).
A state message that carries the primary property becomes the reading named by
``codec_options.reading`` (``contact``, ``occupancy``); one without it (a sensor that
has reported only its battery so far) becomes a ``status`` reading with what it has.
Availability messages become ``availability`` readings with ``{"online": bool}``.

Properties listed in ``codec_options.ignore`` are known and dropped (logged at debug);
other unknown properties are logged at warning and dropped (newer Z2M releases add
properties; that is worth a look, not a rejection). Garbage (not JSON, not an object,
wrong types, out-of-range values) raises :class:`DecodeError` naming the device and the
fault.

Reading.source is the friendly name taken from the topic: one subscription serves all
devices of a Z2M instance, and the agent maps friendly names to its device ids. A topic
outside the codec's base topic (a site that overrides ``base_topic`` while the codec is
shared per profile) still decodes, with the last topic level as the friendly name;
friendly names containing ``/`` need ``Zigbee2MqttCodec(profile, base_topic=...)``.

:meth:`Zigbee2MqttCodec.track` adds ``changed`` (bool) to primary readings: Z2M
republishes the whole state on every battery or link report, so a door that reports
``contact: true`` again has not moved; detectors that count activity need to know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec

from device_profiles.codecs.base import Codec, JsonState, MqttMessage, Raw, Reading, unknown_fields
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.events import Value
from device_profiles.profiles import Profile

log = logging.getLogger(__name__)

DEFAULT_BASE_TOPIC = "zigbee2mqtt"
AVAILABILITY = "availability"
STATUS = "status"

TopicKind = Literal["state", "availability"]


@dataclass(frozen=True, slots=True)
class Z2mTopic:
    """What a Zigbee2MQTT topic is about: a device's ``name`` and the message ``kind``."""

    name: str
    kind: TopicKind


def parse_topic(topic: str, base_topic: str = DEFAULT_BASE_TOPIC) -> Z2mTopic | None:
    """Classify ``topic`` under ``base_topic``; None for anything that is not device data.

    ``zigbee2mqtt/hall_door`` -> ``Z2mTopic("hall_door", "state")``;
    ``zigbee2mqtt/floor1/hall_door/availability`` -> ``Z2mTopic("floor1/hall_door",
    "availability")``; bridge topics, ``/set`` and ``/get`` commands, and topics outside
    the base give None.
    """
    prefix = base_topic + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if parts[0] == "bridge" or any(not p for p in parts):
        return None
    kind: TopicKind = "state"
    if parts[-1] == AVAILABILITY:
        kind = "availability"
        parts = parts[:-1]
    elif parts[-1] in ("set", "get") or (len(parts) > 1 and parts[-2] in ("set", "get")):
        return None
    if not parts:
        return None
    return Z2mTopic("/".join(parts), kind)


def state_topic(name: str, base_topic: str = DEFAULT_BASE_TOPIC) -> str:
    """The topic Zigbee2MQTT publishes the state of device ``name`` on."""
    return f"{base_topic}/{name}"


def availability_topic(name: str, base_topic: str = DEFAULT_BASE_TOPIC) -> str:
    """The (retained) availability topic of device ``name``."""
    return f"{base_topic}/{name}/{AVAILABILITY}"


def load_json(payload: bytes, device: str) -> Any:
    """Parse a JSON payload; anything that is not JSON raises DecodeError (fault ``json``).

    msgspec rejects invalid UTF-8 and numbers beyond float range; very deep nesting
    raises RecursionError, which is garbage too.
    """
    try:
        return msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise DecodeError(device, "json", f"payload is not JSON: {exc}") from None


def load_json_object(payload: bytes, device: str) -> dict[str, Any]:
    """Parse a JSON payload that must be an object (fault ``json`` or ``type``)."""
    data = load_json(payload, device)
    if not isinstance(data, dict):
        raise DecodeError(
            device, "type", f"payload must be a JSON object, got {type(data).__name__}"
        )
    return data


def as_message(raw: Raw, device: str) -> MqttMessage:
    """``raw`` as an MqttMessage; MQTT codecs receive nothing else."""
    if not isinstance(raw, MqttMessage):
        raise DecodeError(device, "type", f"expected an MQTT message, got {type(raw).__name__}")
    return raw


def _option_str(profile: Profile, key: str, default: str) -> str:
    value = profile.codec_options.get(key, default)
    if not isinstance(value, str) or not value:
        raise ProfileError(
            f"must be a non-empty string, got {value!r}",
            file=profile.source,
            path=f"codec_options.{key}",
        )
    return value


def _check_base_topic(value: Any, file: str, path: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or any(c in value for c in "+#")
        or value.startswith("/")
        or value.endswith("/")
    ):
        raise ProfileError(
            f"base topic must be a topic without wildcards or outer '/', got {value!r}",
            file=file,
            path=path,
        )
    return value


class Zigbee2MqttCodec(Codec):
    """Decode Zigbee2MQTT state and availability messages per the profile.

    ``base_topic`` overrides the profile's ``transport.base_topic`` (a site running
    Zigbee2MQTT with another ``mqtt.base_topic``).
    """

    name: ClassVar[str] = "zigbee2mqtt"
    protocols: ClassVar[frozenset[str]] = frozenset({"zigbee2mqtt"})

    def __init__(self, profile: Profile, base_topic: str | None = None):
        super().__init__(profile)
        src = profile.source
        if base_topic is None:
            self.base_topic = _check_base_topic(
                profile.transport.get("base_topic", DEFAULT_BASE_TOPIC), src, "transport.base_topic"
            )
        else:
            self.base_topic = _check_base_topic(base_topic, src, "base_topic")
        retain = profile.transport.get("retain", False)
        if not isinstance(retain, bool):
            raise ProfileError("must be true or false", file=src, path="transport.retain")
        self.retain_state = retain
        # property name -> resource name, and derived resource -> the resource it negates
        self.paths: dict[str, str] = {}
        self.negations: dict[str, str] = {}
        for i, res in enumerate(profile.resources):
            where = f"resources[{i}].read"
            keys = set(res.read)
            if keys == {"path"}:
                path = res.read["path"]
                if not isinstance(path, str) or not path:
                    raise ProfileError("path must be a non-empty string", file=src, path=where)
                if path in self.paths:
                    raise ProfileError(f"property {path!r} read twice", file=src, path=where)
                self.paths[path] = res.name
            elif keys == {"not"}:
                self.negations[res.name] = res.read["not"]
            else:
                raise ProfileError(
                    "read must be {path: <property>} or {not: <bool resource>}",
                    file=src,
                    path=where,
                )
        read_by_path = set(self.paths.values())
        for name, source in self.negations.items():
            if source not in read_by_path or profile.resource(source).type != "bool":
                raise ProfileError(
                    f"{name}: 'not' must name a bool resource read from a property, got {source!r}",
                    file=src,
                    path="resources",
                )
            if profile.resource(name).type != "bool":
                raise ProfileError(f"{name}: a negation must be type bool", file=src)
        if "primary" not in profile.codec_options:
            raise ProfileError(
                "required: the property that makes the main reading (contact, occupancy)",
                file=src,
                path="codec_options.primary",
            )
        self.primary = _option_str(profile, "primary", "")
        if self.primary not in read_by_path:
            raise ProfileError(
                f"primary {self.primary!r} must be a resource read from a property",
                file=src,
                path="codec_options.primary",
            )
        self.reading = _option_str(profile, "reading", self.primary)
        ignore = profile.codec_options.get("ignore", ())
        if not isinstance(ignore, tuple | list) or not all(isinstance(k, str) for k in ignore):
            raise ProfileError(
                "must be a list of property names", file=src, path="codec_options.ignore"
            )
        self.ignore = frozenset(ignore)
        self.known = frozenset(self.paths)

    # -- decode ----------------------------------------------------------------------

    def decode(self, raw: Raw, device: str) -> list[Reading]:
        """Decode one state or availability message (see the module docstring)."""
        msg = as_message(raw, device)
        topic = self._topic(msg.topic, device)
        if not msg.payload:
            # An empty (retained) payload is how a removed device's topic is cleared.
            log.debug("%s: empty payload on %s", device, msg.topic)
            return []
        if topic.kind == "availability":
            online = self._availability(msg.payload, device)
            return [Reading(AVAILABILITY, {"online": online}, source=topic.name)]
        data = load_json_object(msg.payload, device)
        values: dict[str, Value] = {}
        for prop, name in self.paths.items():
            value = data.get(prop)
            if value is None:
                # Absent, or null before the device first reported it.
                continue
            values[name] = self.check_value(device, name, value)
        unknown_fields(device, data, self.known, self.ignore)
        for name, source in self.negations.items():
            if source in values:
                values[name] = not values[source]
        if not values:
            log.debug("%s: nothing carewatch reads in %s", device, sorted(data))
            return []
        reading = self.reading if self.primary in values else STATUS
        return [Reading(reading, values, source=topic.name)]

    def _topic(self, topic: str, device: str) -> Z2mTopic:
        if topic.startswith(self.base_topic + "/"):
            found = parse_topic(topic, self.base_topic)
            if found is None:
                raise DecodeError(
                    device,
                    "topic",
                    f"{topic!r} is not a device state or availability topic "
                    f"under {self.base_topic!r}",
                )
            return found
        # A site may run Zigbee2MQTT under another base topic than the profile's (the
        # agent subscribes to the site's). Without the base, the friendly name is taken
        # as the last level: names containing '/' need the base given to the codec.
        parts = topic.split("/")
        if len(parts) >= 3 and parts[-1] == AVAILABILITY and parts[-2]:
            return Z2mTopic(parts[-2], "availability")
        if len(parts) >= 2 and parts[-1] and parts[-1] not in ("set", "get", AVAILABILITY):
            return Z2mTopic(parts[-1], "state")
        raise DecodeError(device, "topic", f"{topic!r} is not a Zigbee2MQTT device topic")

    @staticmethod
    def _availability(payload: bytes, device: str) -> bool:
        text = payload.strip()
        if text in (b"online", b"offline"):
            return text == b"online"
        data = load_json(payload, device)
        state = data.get("state") if isinstance(data, dict) else data
        if state not in ("online", "offline"):
            raise DecodeError(
                device, "value", f"availability must be online or offline, got {data!r}"
            )
        return bool(state == "online")

    # -- track -----------------------------------------------------------------------

    def track(self, state: JsonState, reading: Reading) -> tuple[JsonState, list[Reading]]:
        """Add ``changed`` to primary readings: did the primary value move since last time."""
        if reading.reading != self.reading or self.primary not in reading.values:
            return state, [reading]
        value = reading.values[self.primary]
        changed = "last" not in state or state["last"] != value
        new = Reading(
            reading.reading,
            {**reading.values, "changed": changed},
            time=reading.time,
            urgent=reading.urgent,
            source=reading.source,
        )
        return {**state, "last": value}, [new]

    # -- encode ----------------------------------------------------------------------

    def encode(self, reading: Reading, device: str) -> MqttMessage:
        """The message Zigbee2MQTT would publish for ``reading``.

        State readings map values back to their properties; derived values (``open``)
        and ``changed`` are dropped; values named in ``codec_options.ignore`` (voltage,
        device_temperature...) are passed through, so a simulator can publish the
        whole state a real bridge sends.
        """
        name = reading.source or device
        if reading.reading == AVAILABILITY:
            online = reading.values.get("online")
            if not isinstance(online, bool):
                raise EncodeError(f"{device}: availability needs online: bool, got {online!r}")
            payload = msgspec.json.encode({"state": "online" if online else "offline"})
            return MqttMessage(availability_topic(name, self.base_topic), payload, retain=True)
        if reading.reading not in (self.reading, STATUS):
            raise EncodeError(
                f"{device}: profile {self.profile.name!r} has no reading {reading.reading!r}"
            )
        by_name = {v: k for k, v in self.paths.items()}
        obj: dict[str, Any] = {}
        for key, value in reading.values.items():
            if key in by_name:
                obj[by_name[key]] = value
            elif key in self.negations or key == "changed":
                continue
            elif key in self.ignore:
                obj[key] = value
            else:
                raise EncodeError(f"{device}: {self.profile.name!r} has no value {key!r}")
        return MqttMessage(
            state_topic(name, self.base_topic), msgspec.json.encode(obj), self.retain_state
        )
