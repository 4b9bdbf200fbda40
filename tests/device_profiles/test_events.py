"""The Event contract: validation, JSON round trips, tolerance of unknown fields."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.errors import EventError
from device_profiles.events import (
    SCHEMA_VERSION,
    Event,
    decode_batch,
    decode_event,
    encode_batch,
    encode_event,
    event_from_mapping,
    event_to_dict,
)

T0 = 1_763_856_000_000  # 2025-11-23T00:00:00Z


def make(**over: object) -> Event:
    base: dict[str, object] = {
        "gateway": "gw-01",
        "seq": 1,
        "time": T0,
        "received": T0 + 5,
        "site": "haining-c01",
        "device": "door-1",
        "kind": "door",
        "reading": "contact",
        "values": {"contact": False, "open": True, "battery": 91},
        "resident": "r-0001",
    }
    base.update(over)
    return event_from_mapping(base)


def test_round_trip_keeps_every_field() -> None:
    event = make(clock_ok=False, urgent=True)
    back = decode_event(encode_event(event))
    assert back == event
    assert back.v == SCHEMA_VERSION
    assert back.key == ("gw-01", 1)


def test_defaults_are_omitted_on_the_wire() -> None:
    wire = json.loads(encode_event(make()))
    assert "clock_ok" not in wire and "urgent" not in wire and "v" not in wire
    assert decode_event(json.dumps(wire)).clock_ok is True


def test_unknown_fields_are_tolerated() -> None:
    wire = json.loads(encode_event(make()))
    wire["added_in_v2"] = {"anything": [1, 2]}
    assert decode_event(json.dumps(wire)) == make()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seq", 0, "seq=0"),
        ("time", 1_000, "time=1000"),
        ("received", 99_999_999_999_999, "received="),
        ("gateway", "gw/01", "gateway="),
        ("site", "", "site="),
        ("resident", "a b", "resident="),
        ("kind", "", "kind and reading"),
    ],
)
def test_invalid_fields_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(EventError, match=message):
        make(**{field: value})


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[]", b'{"gateway": 1}', b'{"events": "x"}', b"\xff\xfe"],
)
def test_malformed_payloads_raise_event_error(payload: bytes) -> None:
    with pytest.raises(EventError):
        decode_event(payload)
    with pytest.raises(EventError):
        decode_batch(payload)


def test_batch_round_trip_and_bad_member_is_named() -> None:
    events = [make(seq=i) for i in range(1, 4)]
    assert decode_batch(encode_batch(events)) == events
    wire = json.loads(encode_batch(events))
    wire["events"][2]["seq"] = -4
    with pytest.raises(EventError, match=r"events\[2\]"):
        decode_batch(json.dumps(wire))


def test_event_is_frozen() -> None:
    event = make()
    with pytest.raises(AttributeError):
        event.seq = 2  # type: ignore[misc]


def test_event_to_dict_is_plain() -> None:
    d = event_to_dict(make())
    assert d["values"]["battery"] == 91
    assert msgspec.json.decode(msgspec.json.encode(d)) == d


@given(st.binary(max_size=300))
def test_no_byte_string_crashes_decode(data: bytes) -> None:
    with contextlib.suppress(EventError):
        decode_batch(data)


values_strategy = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
        st.lists(st.floats(-8, 8), max_size=5),
    ),
    max_size=5,
)


@given(values=values_strategy, seq=st.integers(1, 2**62))
def test_any_valid_event_round_trips(values: dict[str, object], seq: int) -> None:
    event = make(values=values, seq=seq)
    assert decode_event(encode_event(event)) == event


def test_deeply_nested_garbage_is_an_event_error() -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(EventError):
        decode_batch(deep)
    with pytest.raises(EventError):
        decode_event(deep)
