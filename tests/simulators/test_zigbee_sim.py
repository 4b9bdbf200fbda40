"""Zigbee2MQTT simulator: pure parts, and end to end through the real Mosquitto."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from device_profiles.codecs import MqttMessage, Reading
from device_profiles.codecs.zigbee2mqtt import Zigbee2MqttCodec
from device_profiles.errors import DecodeError, ProfileError
from device_profiles.profiles import ProfileRegistry
from simulators.zigbee import Zigbee2MqttSimulator
from tests.simulators.mqtt_helpers import collect, decode_all, subscriber

REGISTRY = ProfileRegistry.load()
AQARA_DOOR = REGISTRY.get("aqara-mccgq11lm")
SONOFF_DOOR = REGISTRY.get("sonoff-snzb-04")
AQARA_MOTION = REGISTRY.get("aqara-rtcgq11lm")


def contact(closed: bool, **more: Any) -> dict[str, Any]:
    return {"contact": closed, "open": not closed, **more}


# -- pure: what the simulator would publish ------------------------------------------------


def test_state_message_is_the_whole_state_as_zigbee2mqtt_sends_it() -> None:
    sim = Zigbee2MqttSimulator(AQARA_DOOR, "door-1", friendly_name="flat1_door")
    msg = sim.state_message()
    assert msg.topic == "zigbee2mqtt/flat1_door"
    assert msg.payload == (
        b'{"contact":true,"battery":100,"linkquality":120,'
        b'"voltage":3000,"device_temperature":25,"power_outage_count":0}'
    )
    [r] = sim.z2m.decode(msg, "door-1")
    assert r == Reading("contact", contact(True, battery=100, linkquality=120), source="flat1_door")


@pytest.mark.parametrize("legacy", [False, True])
def test_availability_message_is_retained(legacy: bool) -> None:
    sim = Zigbee2MqttSimulator(AQARA_DOOR, "door-1", legacy_availability=legacy)
    sim.online = False
    msg = sim.availability_message()
    assert msg.retain and msg.topic == "zigbee2mqtt/door-1/availability"
    assert msg.payload == (b"offline" if legacy else b'{"state":"offline"}')
    assert sim.z2m.decode(msg, "door-1")[0].values == {"online": False}


@pytest.mark.parametrize("fault", ["garbage", "truncated", "wrong_type"])
@pytest.mark.parametrize("profile", [AQARA_DOOR, SONOFF_DOOR, AQARA_MOTION], ids=lambda p: p.name)
def test_fault_messages_are_decode_errors(fault: str, profile: Any) -> None:
    sim = Zigbee2MqttSimulator(profile, "dev-1")
    msg = sim.fault_message(fault)
    assert msg.topic == "zigbee2mqtt/dev-1"
    with pytest.raises(DecodeError) as err:
        sim.z2m.decode(msg, "dev-1")
    assert err.value.fault == {"garbage": "json", "truncated": "json", "wrong_type": "type"}[fault]


def test_simulator_refuses_other_profiles_and_unknown_faults_and_actions() -> None:
    with pytest.raises(ProfileError):
        Zigbee2MqttSimulator(REGISTRY.get("hikvision-ds-k1t341"), "x")
    sim = Zigbee2MqttSimulator(AQARA_DOOR, "door-1")
    with pytest.raises(ValueError, match="bad_checksum"):
        asyncio.run(sim.inject("bad_checksum"))
    with pytest.raises(ValueError, match="no action"):
        asyncio.run(sim.play([(0, "explode")]))
    with pytest.raises(ValueError, match="tamper"):
        asyncio.run(sim.tamper())  # the Aqara contact has no tamper switch
    with pytest.raises(ValueError, match="occupancy"):
        asyncio.run(sim.motion())


# -- end to end through Mosquitto ----------------------------------------------------------


@pytest.mark.integration
async def test_door_scenario_through_the_broker(mosquitto: Any, topic_prefix: str) -> None:
    base = f"{topic_prefix}/zigbee2mqtt"
    codec = Zigbee2MqttCodec(SONOFF_DOOR, base_topic=base)
    async with subscriber(mosquitto.host, mosquitto.port, f"{base}/#") as sub:
        sim = Zigbee2MqttSimulator(
            SONOFF_DOOR,
            "door-7",
            friendly_name="room7/door",
            base_topic=base,
            host=mosquitto.host,
            port=mosquitto.port,
        )
        async with sim:
            await sim.open_door()
            await sim.close_door()
            await sim.tamper()
            await sim.set_battery(15)
            await sim.go_offline()
        got = decode_all(codec, await collect(sub, 6), "door-7")
    src = "room7/door"
    base_values = {"battery": 100, "battery_low": False, "tamper": False, "linkquality": 120}
    assert got == [
        Reading("availability", {"online": True}, source=src),
        Reading("contact", contact(False, **base_values), source=src),
        Reading("contact", contact(True, **base_values), source=src),
        Reading("contact", contact(True, **{**base_values, "tamper": True}), source=src),
        Reading(
            "contact",
            contact(True, battery=15, battery_low=True, tamper=True, linkquality=120),
            source=src,
        ),
        Reading("availability", {"online": False}, source=src),
    ]
    assert sim.sent == 6 and len(sim.history) == 6


@pytest.mark.integration
async def test_motion_sensor_through_the_broker(mosquitto: Any, topic_prefix: str) -> None:
    base = f"{topic_prefix}/zigbee2mqtt"
    codec = Zigbee2MqttCodec(AQARA_MOTION, base_topic=base)
    async with subscriber(mosquitto.host, mosquitto.port, f"{base}/bedroom_pir") as sub:
        async with Zigbee2MqttSimulator(
            AQARA_MOTION,
            "pir-1",
            friendly_name="bedroom_pir",
            base_topic=base,
            host=mosquitto.host,
            port=mosquitto.port,
        ) as sim:
            await sim.play([(0, "motion"), (0.05, "clear_motion")], time_scale=1.0)
        got = decode_all(codec, await collect(sub, 2), "pir-1")
    assert [r.values["occupancy"] for r in got if isinstance(r, Reading)] == [True, False]


@pytest.mark.integration
async def test_availability_is_retained_for_late_subscribers(
    mosquitto: Any, topic_prefix: str
) -> None:
    base = f"{topic_prefix}/zigbee2mqtt"
    async with Zigbee2MqttSimulator(
        AQARA_DOOR,
        "door-1",
        base_topic=base,
        legacy_availability=True,
        host=mosquitto.host,
        port=mosquitto.port,
    ) as sim:
        await sim.go_offline()
    # The simulator is gone; a gateway that starts now still learns the last state.
    async with subscriber(mosquitto.host, mosquitto.port, f"{base}/+/availability") as sub:
        [msg] = await collect(sub, 1)
    assert msg.retain is True
    assert msg.payload == b"offline"
    codec = Zigbee2MqttCodec(AQARA_DOOR, base_topic=base)
    assert codec.decode(msg, "door-1") == [
        Reading("availability", {"online": False}, source="door-1")
    ]


@pytest.mark.integration
async def test_fault_injection_through_the_broker(mosquitto: Any, topic_prefix: str) -> None:
    """Garbage, truncation, wrong types, duplicates, reordering, silence and a dropped
    connection: faults decode as typed errors and good messages still decode after them."""
    base = f"{topic_prefix}/zigbee2mqtt"
    codec = Zigbee2MqttCodec(AQARA_DOOR, base_topic=base)
    async with subscriber(mosquitto.host, mosquitto.port, f"{base}/door") as sub:
        async with Zigbee2MqttSimulator(
            AQARA_DOOR,
            "door-1",
            friendly_name="door",
            base_topic=base,
            host=mosquitto.host,
            port=mosquitto.port,
        ) as sim:
            await sim.inject("garbage")
            await sim.open_door()  # 1: open
            await sim.inject("truncated")
            await sim.inject("wrong_type")
            await sim.close_door()  # 2: closed
            await sim.inject("duplicate")  # 3: closed again
            await sim.inject("out_of_order")
            await sim.open_door()  # held back ...
            await sim.close_door()  # ... so this one arrives first
            await sim.inject("silence")
            await sim.open_door()  # swallowed
            await sim.resume()
            await sim.inject("disconnect")
            assert sim.reconnects == 1
            await sim.inject("battery_drain")  # after the reconnect: battery 80, still open
        got = decode_all(codec, await collect(sub, 9), "door-1")
    assert sim.dropped == 1
    readings = [r for r in got if isinstance(r, Reading)]
    faults = [r for r in got if isinstance(r, str)]
    assert faults == ["fault:json", "fault:json", "fault:type"]
    assert got[:3] == ["fault:json", readings[0], "fault:json"]
    opens = [r.values["open"] for r in readings]
    # open, closed, closed (dup), closed (late), open (held), open (the door opened during
    # the silence: that message was lost, the next full state carries it)
    assert opens == [True, False, False, False, True, True]
    assert readings[-1].values["battery"] == 80


@pytest.mark.integration
async def test_publisher_survives_a_broker_restart(broker_factory: Any, topic_prefix: str) -> None:
    broker = broker_factory()
    base = f"{topic_prefix}/zigbee2mqtt"
    sim = Zigbee2MqttSimulator(
        AQARA_DOOR,
        "door-1",
        base_topic=base,
        host=broker.host,
        port=broker.port,
        reconnect_timeout_s=30,
    )
    async with sim:
        await sim.open_door()
        broker.stop()
        broker.start()
        # The publish finds the old connection gone, reconnects and sends.
        await sim.close_door()
        assert sim.reconnects >= 1
        async with subscriber(broker.host, broker.port, f"{base}/door-1") as sub:
            await sim.report()
            [msg] = await collect(sub, 1)
    codec = Zigbee2MqttCodec(AQARA_DOOR, base_topic=base)
    [r] = codec.decode(msg, "door-1")
    assert r.values["contact"] is True


def test_history_records_only_what_reached_the_broker() -> None:
    sim = Zigbee2MqttSimulator(AQARA_DOOR, "door-1")
    assert sim.history == [] and sim.sent == 0
    assert isinstance(sim.state_message(), MqttMessage)
