"""The telemetry sink against the real InfluxDB: what is kept, retried, dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.clock import ManualClock
from stream.config import TelemetryConfig
from stream.metrics import Metrics
from stream.state import StateStore
from stream.telemetry.errors import TelemetryError
from stream.telemetry.influx import InfluxTarget, InfluxWriter
from stream.telemetry.sink import TelemetrySink

pytestmark = pytest.mark.integration

T = 1_767_225_600_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "s.sqlite", synchronous="normal")
    yield s
    s.close()


def sink_for(store: StateStore, url: str, db: str, **cfg: Any) -> TelemetrySink:
    writer = InfluxWriter(InfluxTarget(url=url, database=db), timeout=5)
    config = TelemetryConfig(enabled=True, url=url, database=db, **cfg)
    return TelemetrySink(store, writer, ManualClock(T), config, Metrics())


def spool(store: StateStore, lines: list[str]) -> None:
    with store.transaction():
        store.spool_add(lines, T)


async def test_missing_database_keeps_lines_until_it_exists(
    store: StateStore, influxdb: Any
) -> None:
    db = "t_missing_later"
    sink = sink_for(store, influxdb.url, db)
    spool(store, [f"door,site=a open=true {T + i}" for i in range(5)])
    with pytest.raises(TelemetryError) as err:
        await sink.flush_once()
    assert err.value.status == 404
    assert store.spool_backlog()[0] == 5  # an operator fixes this: nothing dropped
    influxdb.create_database(db)
    assert await sink.flush_once() == 5
    assert store.spool_backlog()[0] == 0
    assert influxdb.rows("SELECT COUNT(open) AS n FROM door", db)[0]["n"] == 5
    await sink.close()


async def test_rejected_points_are_dropped_and_counted(
    store: StateStore, influxdb: Any, influx_database: str
) -> None:
    sink = sink_for(store, influxdb.url, influx_database)
    spool(store, [f"pendant,site=a battery=80i {T}"])
    assert await sink.flush_once() == 1
    # a field type conflict (string where InfluxDB holds integers) next to good points
    spool(store, [f'pendant,site=a battery="low" {T + 1}', f"pendant,site=a battery=70i {T + 2}"])
    assert await sink.flush_once() == 2
    assert store.spool_backlog()[0] == 0
    dropped = sink.metrics.value("carewatch_stream_influx_lines_dropped_total", reason="rejected")
    assert dropped == 1  # InfluxDB's partial write reports the one point it refused
    rows = influxdb.rows("SELECT battery FROM pendant", influx_database)
    assert [r["battery"] for r in rows] == [80, 70]  # InfluxDB kept the good point
    await sink.close()


async def test_unreachable_influx_keeps_everything(store: StateStore) -> None:
    sink = sink_for(store, "http://127.0.0.1:9", "x", timeout_ms=1000)
    spool(store, ["door,site=a open=true 1"])
    with pytest.raises(TelemetryError) as err:
        await sink.flush_once()
    assert err.value.retryable
    assert store.spool_backlog()[0] == 1
    assert sink.healthy is False
    await sink.close()


def test_spool_is_bounded(store: StateStore) -> None:
    sink = sink_for(store, "http://127.0.0.1:9", "x", spool_max_lines=1000)
    for i in range(30):
        spool(store, [f"door,site=a open=true {T + i * 100 + j}" for j in range(100)])
    sink._trim()
    lines, _ = store.spool_backlog()
    assert lines == 1000
    full = sink.metrics.value("carewatch_stream_influx_lines_dropped_total", reason="spool_full")
    assert full == 2000
    # the newest are kept
    _, kept = store.spool_take(10_000)
    assert kept[-1].endswith(str(T + 29 * 100 + 99))
