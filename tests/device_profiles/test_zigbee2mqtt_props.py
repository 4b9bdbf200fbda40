"""Properties of the Zigbee2MQTT codec: only DecodeError escapes; encode -> decode."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.codecs import MqttMessage, Reading, codec_for
from device_profiles.codecs.zigbee2mqtt import Zigbee2MqttCodec
from device_profiles.errors import DecodeError
from device_profiles.profiles import Profile, ProfileRegistry

REGISTRY = ProfileRegistry.load()
PROFILES = [REGISTRY.get(n) for n in ("aqara-mccgq11lm", "sonoff-snzb-04", "aqara-rtcgq11lm")]
TOPICS = st.sampled_from(
    ["zigbee2mqtt/d", "zigbee2mqtt/a/b", "zigbee2mqtt/d/availability", "zigbee2mqtt/bridge/x"]
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_docs = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
# Objects whose keys are mostly the properties the codec reads, so values are exercised.
keys = st.sampled_from(
    ["contact", "occupancy", "battery", "battery_low", "tamper", "linkquality", "voltage", "x"]
)
state_objects = st.dictionaries(keys, json_docs, max_size=8)


def decode_only_decode_error(codec: Zigbee2MqttCodec, topic: str, payload: bytes) -> None:
    try:
        readings = codec.decode(MqttMessage(topic, payload), "dev")
    except DecodeError as exc:
        assert exc.device == "dev" and exc.fault
        return
    for r in readings:
        assert isinstance(r, Reading)
        json.dumps(dict(r.values))  # values are plain JSON


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=150, deadline=None)
@given(topic=TOPICS, payload=st.binary(max_size=64))
def test_no_byte_string_crashes_decode(profile: Profile, topic: str, payload: bytes) -> None:
    codec = codec_for(profile)
    assert isinstance(codec, Zigbee2MqttCodec)
    decode_only_decode_error(codec, topic, payload)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=150, deadline=None)
@given(topic=TOPICS, doc=json_docs | state_objects)
def test_no_json_document_crashes_decode(profile: Profile, topic: str, doc: Any) -> None:
    codec = codec_for(profile)
    assert isinstance(codec, Zigbee2MqttCodec)
    decode_only_decode_error(codec, topic, json.dumps(doc).encode())


def values_for(profile: Profile) -> st.SearchStrategy[dict[str, Any]]:
    """Valid values for every property-read resource; any subset, primary always set."""
    codec = codec_for(profile)
    assert isinstance(codec, Zigbee2MqttCodec)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for res in profile.resources:
        if "path" not in res.read:
            continue
        if res.type == "bool":
            fields[res.name] = st.booleans()
        else:
            lo = int(res.min if res.min is not None else 0)
            hi = int(res.max if res.max is not None else 1000)
            fields[res.name] = st.integers(lo, hi)
    required = {codec.primary: fields.pop(codec.primary)}
    return st.fixed_dictionaries(required, optional=fields)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.from_regex(r"[a-z0-9_]{1,12}(/[a-z0-9_]{1,8})?", fullmatch=True))
def test_encode_decode_round_trip(profile: Profile, data: st.DataObject, name: str) -> None:
    codec = codec_for(profile)
    assert isinstance(codec, Zigbee2MqttCodec)
    values = data.draw(values_for(profile))
    reading = Reading(codec.reading, values, source=name)
    [back] = codec.decode(codec.encode(reading, "dev"), "dev")
    expected = dict(values)
    for derived, source in codec.negations.items():
        expected[derived] = not values[source]
    assert back == Reading(codec.reading, expected, source=name)
    online = data.draw(st.booleans())
    [avail] = codec.decode(codec.encode(Reading("availability", {"online": online}), name), "d")
    assert avail == Reading("availability", {"online": online}, source=name)
