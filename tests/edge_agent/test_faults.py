"""The faults the agent must survive, against real Mosquitto brokers and simulators.

Messages are numbered through the door simulator's state (battery * 256 + linkquality),
so a lost message shows as a missing number, whatever duplicates arrive.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from device_profiles.events import Event
from edge_agent.queue import Draft
from tests.edge_agent.helpers import (
    AgentProcess,
    Collector,
    door_agent_config,
    door_config,
    number,
    numbers,
    produce,
    running_agent,
    write_config,
    z2m_door,
)

pytestmark = pytest.mark.integration


def assert_in_seq_order(col: Collector) -> None:
    first = col.first_arrivals()
    seqs = [e.seq for e in first]
    assert seqs == sorted(seqs), "first arrivals out of seq order"
    assert seqs == list(range(1, len(seqs) + 1)), "a seq is missing"


async def test_central_outage_loses_nothing_and_keeps_seq_order(
    tmp_path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
    )
    async with (
        Collector(central, root) as col,
        running_agent(cfg) as agent,
        z2m_door(mosquitto, topic_prefix) as sim,
    ):
        for n in range(40):
            await produce(sim, n)
        await col.wait_for(lambda c: len(numbers(c)) == 40, what="the first 40")
        await asyncio.to_thread(central.stop)
        for n in range(40, 160):  # produced while the central broker is down
            await produce(sim, n)
            await asyncio.sleep(0.005)
        assert agent.queue is not None
        await agent.queue.flush()
        assert agent.queue.store.depth >= 100  # waiting on disk
        await asyncio.to_thread(central.start)
        for n in range(160, 200):
            await produce(sim, n)
        await col.wait_for(lambda c: len(numbers(c)) == 200, what="all 200", limit_s=60)
        assert agent.uplink is not None and agent.uplink.stats.connects >= 2
    assert numbers(col) == set(range(200))
    assert_in_seq_order(col)


async def test_queue_cap_keeps_alarms_drops_oldest_telemetry_and_reports(
    tmp_path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
        # "contact" counts as telemetry here so the cap has telemetry to drop
        queue={"max_bytes": 16000, "low_priority_readings": ["contact"]},
    )
    # The collector's persistent session queues what arrives while it reconnects.
    col = Collector(central, root)
    await col.__aenter__()
    await asyncio.to_thread(central.stop)  # the uplink is down while the queue fills
    async with (
        running_agent(cfg) as agent,
        z2m_door(mosquitto, topic_prefix) as sim,
    ):
        assert agent.queue is not None and agent.clock is not None

        async def press(n: int) -> None:
            # Urgent events straight into the queue, as a pendant press arrives.
            stamp = agent.clock.now()  # type: ignore[union-attr]
            draft = Draft(
                device="door-1",
                kind="pendant",
                reading="press",
                time=stamp.ms,
                received=stamp.ms,
                values={"button": "sos"},
                urgent=True,
            )
            await agent.queue.put([draft] * n)  # type: ignore[union-attr]

        await press(5)
        for n in range(120):
            await produce(sim, n)
        # Wait (bounded) until the messages reached the queue and it had to drop some: a
        # loaded machine may take longer than any fixed pause.
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            await agent.queue.flush()
            stats = await agent.queue.stats()
            if stats.counters.get("dropped_full_telemetry", 0) > 0:
                break
            assert asyncio.get_running_loop().time() < deadline, "the full queue dropped nothing"
            await asyncio.sleep(0.05)
        assert stats.bytes <= 16000
        await press(3)  # make room by dropping the oldest telemetry, never an alarm
        stats = await agent.queue.stats()
        assert stats.urgent == 8
        # (urgent events over the cap are kept too: see test_queue.py)
        await asyncio.to_thread(central.start)
        try:
            await col.wait_for(
                lambda c: sum(e.reading == "press" for e in c.events) == 8, what="8 presses"
            )
            await col.wait_for(lambda c: 119 in numbers(c), what="the newest telemetry")
            await col.wait_for(
                lambda c: bool(c.health and c.health[-1]["queue"]["depth"] == 0),
                what="an empty queue in the heartbeat",
            )
        finally:
            await col.__aexit__(None, None, None)
    got = sorted(numbers(col))
    # oldest dropped first: what survived is a contiguous run ending with the newest
    assert got == list(range(got[0], 120))
    assert got[0] > 0
    drops = col.health[-1]["drops"]
    assert drops["dropped_full_telemetry"] == got[0]


async def test_sigkill_mid_stream_loses_nothing_and_resends_with_same_seq(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
        log_level="INFO",
    )
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    async with Collector(central, root) as col, z2m_door(mosquitto, topic_prefix) as sim:
        agent.start()
        try:
            await col.wait_for(lambda c: c.sources_up(), what="agent subscribed", limit_s=30)
            await produce(sim, 0)
            await col.wait_for(lambda c: 0 in numbers(c), what="the first message")
            # keep producing while the agent is killed and restarted
            for n in range(1, 150):
                await produce(sim, n)
                await asyncio.sleep(0.004)
                if n == 80:
                    await asyncio.to_thread(agent.kill)
                if n == 110:
                    agent.start()
            try:
                await col.wait_for(lambda c: len(numbers(c)) == 150, what="all 150", limit_s=60)
            except AssertionError as exc:
                missing = sorted(set(range(150)) - numbers(col))
                raise AssertionError(f"{exc}; missing {missing}\n{agent.log()[-4000:]}") from None
        finally:
            code = await asyncio.to_thread(agent.terminate)
    assert code == 0, agent.log()[-3000:]
    assert numbers(col) == set(range(150)), agent.log()[-3000:]
    # duplicates (sent before the kill, PUBACK not stored) carry the same seq and content
    by_seq: dict[int, Event] = {}
    for e in col.events:
        assert by_seq.setdefault(e.seq, e) == e
    # and no site message became two events: a redelivery of a stored one is skipped
    seqs_of: dict[int, set[int]] = {}
    for e in col.events:
        if (k := number(e)) is not None:
            seqs_of.setdefault(k, set()).add(e.seq)
    assert {k: s for k, s in seqs_of.items() if len(s) > 1} == {}
    assert_in_seq_order(col)


async def test_sighup_reload_neither_loses_nor_resends(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central = broker_factory()
    root = f"{topic_prefix}/carewatch/v1"
    second = {
        "id": "door-2",
        "profile": "aqara-mccgq11lm",
        "mqtt": {"address": "porch", "base_topic": f"{topic_prefix}/z2m"},
    }
    cfg = write_config(
        tmp_path,
        central=central,
        site_broker=mosquitto,
        root=root,
        devices=[door_config(topic_prefix)],
        log_level="INFO",
    )
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    porch = z2m_door(mosquitto, topic_prefix, "door-2", "porch")
    async with Collector(central, root) as col, z2m_door(mosquitto, topic_prefix) as sim:
        agent.start()
        try:
            await col.wait_for(lambda c: c.sources_up(), what="agent subscribed", limit_s=30)
            for n in range(30):
                await produce(sim, n)
            # add a device and reload while events are flowing and queued
            text = cfg.read_text()
            import yaml

            doc = yaml.safe_load(text)
            doc["devices"].append(second)
            cfg.write_text(yaml.safe_dump(doc))
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGHUP)
            for n in range(30, 60):
                await produce(sim, n)
            await col.wait_for(lambda c: len(numbers(c)) == 60, what="all 60")
            await col.wait_for(
                lambda c: bool(c.health) and "door-2" in c.health[-1]["devices"],
                what="the reloaded config in the heartbeat",
            )
            await col.wait_for(lambda c: c.sources_up(), what="sources up after reload")
            async with porch:
                await porch.open_door()
                await col.wait_for(
                    lambda c: any(
                        e.device == "door-2" and e.reading == "contact" for e in c.events
                    ),
                    what="the new device's event",
                )
        finally:
            code = await asyncio.to_thread(agent.terminate)
    assert code == 0, agent.log()[-3000:]
    assert "reloaded" in agent.log()
    assert numbers(col) == set(range(60))
    # nothing was sent twice: the reload did not touch the queue, and the site
    # messages stored before the reload were acknowledged before it
    assert len(col.events) == len(col.seqs)
    seen: dict[int, list[int]] = {}
    for e in col.events:
        if (k := number(e)) is not None:
            seen.setdefault(k, []).append(e.seq)
    twice = {k: seqs for k, seqs in seen.items() if len(seqs) > 1}
    assert not twice, f"{twice}\n{agent.log()[-3000:]}"
    assert_in_seq_order(col)
    assert col.status[-1] == "offline"


async def test_reload_with_new_uplink_settings_resends_nothing(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
    )
    async with (
        Collector(central, root) as col,
        running_agent(cfg) as agent,
        z2m_door(mosquitto, topic_prefix) as sim,
    ):
        first = agent.uplink
        for n in range(100):
            await produce(sim, n)
            if n == 50:
                import yaml

                doc = yaml.safe_load(cfg.read_text())
                doc["broker"]["keepalive"] = 20  # the uplink reconnects with it
                doc["queue"]["batch_size"] = 7
                cfg.write_text(yaml.safe_dump(doc))
                agent.request_reload()
        await col.wait_for(lambda c: len(numbers(c)) == 100, what="all 100")
        assert agent.uplink is not first  # a new uplink with the new settings
        assert agent.config.queue.batch_size == 7
    assert numbers(col) == set(range(100))
    assert len(col.events) == len(col.seqs)  # nothing was sent twice
    assert_in_seq_order(col)
