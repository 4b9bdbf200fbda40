"""Property tests of the modbus_counter codec (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import Reading
from device_profiles.codecs.modbus_counter import ModbusCounterCodec
from device_profiles.errors import DecodeError
from device_profiles.profiles import ProfileRegistry

REGISTRY = ProfileRegistry.load()
CODECS: dict[str, ModbusCounterCodec] = {}
for _name in ("beamcount-irc200", "flowsense-tc320"):
    _c = codec_for(REGISTRY.get(_name))
    assert isinstance(_c, ModbusCounterCodec)
    CODECS[_name] = _c
NAMES = sorted(CODECS)

# Mostly plausible blocks, plus anything a buggy transport might hand over.
anything = st.one_of(
    st.lists(st.integers(min_value=-(1 << 17), max_value=1 << 17), max_size=8),
    st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=2, max_size=4),
    st.lists(st.one_of(st.integers(), st.floats(), st.booleans(), st.text(), st.none())),
    st.binary(),
    st.text(),
    st.none(),
    st.integers(),
)


@pytest.mark.parametrize("name", NAMES)
@given(raw=anything)
def test_any_input_gives_a_valid_reading_or_decode_error(name: str, raw: Any) -> None:
    c = CODECS[name]
    try:
        readings = c.decode(raw, "dev")
    except DecodeError as err:
        assert err.device == "dev"
        return
    [reading] = readings
    assert reading.reading == "counts"
    for key in ("in_total", "out_total"):
        value = reading.values[key]
        assert isinstance(value, int)
        assert 0 <= value < c.fields[key].modulus


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_encode_decode_round_trip(name: str, data: st.DataObject) -> None:
    c = CODECS[name]
    totals = {
        key: data.draw(st.integers(min_value=0, max_value=fld.modulus - 1), label=key)
        for key, fld in c.fields.items()
    }
    reading = Reading("counts", totals)
    block = c.encode(reading, "dev")
    assert len(block) == c.plan.count
    assert all(0 <= r <= 0xFFFF for r in block)
    assert c.decode(block, "dev") == [reading]


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_decode_encode_round_trip_on_counter_registers(name: str, data: st.DataObject) -> None:
    c = CODECS[name]
    block = data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=c.plan.count, max_size=c.plan.count)
    )
    [reading] = c.decode(block, "dev")
    assert c.encode(reading, "dev") == block  # both shipped maps have no gaps


def totals_sequences(modulus: int, bound: int) -> st.SearchStrategy[list[int]]:
    """Totals as a counter produces them: steps (with wraps), resets, and wild jumps."""
    step = st.one_of(
        st.tuples(st.just("step"), st.integers(0, bound)),
        st.tuples(st.just("reset"), st.integers(0, bound)),
        st.tuples(st.just("jump"), st.integers(0, modulus - 1)),
    )

    @st.composite
    def build(draw: st.DrawFn) -> list[int]:
        start = draw(st.one_of(st.integers(0, modulus - 1), st.just(modulus - 1 - bound // 2)))
        seq = [start]
        for kind, n in draw(st.lists(step, max_size=30)):
            # A reset restarts near zero; a jump lands anywhere (a swapped device).
            seq.append((seq[-1] + n) % modulus if kind == "step" else n)
        return seq

    return build()


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_deltas_are_never_negative_nor_above_the_bound(name: str, data: st.DataObject) -> None:
    c = CODECS[name]
    bound = c.max_people_per_poll
    ins = data.draw(totals_sequences(c.fields["in_total"].modulus, bound), label="in")
    outs = data.draw(totals_sequences(c.fields["out_total"].modulus, bound), label="out")
    state = c.initial_state()
    first = True
    for in_total, out_total in zip(ins, outs, strict=False):
        state, [r] = c.track(
            state, Reading("counts", {"in_total": in_total, "out_total": out_total})
        )
        state = json.loads(json.dumps(state))  # what the agent persists must be JSON
        for key in ("in", "out"):
            delta = r.values[key]
            assert isinstance(delta, int)
            assert 0 <= delta <= bound
            if first:
                assert delta == 0
        assert isinstance(r.values["reset"], bool)
        assert (r.values["in_total"], r.values["out_total"]) == (in_total, out_total)
        first = False


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_plain_counting_with_wraps_is_exact(name: str, data: st.DataObject) -> None:
    """People arriving within the bound per poll are all counted, across any wrap."""
    c = CODECS[name]
    modulus = c.fields["in_total"].modulus
    start = data.draw(st.integers(0, modulus - 1))
    steps = data.draw(st.lists(st.integers(0, c.max_people_per_poll), max_size=30))
    state, _ = c.track(c.initial_state(), Reading("counts", {"in_total": start, "out_total": 0}))
    total, seen = start, 0
    for n in steps:
        total = (total + n) % modulus
        state, [r] = c.track(state, Reading("counts", {"in_total": total, "out_total": 0}))
        assert r.values["reset"] is False
        delta = r.values["in"]
        assert isinstance(delta, int)
        seen += delta
    assert seen == sum(steps)
