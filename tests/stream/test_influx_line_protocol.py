"""Line protocol encoding: escaping, field types, Event and alert mapping, round trips."""

from __future__ import annotations

import itertools
import math
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from device_profiles.events import Event
from stream.telemetry import (
    LineProtocolError,
    Point,
    SkipCounts,
    alert_to_point,
    encode_line,
    event_to_point,
    events_to_lines,
    points_to_lines,
)
from stream.telemetry.line_protocol import (
    escape_key,
    escape_measurement,
    format_field_value,
    quote_string,
)
from tests.harness import InfluxDBService

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def event(reading: str = "contact", **overrides: object) -> Event:
    fields: dict[str, object] = {
        "gateway": "gw-1",
        "seq": 7,
        "time": T,
        "received": T + 5,
        "site": "site-a",
        "device": "door-1",
        "kind": "door",
        "reading": reading,
        "values": {"contact": True, "open": False, "battery": 87, "linkquality": 120},
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


# --- reference parser (InfluxDB 1.x rules) -----------------------------------------


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split like InfluxDB's scanner: a backslash makes the next character literal."""
    parts, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def unescape_key(text: str) -> str:
    for escaped in ("\\,", "\\=", "\\ "):
        text = text.replace(escaped, escaped[1])
    return text


def unquote_string(text: str) -> str:
    assert text[0] == text[-1] == '"'
    out, i = [], 1
    while i < len(text) - 1:
        if text[i] == "\\" and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
        else:
            assert text[i] != '"', "unescaped quote inside a string field"
            out.append(text[i])
            i += 1
    return "".join(out)


names = st.text(
    st.characters(codec="utf-8") | st.sampled_from(list(',= "\\#\t\n')),
    min_size=1,
    max_size=16,
)


# --- pure escaping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("door", "door"),
        ("a b", "a\\ b"),
        ("a,b", "a\\,b"),
        ("a=b", "a=b"),  # = needs no escape in a measurement
        ('say"hi', 'say"hi'),
        ("back\\slash", "back\\slash"),
    ],
)
def test_escape_measurement(raw: str, escaped: str) -> None:
    assert escape_measurement(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("site-a", "site-a"),
        ("a b", "a\\ b"),
        ("a,b", "a\\,b"),
        ("a=b", "a\\=b"),
        ("tab\there", "tab\there"),
        ("ü€", "ü€"),
        ("c:\\dir", "c:\\dir"),
    ],
)
def test_escape_key(raw: str, escaped: str) -> None:
    assert escape_key(raw) == escaped


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "line\nbreak",
        "cr\rhere",
        "nul\x00",
        "\tlead",
        "trailing\\",
        "a\\,b",
        "a\\ b",
        "a\\=b",
        "a\\\\b",
        'a\\"b',
    ],
)
def test_unwritable_names_are_refused(bad: str) -> None:
    with pytest.raises(LineProtocolError):
        escape_key(bad)
    with pytest.raises(LineProtocolError):
        escape_measurement(bad)


def test_comment_measurement_is_refused() -> None:
    with pytest.raises(LineProtocolError, match="comment"):
        escape_measurement("#door")
    assert escape_key("#tag") == "#tag"  # only a line start is a comment


def test_quote_string() -> None:
    assert quote_string('say "hi"\\now') == '"say \\"hi\\"\\\\now"'
    assert quote_string("multi\nline") == '"multi\nline"'
    with pytest.raises(LineProtocolError):
        quote_string("lone \ud800 surrogate")


@given(names)
def test_escaped_keys_parse_back(raw: str) -> None:
    try:
        escaped = escape_key(raw)
    except LineProtocolError:
        return
    # No bare separator survives, and unescaping gives the original back.
    for separator in ",= ":
        assert split_unescaped(escaped, separator) == [escaped]
    assert unescape_key(escaped) == raw


@given(st.text(st.characters(codec="utf-8")))
def test_quoted_strings_parse_back(raw: str) -> None:
    assert unquote_string(quote_string(raw)) == raw


# --- field values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0i"),
        (-42, "-42i"),
        (2**63 - 1, "9223372036854775807i"),
        (-(2**63), "-9223372036854775808i"),
        (0.5, "0.5"),
        (1e16, "1e+16"),
        (-2.5e-7, "-2.5e-07"),
        ("on", '"on"'),
    ],
)
def test_field_values(value: object, text: str) -> None:
    assert format_field_value(value) == text


def test_unwritable_field_values_are_skipped_and_counted() -> None:
    skipped = SkipCounts()
    values: list[object] = [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, {"a": 1}, None]
    assert [format_field_value(v, skipped) for v in values] == [None] * len(values)
    assert (skipped.nonfinite, skipped.out_of_range, skipped.unsupported) == (3, 2, 1)


def test_encode_line_layout() -> None:
    skipped = SkipCounts()
    line = encode_line(
        "door",
        {"site": "site a", "device": "d=1", "resident": None, "empty": ""},
        {"contact": True, "battery": 87, "v": 1.5, "note": 'x "y"', "bad": math.nan, "time": 3},
        T,
        skipped,
    )
    # Tags sorted by key; empty tags left out; NaN and the reserved key "time" skipped.
    assert line == (
        f'door,device=d\\=1,site=site\\ a contact=true,battery=87i,v=1.5,note="x \\"y\\"" {T}'
    )
    assert (skipped.nonfinite, skipped.bad_key) == (1, 1)


def test_point_without_fields_or_with_reserved_tag_is_refused() -> None:
    with pytest.raises(LineProtocolError, match="no field"):
        encode_line("door", {"site": "a"}, {"only": math.nan})
    with pytest.raises(LineProtocolError, match="reserved"):
        encode_line("door", {"time": "x"}, {"f": 1})


def test_points_to_lines_sets_bad_points_aside() -> None:
    skipped = SkipCounts()
    points = [Point("ok", {}, {"f": 1}, T), Point("#bad", {}, {"f": 1}, T), Point("ok", {}, {})]
    assert points_to_lines(points, skipped) == [f"ok f=1i {T}"]
    assert skipped.bad_points == 2
    assert skipped.total() == 2


# --- Events and alerts --------------------------------------------------------------


def test_door_event_point() -> None:
    point = event_to_point(event())
    assert point.measurement == "door"
    assert point.time_ms == T
    assert dict(point.tags) == {
        "site": "site-a",
        "gateway": "gw-1",
        "device": "door-1",
        "resident": None,
        "reading": "contact",
    }
    assert point.to_line() == (
        "door,device=door-1,gateway=gw-1,reading=contact,site=site-a "
        f"contact=true,open=false,battery=87i,linkquality=120i,event_seq=7i {T}"
    )


def test_impact_window_becomes_a_sample_count() -> None:
    window = [0.1 * i for i in range(250)]
    impact = event(
        "impact",
        kind="pendant",
        device="pendant-1",
        resident="res-1",
        values={"rate_hz": 50, "range_g": 8.0, "peak_g": 6.5, "x": window, "y": window, "z": []},
    )
    point = event_to_point(impact)
    assert point.fields == {
        "rate_hz": 50,
        "range_g": 8.0,
        "peak_g": 6.5,
        "samples": 250,
        "event_seq": 7,
    }
    assert point.tags["resident"] == "res-1"
    assert "pendant,device=pendant-1,gateway=gw-1,reading=impact,resident=res-1," in (
        point.to_line()
    )


def test_events_to_lines_counts_what_it_drops() -> None:
    skipped = SkipCounts()
    events = [
        event(values={"temperature": math.inf, "battery": 50}),
        event(values={"temperature": math.nan}),  # event_seq still makes it a point
        event(kind="#not-a-measurement"),  # refused: set aside, the batch goes on
    ]
    lines = events_to_lines(events, skipped)
    assert lines == [
        f"door,device=door-1,gateway=gw-1,reading=contact,site=site-a battery=50i,event_seq=7i {T}",
        f"door,device=door-1,gateway=gw-1,reading=contact,site=site-a event_seq=7i {T}",
    ]
    assert (skipped.nonfinite, skipped.bad_points) == (2, 1)


def test_alert_point() -> None:
    point = alert_to_point(
        alert_id="a-123",
        site="site-a",
        kind="sos",
        severity="critical",
        state="escalated",
        time_ms=T,
        resident="res-1",
        extra={"tier": 2, "alert_id": "ignored", "by": "nurse 7"},
    )
    # extra never overrides alert_id / state; device is absent so it is no tag.
    assert point.to_line() == (
        "alerts,kind=sos,resident=res-1,severity=critical,site=site-a,state=escalated "
        f'tier=2i,alert_id="a-123",by="nurse 7",state="escalated" {T}'
    )


# --- round trips through a real InfluxDB ----------------------------------------------

_counter = itertools.count(1)


def _rows_of_example(influxdb: InfluxDBService, db: str, n: int) -> list[dict[str, object]]:
    """Every point of example ``n`` (measurement ``m{n}_...``) as dicts."""
    rows = []
    # The anchored regex selects the one measurement of this example without quoting its
    # generated name in InfluxQL; only that measurement's columns come back.
    answer = influxdb.query(f"SELECT * FROM /^m{n}_/", db)
    for result in answer["results"]:
        for series in result.get("series", []):
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                rows.append({"_measurement": series["name"], **row})
    return rows


@pytest.fixture(scope="module")
def roundtrip_db(influxdb: InfluxDBService) -> str:
    name = f"lp_{uuid.uuid4().hex[:10]}"
    influxdb.create_database(name)
    return name


@pytest.mark.integration
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    measurement=names,
    tag_key=names,
    tag_value=names,
    field_key=names,
    text=st.text(st.characters(codec="utf-8"), max_size=40),
    number=st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False),
)
def test_strings_survive_influxdb_round_trip(
    influxdb: InfluxDBService,
    roundtrip_db: str,
    measurement: str,
    tag_key: str,
    tag_value: str,
    field_key: str,
    text: str,
    number: int | float,
) -> None:
    n = next(_counter)
    # A unique measurement per example keeps field types from conflicting across examples.
    measurement = f"m{n}_{measurement}"
    assume(len({tag_key, field_key, f"{field_key}_n"}) == 3)
    assume("time" not in (tag_key, field_key))
    skipped = SkipCounts()
    fields = {field_key: text, f"{field_key}_n": number}
    try:
        line = encode_line(measurement, {tag_key: tag_value}, fields, T + n, skipped)
    except LineProtocolError:
        assume(False)
    # Only names the encoder accepted whole are compared (refusals are tested above).
    assume(skipped.total() == 0)
    influxdb.write([line], roundtrip_db)
    rows = _rows_of_example(influxdb, roundtrip_db, n)
    assert len(rows) == 1
    read_number = rows[0].pop(f"{field_key}_n")
    assert rows == [
        {"_measurement": measurement, "time": T + n, tag_key: tag_value, field_key: text}
    ]
    # JSON prints a whole float like 6.17e16 as an integer: compare as the written type.
    if isinstance(number, float):
        assert isinstance(read_number, int | float)
        assert float(read_number) == number
    else:
        assert read_number == number


@pytest.mark.integration
def test_events_and_alerts_read_back(influxdb: InfluxDBService, influx_database: str) -> None:
    events = [
        event(seq=1, time=T, values={"contact": True, "battery": 90}),
        event(seq=2, time=T + 1000, values={"contact": False, "battery": 89}),
        event(seq=3, time=T, site="site-b", device="door 9"),
    ]
    alert = alert_to_point(
        alert_id="a-1",
        site="site-a",
        kind="door_open",
        severity="warning",
        state="open",
        time_ms=T + 2000,
        device="door-1",
    )
    influxdb.write([*events_to_lines(events), alert.to_line()], influx_database)
    rows = influxdb.rows(
        "SELECT contact, battery, event_seq, device FROM door WHERE site = 'site-a'",
        influx_database,
    )
    assert rows == [
        {"time": T, "contact": True, "battery": 90, "event_seq": 1, "device": "door-1"},
        {"time": T + 1000, "contact": False, "battery": 89, "event_seq": 2, "device": "door-1"},
    ]
    other = influxdb.rows("SELECT event_seq FROM door WHERE device = 'door 9'", influx_database)
    assert other == [{"time": T, "event_seq": 3}]
    alerts = influxdb.rows("SELECT alert_id, state, severity FROM alerts", influx_database)
    assert alerts == [{"time": T + 2000, "alert_id": "a-1", "state": "open", "severity": "warning"}]
