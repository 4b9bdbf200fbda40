"""InfluxWriter against the real InfluxDB 1.x of the test harness, and request building.

InfluxDB 1.6 (what Debian ships and the harness runs) has no ``/api/v2/write``, so the
v2/v3 path is tested by building its requests purely; its HTTP handling is the same code
as v1's, exercised against the real server. Answers a real InfluxDB cannot be made to
give on demand (503, 429, a hang) come from a small local aiohttp server.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.telemetry import (
    InfluxTarget,
    InfluxWriter,
    LineBatcher,
    TelemetryError,
    alert_to_point,
    build_write_request,
    events_to_lines,
    influxql_query,
    ping,
    query_rows,
)
from stream.telemetry.influx import chunk_lines, classify_status
from tests.harness import InfluxDBService, free_port

T = 1_767_225_600_000


def pendant_event(seq: int, site: str = "site-a", **values: object) -> Event:
    return Event(
        gateway="gw-1",
        seq=seq,
        time=T + seq * 1000,
        received=T + seq * 1000 + 20,
        site=site,
        device="pendant-7",
        kind="pendant",
        reading="heartbeat",
        resident="res-3",
        values=dict(values or {"battery": 80 - seq, "activity": seq}),  # type: ignore[arg-type]
    )


# --- against the real InfluxDB -------------------------------------------------------


@pytest.mark.integration
async def test_events_written_and_read_back(influxdb: InfluxDBService, influx_database: str):
    target = InfluxTarget(url=influxdb.url, database=influx_database)
    events = [pendant_event(1), pendant_event(2), pendant_event(3, site="site-b")]
    async with InfluxWriter(target, batch_lines=2) as writer:
        await writer.write(events_to_lines(events))
        assert writer.requests == 2  # 3 lines in batches of 2
        assert writer.lines_written == 3
    answer = influxql_query(
        target,
        "SELECT battery, activity, event_seq, device, resident, gateway, reading "
        "FROM pendant WHERE site = 'site-a'",
    )
    assert query_rows(answer) == [
        {
            "_measurement": "pendant",
            "time": T + 1000,
            "battery": 79,
            "activity": 1,
            "event_seq": 1,
            "device": "pendant-7",
            "resident": "res-3",
            "gateway": "gw-1",
            "reading": "heartbeat",
        },
        {
            "_measurement": "pendant",
            "time": T + 2000,
            "battery": 78,
            "activity": 2,
            "event_seq": 2,
            "device": "pendant-7",
            "resident": "res-3",
            "gateway": "gw-1",
            "reading": "heartbeat",
        },
    ]
    tags = query_rows(influxql_query(target, 'SHOW TAG VALUES FROM pendant WITH KEY = "site"'))
    assert [row["value"] for row in tags] == ["site-a", "site-b"]


@pytest.mark.integration
async def test_rewrite_is_idempotent_and_gzip_works(
    influxdb: InfluxDBService, influx_database: str
) -> None:
    target = InfluxTarget(url=influxdb.url, database=influx_database)
    lines = events_to_lines([pendant_event(1), pendant_event(2)])
    alert = alert_to_point(
        alert_id="a-9", site="site-a", kind="sos", severity="critical", state="open", time_ms=T
    )
    async with InfluxWriter(target, compress=True) as writer:
        await writer.write([*lines, alert.to_line()])
        await writer.write(lines)  # a re-sent batch (after a crash) adds no point
    count = query_rows(influxql_query(target, "SELECT count(battery) FROM pendant"))
    assert count[0]["count"] == 2
    alerts = query_rows(influxql_query(target, "SELECT alert_id, state FROM alerts"))
    assert [(r["alert_id"], r["state"], r["time"]) for r in alerts] == [("a-9", "open", T)]


@pytest.mark.integration
async def test_retention_policy_is_used(influxdb: InfluxDBService, influx_database: str):
    influxdb.query(
        f'CREATE RETENTION POLICY "short" ON "{influx_database}" DURATION 1h REPLICATION 1'
    )
    target = InfluxTarget(url=influxdb.url, database=influx_database, retention_policy="short")
    async with InfluxWriter(target) as writer:
        # "Now": a point older than the policy's 1 h would be refused.
        await writer.write([f"probe f=1i {int(time.time() * 1000)}"])
    in_rp = influxql_query(target, 'SELECT count(f) FROM "short"."probe"')
    in_default = influxql_query(target, 'SELECT count(f) FROM "autogen"."probe"')
    assert query_rows(in_rp)[0]["count"] == 1
    assert query_rows(in_default) == []


@pytest.mark.integration
@pytest.mark.parametrize("v1_auth", ["basic", "params"])
async def test_v1_credentials(influxdb_factory, v1_auth: str) -> None:
    server: InfluxDBService = influxdb_factory(auth=True, username="writer", password="pa ss&")
    server.create_database("secure")
    good = InfluxTarget(
        url=server.url,
        database="secure",
        username="writer",
        password="pa ss&",
        v1_auth=v1_auth,  # type: ignore[arg-type]
    )
    async with InfluxWriter(good) as writer:
        await writer.write(events_to_lines([pendant_event(1)]))
    assert query_rows(influxql_query(good, "SELECT count(battery) FROM pendant"))[0]["count"] == 1

    bad = InfluxTarget(
        url=server.url,
        database="secure",
        username="writer",
        password="wrong",
        v1_auth=v1_auth,  # type: ignore[arg-type]
    )
    async with InfluxWriter(bad) as writer:
        with pytest.raises(TelemetryError) as info:
            await writer.write(events_to_lines([pendant_event(2)]))
    assert info.value.status == 401
    assert not info.value.retryable
    assert "authorization failed" in info.value.body
    assert "wrong" not in str(info.value)  # the password is never shown

    anonymous = InfluxTarget(url=server.url, database="secure")
    with pytest.raises(TelemetryError) as info:
        influxql_query(anonymous, "SHOW MEASUREMENTS")
    assert info.value.status == 401


@pytest.mark.integration
async def test_missing_database_is_a_permanent_error(influxdb: InfluxDBService) -> None:
    target = InfluxTarget(url=influxdb.url, database="no_such_db_carewatch")
    async with InfluxWriter(target) as writer:
        with pytest.raises(TelemetryError) as info:
            await writer.write(events_to_lines([pendant_event(1)]))
    error = info.value
    assert error.status == 404
    assert not error.retryable
    assert 'database not found: "no_such_db_carewatch"' in error.body
    assert "HTTP 404" in str(error) and "database not found" in str(error)


@pytest.mark.integration
async def test_partial_write_is_permanent_and_keeps_the_good_points(
    influxdb: InfluxDBService, influx_database: str
) -> None:
    target = InfluxTarget(url=influxdb.url, database=influx_database)
    async with InfluxWriter(target) as writer:
        await writer.write([f"door battery=90i {T}"])
        with pytest.raises(TelemetryError) as info:
            # The second point conflicts with the integer field type: only it is dropped.
            await writer.write([f"door battery=89i {T + 1}", f'door battery="low" {T + 2}'])
    error = info.value
    assert (error.status, error.retryable, error.partial, error.dropped) == (400, False, True, 1)
    assert "field type conflict" in error.body
    rows = query_rows(influxql_query(target, "SELECT battery FROM door"))
    assert [r["battery"] for r in rows] == [90, 89]


@pytest.mark.integration
async def test_unparsable_line_is_permanent(influxdb: InfluxDBService, influx_database: str):
    target = InfluxTarget(url=influxdb.url, database=influx_database)
    async with InfluxWriter(target) as writer:
        with pytest.raises(TelemetryError) as info:
            await writer.write(["door battery= 1"])
    assert (info.value.status, info.value.retryable, info.value.partial) == (400, False, False)
    assert "unable to parse" in info.value.body


@pytest.mark.integration
async def test_stopped_influxdb_is_retryable_then_recovers(influxdb_factory) -> None:
    server: InfluxDBService = influxdb_factory()
    server.create_database("cw")
    target = InfluxTarget(url=server.url, database="cw")
    lines = events_to_lines([pendant_event(1)])
    async with InfluxWriter(target, timeout=5) as writer:
        await asyncio.to_thread(server.stop)
        assert not await ping(target)
        with pytest.raises(TelemetryError) as info:
            await writer.write(lines)
        assert info.value.retryable
        assert info.value.status is None
        assert "unreachable" in str(info.value)

        await asyncio.to_thread(server.start)  # same port, same data
        assert await ping(target)
        await writer.write(lines)  # the same writer (and session) recovers
    assert query_rows(influxql_query(target, "SELECT count(battery) FROM pendant"))[0]["count"] == 1


@pytest.mark.integration
def test_influxql_statement_error_is_typed(influxdb: InfluxDBService) -> None:
    target = InfluxTarget(url=influxdb.url, database="anything")
    with pytest.raises(TelemetryError, match="error parsing query") as info:
        influxql_query(target, "SELEKT 1")
    assert not info.value.retryable


# --- answers only a stand-in server can give -----------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "headers", "body", "retry_after"),
    [
        (503, {"Retry-After": "7"}, '{"error":"shutting down"}', 7.0),
        (500, {}, '{"error":"engine: cache maximum memory size exceeded"}', None),
        (429, {"Retry-After": "2"}, '{"code":"too many requests","message":"slow down"}', 2.0),
    ],
)
async def test_server_errors_are_retryable(
    http_server, status: int, headers: dict[str, str], body: str, retry_after: float | None
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers, text=body)

    url = await http_server(handler)
    async with InfluxWriter(InfluxTarget(url=url, database="cw")) as writer:
        with pytest.raises(TelemetryError) as info:
            await writer.write(["m f=1i 1"])
    assert info.value.retryable
    assert info.value.status == status
    assert info.value.retry_after == retry_after
    assert info.value.body in body


async def test_slow_server_times_out_retryably(http_server) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    url = await http_server(handler)
    try:
        async with InfluxWriter(InfluxTarget(url=url, database="cw"), timeout=0.2) as writer:
            with pytest.raises(TelemetryError, match="timed out") as info:
                await writer.write(["m f=1i 1"])
        assert info.value.retryable
    finally:
        release.set()


async def test_v2_request_reaches_the_server_as_built(http_server) -> None:
    seen: list[tuple[str, dict[str, str], str, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            (
                request.path,
                dict(request.query),
                request.headers.get("Authorization", ""),
                await request.read(),
            )
        )
        return web.Response(status=204)

    url = await http_server(handler)
    target = InfluxTarget(url=url, api="v2", org="care-org", bucket="telemetry", token="t0k")
    async with InfluxWriter(target) as writer:
        await writer.write(["m f=1i 1", "m f=2i 2"])
    assert seen == [
        (
            "/api/v2/write",
            {"bucket": "telemetry", "org": "care-org", "precision": "ms"},
            "Token t0k",
            b"m f=1i 1\nm f=2i 2\n",
        )
    ]


# --- pure request building and classification ----------------------------------------


def test_v2_request_building() -> None:
    """The v2/v3 write (InfluxDB 1.6 has no /api/v2/write, so it is checked here)."""
    target = InfluxTarget(
        url="https://influx.example:8086/", api="v2", org="o", bucket="b", token="secret"
    )
    request = build_write_request(target, ["door,site=a open=true 1"])
    assert request.url == "https://influx.example:8086/api/v2/write"
    assert dict(request.params) == {"bucket": "b", "org": "o", "precision": "ms"}
    assert request.headers["Authorization"] == "Token secret"
    assert request.body == b"door,site=a open=true 1\n"
    # InfluxDB 3 ignores org: it may be left out.
    no_org = InfluxTarget(url="http://h:8181", api="v2", bucket="b", token="x")
    assert "org" not in build_write_request(no_org, ["m f=1i 1"]).params


def test_v1_request_building() -> None:
    basic = InfluxTarget(
        url="http://h:8086", database="cw", retention_policy="week", username="u", password="p:w"
    )
    request = build_write_request(basic, ["m f=1i 1"], compress=True)
    assert request.url == "http://h:8086/write"
    assert dict(request.params) == {"db": "cw", "rp": "week", "precision": "ms"}
    assert request.headers["Authorization"] == "Basic dTpwOnc="  # base64("u:p:w")
    assert request.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(request.body) == b"m f=1i 1\n"

    params = InfluxTarget(
        url="http://h:8086", database="cw", username="u", password="p", v1_auth="params"
    )
    request = build_write_request(params, ["m f=1i 1"])
    assert "Authorization" not in request.headers
    assert dict(request.params) == {"db": "cw", "precision": "ms", "u": "u", "p": "p"}
    assert "p=%2A%2A%2A" in request.full_url  # the password is masked in messages
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(request.full_url).query)["u"] == ["u"]

    # InfluxDB 2.x / 3.x serve /write too; a token authenticates it.
    token = InfluxTarget(url="http://h:8086", database="cw", token="tk")
    assert build_write_request(token, ["m f=1i 1"]).headers["Authorization"] == "Token tk"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"url": "ftp://h", "database": "d"}, "url"),
        ({"url": "http://", "database": "d"}, "url"),
        ({"api": "v3", "database": "d"}, "api"),
        ({}, "database"),
        ({"api": "v2", "org": "o"}, "bucket"),
        ({"database": "d", "username": "u"}, "password"),
        ({"database": "d", "v1_auth": "digest"}, "v1_auth"),
    ],
)
def test_target_validation_names_the_option(kwargs: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        InfluxTarget(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


@pytest.mark.parametrize(
    ("status", "retryable", "words"),
    [
        (400, False, "points rejected"),
        (401, False, "credentials"),
        (403, False, "credentials"),
        (404, False, "not found"),
        (413, False, "too large"),
        (422, False, "refused"),
        (429, True, "too many"),
        (500, True, "server error"),
        (502, True, "server error"),
        (503, True, "server error"),
    ],
)
def test_status_classification(status: int, retryable: bool, words: str) -> None:
    error = classify_status(status, '{"error":"details here"}')
    assert error.retryable is retryable
    assert error.status == status
    assert words in str(error) and "details here" in str(error)


def test_error_body_formats() -> None:
    assert classify_status(400, '{"code":"invalid","message":"bad line 1"}').body == "bad line 1"
    assert classify_status(502, "<html>bad gateway</html>").body == "<html>bad gateway</html>"


def test_chunking_by_lines_and_bytes() -> None:
    lines = [f"m f={i}i {i}" for i in range(7)]
    assert [len(c) for c in chunk_lines(lines, max_lines=3, max_bytes=10**6)] == [3, 3, 1]
    size = len(lines[0]) + 1
    assert [len(c) for c in chunk_lines(lines, max_lines=100, max_bytes=2 * size)] == [2] * 3 + [1]
    assert list(chunk_lines(["x" * 50], max_lines=10, max_bytes=10)) == [["x" * 50]]
    assert list(chunk_lines([], max_lines=10, max_bytes=10)) == []


def test_line_batcher() -> None:
    batcher = LineBatcher(max_lines=3, linger=1.0)
    assert not batcher.due(0.0) and batcher.deadline() is None
    batcher.add(["a"], now=10.0)
    batcher.add(["b"], now=10.5)
    assert not batcher.due(10.9)
    assert batcher.deadline() == 11.0
    assert batcher.due(11.0)  # linger runs from the first line
    assert batcher.take() == ["a", "b"]
    assert len(batcher) == 0 and not batcher.due(100.0)
    batcher.add(["c", "d", "e"], now=20.0)
    assert batcher.due(20.0)  # size cap reached
    assert batcher.take() == ["c", "d", "e"]


def test_writer_options_are_checked() -> None:
    target = InfluxTarget(database="d")
    with pytest.raises(ConfigError):
        InfluxWriter(target, timeout=0)
    with pytest.raises(ConfigError):
        InfluxWriter(target, batch_lines=0)
