"""CWPL/1 ``impact_packed``: lossless delta fragments, their limits, faults and reassembly.

Wire bytes come from the codec's own encoder (as the simulators send them) or are built
by hand here to reach each fault; nothing is mocked.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import Reading
from device_profiles.codecs.chirpstack import ChirpStackPendantCodec
from device_profiles.codecs.pendant_payload import (
    MIN_PACKED_FRAGMENT,
    PACKED_HEADER_SIZE,
    PendantCodecBase,
    pack_deltas,
    unzigzag,
    zigzag,
)
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.profiles import ProfileRegistry, builtin_profile_dir, parse_profile

LORA = "oem-lorawan-pendant"
RF = "oem-rf433-button-pendant"
EUI = "0101010101010101"
SISFALL = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "sisfall"
Axes = tuple[list[float], list[float], list[float]]


def load_yaml(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((builtin_profile_dir() / f"{name}.yaml").read_text())
    return data


def lora_data(range_g: float = 8.0, byte_order: str = "big", **impact: Any) -> dict[str, Any]:
    """The LoRaWAN pendant's profile with another sensor range / fragment options."""
    data = load_yaml(LORA)
    opts = data["codec_options"]
    opts["byte_order"] = byte_order
    opts["trigger"]["range_g"] = range_g
    opts["impact"].update(impact)
    for res in data["resources"]:
        if res["name"] in ("x", "y", "z"):
            res["min"], res["max"] = -range_g, range_g
        elif res["name"] == "range_g":
            res["min"] = res["max"] = range_g
    return data


@functools.cache
def lora_codec(
    range_g: float = 8.0, byte_order: str = "big", max_fragment_bytes: int = 222
) -> ChirpStackPendantCodec:
    data = lora_data(range_g, byte_order, max_fragment_bytes=max_fragment_bytes)
    c = codec_for(parse_profile(data, source=f"{LORA}-{range_g}-{byte_order}.yaml"))
    assert isinstance(c, ChirpStackPendantCodec)
    return c


def window(
    c: PendantCodecBase, axes: Axes, *, wid: int = 7, trigger: int = 0
) -> list[dict[str, Any]]:
    return c.impact_fragments(wid, *axes, trigger_index=trigger, peak_g=3.0)


def encode(c: PendantCodecBase, frags: list[dict[str, Any]], first_counter: int = 0) -> list[bytes]:
    return [
        c.encode_message(Reading("impact_fragment", {**v, "counter": first_counter + i}))
        for i, v in enumerate(frags)
    ]


class Gateway:
    """What the edge agent does with one pendant's messages: decode, track, count faults."""

    def __init__(self, c: PendantCodecBase) -> None:
        self.c = c
        self.state = c.initial_state()
        self.out: list[Reading] = []
        self.faults: list[str] = []
        self.counter = 1000

    def feed(self, messages: list[bytes], *, roundtrip_state: bool = True) -> None:
        for data in messages:
            self.counter += 1
            try:
                for r in self.c.decode_message(data, "p-1", counter=self.counter, source=EUI):
                    self.state, emitted = self.c.track(self.state, r)
                    self.out += emitted
            except DecodeError as exc:
                self.faults.append(exc.fault)
            if roundtrip_state:  # the agent persists the state as JSON
                self.state = json.loads(json.dumps(self.state))

    def flush(self) -> None:
        self.state, emitted = self.c.flush(self.state)
        self.out += emitted

    def impacts(self) -> list[Reading]:
        return [r for r in self.out if r.reading == "impact"]


def mg(axes: Any) -> list[list[int]]:
    return [[round(v * 1000) for v in a] for a in axes]


# -- signals ---------------------------------------------------------------------------


def constant(n: int, g: float) -> Axes:
    return [0.02] * n, [-0.05] * n, [1.0] * n


def ramp(n: int, g: float) -> Axes:
    return [i / 1000 for i in range(n)], [-i / 1000 for i in range(n)], [1.0] * n


def noise(n: int, g: float) -> Axes:
    rng = random.Random(n)
    return (
        [round(rng.gauss(0, 0.05), 3) for _ in range(n)],
        [round(rng.gauss(0, 0.05), 3) for _ in range(n)],
        [round(1 + rng.gauss(0, 0.05), 3) for _ in range(n)],
    )


def full_scale_steps(n: int, g: float) -> Axes:
    """Rest, then full-scale jumps between +-range: the widest deltas there are."""
    x = [0.0 if i < n // 3 else (g if (i // 5) % 2 else -g) for i in range(n)]
    return x, [-v for v in x], [1.0] * n


def alternating(n: int, g: float) -> Axes:
    x = [g if i % 2 else -g for i in range(n)]
    return x, [-v for v in x], x


def uniform(n: int, g: float) -> Axes:
    rng = random.Random(99)
    x, y, z = ([rng.uniform(-g, g) for _ in range(n)] for _ in range(3))
    return x, y, z


SIGNALS: dict[str, Callable[[int, float], Axes]] = {
    "constant": constant,
    "ramp": ramp,
    "noise": noise,
    "full_scale_steps": full_scale_steps,
    "alternating": alternating,
    "uniform": uniform,
}


def test_zigzag_table() -> None:
    table = [(0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4), (65535, 131070), (-65535, 131069)]
    for value, code in table:
        assert zigzag(value) == code and unzigzag(code) == value
    assert all(unzigzag(zigzag(v)) == v for v in range(-70000, 70000, 7))


@pytest.mark.parametrize("signal", sorted(SIGNALS))
@pytest.mark.parametrize(
    ("range_g", "widest"),
    [(8.0, 15), (16.0, 16), (32.767, 17)],  # widest zig-zag delta: (4 * range_mg).bit_length()
)
@pytest.mark.parametrize("n", [1, 2, 9, 350, 1000])
def test_round_trip_is_exactly_the_raw_window(
    signal: str, range_g: float, widest: int, n: int
) -> None:
    c = lora_codec(range_g)
    axes = SIGNALS[signal](n, range_g)
    raw = c.impact_fragments(7, *axes, trigger_index=n // 2, peak_g=3.0, encoding="raw")
    packed = c.impact_fragments(7, *axes, trigger_index=n // 2, peak_g=3.0, encoding="packed")
    packed_bytes = encode(c, packed)
    assert all(len(m) <= 222 for m in packed_bytes)
    assert all(m[0] == 0x11 for m in packed_bytes)
    gw_raw, gw_packed = Gateway(c), Gateway(c)
    gw_raw.feed(encode(c, raw))
    gw_packed.feed(packed_bytes)
    [a], [b] = gw_raw.impacts(), gw_packed.impacts()
    assert a.values == b.values  # bit for bit: same milli-g integers, same floats
    assert b.values["complete"] is True and b.values["missing_samples"] == 0
    assert mg([b.values[k] for k in "xyz"]) == mg(
        [[max(-range_g, min(range_g, v)) for v in a_] for a_ in axes]
    )
    if signal in ("alternating", "full_scale_steps") and n >= 9:
        # Every fragment's first block holds a jump from -range to +range (or back).
        widths = [_first_width(m, axis) for m in packed_bytes for axis in range(3) if _n(m) > 1]
        assert max(widths) == widest
    if signal == "constant" and n > 1:
        assert len(packed_bytes) <= 2 and _first_width(packed_bytes[0], 0) == 0


def _n(message: bytes) -> int:
    return int.from_bytes(message[12:14], "big")


def _first_width(message: bytes, axis: int) -> int:
    """Width of ``axis`` in the first block of a big-endian packed message."""
    stream = int.from_bytes(message[1 + PACKED_HEADER_SIZE :], "big")
    bits = 8 * (len(message) - 1 - PACKED_HEADER_SIZE)
    pos = 0
    deltas = min(8, _n(message) - 1)
    for a in range(axis + 1):
        width = (stream >> (bits - pos - 5)) & 31
        if a == axis:
            return width
        pos += 5 + width * deltas
    raise AssertionError


@pytest.mark.parametrize("max_bytes", [MIN_PACKED_FRAGMENT, 100, 115, 222, 242])
@pytest.mark.parametrize("signal", ["noise", "alternating", "full_scale_steps", "uniform"])
def test_every_fragment_fits_the_limit_and_is_filled(max_bytes: int, signal: str) -> None:
    c = lora_codec(32.767, max_fragment_bytes=max_bytes)
    axes = SIGNALS[signal](1000, 32.767)
    frags = window(c, axes)
    messages = encode(c, frags)
    assert all(len(m) <= max_bytes for m in messages)
    # Greedy: one more sample would not have fitted (the last fragment ends the window).
    for v in frags[:-1]:
        lo, hi = v["start"], v["start"] + len(v["x"]) + 1
        longer = {**v, "x": axes[0][lo:hi], "y": axes[1][lo:hi], "z": axes[2][lo:hi]}
        with pytest.raises(EncodeError, match="max_fragment_bytes"):
            c.encode_message(Reading("impact_fragment", {**longer, "counter": 0}))
    gw = Gateway(c)
    gw.feed(messages)
    [imp] = gw.impacts()
    assert mg([imp.values[k] for k in "xyz"]) == mg(axes)


def test_packed_takes_half_the_bytes_of_raw_on_movement() -> None:
    c = lora_codec()
    axes = noise(350, 8.0)
    raw = encode(c, c.impact_fragments(1, *axes, trigger_index=150, peak_g=2.0, encoding="raw"))
    packed = encode(c, window(c, axes))
    assert len(raw) == 10 and len(packed) <= 6
    assert sum(map(len, packed)) < 0.6 * sum(map(len, raw))


@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_byte_order_applies_to_the_header_not_the_bit_stream(
    byte_order: Literal["big", "little"],
) -> None:
    c = lora_codec(byte_order=byte_order)
    axes = noise(120, 8.0)
    [m, *_] = encode(c, window(c, axes))
    assert int.from_bytes(m[4:6], byte_order) == 120  # total
    assert int.from_bytes(m[14:16], byte_order, signed=True) == round(axes[0][0] * 1000)
    gw = Gateway(c)
    gw.feed(encode(c, window(c, axes)))
    assert mg([gw.impacts()[0].values[k] for k in "xyz"]) == mg(axes)


# -- loss, order, duplicates -----------------------------------------------------------


@pytest.mark.parametrize("lost", [0, 1, "last"])
def test_a_lost_fragment_loses_only_its_samples(lost: int | str) -> None:
    c = lora_codec()
    axes = noise(350, 8.0)
    frags = window(c, axes)
    assert len(frags) >= 3
    k = len(frags) - 1 if lost == "last" else int(lost)
    gone = frags[k]
    messages = encode(c, frags)
    gw = Gateway(c)
    gw.feed(messages[:k] + messages[k + 1 :])
    assert gw.impacts() == []  # still waiting for the lost fragment
    gw.flush()  # the runtime's reassembly timeout
    [imp] = gw.impacts()
    assert imp.values["complete"] is False
    assert imp.values["missing_samples"] == len(gone["x"])
    lo, hi = gone["start"], gone["start"] + len(gone["x"])
    for name, axis in zip("xyz", mg(axes), strict=True):
        got = mg([imp.values[name]])[0]
        assert len(got) == 350
        assert got[:lo] == axis[:lo] and got[hi:] == axis[hi:]


@pytest.mark.parametrize("seed", range(6))
def test_fragments_in_any_order(seed: int) -> None:
    c = lora_codec()
    axes = full_scale_steps(600, 8.0)
    messages = encode(c, window(c, axes))
    assert len(messages) >= 4
    random.Random(seed).shuffle(messages)
    gw = Gateway(c)
    gw.feed(messages)
    [imp] = gw.impacts()
    assert imp.values["complete"] is True and mg([imp.values["x"]])[0] == mg(axes)[0]


def test_duplicates_and_late_fragments_are_dropped() -> None:
    c = lora_codec()
    axes = noise(350, 8.0)
    messages = encode(c, window(c, axes))
    gw = Gateway(c)
    # A fragment published twice by the network server (same fCnt) counts once.
    for r in c.decode_message(messages[0], "p-1", counter=5, source=EUI) * 2:
        gw.state, out = c.track(gw.state, r)
        gw.out += out
    gw.feed(messages[2:])
    gw.feed([messages[0]])  # the same fragment again under another counter: no effect
    assert gw.impacts() == []
    gw.feed([messages[1]])
    [imp] = gw.impacts()
    assert imp.values["complete"] is True
    gw.feed([messages[1]])  # a late copy of an emitted window's fragment
    assert len(gw.impacts()) == 1 and gw.faults == []


def test_another_window_closes_a_partial_one() -> None:
    c = lora_codec()
    first = encode(c, window(c, noise(350, 8.0), wid=1))
    second = encode(c, window(c, noise(300, 8.0), wid=2))
    gw = Gateway(c)
    gw.feed(first[1:] + second)
    a, b = gw.impacts()
    assert (a.values["window"], a.values["complete"]) == (1, False)
    assert (b.values["window"], b.values["complete"]) == (2, True)


# -- malformed fragments ---------------------------------------------------------------


def packed(
    *,
    window_id: int = 3,
    index: int = 0,
    count: int = 1,
    total: int = 20,
    trigger: int = 5,
    peak_mg: int = 3000,
    start: int = 0,
    n: int | None = None,
    axes: list[list[int]] | None = None,
    stream: bytes | None = None,
    type_code: int = 0x11,
) -> bytes:
    """A big-endian packed fragment from explicit fields (consistent unless told)."""
    if axes is None:
        axes = [[i % 7 for i in range(20)], [0] * 20, [1000] * 20]
    if n is None:
        n = len(axes[0])
    out = bytes([type_code, window_id, index, count])
    for v in (total, trigger, peak_mg, start, n):
        out += v.to_bytes(2, "big")
    out += b"".join(a[0].to_bytes(2, "big", signed=True) for a in axes)
    return out + (pack_deltas(axes) if stream is None else stream)


def _good_stream() -> bytes:
    s = pack_deltas([[i % 7 for i in range(20)], [0] * 20, [1000] * 20])
    assert s[-1] & 1 == 0  # 121 bits: 7 bits of padding
    return s


MALFORMED: list[tuple[str, bytes, str, str]] = [
    ("header cut", packed()[:15], "truncated", "header"),
    ("bit stream cut", packed()[:-2], "truncated", "bit stream ends"),
    ("no bit stream", packed(stream=b""), "truncated", "bit stream ends"),
    ("byte after the stream", packed() + b"\x00", "oversized", "after the"),
    (
        "padding not zero",
        packed(stream=_good_stream()[:-1] + bytes([_good_stream()[-1] | 1])),
        "encoding",
        "padding",
    ),
    ("width above 17", packed(stream=b"\xf8" + _good_stream()[1:]), "range", "width 31"),
    ("empty window", packed(total=0, axes=[[0], [0], [0]]), "range", "window of 0"),
    ("beyond max_samples", packed(total=1001, count=1, n=20), "range", "max 1000"),
    ("index beyond count", packed(index=1, count=1), "range", "fragment 1/1"),
    ("more fragments than samples", packed(count=21), "range", "fragment 0/21"),
    (
        "samples beyond the window",
        packed(total=20, start=5, index=1, count=2),
        "range",
        "samples 5..24",
    ),
    ("no samples", packed(n=0, stream=b""), "range", "samples 0..-1"),
    (
        "first fragment not at 0",
        packed(total=40, start=20, count=2),
        "inconsistent",
        "must start at 0",
    ),
    (
        "last fragment short of the end",
        packed(total=40, index=1, count=2, start=0),
        "inconsistent",
        "must start at 0",
    ),
    (
        "middle fragment at the end",
        packed(total=40, index=1, count=3, start=20),
        "inconsistent",
        "only the last",
    ),
    ("trigger outside", packed(trigger=20), "range", "trigger_index 20"),
    (
        "first sample beyond range",
        packed(axes=[[8001] * 20, [0] * 20, [0] * 20]),
        "range",
        "first sample",
    ),
    (
        "delta beyond range",
        packed(axes=[[7990 + i for i in range(20)], [0] * 20, [0] * 20]),
        "range",
        "x=8001",
    ),
    ("peak beyond its resource", packed(peak_mg=14000), "range", "peak_g"),
    (
        "longer than max_fragment_bytes",
        packed(
            total=300, axes=[[(i * 4099) % 16000 - 8000 for i in range(300)], [0] * 300, [0] * 300]
        ),
        "oversized",
        "max_fragment_bytes 222",
    ),
]


@pytest.mark.parametrize(
    ("name", "message", "fault", "detail"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_fragments_are_typed_counted_and_survived(
    name: str, message: bytes, fault: str, detail: str
) -> None:
    c = lora_codec()
    with pytest.raises(DecodeError) as info:
        c.decode_message(message, "p-1", counter=1, source=EUI)
    assert info.value.fault == fault and detail in info.value.detail, info.value.detail
    # The gateway counts it and goes on: the next window arrives whole.
    gw = Gateway(c)
    good = encode(c, window(c, noise(200, 8.0)))
    gw.feed([message, *good])
    assert gw.faults == [fault]
    [imp] = gw.impacts()
    assert imp.values["complete"] is True


def test_the_hand_built_fragment_is_valid() -> None:
    [r] = lora_codec().decode_message(packed(), "p-1", counter=1, source=EUI)
    assert r.values["x"] == [(i % 7) / 1000 for i in range(20)]
    assert r.values["start"] == 0 and r.values["total"] == 20


def test_overlapping_fragments_of_one_window_are_inconsistent() -> None:
    c = lora_codec()
    x = [[i % 7 for i in range(60)], [0] * 60, [1000] * 60]

    def part(index: int, start: int, n: int) -> bytes:
        return packed(
            total=60, count=3, index=index, start=start, axes=[a[start : start + n] for a in x]
        )

    gw = Gateway(c)
    gw.feed([part(1, 20, 20)])
    gw.feed([part(2, 30, 30)])  # overlaps fragment 1: samples 30..39 twice
    gw.feed([part(1, 25, 15)])  # fragment 1 again, with other samples
    assert gw.faults == ["inconsistent", "inconsistent"]
    gw.feed([part(0, 0, 20), part(2, 40, 20)])
    assert gw.faults == ["inconsistent", "inconsistent"]
    [imp] = gw.impacts()
    assert imp.values["complete"] is True and mg([imp.values["x"]])[0] == x[0]


def test_the_tracker_raises_decode_error_through_the_edge_agent_path() -> None:
    # edge_agent.ingest counts DecodeError from track() under its fault and keeps the
    # device's previous state: the fragment is dropped, the window is not.
    c = lora_codec()
    [a] = c.decode_message(
        packed(total=60, count=3, index=1, start=20, n=20, axes=[[0] * 20, [0] * 20, [0] * 20]),
        "p",
        counter=1,
        source=EUI,
    )
    [b] = c.decode_message(
        packed(total=60, count=3, index=2, start=30, n=30, axes=[[0] * 30, [0] * 30, [0] * 30]),
        "p",
        counter=2,
        source=EUI,
    )
    state, _ = c.track(c.initial_state(), a)
    with pytest.raises(DecodeError) as info:
        c.track(state, b)
    assert info.value.fault == "inconsistent" and "overlaps fragment 1" in info.value.detail


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=240))
def test_no_packed_body_crashes_decode_or_track(body: bytes) -> None:
    c = lora_codec()
    with contextlib.suppress(DecodeError):
        for r in c.decode_message(b"\x11" + body, "p", counter=1, source=EUI):
            c.track(c.initial_state(), r)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_packed_fragments_only_raise_decode_error(data: st.DataObject) -> None:
    c = lora_codec()
    messages = encode(c, window(c, noise(350, 8.0)))
    m = bytearray(data.draw(st.sampled_from(messages)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(1, len(m) - 1))
        m[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(m)))
    gw = Gateway(c)
    gw.feed([bytes(m[:cut]), *messages])  # whatever it was, the process goes on
    gw.flush()
    assert gw.impacts()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    samples=st.lists(st.tuples(*[st.integers(-8000, 8000)] * 3), min_size=1, max_size=400),
    seed=st.randoms(use_true_random=False),
)
def test_any_window_round_trips_in_any_order(
    samples: list[tuple[int, int, int]], seed: Any
) -> None:
    c = lora_codec()
    x, y, z = ([s[a] / 1000 for s in samples] for a in range(3))
    axes = (x, y, z)
    messages = encode(c, window(c, axes, trigger=len(samples) - 1))
    assert all(len(m) <= 222 for m in messages)
    for m in messages:  # the decoded form encodes back to the same bytes
        [r] = c.decode_message(m, "p", counter=1, source=EUI)
        assert c.encode_message(r) == m
    seed.shuffle(messages)
    gw = Gateway(c)
    gw.feed(messages)
    [imp] = gw.impacts()
    assert mg([imp.values[k] for k in "xyz"]) == [[s[a] for s in samples] for a in range(3)]


# -- through ChirpStack JSON -----------------------------------------------------------


def test_a_packed_window_through_chirpstack_json_with_garbage_between() -> None:
    c = lora_codec()
    axes = noise(350, 8.0)
    frags = window(c, axes)
    uplinks = [
        c.uplink(Reading("impact_fragment", {**v, "counter": 10 + i}, source=EUI), dev_eui=EUI)
        for i, v in enumerate(frags)
    ]
    bad = c.uplink(Reading("battery", {"battery": 5, "counter": 99}, source=EUI), dev_eui=EUI)
    doc = json.loads(bad.payload)
    doc["data"] = base64.b64encode(packed()[:-3]).decode()
    bad = type(bad)(bad.topic, json.dumps(doc).encode())
    state = c.initial_state()
    out: list[Reading] = []
    faults: list[str] = []
    for m in [uplinks[0], bad, *uplinks[1:]]:
        try:
            for r in c.decode(m, "lora"):
                state, emitted = c.track(state, r)
                out += emitted
        except DecodeError as exc:
            faults.append(exc.fault)
    assert faults == ["truncated"]
    [imp] = out
    assert mg([imp.values[k] for k in "xyz"]) == mg(axes) and imp.source == EUI


# -- profiles --------------------------------------------------------------------------


def _impact(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["codec_options"]["impact"].update(changes)


def _message(role: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["codec_options"]["messages"][role].update(changes)


def _undeclare_packed(d: dict[str, Any]) -> None:
    d["codec_options"]["messages"].pop("impact_packed")


def _raw_with_packed_size(d: dict[str, Any]) -> None:
    _undeclare_packed(d)
    d["codec_options"]["impact"]["encoding"] = "raw"


def _packed_only_too_long(d: dict[str, Any]) -> None:
    d["codec_options"]["messages"].pop("impact")
    impact = d["codec_options"]["impact"]
    impact.pop("samples_per_fragment")
    # A 73-byte fragment holds 9 samples at the widest deltas: 255 of them, 2295.
    impact.update(max_fragment_bytes=MIN_PACKED_FRAGMENT, max_samples=3000)


PROFILE_ERRORS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("bad encoding", _impact(encoding="zip"), "codec_options.impact.encoding", "'raw'"),
    (
        "fragment limit too small",
        _impact(max_fragment_bytes=60),
        "codec_options.impact.max_fragment_bytes",
        f"[{MIN_PACKED_FRAGMENT}, 255]",
    ),
    (
        "fragment limit not an integer",
        _impact(max_fragment_bytes="222"),
        "codec_options.impact.max_fragment_bytes",
        "integer",
    ),
    (
        "beyond a LoRaWAN uplink",
        _impact(max_fragment_bytes=250),
        "codec_options.impact.max_fragment_bytes",
        "242 bytes of FRMPayload",
    ),
    (
        "raw fragments beyond a LoRaWAN uplink",
        _impact(samples_per_fragment=40),
        "codec_options.impact.samples_per_fragment",
        "242 bytes of FRMPayload",
    ),
    ("packed but not declared", _undeclare_packed, "codec_options.messages", "'impact_packed'"),
    (
        "size of an undeclared message",
        _raw_with_packed_size,
        "codec_options.impact.max_fragment_bytes",
        "does not declare",
    ),
    (
        "length on a packed message",
        _message("impact_packed", length=100),
        "codec_options.messages.impact_packed.length",
        "max_fragment_bytes",
    ),
    (
        "type code taken",
        _message("impact_packed", type=0x10),
        "codec_options.messages.impact_packed.type",
        "already used",
    ),
    (
        "range beyond int16 milli-g",
        lambda d: d["codec_options"]["trigger"].update(range_g=40.0),
        "codec_options.trigger.range_g",
        "32.767",
    ),
    (
        "max_samples beyond 255 worst-case fragments",
        _packed_only_too_long,
        "codec_options.impact.max_samples",
        "[1, 2295]",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "path", "message"), PROFILE_ERRORS, ids=[e[0] for e in PROFILE_ERRORS]
)
def test_profile_errors_name_the_option(
    name: str, mutate: Callable[[dict[str, Any]], None], path: str, message: str
) -> None:
    data = lora_data()
    mutate(data)
    with pytest.raises(ProfileError) as info:
        codec_for(parse_profile(data, source="p.yaml"))
    assert info.value.path == path and info.value.file == "p.yaml", info.value
    assert message in info.value.message, info.value.message


def test_a_packed_only_profile_needs_no_raw_sizes() -> None:
    data = lora_data()
    data["codec_options"]["messages"].pop("impact")
    data["codec_options"]["impact"].pop("samples_per_fragment")
    c = codec_for(parse_profile(data, source="p.yaml"))
    assert isinstance(c, PendantCodecBase)
    assert c.layout.impact.samples_per_fragment is None and c.layout.max_message == 222
    with pytest.raises(EncodeError, match="no 'impact' message"):
        c.impact_fragments(0, [0.0], [0.0], [1.0], trigger_index=0, peak_g=1.0, encoding="raw")
    with pytest.raises(DecodeError) as info:  # raw fragments are not this model's
        c.decode_message(b"\x10" + bytes(15), "p", counter=1, source=EUI)
    assert info.value.fault == "unknown_message"
    data["codec_options"]["impact"]["samples_per_fragment"] = 36
    with pytest.raises(ProfileError) as err:
        codec_for(parse_profile(data, source="p.yaml"))
    assert err.value.path == "codec_options.impact.samples_per_fragment"


def test_the_rf_pendant_stays_raw() -> None:
    c = codec_for(ProfileRegistry.load().get(RF))
    assert isinstance(c, PendantCodecBase)
    assert c.layout.impact.encoding == "raw" and "impact_packed" not in c.layout.messages
    frags = c.impact_fragments(0, [0.1] * 20, [0.0] * 20, [1.0] * 20, trigger_index=0, peak_g=1.0)
    assert all("start" not in f for f in frags) and len(frags) == 3  # 8 samples a fragment
    with pytest.raises(EncodeError, match="no 'impact_packed' message"):
        c.impact_fragments(
            0, [0.1] * 20, [0.0] * 20, [1.0] * 20, trigger_index=0, peak_g=1.0, encoding="packed"
        )


def test_the_lorawan_pendant_sends_packed() -> None:
    c = codec_for(ProfileRegistry.load().get(LORA))
    assert isinstance(c, PendantCodecBase)
    imp = c.layout.impact
    assert (imp.encoding, imp.max_fragment_bytes, imp.samples_per_fragment) == ("packed", 222, 36)
    assert c.layout.messages["impact_packed"].type_code == 0x11


# -- real windows ----------------------------------------------------------------------


@pytest.mark.dataset
@pytest.mark.skipif(
    not (SISFALL / "sisfall_train.npz").exists(), reason=f"SisFall not found at {SISFALL}"
)
def test_real_sisfall_windows_round_trip_exactly() -> None:
    from stream.fall.data import load_recordings, trigger_windows

    c = lora_codec()
    cfg = c.layout.trigger
    rec = load_recordings(SISFALL / "sisfall_train.npz")
    picked = [
        i for i in range(len(rec)) if rec.trial[i] == 1 and rec.subject[i] in ("SA01", "SE02")
    ]
    windows = [w for i in picked[:40] for w in trigger_windows(rec.at_rate(i, cfg.rate_hz), cfg)]
    assert len(windows) >= 10
    for w in windows:
        raw = c.impact_fragments(
            1, w.x, w.y, w.z, trigger_index=w.trigger_index, peak_g=w.peak_g, encoding="raw"
        )
        messages = encode(c, window(c, (list(w.x), list(w.y), list(w.z)), trigger=w.trigger_index))
        assert all(len(m) <= 222 for m in messages)
        assert sum(map(len, messages)) < sum(map(len, encode(c, raw)))
        gw = Gateway(c)
        gw.feed(messages)
        [imp] = gw.impacts()
        assert (imp.values["x"], imp.values["y"], imp.values["z"]) == (
            list(w.x),
            list(w.y),
            list(w.z),
        )
