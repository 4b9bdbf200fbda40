"""Telemetry through the running processor to the real InfluxDB, with an outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from device_profiles.events import Event, encode_batch
from device_profiles.topics import events_topic
from stream.clock import ManualClock
from stream.config import parse_config
from stream.runtime import StreamService
from tests.harness.wait import async_wait_for

pytestmark = pytest.mark.integration


def heartbeat(seq: int, t: int) -> Event:
    return Event(
        gateway="gw-1",
        seq=seq,
        time=t,
        received=t,
        site="site-a",
        device="pendant-1",
        kind="pendant",
        reading="heartbeat",
        values={"battery": 90 - seq % 10, "activity": seq % 3},
        resident="res-1",
    )


def sos(seq: int, t: int) -> Event:
    return Event(
        gateway="gw-1", seq=seq, time=t, received=t, site="site-a", device="pendant-1",
        kind="pendant", reading="press", values={"button": "sos"}, resident="res-1",
        urgent=True,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(service: StreamService) -> AsyncIterator[StreamService]:
    task = asyncio.ensure_future(service.run())
    try:
        await async_wait_for(service.link.connected.is_set, message="processor connected")
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 20)


def spool_inserts(service: StreamService) -> int:
    """Telemetry batches ever spooled (the spool table's AUTOINCREMENT counter)."""
    row = service.store.db.execute(
        "SELECT seq FROM sqlite_sequence WHERE name='telemetry'"
    ).fetchone()
    return 0 if row is None else int(row[0])


def count_points(influx: Any, db: str) -> int:
    try:
        rows = influx.rows("SELECT COUNT(battery) AS n FROM pendant", db)
    except Exception:
        return -1
    return int(rows[0]["n"]) if rows else 0


@pytest.mark.timeout(180)
async def test_influx_outage_loses_nothing_and_duplicates_add_nothing(
    mosquitto: Any, influxdb_factory: Any, topic_prefix: str, tmp_path: Path
) -> None:
    influx = influxdb_factory()
    influx.create_database("cw")
    config = parse_config(
        {
            "mqtt": {
                "url": mosquitto.url,
                "client_id": f"cw-{topic_prefix}",
                "root": f"{topic_prefix}/carewatch/v1",
            },
            "state": {"path": str(tmp_path / "s.sqlite"), "synchronous": "normal"},
            "api": {"enabled": False},
            "telemetry": {
                "url": influx.url,
                "database": "cw",
                "flush_interval": "100ms",
                "retry_max": "500ms",
                "timeout": "2s",
                "batch_lines": 50,
            },
            "detectors": {"alarm": {"fall": False}},
            "sites": {"site-a": {"timezone": "UTC", "quiet_hours": False}},
        }
    )
    start = int(time.time() * 1000) - 3_600_000
    clock = ManualClock(start + 3_600_000)
    service = StreamService(config, clock=clock)
    topic = events_topic("site-a", "gw-1", config.mqtt.root)
    sent: list[bytes] = []
    async with running(service), aiomqtt.Client(mosquitto.host, mosquitto.port) as gw:

        async def publish(first: int, last: int) -> None:
            batch = encode_batch([heartbeat(s, start + s * 1000) for s in range(first, last + 1)])
            sent.append(batch)
            await gw.publish(topic, batch, qos=1)

        await publish(1, 40)
        await async_wait_for(lambda: count_points(influx, "cw") == 40, timeout=30)

        influx.stop()
        for first in range(41, 201, 40):
            await publish(first, first + 39)
        # Alerting does not wait for InfluxDB: an SOS during the outage alerts at once.
        await gw.publish(topic, encode_batch([sos(201, start + 201_000)]), qos=1)
        await async_wait_for(lambda: len(service.store.open_alerts()) == 1)
        await async_wait_for(lambda: service.store.spool_backlog()[0] >= 160)
        sink = service.sink
        assert sink is not None
        await async_wait_for(lambda: sink.healthy is False, message="sink saw the outage")

        influx.start()
        await async_wait_for(lambda: count_points(influx, "cw") == 200, timeout=60)
        await async_wait_for(lambda: service.store.spool_backlog()[0] == 0, timeout=30)

        # The gateway redelivers everything: no second point anywhere. InfluxDB would
        # silently overwrite an identical point, so counting points there proves
        # nothing: nothing may be spooled or written at all.
        spooled = spool_inserts(service)
        written = service.metrics.value("carewatch_stream_influx_lines_written_total")
        for batch in sent:
            await gw.publish(topic, batch, qos=1)
        await async_wait_for(
            lambda: service.metrics.value(
                "carewatch_stream_events_total", outcome="duplicate"
            ) == 200
        )  # fmt: skip
        # A marker event after the copies: once it is in InfluxDB, whatever the copies
        # could have spooled would have been written before it (the spool is in order).
        await gw.publish(topic, encode_batch([heartbeat(202, start + 202_000)]), qos=1)
        await async_wait_for(lambda: count_points(influx, "cw") == 201, timeout=30)
        assert spool_inserts(service) == spooled + 1
        # InfluxDB holds the point before the sink has read the reply and counted it.
        await async_wait_for(
            lambda: (
                service.metrics.value("carewatch_stream_influx_lines_written_total") >= written + 1
            ),
            message="the marker counted as written",
        )
        lines = service.metrics.value("carewatch_stream_influx_lines_written_total")
        assert lines == written + 1
        # The alert transition reached InfluxDB too.
        query = "SELECT COUNT(alert_id) AS n FROM alerts WHERE \"kind\"='emergency'"
        rows = influx.rows(query, "cw")
        assert rows and int(rows[0]["n"]) == 1
