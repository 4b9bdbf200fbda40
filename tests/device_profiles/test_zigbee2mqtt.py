"""Zigbee2MQTT codec: topics, decode tables, faults, logging, tracking, encode."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from device_profiles.codecs import MqttMessage, Reading, codec_for
from device_profiles.codecs.zigbee2mqtt import (
    Z2mTopic,
    Zigbee2MqttCodec,
    availability_topic,
    parse_topic,
    state_topic,
)
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.profiles import ProfileRegistry, parse_profile

REGISTRY = ProfileRegistry.load()
AQARA_DOOR = REGISTRY.get("aqara-mccgq11lm")
SONOFF_DOOR = REGISTRY.get("sonoff-snzb-04")
AQARA_MOTION = REGISTRY.get("aqara-rtcgq11lm")


def door() -> Zigbee2MqttCodec:
    codec = codec_for(AQARA_DOOR)
    assert isinstance(codec, Zigbee2MqttCodec)
    return codec


def msg(topic: str, payload: bytes | str, retain: bool = False) -> MqttMessage:
    data = payload.encode() if isinstance(payload, str) else payload
    return MqttMessage(topic, data, retain)


# -- topics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "base", "expected"),
    [
        ("zigbee2mqtt/hall_door", "zigbee2mqtt", Z2mTopic("hall_door", "state")),
        (
            "zigbee2mqtt/hall_door/availability",
            "zigbee2mqtt",
            Z2mTopic("hall_door", "availability"),
        ),
        ("zigbee2mqtt/floor1/room3/door", "zigbee2mqtt", Z2mTopic("floor1/room3/door", "state")),
        (
            "zigbee2mqtt/floor1/door/availability",
            "zigbee2mqtt",
            Z2mTopic("floor1/door", "availability"),
        ),
        ("t-1/zigbee2mqtt/0x00158d0001", "t-1/zigbee2mqtt", Z2mTopic("0x00158d0001", "state")),
        ("zigbee2mqtt/bridge/state", "zigbee2mqtt", None),
        ("zigbee2mqtt/bridge/devices", "zigbee2mqtt", None),
        ("zigbee2mqtt/bridge", "zigbee2mqtt", None),
        ("zigbee2mqtt/lamp/set", "zigbee2mqtt", None),
        ("zigbee2mqtt/lamp/get", "zigbee2mqtt", None),
        ("zigbee2mqtt/lamp/set/brightness", "zigbee2mqtt", None),
        ("zigbee2mqtt/availability", "zigbee2mqtt", None),
        ("zigbee2mqtt/", "zigbee2mqtt", None),
        ("zigbee2mqtt//x", "zigbee2mqtt", None),
        ("zigbee2mqtt", "zigbee2mqtt", None),
        ("other/hall_door", "zigbee2mqtt", None),
        ("zigbee2mqttx/hall_door", "zigbee2mqtt", None),
    ],
)
def test_parse_topic(topic: str, base: str, expected: Z2mTopic | None) -> None:
    assert parse_topic(topic, base) == expected


def test_topic_builders_round_trip_through_parse() -> None:
    for name in ("hall_door", "a/b/c", "0x00158d00045a1b2c"):
        assert parse_topic(state_topic(name, "b/z2m"), "b/z2m") == Z2mTopic(name, "state")
        assert parse_topic(availability_topic(name), "zigbee2mqtt") == Z2mTopic(
            name, "availability"
        )


# -- decode: good messages -----------------------------------------------------------------

# What Zigbee2MQTT publishes for an MCCGQ11LM (whole cached state every time).
AQARA_STATE = (
    '{"battery":91,"contact":false,"device_temperature":24,"linkquality":123,'
    '"power_outage_count":3,"voltage":3005}'
)


def test_aqara_contact_open() -> None:
    [r] = door().decode(msg("zigbee2mqtt/flat12_door", AQARA_STATE), "door-12")
    assert r == Reading(
        "contact",
        {"contact": False, "open": True, "battery": 91, "linkquality": 123},
        source="flat12_door",
    )


@pytest.mark.parametrize(
    ("payload", "values"),
    [
        ('{"contact":true}', {"contact": True, "open": False}),
        ('{"contact":false,"battery":100.0}', {"contact": False, "open": True, "battery": 100}),
        ('{"contact":true,"battery":null}', {"contact": True, "open": False}),
        ('{"contact":true,"linkquality":0}', {"contact": True, "open": False, "linkquality": 0}),
        (
            '{"contact":true,"last_seen":"2024-04-08T21:21:36.794Z","linkquality":144}',
            {"contact": True, "open": False, "linkquality": 144},
        ),
    ],
)
def test_aqara_contact_table(payload: str, values: dict[str, Any]) -> None:
    [r] = door().decode(msg("zigbee2mqtt/d", payload), "d1")
    assert (r.reading, dict(r.values), r.source, r.time) == ("contact", values, "d", None)


def test_sonoff_second_model_needs_only_its_profile() -> None:
    payload = (
        '{"battery":64,"battery_low":false,"contact":true,"linkquality":87,"tamper":true,'
        '"voltage":2900}'
    )
    [r] = codec_for(SONOFF_DOOR).decode(msg("zigbee2mqtt/back_door", payload), "d2")
    assert r.reading == "contact"
    assert r.values == {
        "contact": True,
        "open": False,
        "battery": 64,
        "battery_low": False,
        "tamper": True,
        "linkquality": 87,
    }


@pytest.mark.parametrize("occupancy", [True, False])
def test_motion_occupancy(occupancy: bool) -> None:
    payload = (
        f'{{"battery":100,"device_temperature":27,"illuminance":12,"illuminance_lux":12,'
        f'"linkquality":60,"occupancy":{str(occupancy).lower()},"power_outage_count":1,'
        f'"voltage":3015}}'
    )
    [r] = codec_for(AQARA_MOTION).decode(msg("zigbee2mqtt/bedroom_pir", payload), "m1")
    assert r == Reading(
        "occupancy",
        {"occupancy": occupancy, "battery": 100, "linkquality": 60},
        source="bedroom_pir",
    )


def test_state_without_primary_is_a_status_reading() -> None:
    [r] = door().decode(msg("zigbee2mqtt/d", '{"battery":55,"voltage":2950}'), "d1")
    assert (r.reading, dict(r.values)) == ("status", {"battery": 55})


@pytest.mark.parametrize("payload", ['{"voltage":3000,"last_seen":1}', "{}", ""])
def test_nothing_to_read_gives_no_reading(payload: str) -> None:
    assert door().decode(msg("zigbee2mqtt/d", payload), "d1") == []


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        ('{"state":"online"}', True),
        ('{"state":"offline"}', False),
        ("online", True),
        ("offline", False),
        (" online\n", True),
        ('"offline"', False),
    ],
)
def test_availability_both_styles(payload: str, online: bool) -> None:
    [r] = door().decode(msg("zigbee2mqtt/hall/door/availability", payload, True), "d1")
    assert r == Reading("availability", {"online": online}, source="hall/door")


def test_custom_base_topic() -> None:
    codec = Zigbee2MqttCodec(AQARA_DOOR, base_topic="site7/z2m")
    [r] = codec.decode(msg("site7/z2m/door_a", '{"contact":true}'), "d1")
    assert r.source == "door_a"
    # A site base the codec was not told about still decodes (name = last level).
    [r] = door().decode(msg("site7/z2m/door_a", '{"contact":true}'), "d1")
    assert r.source == "door_a"
    [r] = door().decode(msg("home/door_a/availability", "online"), "d1")
    assert r == Reading("availability", {"online": True}, source="door_a")


# -- decode: faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload", "fault", "names"),
    [
        ("zigbee2mqtt/d", b"\x00\xff garbage", "json", ""),
        ("zigbee2mqtt/d", b'{"contact":tr', "json", ""),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":9', "json", ""),
        ("zigbee2mqtt/d", b"[1,2]", "type", "object"),
        ("zigbee2mqtt/d", b'"contact"', "type", "object"),
        ("zigbee2mqtt/d", b"42", "type", "object"),
        ("zigbee2mqtt/d", b'{"contact":"true"}', "type", "contact"),
        ("zigbee2mqtt/d", b'{"contact":1}', "type", "contact"),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":"91"}', "type", "battery"),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":true}', "type", "battery"),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":91.5}', "type", "battery"),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":101}', "range", "battery"),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":-1}', "range", "battery"),
        ("zigbee2mqtt/d", b'{"contact":true,"battery":1e400}', "json", ""),
        ("zigbee2mqtt/d", b'{"contact":true,"linkquality":256}', "range", "linkquality"),
        ("zigbee2mqtt/d/availability", b"maybe", "json", ""),
        ("zigbee2mqtt/d/availability", b'{"state":"sleeping"}', "value", "sleeping"),
        ("zigbee2mqtt/d/availability", b'{"state":true}', "value", "availability"),
        ("zigbee2mqtt/d/availability", b"[]", "value", "availability"),
        ("zigbee2mqtt/bridge/state", b'{"state":"online"}', "topic", "bridge"),
        ("zigbee2mqtt/d/set", b'{"contact":true}', "topic", "set"),
        ("door", b'{"contact":true}', "topic", "door"),
        ("x/door/set", b'{"contact":true}', "topic", "set"),
    ],
)
def test_decode_faults_name_device_and_fault(
    topic: str, payload: bytes, fault: str, names: str
) -> None:
    with pytest.raises(DecodeError) as err:
        door().decode(MqttMessage(topic, payload), "door-12")
    assert err.value.device == "door-12"
    assert err.value.fault == fault
    assert names in str(err.value)


def test_raw_that_is_not_an_mqtt_message_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as err:
        door().decode(b'{"contact":true}', "d1")
    assert err.value.fault == "type"


def test_ignored_fields_log_at_debug_unknown_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="device_profiles")
    door().decode(msg("zigbee2mqtt/d", '{"contact":true,"voltage":3000,"new_thing":1}'), "d9")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(warnings) == 1 and "new_thing" in warnings[0].getMessage()
    assert "voltage" not in warnings[0].getMessage()
    assert any("voltage" in r.getMessage() for r in debugs)


def test_good_message_decodes_after_garbage() -> None:
    codec = door()
    with pytest.raises(DecodeError):
        codec.decode(msg("zigbee2mqtt/d", b"\xfe\xfe"), "d1")
    [r] = codec.decode(msg("zigbee2mqtt/d", '{"contact":true}'), "d1")
    assert r.values["contact"] is True


# -- track ---------------------------------------------------------------------------------


def test_track_marks_whether_the_primary_value_changed() -> None:
    codec = door()
    state = codec.initial_state()
    seen = []
    for payload in ('{"contact":true}', '{"contact":true,"battery":90}', '{"contact":false}'):
        [r] = codec.decode(msg("zigbee2mqtt/d", payload), "d1")
        state, out = codec.track(state, r)
        seen.append(out[0].values["changed"])
    assert seen == [True, False, True]
    assert state == {"last": False}
    # Status and availability readings pass through untouched.
    status = Reading("status", {"battery": 3})
    assert codec.track(state, status) == (state, [status])


def test_track_state_is_json_serializable() -> None:
    import json

    codec = door()
    [r] = codec.decode(msg("zigbee2mqtt/d", '{"contact":true}'), "d1")
    state, _ = codec.track(codec.initial_state(), r)
    assert json.loads(json.dumps(state)) == state


# -- encode --------------------------------------------------------------------------------


def test_encode_state_like_zigbee2mqtt() -> None:
    reading = Reading(
        "contact",
        {"contact": False, "open": True, "battery": 91, "linkquality": 120, "voltage": 3005},
        source="flat12_door",
    )
    out = door().encode(reading, "door-12")
    assert out.topic == "zigbee2mqtt/flat12_door"
    assert out.retain is False
    assert out.payload == b'{"contact":false,"battery":91,"linkquality":120,"voltage":3005}'


def test_encode_availability_is_retained_json() -> None:
    out = door().encode(Reading("availability", {"online": False}), "door-12")
    assert out == MqttMessage("zigbee2mqtt/door-12/availability", b'{"state":"offline"}', True)


@pytest.mark.parametrize(
    "reading",
    [
        Reading("availability", {"online": "yes"}),
        Reading("press", {}),
        Reading("contact", {"contact": True, "colour": "red"}),
    ],
)
def test_encode_rejects_what_the_profile_cannot_say(reading: Reading) -> None:
    with pytest.raises(EncodeError):
        door().encode(reading, "d1")


# -- profile validation --------------------------------------------------------------------

BASE: dict[str, Any] = {
    "profile": "acme-contact",
    "kind": "door",
    "protocol": "zigbee2mqtt",
    "codec": "zigbee2mqtt",
    "report_interval_s": 3600,
    "codec_options": {"primary": "contact"},
    "resources": [
        {"name": "contact", "type": "bool", "read": {"path": "contact"}},
        {"name": "open", "type": "bool", "read": {"not": "contact"}},
    ],
}


def with_changes(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_a_new_model_is_only_a_profile() -> None:
    codec = codec_for(parse_profile(BASE, "acme.yaml"))
    [r] = codec.decode(msg("zigbee2mqtt/x", '{"contact":false}'), "x1")
    assert r.values == {"contact": False, "open": True}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (with_changes(codec_options={}), "primary"),
        (with_changes(codec_options={"primary": "battery"}), "primary"),
        (with_changes(codec_options={"primary": "contact", "ignore": "voltage"}), "ignore"),
        (with_changes(transport={"base_topic": "z2m/#"}), "base_topic"),
        (with_changes(transport={"retain": "yes"}), "retain"),
        (
            with_changes(resources=[{"name": "contact", "type": "bool", "read": {}}]),
            "read must be",
        ),
        (
            with_changes(
                resources=[
                    {"name": "contact", "type": "bool", "read": {"path": "contact"}},
                    {"name": "open", "type": "bool", "read": {"not": "battery"}},
                ]
            ),
            "not",
        ),
        (
            with_changes(
                resources=[
                    {"name": "contact", "type": "bool", "read": {"path": "contact"}},
                    {"name": "c2", "type": "bool", "read": {"path": "contact"}},
                ]
            ),
            "read twice",
        ),
    ],
)
def test_profile_faults_name_the_key(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ProfileError, match=match) as err:
        codec_for(parse_profile(data, "acme.yaml"))
    assert "acme.yaml" in str(err.value)
