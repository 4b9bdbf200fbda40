"""Property tests of the pendant codecs: no input crashes them, encode -> decode round-trips."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import Reading
from device_profiles.codecs.pendant_frame import PendantFrameCodec
from device_profiles.errors import DecodeError
from device_profiles.profiles import ProfileRegistry

MODELS = ("oem-rf433-button-pendant", "oem-rf868-latched-pendant")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def codec(name: str) -> PendantFrameCodec:
    c = codec_for(ProfileRegistry.load().get(name))
    assert isinstance(c, PendantFrameCodec)
    return c


models = st.sampled_from(MODELS).map(codec)


def pendant_id(c: PendantFrameCodec) -> st.SearchStrategy[str]:
    n = c.frame.id_bytes
    return st.integers(0, (1 << (8 * n)) - 1).map(lambda v: f"{v:0{2 * n}X}")


@st.composite
def readings(draw: st.DrawFn, c: PendantFrameCodec) -> Reading:
    """Any decoded-form reading the model can send."""
    roles = sorted(c.layout.messages)
    role = draw(st.sampled_from(roles))
    counter = draw(st.integers(0, c.counter_modulus - 1))
    source = draw(pendant_id(c))
    if role == "impact":
        imp = c.layout.impact
        total = draw(st.integers(1, imp.max_samples))
        count = imp.fragment_count(total)
        index = draw(st.integers(0, count - 1))
        spf = imp.samples_per_fragment
        assert spf is not None
        n = min(spf, total - index * spf)
        mg = st.integers(-imp.range_mg, imp.range_mg).map(lambda v: v / 1000)
        values: dict[str, Any] = {
            "window": draw(st.integers(0, 255)),
            "index": index,
            "count": count,
            "total": total,
            "trigger_index": draw(st.integers(0, min(total, 1000) - 1)),
            "peak_g": draw(st.integers(0, 13900)) / 1000,
            "x": draw(st.lists(mg, min_size=n, max_size=n)),
            "y": draw(st.lists(mg, min_size=n, max_size=n)),
            "z": draw(st.lists(mg, min_size=n, max_size=n)),
            "counter": counter,
        }
        return Reading("impact_fragment", values, urgent=True, source=source)
    values = {}
    for f in c.layout.messages[role].fields:
        res = c.profile.resource(f.resource)
        if f.bit is not None:
            values[f.resource] = draw(st.booleans())
        elif f.mapping is not None:
            values[f.resource] = draw(st.sampled_from(sorted(f.mapping.values())))
        else:
            lo = int(res.min) if res.min is not None else -128
            hi = int(res.max) if res.max is not None else 127
            values[f.resource] = draw(st.integers(lo, hi))
    values["counter"] = counter
    urgent = role == "press" or values.get("sos") is True
    return Reading(role, values, urgent=urgent, source=source)


@FAST
@given(data=st.data(), c=models)
def test_every_message_type_round_trips(data: st.DataObject, c: PendantFrameCodec) -> None:
    reading = data.draw(readings(c))
    frame = c.encode(reading, "rx")
    assert c.decode(frame, "rx") == [reading]
    assert c.split(frame) == ([frame], b"", b"")


@FAST
@given(c=models, blob=st.binary(max_size=300))
def test_no_byte_string_crashes_split_or_decode(c: PendantFrameCodec, blob: bytes) -> None:
    frames, rest, garbage = c.split(blob)
    assert sum(map(len, frames)) + len(rest) + len(garbage) == len(blob)
    assert len(rest) <= len(c.frame.sync) + 3 + c.frame.max_length
    for item in [*frames, blob, rest]:
        try:
            c.decode(item, "rx")
        except DecodeError as exc:
            assert exc.device == "rx" and exc.fault


@FAST
@given(c=models, data=st.data())
def test_frames_with_sync_prefix_and_random_tail_only_raise_decode_error(
    c: PendantFrameCodec, data: st.DataObject
) -> None:
    # Random bytes rarely start with the sync: aim the fuzzing at the header and body.
    length = data.draw(st.integers(0, 255))
    body = data.draw(st.binary(max_size=length + 4))
    blob = c.frame.sync + bytes([length]) + body
    with contextlib.suppress(DecodeError):
        c.decode(blob, "rx")
    content = blob[len(c.frame.sync) : len(c.frame.sync) + 1 + length]
    valid = c.frame.sync + content + c.frame.crc(content).to_bytes(2, c.frame.crc_byte_order)
    try:
        for r in c.decode(valid, "rx"):  # right CRC, arbitrary content
            c.track(c.initial_state(), r)
    except DecodeError:
        pass


@FAST
@given(
    c=models,
    data=st.data(),
    chunk_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30),
)
def test_frames_survive_garbage_and_arbitrary_read_sizes(
    c: PendantFrameCodec, data: st.DataObject, chunk_sizes: list[int]
) -> None:
    frames = [c.encode(data.draw(readings(c)), "rx") for _ in range(data.draw(st.integers(1, 5)))]
    sync0 = c.frame.sync[0]
    noise = st.binary(max_size=12).map(lambda b: bytes(x for x in b if x != sync0))
    stream = b"".join(data.draw(noise) + f for f in frames) + data.draw(noise)
    got: list[bytes] = []
    rest = b""
    pos = 0
    sizes = iter(chunk_sizes * (len(stream) // len(chunk_sizes) + 1) + [len(stream)])
    while pos < len(stream):
        step = next(sizes)
        out, rest, _ = c.split(rest + stream[pos : pos + step])
        got += out
        pos += step
    assert got == frames and rest == b""


@settings(max_examples=40, deadline=None)
@given(
    c=models,
    n=st.integers(1, 400),
    seed=st.randoms(use_true_random=False),
    lose=st.sets(st.integers(0, 70), max_size=3),
)
def test_window_fragments_reassemble_in_any_order(
    c: PendantFrameCodec, n: int, seed: Any, lose: set[int]
) -> None:
    x = [((i * 37) % 16001 - 8000) / 1000 for i in range(n)]
    y = [((i * 11) % 500) / 1000 for i in range(n)]
    z = [1.0] * n
    trig = n // 3
    frags = c.impact_fragments(9, x, y, z, trigger_index=trig, peak_g=4.2)
    frames = [
        c.encode(Reading("impact_fragment", {**v, "counter": i}, source="0A0B0C"), "rx")
        for i, v in enumerate(frags)
    ]
    kept = [f for i, f in enumerate(frames) if i not in lose] or frames[:1]
    seed.shuffle(kept)
    state = c.initial_state()
    out: list[Reading] = []
    for fr in kept:
        for r in c.decode(fr, "rx"):
            state, emitted = c.track(state, r)
            out += emitted
            state = json.loads(json.dumps(state))
    state, flushed = c.flush(state)
    [imp] = [r for r in out + flushed if r.reading == "impact"]
    v = imp.values
    vx = v["x"]
    assert isinstance(vx, list)
    assert v["trigger_index"] == trig and len(vx) == n
    assert v["complete"] is (len(kept) == len(frames))
    missing = v["missing_samples"]
    assert isinstance(missing, int)
    if missing == 0:
        assert (v["x"], v["y"], v["z"]) == (x, y, z)
    assert all(-8.0 <= s <= 8.0 for s in vx)
