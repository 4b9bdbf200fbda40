"""ChirpStack v4 uplinks of the LoRaWAN pendant: decoding, faults, duplicates, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import random
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import MqttMessage, Reading
from device_profiles.codecs.chirpstack import ChirpStackPendantCodec, uplink_topic
from device_profiles.errors import DecodeError
from device_profiles.profiles import ProfileRegistry

PROFILE = "oem-lorawan-pendant"
EUI = "0101010101010101"
APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
TOPIC = f"application/{APP}/device/{EUI}/event/up"


@functools.cache
def codec() -> ChirpStackPendantCodec:
    c = codec_for(ProfileRegistry.load().get(PROFILE))
    assert isinstance(c, ChirpStackPendantCodec)
    return c


def uplink(payload: bytes, fcnt: int = 17, **changes: Any) -> dict[str, Any]:
    """A ChirpStack v4 ``event/up`` document shaped like the integration docs' example."""
    doc: dict[str, Any] = {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2024-05-06T08:31:12.123456789+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": APP,
            "applicationName": "care-center-7",
            "deviceProfileId": "cf2aec2f-03e1-4a60-a32c-0faeef5730d8",
            "deviceProfileName": "oem-lorawan-pendant",
            "deviceName": "pendant-12",
            "devEui": EUI,
            "deviceClassEnabled": "CLASS_A",
            "tags": {},
        },
        "devAddr": "00189440",
        "adr": True,
        "dr": 5,
        "fCnt": fcnt,
        "fPort": 10,
        "confirmed": False,
        "data": base64.b64encode(payload).decode(),
        "rxInfo": [
            {"gatewayId": "0016c001f153a14c", "uplinkId": 4217, "rssi": -57, "snr": 10.5},
            {"gatewayId": "0016c001f153a14d", "uplinkId": 991, "rssi": -101, "snr": -3.0},
        ],
        "txInfo": {
            "frequency": 868100000,
            "modulation": {
                "lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}
            },
        },
    }
    doc.update(changes)
    return doc


def msg(doc: Any, topic: str = TOPIC) -> MqttMessage:
    return MqttMessage(topic, json.dumps(doc).encode())


def test_status_uplink_decodes_with_time_source_and_link_quality() -> None:
    [r] = codec().decode(msg(uplink(b"\x02\x57\x00\x0c\x00")), "lora")
    assert r.reading == "status" and r.source == EUI and not r.urgent
    assert r.values == {
        "battery": 87,
        "activity": 12,
        "boot": False,
        "counter": 17,
        "rssi": -57,
        "snr": 10.5,
    }
    assert r.time == 1714984272123


def test_press_uplink_then_track_is_one_urgent_press() -> None:
    c = codec()
    [r] = c.decode(msg(uplink(b"\x01\x01", fcnt=3)), "lora")
    state, out = c.track(c.initial_state(), r)
    assert out == [Reading("press", {"button": "sos"}, 1714984272123, True, EUI)]
    # The same uplink published twice (QoS 1 redelivery): fCnt says duplicate.
    state, out = c.track(state, c.decode(msg(uplink(b"\x01\x01", fcnt=3)), "lora")[0])
    assert out == []
    state, out = c.track(state, c.decode(msg(uplink(b"\x01\x01", fcnt=4)), "lora")[0])
    assert [o.reading for o in out] == ["press"]


def test_source_can_be_device_name() -> None:
    import yaml

    from device_profiles.profiles import builtin_profile_dir, parse_profile

    data = yaml.safe_load((builtin_profile_dir() / f"{PROFILE}.yaml").read_text())
    data["codec_options"]["chirpstack"]["source"] = "device_name"
    c = codec_for(parse_profile(data, "p.yaml"))
    [r] = c.decode(msg(uplink(b"\x03\x05")), "lora")
    assert r.source == "pendant-12" and r.values == {"battery": 5, "counter": 17}


def test_uplink_without_fcnt_time_or_rxinfo_defaults() -> None:
    doc = uplink(b"\x01\x01")
    for key in ("fCnt", "time", "rxInfo"):
        doc.pop(key)
    [r] = codec().decode(msg(doc), "lora")
    assert r.values == {"button": "sos", "counter": 0} and r.time is None


def test_other_events_and_mac_only_uplinks_give_nothing() -> None:
    c = codec()
    assert c.decode(msg({"whatever": 1}, TOPIC.replace("/up", "/join")), "lora") == []
    assert c.decode(msg({"x": 1}, TOPIC.replace("/up", "/status")), "lora") == []
    doc = uplink(b"")
    doc.pop("fPort")
    doc.pop("data")
    assert c.decode(msg(doc), "lora") == []


def test_unknown_fields_warn_but_decode(caplog: pytest.LogCaptureFixture) -> None:
    doc = uplink(b"\x01\x01", regionConfigId="eu868", futureField={"a": 1})
    doc["deviceInfo"]["newThing"] = 1
    [r] = codec().decode(msg(doc), "lora")
    assert r.reading == "press"
    assert "futureField" in caplog.text and "newThing" in caplog.text
    assert "regionConfigId" not in caplog.text


@pytest.mark.parametrize("time", ["yesterday", "1970-01-01T00:00:00Z", "2024-05-06T08:31:12", 7])
def test_bad_metadata_is_ignored_not_fatal(caplog: pytest.LogCaptureFixture, time: Any) -> None:
    [r] = codec().decode(msg(uplink(b"\x01\x01", time=time, rxInfo="?")), "lora")
    assert r.reading == "press" and r.time is None
    assert "unreadable uplink time" in caplog.text


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        (MqttMessage(TOPIC, b"{not json"), "json"),
        (MqttMessage(TOPIC, b""), "json"),
        (MqttMessage(TOPIC, b"[1, 2]"), "type"),
        (MqttMessage("zigbee2mqtt/door", b"{}"), "topic"),
        (MqttMessage(f"application/{APP}/device/{EUI}/up", b"{}"), "topic"),
        (msg({"fCnt": 1}), "missing"),
        (msg(uplink(b"\x01\x01", deviceInfo="x")), "type"),
        (msg(uplink(b"\x01\x01", deviceInfo={"deviceName": "p"})), "missing"),
        (msg(uplink(b"\x01\x01", deviceInfo={"devEui": "xyz"})), "type"),
        (msg(uplink(b"\x01\x01", deviceInfo={"devEui": "0202020202020202"})), "mismatch"),
        (msg(uplink(b"\x01\x01", fCnt="17")), "type"),
        (msg(uplink(b"\x01\x01", fCnt=-1)), "range"),
        (msg(uplink(b"\x01\x01", fCnt=1 << 32)), "range"),
        (msg(uplink(b"\x01\x01", fPort=True)), "type"),
        (msg(uplink(b"\x01\x01", fPort=11)), "unknown_message"),
        (msg(uplink(b"\x01\x01", data="***")), "encoding"),
        (msg(uplink(b"\x01\x01", data=12)), "type"),
        (msg(uplink(b"")), "truncated"),
        (msg(uplink(b"\x02\x57")), "truncated"),
        (msg(uplink(b"\x7f\x00")), "unknown_message"),
        (msg(uplink(b"\x02\xff\x00\x00\x00")), "range"),  # battery 255 %
        (msg(uplink(b"\x01\x01", deviceInfo={"devEui": EUI, "deviceName": 5})), "type"),
        (b"\xaa\x55", "type"),
    ],
)
def test_faults_are_typed(raw: Any, fault: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec().decode(raw, "lora-7")
    assert (info.value.device, info.value.fault) == ("lora-7", fault)


def test_encode_round_trip_and_topic() -> None:
    c = codec()
    r = Reading(
        "status",
        {"battery": 40, "activity": 0, "boot": True, "counter": 99},
        1714984272000,
        source=EUI,
    )
    m = c.encode(r, "pendant-12")
    assert m.topic == uplink_topic(APP, EUI) == TOPIC
    doc = json.loads(m.payload)
    assert doc["fCnt"] == 99 and doc["fPort"] == 10 and doc["deviceInfo"]["devEui"] == EUI
    assert doc["time"] == "2024-05-06T08:31:12Z"
    [back] = c.decode(m, "lora")
    assert back == Reading("status", {**r.values, "rssi": -80, "snr": 7.5}, r.time, False, EUI)


@pytest.mark.parametrize(
    ("encoding", "type_code", "uplinks"),
    [("raw", 0x10, 9), ("packed", 0x11, 3)],  # raw: 36 samples an uplink
)
def test_window_over_lorawan_reassembles(
    encoding: Literal["raw", "packed"], type_code: int, uplinks: int
) -> None:
    c = codec()
    n = 300
    rng = random.Random(5)
    x = [rng.randint(-2000, 2000) / 1000 for _ in range(n)]  # jumpy: wide deltas
    frags = c.impact_fragments(
        2, x, [0.0] * n, [1.0] * n, trigger_index=100, peak_g=3.0, encoding=encoding
    )
    assert len(frags) == uplinks
    state = c.initial_state()
    out: list[Reading] = []
    for i, v in enumerate(reversed(frags)):
        m = c.uplink(Reading("impact_fragment", {**v, "counter": 50 + i}, source=EUI), dev_eui=EUI)
        data = base64.b64decode(json.loads(m.payload)["data"])
        assert data[0] == type_code and len(data) <= 226
        for r in c.decode(m, "lora"):
            state, emitted = c.track(state, r)
            out += emitted
    [imp] = out
    assert imp.values["x"] == x and imp.values["complete"] is True and imp.source == EUI


# -- fuzzing ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["deviceInfo", "fCnt", "fPort", "data", "time", "rxInfo", "devAddr", "object"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values)
def test_no_json_document_crashes_decode(doc: Any) -> None:
    with contextlib.suppress(DecodeError):
        codec().decode(msg(doc), "lora")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    info=st.dictionaries(
        st.sampled_from(["devEui", "deviceName", "tags"]), json_values, max_size=2
    ),
    data=st.binary(max_size=240),
)
def test_mutated_uplinks_only_raise_decode_error(
    changes: dict[str, Any], info: dict[str, Any], data: bytes
) -> None:
    doc = uplink(data, **changes)
    if isinstance(doc.get("deviceInfo"), dict):
        doc["deviceInfo"] = {**doc["deviceInfo"], **info}
    c = codec()
    try:
        for r in c.decode(msg(doc), "lora"):
            c.track(c.initial_state(), r)
    except DecodeError as exc:
        assert exc.fault


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=64), topic=st.text(max_size=60))
def test_no_bytes_or_topic_crash_decode(payload: bytes, topic: str) -> None:
    for t in (topic, TOPIC):
        with contextlib.suppress(DecodeError):
            codec().decode(MqttMessage(t, payload), "lora")


def test_deeply_nested_json_is_a_decode_error() -> None:
    # Parsing it overflows the recursion limit: that must be a fault, not a crash of the
    # agent's MQTT source (the message would be redelivered after every restart).
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    topic = "application/app/device/0101010101010101/event/up"
    with pytest.raises(DecodeError) as info:
        codec().decode(MqttMessage(topic, deep), "lora")
    assert info.value.fault == "json"
