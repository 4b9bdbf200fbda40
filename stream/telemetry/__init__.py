"""Telemetry to InfluxDB: line protocol encoding and an HTTP writer for 1.x, 2.x and 3.x."""

from stream.telemetry.errors import LineProtocolError, TelemetryError
from stream.telemetry.influx import (
    InfluxTarget,
    InfluxWriter,
    LineBatcher,
    build_write_request,
    influxql_query,
    ping,
    query_rows,
)
from stream.telemetry.line_protocol import (
    Point,
    SkipCounts,
    alert_to_point,
    encode_line,
    event_to_point,
    events_to_lines,
    events_to_points,
    points_to_lines,
)

__all__ = [
    "InfluxTarget",
    "InfluxWriter",
    "LineBatcher",
    "LineProtocolError",
    "Point",
    "SkipCounts",
    "TelemetryError",
    "alert_to_point",
    "build_write_request",
    "encode_line",
    "event_to_point",
    "events_to_lines",
    "events_to_points",
    "influxql_query",
    "ping",
    "points_to_lines",
    "query_rows",
]
