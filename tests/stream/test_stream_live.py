"""The stream processor against the real Mosquitto: press -> alert topic + webhook,
escalation on a manual (fast) clock, acknowledgement over MQTT, API actions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from device_profiles.events import Event, encode_batch
from device_profiles.topics import ack_topic, events_topic, status_topic
from stream.clock import ManualClock
from stream.config import parse_config
from stream.runtime import StreamService
from tests.harness.wait import async_wait_for
from tests.stream.helpers import desk_boss_config
from tests.stream.receiver import Receiver

pytestmark = pytest.mark.integration

MIN = 60_000


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def live_config(broker: Any, prefix: str, tmp_path: Path, hook: str, **extra: Any) -> Any:
    doc = desk_boss_config(
        mqtt={
            "url": broker.url,
            "client_id": f"cw-{prefix}",
            "root": f"{prefix}/carewatch/v1",
            "reconnect_max": "1s",
        },
        state_path=tmp_path / "stream.sqlite",
        hook=hook,
        reminder={"critical": "2m"},
        api={"enabled": True, "port": 0},
        delivery={"backoff_initial": "100ms", "backoff_max": "1s"},
    )
    doc.update(extra)
    return parse_config(doc)


def press(seq: int, now_ms: int, resident: str = "res-1") -> Event:
    return Event(
        gateway="gw-1",
        seq=seq,
        time=now_ms,
        received=now_ms,
        site="site-a",
        device=f"pendant-{resident}",
        kind="pendant",
        reading="press",
        values={"button": "sos"},
        resident=resident,
        urgent=True,
    )


@contextlib.asynccontextmanager
async def running(service: StreamService) -> AsyncIterator[StreamService]:
    task = asyncio.ensure_future(service.run())
    try:
        await async_wait_for(service.link.connected.is_set, message="processor connected")
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 20)


def events_of(receiver: Receiver, path: str) -> list[str]:
    return [r.json["event"] for r in receiver.received if r.path == path]


def events_for(receiver: Receiver, path: str, alert_id: str) -> list[str]:
    return [
        r.json["event"]
        for r in receiver.received
        if r.path == path and r.json["alert"]["id"] == alert_id
    ]


async def test_press_to_alert_topic_and_webhook_then_escalation_and_ack(
    mosquitto: Any, topic_prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = live_config(mosquitto, topic_prefix, tmp_path, receiver.url)
    root = config.mqtt.root
    clock = ManualClock(int(time.time() * 1000))
    service = StreamService(config, clock=clock, detectors=None)
    seen: list[tuple[str, bytes, bool]] = []

    async with (
        running(service),
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"app-{topic_prefix}") as app,
    ):
        await app.subscribe(f"{root}/site-a/alerts/+", qos=1)

        async def collect() -> None:
            async for message in app.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                seen.append((message.topic.value, payload, message.retain))

        collector = asyncio.ensure_future(collect())
        try:
            gateway_topic = events_topic("site-a", "gw-1", root)
            await app.publish(status_topic("site-a", "gw-1", root), b"online", qos=1, retain=True)
            await app.publish(gateway_topic, encode_batch([press(1, clock.now_ms())]), qos=1)

            await async_wait_for(lambda: events_of(receiver, "/desk") == ["raised"])
            await async_wait_for(
                lambda: any(json.loads(p)["event"] == "raised" for _, p, _ in seen)
            )
            [alert] = service.store.open_alerts()
            topic, payload, _ = seen[0]
            assert topic == f"{root}/site-a/alerts/{alert.id}"
            assert json.loads(payload)["alert"]["severity"] == "critical"
            webhook = receiver.received[0]
            assert webhook.json["alert"]["reason"] == "SOS button pressed on the pendant"
            assert webhook.headers["Idempotency-Key"] == f"{alert.id}.1.desk.desk-hook"

            # A redelivered copy of the press (the gateway missed its PUBACK): no effect.
            await app.publish(gateway_topic, encode_batch([press(1, clock.now_ms())]), qos=1)

            # Unacknowledged: a reminder after 2 min, tier 2 after 3 min.
            clock.advance(2 * MIN)
            await async_wait_for(lambda: events_of(receiver, "/desk") == ["raised", "reminder"])
            clock.advance(1 * MIN)
            await async_wait_for(lambda: events_of(receiver, "/boss") == ["escalated"])

            # A responder acknowledges from the app: both are told, the reminders stop.
            await app.publish(
                ack_topic("site-a", alert.id, root), b'{"by": "nurse-li", "note": "on my way"}',
                qos=1,
            )  # fmt: skip
            await async_wait_for(lambda: events_of(receiver, "/boss")[-1:] == ["acknowledged"])
            await async_wait_for(lambda: events_of(receiver, "/desk")[-1:] == ["acknowledged"])
            acked = service.store.get_alert(alert.id)
            assert acked is not None and acked.acked_by == "nurse-li"
            # No reminder for an acknowledged alert, even long past its reminder times.
            # Another resident's alert, raised now, proves the timer loop ran that late:
            # its own reminder and escalation fall due in the same stretch.
            await app.publish(
                gateway_topic, encode_batch([press(2, clock.now_ms(), "res-2")]), qos=1
            )
            await async_wait_for(lambda: len(service.store.open_alerts()) == 2)
            [other] = [a for a in service.store.open_alerts() if a.id != alert.id]
            clock.advance(25 * MIN)
            await async_wait_for(lambda: events_for(receiver, "/boss", other.id) == ["escalated"])
            await async_wait_for(lambda: service.store.outbox_counts().get("pending", 0) == 0)
            assert events_for(receiver, "/desk", alert.id) == ["raised", "reminder", "acknowledged"]
            assert events_for(receiver, "/boss", alert.id) == ["escalated", "acknowledged"]
            # the redelivered copy of the first press raised nothing
            assert sorted(a.subject for a in service.store.alerts(limit=100)) == ["res-1", "res-2"]

            # The console resolves it through the API.
            assert service.api is not None
            base = f"http://127.0.0.1:{service.api.port}"
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/alerts/{alert.id}/resolve", json={}) as bad:
                    assert bad.status == 400
                    assert (await bad.json())["field"] == "by"
                async with http.post(
                    f"{base}/alerts/{alert.id}/resolve", json={"by": "nurse-li"}
                ) as ok:
                    assert ok.status == 200
                    assert (await ok.json())["alert"]["state"] == "resolved"
                async with http.get(f"{base}/metrics") as metrics:
                    text = await metrics.text()
                    assert 'carewatch_stream_events_total{outcome="duplicate"} 1.0' in text
            # The retained alert state is cleared once resolved.
            await async_wait_for(lambda: any(t.endswith(alert.id) and p == b"" for t, p, _ in seen))
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await collector


async def test_events_sent_while_processor_down_are_processed_on_restart(
    mosquitto: Any, topic_prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    config = live_config(mosquitto, topic_prefix, tmp_path, receiver.url)
    root = config.mqtt.root
    clock = ManualClock(int(time.time() * 1000))
    # First run registers the persistent session (subscriptions kept by the broker).
    async with running(StreamService(config, clock=clock)):
        pass
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as gateway:
        batch = [press(1, clock.now_ms(), "res-1"), press(2, clock.now_ms(), "res-2")]
        await gateway.publish(events_topic("site-a", "gw-1", root), encode_batch(batch), qos=1)
    # The broker queued the batch for the offline session: it arrives after the restart.
    service = StreamService(config, clock=clock)
    async with running(service):
        await async_wait_for(lambda: len(events_of(receiver, "/desk")) == 2)
    assert sorted(r.json["alert"]["subject"] for r in receiver.received) == ["res-1", "res-2"]
