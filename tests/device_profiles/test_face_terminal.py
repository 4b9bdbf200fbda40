"""Face-terminal codec: Hikvision AccessControllerEvent check-ins, time, faults, encode."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from device_profiles.codecs import MqttMessage, Reading, codec_for
from device_profiles.codecs.face_terminal import (
    FaceTerminalCodec,
    format_iso_time,
    get_path,
    parse_iso_time,
)
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.profiles import ProfileRegistry, parse_profile

HIK = ProfileRegistry.load().get("hikvision-ds-k1t341")
MAC = "44:19:b6:8a:10:2f"


def hik() -> FaceTerminalCodec:
    codec = codec_for(HIK)
    assert isinstance(codec, FaceTerminalCodec)
    return codec


def event(**changes: Any) -> dict[str, Any]:
    """A face-authentication event as the terminal pushes it (documented fields)."""
    doc: dict[str, Any] = {
        "ipAddress": "192.168.1.64",
        "portNo": 80,
        "protocol": "HTTP",
        "macAddress": MAC,
        "channelID": 1,
        "dateTime": "2024-03-01T08:30:05+08:00",
        "activePostCount": 1,
        "eventType": "AccessControllerEvent",
        "eventState": "active",
        "eventDescription": "Access Controller Event",
        "AccessControllerEvent": {
            "deviceName": "Access Controller",
            "majorEventType": 5,
            "subEventType": 75,
            "name": "Wang Fang",
            "cardReaderNo": 1,
            "doorNo": 1,
            "employeeNoString": "m0042",
            "serialNo": 1187,
            "userType": "normal",
            "currentVerifyMode": "face",
            "currentEvent": True,
            "frontSerialNo": 1186,
            "attendanceStatus": "checkIn",
            "mask": "no",
            "pictureURL": "http://192.168.1.64/LOCALS/pic/acsLinkCap/1.jpeg",
            "FaceRect": {"height": 0.41, "width": 0.23, "x": 0.3, "y": 0.22},
        },
    }
    for key, value in changes.items():
        if key.startswith("ace_"):
            name = key[4:]
            if value is DROP:
                doc["AccessControllerEvent"].pop(name, None)
            else:
                doc["AccessControllerEvent"][name] = value
        elif value is DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


DROP = object()


def decode(doc: Any, codec: FaceTerminalCodec | None = None) -> list[Reading]:
    payload = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    return (codec or hik()).decode(MqttMessage("hikvision/ft1/event", payload), "ft1")


# 2024-03-01T08:30:05+08:00 == 2024-03-01T00:30:05Z
T0 = int(datetime(2024, 3, 1, 0, 30, 5, tzinfo=UTC).timestamp() * 1000)


def test_documented_event_is_a_checkin_with_utc_ms_time() -> None:
    [r] = decode(event())
    assert r == Reading(
        "checkin",
        {"person": "m0042", "verified": True, "terminal": MAC},
        time=T0,
        source=MAC,
    )


@pytest.mark.parametrize(
    ("changes", "values"),
    [
        (
            {"ace_similarity": 0.93, "ace_liveness": True},
            {"person": "m0042", "verified": True, "score": 0.93, "liveness": True},
        ),
        # Low score / failed liveness / failed verdict still give a reading.
        (
            {"ace_subEventType": 76, "ace_similarity": 0.41, "ace_liveness": False},
            {"person": "m0042", "verified": False, "score": 0.41, "liveness": False},
        ),
        ({"ace_similarity": 0}, {"person": "m0042", "verified": True, "score": 0.0}),
        # A face that matched nobody: no person, the verdict says failed.
        (
            {"ace_subEventType": 76, "ace_employeeNoString": DROP},
            {"verified": False},
        ),
        ({"ace_subEventType": 76, "ace_employeeNoString": ""}, {"verified": False}),
        ({"ace_similarity": None}, {"person": "m0042", "verified": True}),
    ],
)
def test_checkin_table(changes: dict[str, Any], values: dict[str, Any]) -> None:
    [r] = decode(event(**changes))
    assert dict(r.values) == {**values, "terminal": MAC}
    assert r.reading == "checkin"


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("2024-03-01T08:30:05+08:00", datetime(2024, 3, 1, 0, 30, 5, tzinfo=UTC)),
        ("2024-03-01T00:30:05Z", datetime(2024, 3, 1, 0, 30, 5, tzinfo=UTC)),
        ("2024-03-01T07:30:05.250+07:00", datetime(2024, 3, 1, 0, 30, 5, 250000, tzinfo=UTC)),
        ("2024-03-01 02:00+01:30", datetime(2024, 3, 1, 0, 30, tzinfo=UTC)),
        ("2024-01-01T03:00:00+08:00", datetime(2023, 12, 31, 19, 0, tzinfo=UTC)),
    ],
)
def test_capture_time_with_offset_becomes_ms_utc(stamp: str, utc: datetime) -> None:
    [r] = decode(event(dateTime=stamp))
    assert r.time == int(utc.timestamp() * 1000)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-03-01 08:30",
        "2024-03-01T08:30:05",  # no offset: ambiguous, rejected unless the profile says
        "01/03/2024 08:30:05",
        "2024-03-01",
        "2024-13-01T08:30:05+08:00",
        "2024-03-01T08:30:05+25:00",
        "1970-01-01T00:00:00Z",  # a terminal that lost its clock
        "yesterday",
        "",
        1709253005,
        None,
        ["2024-03-01T08:30:05+08:00"],
        "２０２４-03-01T08:30:05+08:00",
    ],
)
def test_bad_capture_time_is_a_time_fault(stamp: Any) -> None:
    with pytest.raises(DecodeError) as err:
        decode(event(dateTime=stamp))
    assert (err.value.device, err.value.fault) == ("ft1", "time")


def test_missing_capture_time_is_a_time_fault() -> None:
    with pytest.raises(DecodeError) as err:
        decode(event(dateTime=DROP))
    assert err.value.fault == "time"


@pytest.mark.parametrize(
    "changes",
    [
        {"eventType": "heartBeat2"},
        {"ace_majorEventType": 3},
        {"ace_subEventType": 21},  # door unlocked
        {"ace_subEventType": 1},  # card swipe
        {"eventType": DROP},
    ],
)
def test_other_events_are_dropped(changes: dict[str, Any]) -> None:
    assert decode(event(**changes)) == []


def test_heartbeat_is_a_heartbeat_reading() -> None:
    doc = {
        "ipAddress": "192.168.1.64",
        "macAddress": MAC,
        "dateTime": "2024-03-01T08:30:05+08:00",
        "activePostCount": 1,
        "eventType": "heartBeat",
        "eventState": "inactive",
        "eventDescription": "heartBeat",
    }
    assert decode(doc) == [Reading("heartbeat", {"terminal": MAC}, source=MAC)]


@pytest.mark.parametrize(
    ("doc", "fault", "names"),
    [
        (b"not json", "json", ""),
        (b'{"eventType":"AccessControllerEvent","AccessControllerEvent":{"major', "json", ""),
        (b"[]", "type", "object"),
        (b"null", "type", "object"),
        (event(ace_employeeNoString=42), "type", "person"),
        (event(ace_similarity="93%"), "type", "score"),
        (event(ace_similarity=93), "range", "score"),
        (event(ace_similarity=-0.1), "range", "score"),
        (event(ace_liveness="yes"), "type", "liveness"),
        (event(ace_subEventType="75"), "type", "subEventType"),
        (event(ace_majorEventType=5.0), "type", "majorEventType"),
        (event(macAddress=DROP), "missing", "terminal"),
        (event(macAddress=7), "type", "terminal"),
        (event(AccessControllerEvent="face ok"), "type", "AccessControllerEvent"),
        (event(eventType=["AccessControllerEvent"]), "type", "eventType"),
    ],
)
def test_faults_name_device_and_fault(doc: Any, fault: str, names: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(doc)
    assert (err.value.device, err.value.fault) == ("ft1", fault)
    assert names in str(err.value)


def test_good_event_decodes_after_garbage() -> None:
    codec = hik()
    with pytest.raises(DecodeError):
        decode(b"\x00garbage", codec)
    assert decode(event(), codec)[0].values["person"] == "m0042"


def test_ignored_fields_debug_unknown_fields_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="device_profiles")
    decode(event(firmwareNew=1, ace_brandNewField="x"))
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "firmwareNew" in warnings and "brandNewField" in warnings
    assert "pictureURL" not in warnings and "ipAddress" not in warnings


# -- encode --------------------------------------------------------------------------------


def test_encode_writes_the_vendor_document() -> None:
    reading = Reading(
        "checkin",
        {"person": "m7", "verified": False, "score": 0.55, "liveness": False, "terminal": MAC},
        time=T0,
    )
    out = hik().encode(reading, "ft1")
    assert out.topic == "hikvision/ft1/event" and out.retain is False
    doc = json.loads(out.payload)
    assert doc["eventType"] == "AccessControllerEvent"
    assert doc["dateTime"] == "2024-03-01T08:30:05+08:00"
    assert doc["macAddress"] == MAC
    ace = doc["AccessControllerEvent"]
    assert (ace["majorEventType"], ace["subEventType"], ace["employeeNoString"]) == (5, 76, "m7")
    assert (ace["similarity"], ace["liveness"]) == (0.55, False)
    assert decode(out.payload) == [Reading("checkin", reading.values, time=T0, source=MAC)]


def test_encode_heartbeat_round_trips() -> None:
    codec = hik()
    out = codec.encode(Reading("heartbeat", {"terminal": MAC}, time=T0), "ft1")
    assert codec.decode(out, "ft1") == [Reading("heartbeat", {"terminal": MAC}, source=MAC)]


@pytest.mark.parametrize(
    "reading",
    [
        Reading("checkin", {"person": "m1", "terminal": MAC}),  # no capture time
        Reading("checkin", {"person": "m1", "terminal": MAC, "mood": "ok"}, time=T0),
        Reading("checkin", {"verified": None, "terminal": MAC}, time=T0),
        Reading("press", {}, time=T0),
    ],
)
def test_encode_rejects_what_the_format_cannot_say(reading: Reading) -> None:
    with pytest.raises(EncodeError):
        hik().encode(reading, "ft1")


def test_time_helpers() -> None:
    cst = timezone(timedelta(hours=8))
    assert format_iso_time(T0, cst) == "2024-03-01T08:30:05+08:00"
    assert format_iso_time(T0 + 7, cst) == "2024-03-01T08:30:05.007+08:00"
    assert parse_iso_time(format_iso_time(T0 + 7, cst), "d") == T0 + 7
    assert get_path({"a": [{"b": 1}]}, ("a", "0", "b"), "d") == 1


# -- another vendor is a YAML file ---------------------------------------------------------

OTHER_VENDOR: dict[str, Any] = {
    "profile": "acme-face-x1",
    "kind": "face_terminal",
    "protocol": "mqtt-json",
    "codec": "face_terminal",
    "report_interval_s": 600,
    "transport": {"topic": "acme/{device}/rec"},
    "codec_options": {
        "time": {"path": "captureTime", "naive_offset": "+08:00"},
        "when": {"type": "recognition"},
        "ignore": ["data.imgBase64"],
    },
    "resources": [
        {"name": "person", "type": "str", "read": {"path": "data.personId"}},
        {
            "name": "score",
            "type": "float",
            "min": 0,
            "max": 1,
            "scale": 0.01,
            "read": {"path": "data.searchScore"},
        },
        {
            "name": "liveness",
            "type": "float",
            "min": 0,
            "max": 1,
            "scale": 0.01,
            "read": {"path": "data.livenessScore"},
        },
        {"name": "terminal", "type": "str", "read": {"path": "deviceKey"}},
    ],
}


def test_another_vendor_is_only_a_profile() -> None:
    codec = codec_for(parse_profile(OTHER_VENDOR, "acme.yaml"))
    assert isinstance(codec, FaceTerminalCodec)
    doc = {
        "type": "recognition",
        "deviceKey": "84E0F4201",
        "captureTime": "2024-03-01 08:30:05",
        "data": {"personId": "p-9", "searchScore": 87.5, "livenessScore": 99, "imgBase64": ""},
    }
    [r] = codec.decode(MqttMessage("acme/gate/rec", json.dumps(doc).encode()), "gate")
    assert r == Reading(
        "checkin",
        {"person": "p-9", "score": 0.875, "liveness": 0.99, "terminal": "84E0F4201"},
        time=T0,
        source="84E0F4201",
    )
    out = codec.encode(r, "gate")
    assert out.topic == "acme/gate/rec"
    assert codec.decode(out, "gate") == [r]


def profile_with(**opts: Any) -> dict[str, Any]:
    data = copy.deepcopy(OTHER_VENDOR)
    data["codec_options"].update(opts)
    return data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (profile_with(time=None), "codec_options.time"),
        (profile_with(time={"path": ""}), "time.path"),
        (profile_with(time={"path": "t", "naive_offset": "CST"}), "naive_offset"),
        (profile_with(when=["type"]), "when"),
        (profile_with(template="x"), "template"),
        (profile_with(ignore="data"), "ignore"),
        ({**OTHER_VENDOR, "transport": {"topic": "acme/rec"}}, "transport.topic"),
        (
            {**OTHER_VENDOR, "resources": [{"name": "person", "type": "str", "read": {}}]},
            "path",
        ),
        (
            {
                **OTHER_VENDOR,
                "resources": [{"name": "p", "type": "str", "read": {"path": "a", "lookup": {}}}],
            },
            "unknown key",
        ),
        (
            {
                **OTHER_VENDOR,
                "resources": [{"name": "p", "type": "bool", "read": {"path": "a", "map": [1]}}],
            },
            "map",
        ),
    ],
)
def test_profile_faults_name_the_key(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ProfileError, match=match) as err:
        codec_for(parse_profile(data, "acme.yaml"))
    assert "acme.yaml" in str(err.value)
