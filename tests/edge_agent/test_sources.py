"""Each source on its real transport, and their independence when one of them fails.

A pendant receiver on a PTY (serial), a footfall counter on Modbus RTU over a PTY link,
and a door behind Zigbee2MQTT on a stoppable site broker, all in one agent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from device_profiles.events import Value
from device_profiles.profiles import ProfileRegistry, builtin_profile_dir
from simulators.footfall_modbus import FootfallModbusSimulator
from simulators.pendant_serial import PendantSerialSimulator
from simulators.zigbee import Zigbee2MqttSimulator
from tests.edge_agent.helpers import Collector, running_agent, write_config, z2m_door

pytestmark = pytest.mark.integration

REGISTRY = ProfileRegistry.load()
P1, P2 = "00A1B2C3", "00A1B2C4"


def readings(col: Collector, device: str, reading: str) -> list[dict[str, Value]]:
    return [e.values for e in col.events if e.device == device and e.reading == reading]


def footfall_in(col: Collector) -> int:
    total = 0
    for v in readings(col, "footfall-1", "counts"):
        n = v["in"]
        assert isinstance(n, int)
        total += n
    return total


async def test_sources_fail_and_recover_independently(
    tmp_path: Path, mosquitto, broker_factory, topic_prefix
):
    site = broker_factory()
    root = f"{topic_prefix}/carewatch/v1"
    rf = PendantSerialSimulator(REGISTRY.get("oem-rf433-button-pendant"), "rf-1", [P1, P2])
    ff = FootfallModbusSimulator(REGISTRY.get("beamcount-irc200"), "footfall-1")
    door = Zigbee2MqttSimulator(
        REGISTRY.get("aqara-mccgq11lm"),
        "door-1",
        friendly_name="hall",
        host=site.host,
        port=site.port,
    )
    await rf.start()
    await ff.start()
    t = ff.client_settings
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=site,
        root=root,
        devices=[
            {
                "id": "pendant-1",
                "profile": "oem-rf433-button-pendant",
                "resident": "r-1",
                "serial": {"port": rf.port, "address": P1.lower()},
            },
            {
                "id": "pendant-2",
                "profile": "oem-rf433-button-pendant",
                "resident": "r-2",
                "serial": {"port": rf.port, "address": P2},
            },
            {
                "id": "footfall-1",
                "profile": "beamcount-irc200",
                "modbus": {
                    "port": ff.client_path,
                    "unit_id": t.unit_id,
                    "parity": "N",
                    "baudrate": t.baudrate,
                    "poll_interval_s": 0.2,
                    "timeout_s": 0.3,
                    "retries": 0,
                },
            },
            {"id": "door-1", "profile": "aqara-mccgq11lm", "mqtt": {"address": "hall"}},
        ],
    )
    try:
        async with Collector(mosquitto, root) as col, running_agent(cfg) as agent, door:
            # 1. everything flows
            await rf.press(pendant=P1)
            await rf.heartbeat(battery=80, activity=2, pendant=P2)
            await ff.enter(3)
            await door.open_door()
            await col.wait_for(lambda c: bool(readings(c, "pendant-1", "press")), what="press")
            await col.wait_for(lambda c: bool(readings(c, "pendant-2", "heartbeat")), what="hb")
            await col.wait_for(lambda c: footfall_in(c) == 3, what="3 people in")
            await col.wait_for(lambda c: len(readings(c, "door-1", "contact")) == 1, what="door")
            press = next(e for e in col.events if e.reading == "press")
            assert press.urgent and press.resident == "r-1" and press.kind == "pendant"

            # 2. the receiver spews garbage: counted, the pendants keep being heard
            for _ in range(3):
                await rf.inject("garbage")
            await rf.inject("bad_checksum")
            await rf.release(pendant=P1)
            await rf.press(pendant=P1)
            await door.close_door()
            await col.wait_for(lambda c: len(readings(c, "pendant-1", "press")) == 2, what="2nd")
            await col.wait_for(lambda c: len(readings(c, "door-1", "contact")) == 2, what="door")

            # 3. the footfall counter stops answering: the others keep flowing
            await ff.inject("silence")
            await asyncio.sleep(1.0)
            await door.open_door()
            await rf.heartbeat(battery=79, pendant=P2)
            await col.wait_for(lambda c: len(readings(c, "door-1", "contact")) == 3, what="door")
            await col.wait_for(lambda c: len(readings(c, "pendant-2", "heartbeat")) == 2, what="hb")
            await col.wait_for(
                lambda c: (
                    bool(c.health)
                    and "timeout" in c.health[-1]["decode_errors"].get("footfall-1", {})
                ),
                what="modbus timeouts in the heartbeat",
            )
            ff.clear_faults()
            await ff.enter(2)
            await col.wait_for(lambda c: footfall_in(c) == 5, what="5 people in after silence")

            # 4. the site broker restarts: serial and Modbus keep flowing, MQTT comes back
            await asyncio.to_thread(site.stop)
            await rf.heartbeat(battery=78, pendant=P2)
            await ff.enter(1)
            await col.wait_for(lambda c: len(readings(c, "pendant-2", "heartbeat")) == 3, what="hb")
            await col.wait_for(lambda c: footfall_in(c) == 6, what="6 in while MQTT is down")
            await asyncio.to_thread(site.start)
            await col.wait_for(
                lambda c: c.sources_up() and agent.all_sources_up(), what="mqtt source back"
            )
            await door.close_door()
            await col.wait_for(lambda c: len(readings(c, "door-1", "contact")) >= 4, what="door")

            # 5. the receiver is unplugged and plugged in again
            await rf.inject("disconnect")
            await asyncio.sleep(0.5)
            await rf.reconnect()
            await col.wait_for(lambda c: agent.all_sources_up(), what="serial back")
            await rf.release(pendant=P1)
            await rf.press(pendant=P1)
            await col.wait_for(lambda c: len(readings(c, "pendant-1", "press")) == 3, what="3rd")
            await col.wait_for(
                lambda c: (
                    bool(c.health) and c.health[-1]["sources"]["serial:" + rf.port]["restarts"] >= 1
                ),
                what="serial restart reported",
            )
            errors = col.health[-1]["decode_errors"]
            assert errors["footfall-1"]["timeout"] >= 1
            rf_errors = errors.get("serial:" + rf.port, {})
            assert rf_errors.get("checksum", 0) >= 1 and sum(rf_errors.values()) >= 2, errors
            assert agent.queue is not None
            bad = await agent.queue.call(agent.queue.store.quarantined)
            assert {q.fault for q in bad} >= {"timeout"}
    finally:
        await rf.stop()
        await ff.stop()
    # every event arrived, in seq order within each class (alarms may overtake)
    first = col.first_arrivals()
    assert sorted(e.seq for e in first) == list(range(1, len(first) + 1))
    for urgent in (True, False):
        seqs = [e.seq for e in first if e.urgent is urgent]
        assert seqs == sorted(seqs)


async def test_device_down_and_up_again(tmp_path: Path, mosquitto, topic_prefix):
    # a door model that should report every second
    prof_dir = tmp_path / "profiles"
    prof_dir.mkdir()
    text = (builtin_profile_dir() / "aqara-mccgq11lm.yaml").read_text()
    text = text.replace("profile: aqara-mccgq11lm", "profile: test-fast-door")
    text = text.replace("report_interval_s: 3600", "report_interval_s: 1")
    (prof_dir / "test-fast-door.yaml").write_text(text)
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        profiles={"dirs": [str(prof_dir)]},
        health={"down_factor": 1, "down_grace": "500ms"},
        devices=[
            {
                "id": "door-9",
                "profile": "test-fast-door",
                "mqtt": {"address": "d9", "base_topic": f"{topic_prefix}/z2m"},
            }
        ],
    )
    sim = z2m_door(mosquitto, topic_prefix, "door-9", "d9")
    # The door is down 1.5 s after any reading: a slow machine may see it go down more
    # often than the steps below make it (before the first reading, between two steps).
    # So each step looks for its transition after the previous step's, never at a count.

    def health(c: Collector) -> list[dict[str, Value]]:
        return readings(c, "door-9", "device_health")

    def after(c: Collector, start: int, up: bool, reason: str) -> int | None:
        """Index of the first transition after ``start`` to ``up`` with ``reason``."""
        for i, h in enumerate(health(c)[start + 1 :], start + 1):
            if h["up"] is up and reason in str(h["reason"]):
                return i
        return None

    async with Collector(mosquitto, root) as col, running_agent(cfg), sim:
        await sim.open_door()
        # silent after a reading: down, saying for how long
        await col.wait_for(lambda c: after(c, -1, False, "no reading for") is not None)
        down = after(col, -1, False, "no reading for")
        assert down is not None
        await col.wait_for(
            lambda c: bool(c.health) and c.health[-1]["devices"]["door-9"]["state"] == "down",
            what="down in the heartbeat",
        )
        # the next reading: up again
        await sim.close_door()
        await col.wait_for(lambda c: after(c, down, True, "") is not None, what="up again")
        up = after(col, down, True, "")
        assert up is not None
        # Zigbee2MQTT says the device left: down, saying why
        await sim.go_offline()
        await col.wait_for(lambda c: after(c, up, False, "offline") is not None, what="offline")
        await col.wait_for(
            lambda c: (
                bool(c.health)
                and c.health[-1]["devices"]["door-9"]["state"] == "down"
                and "offline" in c.health[-1]["devices"]["door-9"]["reason"]
            ),
            what="offline in the heartbeat",
        )


async def test_codec_state_survives_a_restart(tmp_path: Path, mosquitto, topic_prefix):
    """Footfall baselines are stored with the events: a restart neither re-counts nor
    loses the people who came in while the agent was down."""
    root = f"{topic_prefix}/carewatch/v1"
    ff = FootfallModbusSimulator(REGISTRY.get("beamcount-irc200"), "footfall-1")
    await ff.start()
    t = ff.client_settings
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        root=root,
        devices=[
            {
                "id": "footfall-1",
                "profile": "beamcount-irc200",
                "modbus": {
                    "port": ff.client_path,
                    "unit_id": t.unit_id,
                    "parity": "N",
                    "baudrate": t.baudrate,
                    "poll_interval_s": 0.2,
                    "timeout_s": 0.3,
                },
            }
        ],
    )
    try:
        async with Collector(mosquitto, root) as col:
            async with running_agent(cfg):
                await ff.enter(3)
                await col.wait_for(lambda c: footfall_in(c) == 3, what="3 in")
            await ff.enter(2)  # while the agent is down
            async with running_agent(cfg):
                await ff.enter(1)
                await col.wait_for(lambda c: footfall_in(c) == 6, what="6 in after restart")
                await asyncio.sleep(0.5)  # a few more polls: nothing counted twice
    finally:
        await ff.stop()
    assert footfall_in(col) == 6
    assert not any(v.get("reset") for v in readings(col, "footfall-1", "counts")[1:])


async def test_fall_windows_are_reassembled_and_sent_first(tmp_path: Path, mosquitto, topic_prefix):
    from simulators.traces import synthetic_fall

    root = f"{topic_prefix}/carewatch/v1"
    rf = PendantSerialSimulator(REGISTRY.get("oem-rf433-button-pendant"), "rf-1", [P1])
    await rf.start()
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        root=root,
        devices=[
            {
                "id": "pendant-1",
                "profile": "oem-rf433-button-pendant",
                "resident": "r-1",
                "serial": {"port": rf.port},
            }
        ],
    )
    try:
        async with Collector(mosquitto, root) as col, running_agent(cfg):
            await rf.heartbeat(battery=90, activity=3)
            windows = await rf.impact(synthetic_fall(), rate_hz=50.0)
            # a complete window, and one missing fragments: flushed when the pendant
            # stays quiet for the profile's reassembly timeout
            lossy = await rf.impact(synthetic_fall(seed=9), rate_hz=50.0, drop_fragments=[3])
            assert windows and lossy
            await col.wait_for(
                lambda c: sum(e.reading == "impact" for e in c.events) >= 2,
                what="two impact windows",
                limit_s=40,
            )
    finally:
        await rf.stop()
    impacts = [e for e in col.events if e.reading == "impact"]
    assert all(e.urgent and e.resident == "r-1" for e in impacts)
    full = impacts[0].values
    assert full["rate_hz"] == 50 and isinstance(full["x"], list) and len(full["x"]) > 100
    assert isinstance(full["trigger_index"], int)
