"""Properties of the face-terminal codec: only DecodeError escapes; encode -> decode."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.codecs import MqttMessage, Reading, codec_for
from device_profiles.codecs.face_terminal import FaceTerminalCodec
from device_profiles.errors import DecodeError
from device_profiles.profiles import ProfileRegistry

CODEC = codec_for(ProfileRegistry.load().get("hikvision-ds-k1t341"))
assert isinstance(CODEC, FaceTerminalCodec)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_docs = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=24,
)
# Documents shaped like the vendor's, with arbitrary values where the codec looks.
ace = st.fixed_dictionaries(
    {},
    optional={
        "majorEventType": st.sampled_from([5, 3]) | json_scalars,
        "subEventType": st.sampled_from([75, 76, 21]) | json_scalars,
        "employeeNoString": st.text(max_size=6) | json_scalars,
        "similarity": st.floats(-0.5, 1.5) | json_scalars,
        "liveness": st.booleans() | json_scalars,
        "extra": json_docs,
    },
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(["AccessControllerEvent", "heartBeat"]) | json_scalars,
        "macAddress": st.text(max_size=17) | json_scalars,
        "dateTime": st.sampled_from(["2024-03-01T08:30:05+08:00", "2024-03-01T08:30"])
        | st.text(max_size=30)
        | json_scalars,
        "AccessControllerEvent": ace | json_docs,
    },
)


def decode_only_decode_error(payload: bytes) -> None:
    try:
        readings = CODEC.decode(MqttMessage("hikvision/ft/event", payload), "ft")
    except DecodeError as exc:
        assert exc.device == "ft" and exc.fault
        return
    for r in readings:
        assert r.reading in ("checkin", "heartbeat")
        json.dumps(dict(r.values))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=80))
def test_no_byte_string_crashes_decode(payload: bytes) -> None:
    decode_only_decode_error(payload)


@settings(max_examples=300, deadline=None)
@given(doc=json_docs | shaped)
def test_no_json_document_crashes_decode(doc: Any) -> None:
    decode_only_decode_error(json.dumps(doc).encode())


ids = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(2002, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
).map(lambda dt: int(dt.timestamp() * 1000))


@settings(max_examples=200, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {"verified": st.booleans(), "terminal": ids},
        optional={
            "person": ids,
            "score": st.floats(0, 1, allow_nan=False),
            "liveness": st.booleans(),
        },
    ),
    time=times,
)
def test_encode_decode_round_trip(values: dict[str, Any], time: int) -> None:
    reading = Reading("checkin", values, time=time)
    [back] = CODEC.decode(CODEC.encode(reading, "ft"), "ft")
    assert back == Reading("checkin", values, time=time, source=values["terminal"])
