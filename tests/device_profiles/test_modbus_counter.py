"""The modbus_counter codec: register blocks -> totals -> deltas, and profile checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import MqttMessage, Reading
from device_profiles.codecs.modbus_counter import (
    ModbusCounterCodec,
    ModbusTransport,
    counter_delta,
)
from device_profiles.errors import ConfigError, DecodeError, EncodeError, ProfileError
from device_profiles.profiles import ProfileRegistry, load_profile_file, parse_profile

FOOTFALL_PROFILES = ("beamcount-irc200", "flowsense-tc320")


def codec(name: str) -> ModbusCounterCodec:
    c = codec_for(ProfileRegistry.load().get(name))
    assert isinstance(c, ModbusCounterCodec)
    return c


def profile_data(**changes: Any) -> dict[str, Any]:
    """A minimal counter profile as parsed YAML, with top-level keys replaced."""
    data: dict[str, Any] = {
        "profile": "acme-pc1",
        "kind": "footfall",
        "protocol": "modbus-rtu",
        "codec": "modbus_counter",
        "report_interval_s": 10,
        "codec_options": {"max_people_per_poll": 50},
        "resources": [
            {"name": "in_total", "type": "int", "read": {"register": 0, "type": "uint16"}},
            {"name": "out_total", "type": "int", "read": {"register": 1, "type": "uint16"}},
            {"name": "in", "type": "int"},
            {"name": "out", "type": "int"},
            {"name": "reset", "type": "bool"},
        ],
    }
    data.update(changes)
    return data


def make(data: dict[str, Any]) -> ModbusCounterCodec:
    c = codec_for(parse_profile(data, source="acme-pc1.yaml"))
    assert isinstance(c, ModbusCounterCodec)
    return c


def counts(in_total: int, out_total: int) -> Reading:
    return Reading("counts", {"in_total": in_total, "out_total": out_total})


# -- shipped profiles -------------------------------------------------------------------


def test_shipped_profiles_cover_16_and_32_bit_maps() -> None:
    beam, flow = codec("beamcount-irc200"), codec("flowsense-tc320")
    assert (beam.plan.table, beam.plan.address, beam.plan.count) == ("holding", 0, 2)
    assert {f.type for f in beam.fields.values()} == {"uint16"}
    assert (flow.plan.address, flow.plan.count) == (0x100, 4)
    assert {(f.type, f.word_order) for f in flow.fields.values()} == {("uint32", "little")}
    assert beam.plan.function_code == 3
    # Different serial defaults per model, as their manuals state.
    assert (beam.defaults.baudrate, beam.defaults.parity, beam.defaults.unit_id) == (9600, "N", 1)
    assert (flow.defaults.baudrate, flow.defaults.parity, flow.defaults.unit_id) == (19200, "E", 10)


def test_16_bit_block_decodes_in_and_out() -> None:
    [reading] = codec("beamcount-irc200").decode([1234, 987], "door-1")
    assert reading == Reading("counts", {"in_total": 1234, "out_total": 987})


def test_32_bit_low_word_first_block_decodes() -> None:
    # in = 0x0001_0002 = 65538 stored low word first; out = 0x0000_0007.
    [reading] = codec("flowsense-tc320").decode([0x0002, 0x0001, 0x0007, 0x0000], "entrance")
    assert reading.values == {"in_total": 65538, "out_total": 7}


def test_big_word_order_and_gaps_from_yaml_alone(tmp_path: Path) -> None:
    """A new model (32-bit, high word first, input registers, a gap) is one YAML file."""
    data = profile_data(
        profile="acme-pc1",
        codec_options={"table": "input", "max_people_per_poll": 40},
        resources=[
            {"name": "out_total", "type": "int", "read": {"register": 14, "type": "uint32"}},
            {
                "name": "in_total",
                "type": "int",
                "read": {"register": 10, "type": "uint32", "word_order": "big"},
            },
        ],
    )
    path = tmp_path / "acme-pc1.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    c = codec_for(load_profile_file(path))
    assert isinstance(c, ModbusCounterCodec)
    assert (c.plan.table, c.plan.function_code, c.plan.address, c.plan.count) == (
        "input",
        4,
        10,
        6,
    )
    block = [0x0001, 0x0000, 0xDEAD, 0xBEEF, 0x0000, 0x0005]  # 12-13 are not counters
    [reading] = c.decode(block, "acme")
    assert reading.values == {"in_total": 65536, "out_total": 5}
    assert c.encode(reading, "acme") == [0x0001, 0x0000, 0, 0, 0x0000, 0x0005]


# -- decode faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        ([1], "truncated"),
        ([], "truncated"),
        ([1, 2, 3], "oversized"),
        ([1, 65536], "range"),
        ([-1, 0], "range"),
        ([1, True], "type"),
        ([1.0, 2], "type"),
        (["1", 2], "type"),
        (b"\x00\x01", "type"),
        ("ab", "type"),
        (MqttMessage("t", b"[1, 2]"), "type"),
        (None, "type"),
    ],
)
def test_bad_blocks_raise_decode_error_naming_device_and_fault(raw: Any, fault: str) -> None:
    with pytest.raises(DecodeError) as err:
        codec("beamcount-irc200").decode(raw, "door-1")
    assert err.value.device == "door-1"
    assert err.value.fault == fault


def test_resource_max_is_enforced_on_decode(tmp_path: Path) -> None:
    data = profile_data()
    data["resources"][0]["max"] = 9999  # a model whose in counter rolls over at 9999
    with pytest.raises(DecodeError) as err:
        make(data).decode([10000, 0], "d")
    assert err.value.fault == "range"
    assert "in_total" in err.value.detail


# -- encode -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FOOTFALL_PROFILES)
def test_encode_decode_round_trip_at_the_edges(name: str) -> None:
    c = codec(name)
    top = c.fields["in_total"].modulus - 1
    for totals in [(0, 0), (top, 0), (0, top), (top, top), (65535, 65536 % (top + 1))]:
        reading = counts(*totals)
        assert c.decode(c.encode(reading, "d"), "d") == [reading]


@pytest.mark.parametrize(
    "reading",
    [
        Reading("press", {}),
        counts(65536, 0),
        counts(-1, 0),
        Reading("counts", {"in_total": 1}),
        Reading("counts", {"in_total": 1.5, "out_total": 0}),
        Reading("counts", {"in_total": True, "out_total": 0}),
    ],
)
def test_encode_rejects_what_the_registers_cannot_hold(reading: Reading) -> None:
    with pytest.raises(EncodeError):
        codec("beamcount-irc200").encode(reading, "d")


# -- counter_delta ----------------------------------------------------------------------

M16 = 1 << 16


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (10, 10, (0, False)),  # nobody
        (10, 22, (12, False)),  # 12 people
        (10, 110, (100, False)),  # exactly the bound
        (65530, 4, (10, False)),  # wrap: 6 up to 65535, 65536 -> 0, then 4 more
        (65535, 0, (1, False)),  # the single step across the wrap
        (4711, 3, (3, True)),  # power loss: restart at 0, then 3 people
        (4711, 0, (0, True)),  # power loss, nobody since
        (30, 20, (20, True)),  # small drop: a reset, never -10
        (10, 5000, (0, True)),  # implausible jump up: re-baseline, no spike
        (60000, 5000, (0, True)),  # neither a wrap nor a plausible restart
    ],
)
def test_counter_delta_tells_wraps_from_resets(
    old: int, new: int, expected: tuple[int, bool]
) -> None:
    assert counter_delta(old, new, M16, 100) == expected


def test_counter_delta_32_bit_wrap() -> None:
    m32 = 1 << 32
    assert counter_delta(m32 - 3, 2, m32, 300) == (5, False)
    # What is a wrap for 16 bits is a reset for 32 bits.
    assert counter_delta(65530, 4, m32, 300) == (4, True)


# -- track ------------------------------------------------------------------------------


def run(c: ModbusCounterCodec, totals: list[tuple[int, int]], state: dict[str, Any] | None = None):
    state = c.initial_state() if state is None else state
    out = []
    for t in totals:
        state, [reading] = c.track(state, counts(*t))
        out.append(reading.values)
    return state, out


def test_first_reading_is_a_baseline_then_deltas() -> None:
    c = codec("beamcount-irc200")
    state, out = run(c, [(100, 50), (112, 53), (112, 53)])
    assert out[0] == {"in": 0, "out": 0, "in_total": 100, "out_total": 50, "reset": False}
    assert out[1] == {"in": 12, "out": 3, "in_total": 112, "out_total": 53, "reset": False}
    assert out[2]["in"] == out[2]["out"] == 0
    assert state == {"in_total": 112, "out_total": 53}


def test_wrap_gives_a_small_delta_and_power_loss_a_reset() -> None:
    c = codec("beamcount-irc200")
    _, out = run(c, [(65530, 65535), (3, 1), (2, 0)])
    assert (out[1]["in"], out[1]["out"], out[1]["reset"]) == (9, 2, False)
    # Power loss: both counters restart; 2 in and nobody out since.
    assert (out[2]["in"], out[2]["out"], out[2]["reset"]) == (2, 0, True)


def test_state_survives_a_json_round_trip_like_an_agent_restart() -> None:
    c = codec("flowsense-tc320")
    state, _ = run(c, [(1000, 900), (1010, 905)])
    restored = json.loads(json.dumps(state))
    _, out = run(c, [(1013, 905)], state=restored)
    assert (out[0]["in"], out[0]["out"], out[0]["reset"]) == (3, 0, False)


@pytest.mark.parametrize(
    "state",
    [
        {"in_total": "12", "out_total": 0},
        {"in_total": 70000, "out_total": 0},  # from a 32-bit model
        {"in_total": 1},
        {"in_total": True, "out_total": 0},
        {"whatever": []},
    ],
)
def test_unusable_state_rebaselines_instead_of_crashing(
    state: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    c = codec("beamcount-irc200")
    new_state, [reading] = c.track(state, counts(5, 6))
    assert reading.values["in"] == reading.values["out"] == 0
    assert new_state == {"in_total": 5, "out_total": 6}
    assert "re-baselining" in caplog.text


def test_track_passes_other_readings_through_and_rejects_bad_totals() -> None:
    c = codec("beamcount-irc200")
    other = Reading("availability", {"online": False})
    assert c.track({"in_total": 1, "out_total": 1}, other) == (
        {"in_total": 1, "out_total": 1},
        [other],
    )
    with pytest.raises(DecodeError) as err:
        c.track({}, Reading("counts", {"in_total": -5, "out_total": 0}, source="door-9"))
    assert err.value.device == "door-9"


def test_track_keeps_time_and_source() -> None:
    c = codec("beamcount-irc200")
    reading = Reading("counts", {"in_total": 1, "out_total": 2}, time=1_700_000_000_000, source="x")
    _, [out] = c.track({}, reading)
    assert (out.time, out.source, out.urgent) == (1_700_000_000_000, "x", False)


# -- profile validation -----------------------------------------------------------------


def res(name: str, **read: Any) -> dict[str, Any]:
    return {"name": name, "type": "int", "read": read}


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"codec_options": {"max_people_per_poll": 0}}, "codec_options.max_people_per_poll", ""),
        ({"codec_options": {"max_people_per_poll": 2.5}}, "codec_options.max_people_per_poll", ""),
        ({"codec_options": {"table": "coils"}}, "codec_options.table", "holding"),
        ({"codec_options": {"word_order": "middle"}}, "codec_options.word_order", "big"),
        ({"codec_options": {"bound": 3}}, "codec_options", "max_people_per_poll"),
        ({"transport": {"baudrate": 9601.5}}, "transport.baudrate", "9600"),
        ({"transport": {"parity": "X"}}, "transport.parity", "N, E or O"),
        ({"transport": {"unit_id": 0}}, "transport.unit_id", "1..247"),
        ({"transport": {"slave_id": 3}}, "transport", "unit_id"),
        ({"transport": {"poll_interval_s": 0}}, "transport.poll_interval_s", "> 0"),
        (
            {"resources": [res("in_total", register=0), res("out_total", register=0)]},
            "resources",
            "overlap",
        ),
        (
            {
                "resources": [
                    res("in_total", register=0, type="uint32"),
                    res("out_total", register=1),
                ]
            },
            "resources",
            "overlap",
        ),
        (
            {"resources": [res("in_total", register=0), res("out_total", register=200)]},
            "resources",
            "125",
        ),
        ({"resources": [res("in_total", register=0)]}, "resources", "out_total"),
        (
            {"resources": [res("in_total", register=70000), res("out_total", register=1)]},
            "resources[0].read.register",
            "",
        ),
        (
            {
                "resources": [
                    res("in_total", register=0, type="int16"),
                    res("out_total", register=1),
                ]
            },
            "resources[0].read.type",
            "uint32",
        ),
        (
            {"resources": [res("in_total", register=0, count=2), res("out_total", register=1)]},
            "resources[0].read.count",
            "1 register",
        ),
        (
            {"resources": [res("in_total", register=0, func=3), res("out_total", register=1)]},
            "resources[0].read",
            "func",
        ),
        (
            {"resources": [res("in_total"), res("out_total", register=1)]},
            "resources[0].read",
            "needs a read block",
        ),
        (
            {
                "resources": [
                    res("in_total", register=0),
                    res("out_total", register=1),
                    res("in", register=5),
                ]
            },
            "resources[2].read",
            "derived",
        ),
        (
            {
                "resources": [
                    res("in_total", register=0),
                    res("out_total", register=1),
                    {"name": "temperature", "type": "float"},
                ]
            },
            "resources[2].name",
            "in_total",
        ),
        (
            {
                "resources": [
                    res("in_total", register=0),
                    res("out_total", register=1),
                    {"name": "in", "type": "int", "max": 10},
                ]
            },
            "resources[2].max",
            "max_people_per_poll",
        ),
        ({"protocol": "zigbee2mqtt"}, "protocol", "modbus-rtu"),
    ],
)
def test_bad_profiles_name_file_and_key(changes: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ProfileError) as err:
        make(profile_data(**changes))
    assert err.value.file == "acme-pc1.yaml"
    assert err.value.path == path
    assert words in str(err.value)


def test_site_overrides_apply_on_top_of_profile_defaults() -> None:
    c = codec("beamcount-irc200")
    t = c.transport({"unit_id": 7, "parity": "e", "poll_interval_s": 5})
    assert t == ModbusTransport(
        baudrate=9600, parity="E", unit_id=7, poll_interval_s=5.0, timeout_s=0.5
    )
    assert c.transport() is c.defaults
    with pytest.raises(ConfigError) as err:
        c.transport({"stopbits": 3}, file="site.yaml")
    assert (err.value.file, err.value.path) == ("site.yaml", "transport.stopbits")
    assert not isinstance(err.value, ProfileError)
