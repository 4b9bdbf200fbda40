"""Face-terminal simulator: pure parts, and end to end through the real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from device_profiles.codecs import Reading
from device_profiles.codecs.face_terminal import FaceTerminalCodec
from device_profiles.errors import DecodeError, ProfileError
from device_profiles.profiles import ProfileRegistry
from simulators.face_terminal import FaceTerminalSimulator
from tests.simulators.mqtt_helpers import collect, decode_all, subscriber

REGISTRY = ProfileRegistry.load()
HIK = REGISTRY.get("hikvision-ds-k1t341")
CST = timezone(timedelta(hours=8))
MAC = "44:19:b6:00:00:07"
AT = datetime(2024, 3, 1, 8, 30, 5, tzinfo=CST)
AT_MS = int(AT.timestamp() * 1000)


def sim_for(**kwargs: Any) -> FaceTerminalSimulator:
    return FaceTerminalSimulator(HIK, "gate-1", terminal_id=MAC, **kwargs)


@pytest.mark.parametrize(
    ("args", "values"),
    [
        # The terminal's own verdict follows its threshold and the liveness check...
        (("m1",), {"person": "m1", "score": 0.95, "liveness": True, "verified": True}),
        (
            ("m2", {"score": 0.41}),
            {"person": "m2", "score": 0.41, "liveness": True, "verified": False},
        ),
        (
            ("m3", {"liveness": False}),
            {"person": "m3", "score": 0.95, "liveness": False, "verified": False},
        ),
        ((None, {"score": 0.2}), {"score": 0.2, "liveness": True, "verified": False}),
        # ... unless the script says otherwise.
        (
            ("m4", {"score": None, "liveness": None, "verified": True}),
            {"person": "m4", "verified": True},
        ),
    ],
)
def test_checkin_reading_defaults(args: tuple[Any, ...], values: dict[str, Any]) -> None:
    person, kwargs = (args[0], args[1] if len(args) > 1 else {})
    r = sim_for().checkin_reading(person, at=AT, **kwargs)
    assert r == Reading("checkin", {**values, "terminal": MAC}, time=AT_MS, source=MAC)


def test_what_is_published_decodes_to_the_same_checkin() -> None:
    sim = sim_for()
    reading = sim.checkin_reading("m0042", score=0.88, at=AT)
    msg = sim.face.encode(reading, "gate-1")
    assert msg.topic == "hikvision/gate-1/event"
    doc = json.loads(msg.payload)
    assert doc["dateTime"] == "2024-03-01T08:30:05+08:00"
    assert doc["AccessControllerEvent"]["employeeNoString"] == "m0042"
    assert sim.face.decode(msg, "gate-1") == [reading]


def test_naive_capture_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        sim_for().checkin_reading("m1", at=datetime(2024, 3, 1, 8, 30))


@pytest.mark.parametrize(
    ("fault", "code"),
    [("garbage", "json"), ("truncated", "json"), ("wrong_type", "type"), ("bad_time", "time")],
)
def test_fault_messages_are_decode_errors(fault: str, code: str) -> None:
    sim = sim_for()
    msg = sim.fault_message(fault)
    assert msg.topic == "hikvision/gate-1/event"
    with pytest.raises(DecodeError) as err:
        sim.face.decode(msg, "gate-1")
    assert err.value.fault == code


def test_simulator_refuses_other_profiles_and_faults() -> None:
    with pytest.raises(ProfileError):
        FaceTerminalSimulator(REGISTRY.get("aqara-mccgq11lm"), "x")
    with pytest.raises(ValueError, match="battery_drain"):
        asyncio.run(sim_for().inject("battery_drain"))


@pytest.mark.integration
async def test_checkins_and_faults_through_the_broker(mosquitto: Any, topic_prefix: str) -> None:
    topic = f"{topic_prefix}/hikvision/{{device}}/event"
    codec = FaceTerminalCodec(HIK, topic=topic)
    later = AT + timedelta(minutes=5)
    async with subscriber(mosquitto.host, mosquitto.port, f"{topic_prefix}/hikvision/#") as sub:
        async with FaceTerminalSimulator(
            HIK,
            "gate-1",
            terminal_id=MAC,
            topic=topic,
            host=mosquitto.host,
            port=mosquitto.port,
        ) as sim:
            await sim.checkin("m0042", score=0.93, at=AT)  # 1
            await sim.inject("garbage")  # 2
            await sim.inject("truncated")  # 3
            await sim.inject("wrong_type")  # 4
            await sim.inject("bad_time")  # 5
            await sim.checkin("m0077", score=0.41, liveness=False, at=later)  # 6
            await sim.inject("duplicate")  # 7
            await sim.inject("out_of_order")
            await sim.checkin("m1", at=AT + timedelta(minutes=6))  # 9 (held)
            await sim.checkin("m2", at=AT + timedelta(minutes=7))  # 8
            await sim.inject("disconnect")
            await sim.heartbeat(at=later)  # 10
        got = decode_all(codec, await collect(sub, 10), "gate-1")
    assert got[1:5] == ["fault:json", "fault:json", "fault:type", "fault:time"]
    first = Reading(
        "checkin",
        {"person": "m0042", "verified": True, "score": 0.93, "liveness": True, "terminal": MAC},
        time=AT_MS,
        source=MAC,
    )
    low = Reading(
        "checkin",
        {"person": "m0077", "verified": False, "score": 0.41, "liveness": False, "terminal": MAC},
        time=int(later.timestamp() * 1000),
        source=MAC,
    )
    assert got[0] == first
    assert got[5] == low and got[6] == low  # the duplicate is byte-identical
    people = [r.values.get("person") for r in got[7:9] if isinstance(r, Reading)]
    assert people == ["m2", "m1"]  # delivered out of order; capture times tell the truth
    assert got[9] == Reading("heartbeat", {"terminal": MAC}, source=MAC)
    assert sim.reconnects == 1
