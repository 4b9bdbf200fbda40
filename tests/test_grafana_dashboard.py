"""The shipped Grafana dashboard's InfluxQL queries run on a real InfluxDB.

Each panel query is sent with Grafana's macros filled in, against a database holding
points written by carewatch's own line-protocol encoder, and must return data: a
renamed measurement, tag or field in the telemetry writer breaks this test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from device_profiles.events import Event
from stream.telemetry.line_protocol import alert_to_point, encode_line, events_to_lines

DASHBOARD = Path(__file__).parents[1] / "deploy/grafana/provisioning/dashboards/json/carewatch.json"


def _event(
    seq: int,
    device: str,
    kind: str,
    reading: str,
    values: dict[str, Any],
    resident: str | None,
    t: int,
) -> Event:
    return Event(
        gateway="gw-1",
        seq=seq,
        time=t,
        received=t,
        site="s1",
        device=device,
        kind=kind,
        reading=reading,
        values=values,
        resident=resident,
    )


def _fill(query: str) -> str:
    return (
        query.replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "1m")
        .replace("$site", ".*")
    )


@pytest.mark.integration
def test_every_panel_query_returns_data(influxdb: Any, influx_database: str) -> None:
    now = int(time.time() * 1000) - 60_000
    events = [
        _event(1, "counter-1", "footfall", "counts", {"in": 4, "out": 1}, None, now),
        _event(
            2,
            "door-1",
            "door",
            "contact",
            {"open": True, "contact": False, "battery": 80},
            "r1",
            now,
        ),
        _event(3, "face-1", "face_terminal", "checkin", {"person": "r2", "score": 0.9}, "r2", now),
        _event(4, "motion-1", "motion", "occupancy", {"occupancy": True, "battery": 60}, "r1", now),
    ]
    lines = events_to_lines(events)
    point = alert_to_point(
        alert_id="a1",
        site="s1",
        kind="emergency",
        severity="critical",
        state="raised",
        time_ms=now,
        resident="r1",
        device="pendant-1",
        extra={"transition": "raised", "tier": 1},  # as stream.processor writes them
    )
    lines.append(point.to_line())
    lines.append(
        encode_line(
            "gateway_health",
            {"site": "s1", "gateway": "gw-1"},
            {"queue_depth": 3, "queue_oldest_age_s": 1.5, "devices_down": 0},
            now,
        )
    )
    influxdb.write(lines, influx_database)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        query = _fill(panel["targets"][0]["query"])
        result = influxdb.query(query, influx_database)
        statement = result["results"][0]
        assert "error" not in statement, (panel["title"], statement)
        assert statement.get("series"), f"panel {panel['title']!r} found no data: {query}"
