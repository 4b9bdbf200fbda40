"""End to end: a simulated pendant on a PTY -> edge agent -> Mosquitto -> stream -> webhook
and alert topic."""

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
from simulators.pendant_serial import PendantSerialSimulator
from stream.clock import ManualClock
from stream.config import parse_config
from stream.runtime import StreamService
from tests.edge_agent.helpers import running_agent, write_config
from tests.harness.wait import async_wait_for
from tests.stream.receiver import Receiver

pytestmark = pytest.mark.integration


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
        {
            "mqtt": {"url": mosquitto.url, "client_id": f"cw-{topic_prefix}", "root": root},
            "state": {"path": str(tmp_path / "stream.sqlite"), "synchronous": "normal"},
            "api": {"enabled": False},
            "detectors": {"alarm": {"fall": False}},
            "notifiers": {"desk-hook": {"type": "webhook", "url": f"{receiver.url}/desk"}},
            "recipients": {"desk": {"notifiers": ["desk-hook"]}},
            "policies": {"default": {"tiers": [{"recipients": ["desk"]}]}},
            "sites": {"site-1": {"timezone": "Asia/Shanghai", "quiet_hours": False}},
        }
    )
    service = StreamService(config, clock=ManualClock(int(time.time() * 1000)))
    profile = ProfileRegistry.load().get("oem-rf433-button-pendant")
    alerts_seen: list[dict[str, Any]] = []
    try:
        async with (
            PendantSerialSimulator(profile, "rf-1", pendants=["00A1B2C3"]) as sim,
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
                    }
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
                    await sim.power_on()
                    await sim.press()
                    await async_wait_for(lambda: len(receiver.received) >= 1, timeout=30)
                    await async_wait_for(lambda: len(alerts_seen) >= 1)
                    [stored] = service.store.alerts(limit=10)
                    assert stored.count == 1  # one press, one alert
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await collector
        [page] = receiver.received
        body = page.json
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
