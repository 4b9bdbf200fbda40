"""End to end: a simulated pendant on a PTY -> edge agent -> Mosquitto -> stream -> webhook
and alert topic; unacknowledged it is reminded and escalated to tier 2 (a manual clock
runs the escalation times fast), acknowledged from a responder app the reminders stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from device_profiles.profiles import ProfileRegistry
from device_profiles.topics import ack_topic
from simulators.pendant_serial import PendantSerialSimulator
from stream.clock import ManualClock
from stream.config import parse_config
from stream.runtime import StreamService
from tests.edge_agent.helpers import running_agent, write_config
from tests.harness.wait import async_wait_for
from tests.stream.helpers import desk_boss_config
from tests.stream.receiver import Receiver

pytestmark = pytest.mark.integration
MINUTE = 60_000


@contextlib.asynccontextmanager
async def running(service: StreamService) -> AsyncIterator[StreamService]:
    task = asyncio.ensure_future(service.run())
    try:
        await async_wait_for(service.link.connected.is_set, message="processor connected")
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 20)


@pytest.mark.timeout(120)
async def test_pendant_press_through_the_agent_becomes_an_alert(
    mosquitto: Any, topic_prefix: str, tmp_path: Path
) -> None:
    root = f"{topic_prefix}/carewatch/v1"
    receiver = await Receiver().start()
    config = parse_config(
        desk_boss_config(
            mqtt={"url": mosquitto.url, "client_id": f"cw-{topic_prefix}", "root": root},
            state_path=tmp_path / "stream.sqlite",
            hook=receiver.url,
            secret=None,
            reminder={"critical": "2m"},
            site="site-1",
        )
    )
    clock = ManualClock(int(time.time() * 1000))
    service = StreamService(config, clock=clock)
    profile = ProfileRegistry.load().get("oem-rf433-button-pendant")
    alerts_seen: list[dict[str, Any]] = []

    def pages(path: str, alert_id: str | None = None) -> list[str]:
        return [
            r.json["event"]
            for r in receiver.received
            if r.path == path and alert_id in (None, r.json["alert"]["id"])
        ]

    try:
        async with (
            PendantSerialSimulator(profile, "rf-1", pendants=["00A1B2C3", "00A1B2C4"]) as sim,
            running(service),
            aiomqtt.Client(mosquitto.host, mosquitto.port) as app,
        ):
            agent_cfg = write_config(
                tmp_path,
                central=mosquitto,
                root=root,
                devices=[
                    {
                        "id": "pendant-101",
                        "profile": "oem-rf433-button-pendant",
                        "resident": "r-101",
                        "serial": {"port": str(sim.port), "address": "00A1B2C3"},
                    },
                    {
                        "id": "pendant-102",
                        "profile": "oem-rf433-button-pendant",
                        "resident": "r-102",
                        "serial": {"port": str(sim.port), "address": "00A1B2C4"},
                    },
                ],
            )
            await app.subscribe(f"{root}/site-1/alerts/+", qos=1)

            async def collect() -> None:
                async for message in app.messages:
                    if isinstance(message.payload, bytes) and message.payload:
                        alerts_seen.append(json.loads(message.payload))

            collector = asyncio.ensure_future(collect())
            try:
                async with running_agent(agent_cfg):
                    await sim.power_on(pendant="00A1B2C3")
                    await sim.press(pendant="00A1B2C3")
                    await async_wait_for(lambda: len(receiver.received) >= 1, timeout=30)
                    await async_wait_for(lambda: len(alerts_seen) >= 1)
                    [stored] = service.store.alerts(limit=10)
                    assert stored.count == 1  # one press, one alert

                    # Nobody acknowledges: a reminder after 2 min, tier 2 after 3 min.
                    clock.advance(2 * MINUTE)
                    await async_wait_for(lambda: pages("/desk") == ["raised", "reminder"])
                    clock.advance(1 * MINUTE)
                    await async_wait_for(lambda: pages("/boss") == ["escalated"])

                    # A responder acknowledges from the app: both tiers are told.
                    await app.publish(
                        ack_topic("site-1", stored.id, root), b'{"by": "nurse-li"}', qos=1
                    )
                    await async_wait_for(lambda: pages("/desk")[-1:] == ["acknowledged"])
                    await async_wait_for(lambda: pages("/boss")[-1:] == ["acknowledged"])
                    # The reminders stop. Another resident's press, raised now, is
                    # escalated in the same stretch of time: proof that the timers ran.
                    await sim.press(pendant="00A1B2C4")
                    await async_wait_for(lambda: len(service.store.open_alerts()) == 2)
                    clock.advance(30 * MINUTE)
                    await async_wait_for(lambda: pages("/boss").count("escalated") == 2)
                    await async_wait_for(
                        lambda: service.store.outbox_counts().get("pending", 0) == 0
                    )
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await collector
        first = receiver.received[0].json["alert"]["id"]
        assert pages("/desk", first) == ["raised", "reminder", "acknowledged"]
        assert pages("/boss", first) == ["escalated", "acknowledged"]
        body = receiver.received[0].json
        assert body["event"] == "raised"
        alert = body["alert"]
        assert (alert["site"], alert["resident"], alert["device"]) == (
            "site-1",
            "r-101",
            "pendant-101",
        )
        assert alert["severity"] == "critical"
        assert alerts_seen[0]["alert"]["id"] == alert["id"]
    finally:
        await receiver.stop()
