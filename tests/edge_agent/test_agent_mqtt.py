"""The agent end to end: Zigbee2MQTT simulators -> site broker -> agent -> central broker."""

from __future__ import annotations

import asyncio

import pytest

from device_profiles.profiles import ProfileRegistry
from tests.edge_agent.helpers import REPO, Collector, running_agent, write_config, z2m_door
from tests.harness.wait import async_wait_for

pytestmark = pytest.mark.integration

REGISTRY = ProfileRegistry.load()


def door(i: int, prefix: str) -> dict[str, object]:
    return {
        "id": f"door-{i}",
        "profile": "aqara-mccgq11lm",
        "resident": f"r-{i}",
        "mqtt": {"address": f"flat{i}_door", "base_topic": f"{prefix}/z2m"},
    }


async def logged(caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    """Wait (at most 15 s) until every text was logged: a fixed pause may be too short."""
    await async_wait_for(
        lambda: all(t in caplog.text for t in texts), timeout=15, message=f"logged {texts}"
    )


async def test_doors_flow_to_the_central_broker_in_seq_order(tmp_path, mosquitto, topic_prefix):
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        devices=[door(1, topic_prefix), door(2, topic_prefix)],
    )
    sims = [z2m_door(mosquitto, topic_prefix, f"door-{i}", f"flat{i}_door") for i in (1, 2)]
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
    sim = z2m_door(mosquitto, topic_prefix, "door-1", "flat1_door")
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


async def test_untrusted_clock_marks_events_and_never_goes_backwards(
    tmp_path, mosquitto, topic_prefix
):
    from edge_agent.clock import BUILD_FLOOR_MS

    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        devices=[door(1, topic_prefix)],
        clock={"trust": "never"},  # as if NTP never answered
    )
    sim = z2m_door(mosquitto, topic_prefix, "door-1", "flat1_door")
    async with Collector(mosquitto, root) as col, running_agent(cfg), sim:
        for _ in range(5):
            await sim.open_door()
            await sim.close_door()
        await col.wait_for(lambda c: sum(e.reading == "contact" for e in c.events) == 10)
        await col.wait_for(lambda c: bool(c.health), what="a heartbeat")
    events = sorted(col.first_arrivals(), key=lambda e: e.seq)
    assert all(not e.clock_ok for e in events)
    stamps = [e.received for e in events]
    assert stamps == sorted(stamps) and stamps[0] >= BUILD_FLOOR_MS
    assert col.health[-1]["clock_ok"] is False


async def test_lorawan_pendants_and_face_terminal(
    tmp_path, mosquitto, broker_factory, topic_prefix
):
    from simulators.face_terminal import FaceTerminalSimulator
    from simulators.pendant_lorawan import PendantLoRaWanSimulator

    site = broker_factory()  # ChirpStack and the terminal publish under their own roots
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=site,
        root=root,
        devices=[
            {
                "id": "pendant-7",
                "profile": "oem-lorawan-pendant",
                "resident": "r-7",
                "mqtt": {"address": "0A0B0C0D0E0F0001"},  # DevEUI, any case
            },
            {"id": "face-1", "profile": "hikvision-ds-k1t341"},
        ],
    )
    lora = PendantLoRaWanSimulator(
        REGISTRY.get("oem-lorawan-pendant"),
        "pendant-7",
        dev_eui="0a0b0c0d0e0f0001",
        host=site.host,
        port=site.port,
    )
    stranger = PendantLoRaWanSimulator(
        REGISTRY.get("oem-lorawan-pendant"),
        "pendant-x",
        dev_eui="0a0b0c0d0e0f0099",
        host=site.host,
        port=site.port,
    )
    face = FaceTerminalSimulator(
        REGISTRY.get("hikvision-ds-k1t341"), "face-1", host=site.host, port=site.port
    )
    async with Collector(mosquitto, root) as col, running_agent(cfg), lora, stranger, face:
        await lora.press()
        await stranger.press()
        await face.checkin("m-042")
        await col.wait_for(lambda c: any(e.reading == "press" for e in c.events), what="press")
        await col.wait_for(lambda c: any(e.reading == "checkin" for e in c.events), what="in")
        await col.wait_for(
            lambda c: (
                bool(c.health)
                and c.health[-1]["decode_errors"].get("mqtt:local", {}).get("unknown_device")
            ),
            what="the stranger counted",
        )
    presses = [e for e in col.events if e.reading == "press"]
    assert [e.device for e in presses] == ["pendant-7"]  # the stranger is not attributed
    assert presses[0].urgent and presses[0].resident == "r-7"
    checkin = next(e for e in col.events if e.reading == "checkin")
    assert checkin.device == "face-1" and checkin.resident == "m-042"
    assert checkin.values["person"] == "m-042"


async def test_a_broken_config_on_reload_is_refused(tmp_path, mosquitto, topic_prefix, caplog):
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        devices=[door(1, topic_prefix)],
    )
    sim = z2m_door(mosquitto, topic_prefix, "door-1", "flat1_door")
    async with Collector(mosquitto, root) as col, running_agent(cfg) as agent, sim:
        good = cfg.read_text()
        cfg.write_text(good.replace("profile: aqara-mccgq11lm", "profile: no-such-door"))
        agent.request_reload()
        await logged(caplog, "reload refused", "no-such-door")
        cfg.write_text(good.replace("gw-1", "gw-2"))  # the gateway id names the queue
        agent.request_reload()
        await logged(caplog, "can only change by a restart")
        # A config only the sources can fault (a custom MQTT profile naming no topic):
        # refused before the running sources are stopped (before, the agent exited).
        profiles = tmp_path / "profiles"
        profiles.mkdir()
        face = (REPO / "device_profiles" / "profiles" / "hikvision-ds-k1t341.yaml").read_text()
        face = face.replace("profile: hikvision-ds-k1t341", "profile: acme-face")
        face = face.replace("transport:\n  topic: hikvision/{device}/event\n", "")
        (profiles / "acme-face.yaml").write_text(face)
        write_config(
            tmp_path,
            central=mosquitto,
            site_broker=mosquitto,
            root=root,
            devices=[door(1, topic_prefix), {"id": "face-1", "profile": "acme-face"}],
            profiles={"dirs": [str(profiles)]},
        )
        agent.request_reload()
        await logged(caplog, "names no topic")
        assert agent.all_sources_up() and len(agent.sources) == 1
        await sim.open_door()  # still reading with the old config
        await col.wait_for(lambda c: any(e.reading == "contact" for e in c.events))
    assert all(e.gateway == "gw-1" for e in col.events)


async def test_untrusted_stamps_never_go_backwards_across_a_restart(
    tmp_path, mosquitto, topic_prefix
):
    # NTP unreachable across a restart: the second run continues from the last stamp
    # the first one issued, not from the older last trusted time.
    cfg = write_config(
        tmp_path, central=mosquitto, root=f"{topic_prefix}/carewatch/v1", clock={"trust": "never"}
    )
    async with running_agent(cfg) as agent:
        assert agent.clock is not None
        await asyncio.sleep(1.5)
        first = agent.clock.now()
        assert not first.ok
    async with running_agent(cfg) as agent:
        assert agent.clock is not None
        second = agent.clock.now()
    assert second.ms > first.ms
