"""The agent end to end: Zigbee2MQTT simulators -> site broker -> agent -> central broker."""

from __future__ import annotations

import asyncio

import pytest

from device_profiles.profiles import ProfileRegistry
from simulators.zigbee import Zigbee2MqttSimulator
from tests.edge_agent.helpers import Collector, running_agent, write_config

pytestmark = pytest.mark.integration

REGISTRY = ProfileRegistry.load()


def door(i: int, prefix: str) -> dict[str, object]:
    return {
        "id": f"door-{i}",
        "profile": "aqara-mccgq11lm",
        "resident": f"r-{i}",
        "mqtt": {"address": f"flat{i}_door", "base_topic": f"{prefix}/z2m"},
    }


async def test_doors_flow_to_the_central_broker_in_seq_order(tmp_path, mosquitto, topic_prefix):
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        devices=[door(1, topic_prefix), door(2, topic_prefix)],
    )
    sims = [
        Zigbee2MqttSimulator(
            REGISTRY.get("aqara-mccgq11lm"),
            f"door-{i}",
            friendly_name=f"flat{i}_door",
            base_topic=f"{topic_prefix}/z2m",
            host=mosquitto.host,
            port=mosquitto.port,
        )
        for i in (1, 2)
    ]
    async with Collector(mosquitto, root) as col, running_agent(cfg) as agent:
        for sim in sims:
            await sim.start()
        for _ in range(5):
            for sim in sims:
                await sim.open_door()
                await sim.close_door()
        await col.wait_for(
            lambda c: sum(e.reading == "contact" for e in c.events) >= 20, what="20 contacts"
        )
        await col.wait_for(lambda c: "online" in c.status and bool(c.health), what="status+health")
        for sim in sims:
            await sim.stop()
        assert agent.ingest is not None
    events = col.first_arrivals()
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert sorted(col.seqs) == list(range(1, len(col.seqs) + 1))
    contacts = [e for e in events if e.reading == "contact"]
    assert {e.device for e in contacts} == {"door-1", "door-2"}
    assert all(e.resident == e.device.replace("door", "r") for e in contacts)
    assert all(e.site == "site-1" and e.gateway == "gw-1" and e.kind == "door" for e in contacts)
    assert all(e.clock_ok for e in contacts)
    d1 = [e.values["contact"] for e in contacts if e.device == "door-1"]
    assert d1 == [False, True] * 5  # open (contact false), close, in order
    beat = col.health[-1]
    assert beat["devices"]["door-1"]["state"] == "up"
    assert beat["queue"]["next_seq"] >= 21
    assert col.status[-1] == "offline"  # clean shutdown says goodbye


async def test_garbage_is_counted_quarantined_and_the_rest_flows(tmp_path, mosquitto, topic_prefix):
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        devices=[door(1, topic_prefix)],
    )
    sim = Zigbee2MqttSimulator(
        REGISTRY.get("aqara-mccgq11lm"),
        "door-1",
        friendly_name="flat1_door",
        base_topic=f"{topic_prefix}/z2m",
        host=mosquitto.host,
        port=mosquitto.port,
    )
    async with Collector(mosquitto, root) as col, running_agent(cfg) as agent, sim:
        await sim.inject("garbage")
        await sim.inject("wrong_type")
        await sim.open_door()
        await col.wait_for(
            lambda c: any(e.reading == "contact" for e in c.events), what="the contact"
        )
        await col.wait_for(
            lambda c: bool(c.health and c.health[-1]["decode_errors"].get("door-1")),
            what="decode errors in the heartbeat",
        )
        assert agent.queue is not None
        bad = await agent.queue.call(agent.queue.store.quarantined)
    errors = col.health[-1]["decode_errors"]["door-1"]
    assert sum(errors.values()) == 2
    assert {q.device for q in bad} == {"door-1"} and len(bad) == 2
    await asyncio.sleep(0)
