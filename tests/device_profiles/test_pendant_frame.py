"""CWRF/1 pendant frames: layout, faults, splitting, edge-triggered presses, reassembly."""

from __future__ import annotations

import copy
import functools
import json
import random
from typing import Any

import pytest
import yaml

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import Reading
from device_profiles.codecs.pendant_frame import CRC16, PendantFrameCodec
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.profiles import ProfileRegistry, builtin_profile_dir, parse_profile

MOMENTARY = "oem-rf433-button-pendant"
LATCHED = "oem-rf868-latched-pendant"
PID = "00A1B2C3"


@functools.cache
def codec(name: str = MOMENTARY) -> PendantFrameCodec:
    c = codec_for(ProfileRegistry.load().get(name))
    assert isinstance(c, PendantFrameCodec)
    return c


def raw_frame(c: PendantFrameCodec, message: bytes, counter: int = 1, pid: int = 0xA1B2C3) -> bytes:
    """A frame with a valid CRC around arbitrary message bytes (to reach deep faults)."""
    f = c.frame
    order = c.layout.byte_order
    content = pid.to_bytes(f.id_bytes, order) + counter.to_bytes(f.counter_bytes, order) + message
    content = bytes([len(content)]) + content
    return f.sync + content + f.crc(content).to_bytes(2, f.crc_byte_order)


def run(c: PendantFrameCodec, frames: list[bytes], state: dict[str, Any] | None = None):
    """decode + track a list of frames; returns (state, emitted readings)."""
    st = c.initial_state() if state is None else state
    out: list[Reading] = []
    for fr in frames:
        for r in c.decode(fr, "rx"):
            st, emitted = c.track(st, r)
            out += emitted
    return st, out


def status(counter: int, *, battery: int = 90, activity: int = 3, source: str = PID, **kw):
    values: dict[str, Any] = {"battery": battery, "activity": activity, "counter": counter, **kw}
    return Reading("status", values, source=source)


# -- CRC and layout --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CRC16))
def test_crc16_catalogue_check_values(name: str) -> None:
    crc = CRC16[name]
    assert crc(b"123456789") == crc.check


def test_golden_press_frame_layout() -> None:
    c = codec()
    frame = c.encode(Reading("press", {"button": "sos", "counter": 5}, source=PID), "rx")
    # sync AA55 | len 08 | id 00A1B2C3 | counter 0005 | type 01 | button 01 | CRC-16/CCITT-FALSE
    assert frame.hex() == "aa550800a1b2c3000501012985"
    crc = CRC16["CRC-16/CCITT-FALSE"](frame[2:-2])
    assert frame[-2:] == crc.to_bytes(2, "big")


def test_golden_latched_status_frame_is_little_endian_modbus_crc() -> None:
    c = codec(LATCHED)
    r = Reading(
        "status",
        {
            "sos": True,
            "boot": False,
            "battery": 77,
            "activity": 258,
            "temperature": -5,
            "counter": 9,
        },
        source="0A0B0C",
    )
    frame = c.encode(r, "rx")
    # sync 7EA5 | len 0a | id 0C0B0A (LE) | counter 09 | type 20 | flags 01 | 4D | 0201 | FB | CRC
    assert frame[:-2].hex() == "7ea50a0c0b0a0920014d0201fb"
    assert frame[-2:] == CRC16["CRC-16/MODBUS"](frame[2:-2]).to_bytes(2, "little")
    [decoded] = c.decode(frame, "rx")
    assert decoded == Reading("status", dict(r.values), urgent=True, source="0A0B0C")


@pytest.mark.parametrize(
    ("reading", "values"),
    [
        ("press", {"button": "sos"}),
        ("status", {"battery": 100, "activity": 65535, "boot": True}),
        ("status", {"battery": 0, "activity": 0, "boot": False}),
        ("battery", {"battery": 12}),
    ],
)
def test_scalar_messages_round_trip(reading: str, values: dict[str, Any]) -> None:
    c = codec()
    r = Reading(reading, {**values, "counter": 65535}, urgent=reading == "press", source=PID)
    assert c.decode(c.encode(r, "rx"), "rx") == [r]


def test_heartbeat_encodes_as_status() -> None:
    c = codec()
    frame = c.encode(
        Reading("heartbeat", {"battery": 50, "activity": 2, "counter": 1}, source=PID), "rx"
    )
    [r] = c.decode(frame, "rx")
    assert r.reading == "status" and r.values["battery"] == 50 and r.values["boot"] is False


@pytest.mark.parametrize(
    ("reading", "why"),
    [
        (Reading("press", {"button": "sos", "counter": 1}, source="not-hex"), "pendant id"),
        (Reading("press", {"button": "sos", "counter": 1}, source="1FFFFFFFFF"), "pendant id"),
        (Reading("press", {"button": "cancel", "counter": 1}, source=PID), "not one of"),
        (Reading("status", {"battery": 101, "activity": 0, "counter": 1}, source=PID), "outside"),
        (Reading("status", {"battery": 50, "activity": 0, "counter": "x"}, source=PID), "counter"),
        (Reading("impact", {}, source=PID), "impact_fragments"),
        (Reading("impact_fragment", {"counter": 1}, source=PID), "impact fragment values"),
        (Reading("checkin", {"counter": 1}, source=PID), "no 'checkin' message"),
    ],
)
def test_encode_rejects_bad_readings(reading: Reading, why: str) -> None:
    with pytest.raises(EncodeError, match=why):
        codec().encode(reading, "rx")


def test_latched_model_has_no_press_message() -> None:
    with pytest.raises(EncodeError, match="no 'press' message"):
        codec(LATCHED).encode(
            Reading("press", {"button": "sos", "counter": 1}, source="0A0B0C"), "rx"
        )


# -- decode faults ---------------------------------------------------------------------


def test_decode_faults_name_device_and_fault() -> None:
    c = codec()
    good = c.encode(status(3), "rx")
    cases: list[tuple[bytes, str]] = [
        (good[:-1] + bytes([good[-1] ^ 0x01]), "checksum"),
        (good[:-3], "truncated"),
        (good[:2], "truncated"),
        (good + b"\x00", "oversized"),
        (good[:2] + b"\xff" + good[3:], "oversized"),  # length field above max_length
        (good[:2] + b"\x03" + good[3:], "truncated"),  # length below id + counter + type
        (b"\x55\xaa" + good[2:], "sync"),
        (raw_frame(c, b"\x7f\x00"), "unknown_message"),
        (raw_frame(c, b"\x02\x00\x00"), "truncated"),  # status body of 2 of 4 bytes
        (raw_frame(c, b"\x02\x96\x00\x01\x00"), "range"),  # battery 150 %
        (raw_frame(c, b"\x01\x02"), "range"),  # button code 2 is not in the map
        (raw_frame(c, b""), "truncated"),  # no type code
        (b"", "truncated"),
    ]
    for frame, fault in cases:
        with pytest.raises(DecodeError) as info:
            c.decode(frame, "rx-1")
        assert (info.value.device, info.value.fault) == ("rx-1", fault), frame.hex()


def impact_message(
    c: PendantFrameCodec,
    *,
    window: int = 1,
    index: int = 0,
    count: int | None = None,
    total: int = 20,
    trigger: int = 5,
    peak_mg: int = 3000,
    samples: list[tuple[int, int, int]] | None = None,
) -> bytes:
    order = c.layout.byte_order
    spf = c.layout.impact.samples_per_fragment
    assert spf is not None
    if count is None:
        count = -(-total // spf)
    if samples is None:
        samples = [(0, 0, 1000)] * min(spf, total - index * spf)
    out = bytes([c.layout.messages["impact"].type_code, window, index, count])
    out += total.to_bytes(2, order) + trigger.to_bytes(2, order) + peak_mg.to_bytes(2, order)
    for s in samples:
        for v in s:
            out += v.to_bytes(2, order, signed=True)
    return out


@pytest.mark.parametrize(
    ("kwargs", "fault"),
    [
        ({"samples": [(0, 0, 8001)] * 8}, "range"),  # beyond +-8 g
        ({"samples": [(-8001, 0, 0)] * 8}, "range"),
        ({"total": 0}, "range"),
        ({"total": 1001}, "range"),  # max_samples
        ({"count": 2}, "range"),  # 20 samples need 3 fragments of 8
        ({"index": 3}, "range"),
        ({"trigger": 20}, "range"),
        ({"peak_mg": 20000}, "range"),  # peak_g resource max 13.9 g
        ({"samples": [(0, 0, 1000)] * 7}, "truncated"),
        ({"samples": [(0, 0, 1000)] * 9}, "oversized"),
    ],
)
def test_impact_fragment_faults(kwargs: dict[str, Any], fault: str) -> None:
    c = codec()
    with pytest.raises(DecodeError) as info:
        c.decode(raw_frame(c, impact_message(c, **kwargs)), "rx")
    assert info.value.fault == fault


def test_impact_fragment_with_partial_sample_is_truncated() -> None:
    c = codec()
    with pytest.raises(DecodeError, match="not \\(x, y, z\\) int16"):
        c.decode(raw_frame(c, impact_message(c)[:-1]), "rx")


def test_longer_status_body_from_newer_firmware_is_accepted(caplog) -> None:
    c = codec()
    [r] = c.decode(raw_frame(c, b"\x02\x50\x00\x07\x00\xee\xee"), "rx")
    assert r.values["battery"] == 80 and r.values["activity"] == 7
    assert "beyond the 4 known" in caplog.text


def test_decode_rejects_non_bytes() -> None:
    from device_profiles.codecs.base import MqttMessage

    with pytest.raises(DecodeError) as info:
        codec().decode(MqttMessage("t", b"x"), "rx")
    assert info.value.fault == "type"


# -- split -----------------------------------------------------------------------------


def test_split_resynchronizes_after_garbage_and_keeps_tail() -> None:
    c = codec()
    a = c.encode(status(1), "rx")
    b = c.encode(Reading("press", {"button": "sos", "counter": 2}, source=PID), "rx")
    buf = b"\x00\x13" + a + b"\x42\xaa\x99" + b + b[:6]
    frames, rest, garbage = c.split(buf)
    assert frames == [a, b]
    assert rest == b[:6]
    assert garbage == b"\x00\x13\x42\xaa\x99"


def test_split_rejects_oversized_length_field() -> None:
    c = codec()
    a = c.encode(status(1), "rx")
    frames, rest, garbage = c.split(b"\xaa\x55\xfe" + a)
    assert frames == [a] and rest == b""
    assert garbage == b"\xaa\x55\xfe"


def test_split_keeps_partial_sync_at_the_end() -> None:
    c = codec()
    for tail in (b"\xaa", b"\xaa\x55"):
        frames, rest, garbage = c.split(b"\x01\x02" + tail)
        assert (frames, rest, garbage) == ([], tail, b"\x01\x02")
    frames, rest, garbage = c.split(b"\x55")
    assert (frames, rest, garbage) == ([], b"", b"\x55")


def test_split_hands_truncated_frame_to_decode_and_recovers_next() -> None:
    c = codec()
    a = c.encode(status(1), "rx")
    b = c.encode(status(2), "rx")
    frames, rest, garbage = c.split(a[:7] + b)
    assert frames == [a[:7], b] and rest == b"" and garbage == b""
    with pytest.raises(DecodeError) as info:
        c.decode(frames[0], "rx")
    assert info.value.fault == "truncated"


def test_split_passes_bad_checksum_frame_to_decode() -> None:
    c = codec()
    a = c.encode(status(1), "rx")
    bad = a[:-1] + bytes([a[-1] ^ 0xFF])
    frames, _, _ = c.split(bad + a)
    assert frames == [bad, a]


def test_split_false_sync_in_noise_does_not_delay_a_complete_frame() -> None:
    # Noise holding "AA 55 <plausible length>" must not hold back a press behind it.
    c = codec()
    press = c.encode(Reading("press", {"button": "sos", "counter": 2}, source=PID), "rx")
    frames, rest, _ = c.split(b"\xaa\x55\x40\x01" + press)
    assert frames[-1] == press and rest == b""


def test_split_waits_for_more_when_frame_is_incomplete() -> None:
    c = codec()
    a = c.encode(status(1), "rx")
    rest = b""
    got: list[bytes] = []
    for i in range(len(a)):
        frames, rest, garbage = c.split(rest + a[i : i + 1])
        assert garbage == b""
        got += frames
    assert got == [a] and rest == b""


def test_split_handles_frame_containing_sync_bytes() -> None:
    c = codec()
    # pendant id AA55AA55 puts the sync pattern inside the frame
    a = c.encode(Reading("press", {"button": "sos", "counter": 0xAA55}, source="AA55AA55"), "rx")
    frames, rest, garbage = c.split(b"\xaa" + a + a)
    assert frames == [a, a] and rest == b"" and garbage == b"\xaa"


# -- track: presses --------------------------------------------------------------------


def press(counter: int, source: str = PID) -> Reading:
    return Reading("press", {"button": "sos", "counter": counter}, urgent=True, source=source)


def test_momentary_duplicates_are_one_press() -> None:
    c = codec()
    frame = c.encode(press(7), "rx")
    st, out = run(c, [frame, frame, frame])
    assert [r.reading for r in out] == ["press"]
    assert out[0].values == {"button": "sos"} and out[0].urgent and out[0].source == PID
    _, out = run(c, [c.encode(press(8), "rx")], st)
    assert [r.reading for r in out] == ["press"]


def test_same_counter_different_pendants_are_two_presses() -> None:
    c = codec()
    _, out = run(c, [c.encode(press(7), "rx"), c.encode(press(7, "00000001"), "rx")])
    assert [(r.reading, r.source) for r in out] == [("press", PID), ("press", "00000001")]


def test_latched_sos_repeated_is_one_press_and_relatch_is_second() -> None:
    c = codec(LATCHED)
    src = "0A0B0C"

    def st(counter: int, sos: bool) -> bytes:
        values = {"sos": sos, "battery": 80, "activity": counter, "temperature": 30}
        return c.encode(Reading("status", {**values, "counter": counter}, source=src), "rx")

    frames = [st(0, False)] + [st(i, True) for i in range(1, 11)] + [st(11, False), st(12, True)]
    state, out = run(c, frames)
    presses = [r for r in out if r.reading == "press"]
    assert len(presses) == 2
    assert all(p.urgent and p.values == {"button": "sos"} for p in presses)
    heartbeats = [r for r in out if r.reading == "heartbeat"]
    assert len(heartbeats) == 13
    assert "sos" not in heartbeats[0].values and heartbeats[0].values["temperature"] == 30
    json.dumps(state)  # the state is JSON


def test_latched_counter_wraps_and_stale_status_does_not_relatch() -> None:
    c = codec(LATCHED)  # 8-bit counter
    src = "0A0B0C"

    def st(counter: int, sos: bool, activity: int = 1) -> bytes:
        values = {"sos": sos, "battery": 80, "activity": activity, "temperature": 20}
        return c.encode(Reading("status", {**values, "counter": counter}, source=src), "rx")

    # 254 latched, 255 released, then a reordered stale 253 (latched) arrives late: it
    # must not re-latch. The counter wraps to 0 with the alarm latched again: a press.
    _, out = run(c, [st(254, True), st(255, False), st(253, True, activity=9), st(0, True)])
    names = [r.reading for r in out]
    assert names == ["press", "heartbeat", "heartbeat", "heartbeat", "press", "heartbeat"]
    # A big step back is a restart, not a reorder: its latch counts.
    _, out = run(c, [st(200, False), st(100, True)])
    assert [r.reading for r in out].count("press") == 1


def test_boot_flag_resets_duplicate_memory() -> None:
    c = codec()
    frames = [c.encode(press(1), "rx")]
    frames.append(c.encode(status(0, boot=True), "rx"))  # pendant restarted
    frames.append(c.encode(press(1), "rx"))  # same counter, same content: a new press
    _, out = run(c, frames)
    assert [r.reading for r in out].count("press") == 2


def test_repeated_power_on_status_is_one_heartbeat_but_a_second_boot_counts() -> None:
    c = codec()
    boot = c.encode(status(0, boot=True), "rx")
    st, out = run(c, [boot, boot, boot])  # the radio repeats the power-on status
    assert [r.reading for r in out] == ["heartbeat"]
    # Pendant used a bit, then restarted with the very same power-on status.
    st, out = run(c, [c.encode(press(1), "rx"), boot, c.encode(press(1), "rx")], st)
    assert [r.reading for r in out] == ["press", "heartbeat", "press"]


def test_track_passes_foreign_readings_and_survives_bad_state() -> None:
    c = codec()
    other = Reading("something", {"a": 1})
    assert c.track(c.initial_state(), other) == (c.initial_state(), [other])
    for bad in ({"v": 99}, {"v": 1, "pendants": []}, {"v": 1, "pendants": {PID: "x"}}):
        _, out = c.track(bad, press(1))
        assert [r.reading for r in out] == ["press"]


def test_track_does_not_modify_input_state() -> None:
    c = codec()
    st0, _ = run(c, [c.encode(press(1), "rx")])
    snapshot = copy.deepcopy(st0)
    run(c, [c.encode(press(2), "rx")], st0)
    assert st0 == snapshot


def test_battery_report_becomes_battery_reading() -> None:
    c = codec()
    _, out = run(c, [c.encode(Reading("battery", {"battery": 9, "counter": 4}, source=PID), "rx")])
    assert out == [Reading("battery", {"battery": 9}, source=PID)]


# -- track: impact windows -------------------------------------------------------------


def window(n: int = 300, trigger: int = 100) -> tuple[list[float], list[float], list[float]]:
    x = [round(0.001 * (i % 50) - 0.02, 3) for i in range(n)]
    y = [round(-0.5 + 0.002 * (i % 7), 3) for i in range(n)]
    z = [1.0] * n
    x[trigger], y[trigger], z[trigger] = 3.1, -2.5, 7.999
    return x, y, z


def fragments(c: PendantFrameCodec, wid: int = 4, first_counter: int = 100, n: int = 300):
    x, y, z = window(n)
    vals = c.impact_fragments(wid, x, y, z, trigger_index=100, peak_g=8.9)
    frames = [
        c.encode(Reading("impact_fragment", {**v, "counter": first_counter + i}, source=PID), "rx")
        for i, v in enumerate(vals)
    ]
    return frames, (x, y, z)


def impacts(out: list[Reading]) -> list[Reading]:
    return [r for r in out if r.reading == "impact"]


def test_window_in_order_reassembles_exactly() -> None:
    c = codec()
    frames, (x, y, z) = fragments(c)
    assert len(frames) == 38  # 300 samples / 8 per fragment
    assert max(len(f) for f in frames) <= 2 + 1 + c.frame.max_length + 2
    st, out = run(c, frames)
    [imp] = out
    assert imp.urgent and imp.source == PID and imp.reading == "impact"
    v = imp.values
    assert (v["x"], v["y"], v["z"]) == (x, y, z)
    assert v["trigger_index"] == 100 and v["peak_g"] == 8.9
    assert v["rate_hz"] == 50 and v["range_g"] == 8.0
    assert v["complete"] is True and v["missing_samples"] == 0
    assert c.pending_windows(st) == {}


def test_window_shuffled_fragments_reassemble() -> None:
    c = codec()
    frames, (x, _, _) = fragments(c)
    random.Random(3).shuffle(frames)
    _, out = run(c, frames)
    [imp] = impacts(out)
    assert imp.values["x"] == x and imp.values["complete"] is True


def test_window_duplicate_and_late_fragments_are_ignored() -> None:
    c = codec()
    frames, _ = fragments(c)
    st, out = run(c, [*frames[:5], frames[2], *frames[5:]])
    assert len(impacts(out)) == 1
    st, out = run(c, [frames[3]], st)  # a late re-send after the window went out
    assert out == [] and c.pending_windows(st) == {}


def test_lost_fragment_window_emitted_when_next_window_starts() -> None:
    c = codec()
    frames, (x, _, _) = fragments(c, wid=4)
    nxt, _ = fragments(c, wid=5, first_counter=200)
    st, out = run(c, frames[:10] + frames[11:])  # fragment 10 lost
    assert out == [] and c.pending_windows(st) == {PID: 1}
    st, out = run(c, nxt[:1], st)
    [imp] = impacts(out)
    v = imp.values
    assert v["complete"] is False and v["missing_samples"] == 8 and v["window"] == 4
    vx, vz = v["x"], v["z"]
    assert isinstance(vx, list) and isinstance(vz, list) and len(vx) == 300
    assert vx[:80] == x[:80] and vx[88:] == x[88:]
    # samples 80..87 interpolated between x[79] and x[88]
    lo, hi = x[79], x[88]
    assert vx[84] == pytest.approx(lo + (hi - lo) * 5 / 9, abs=0.001)
    assert vz[80:88] == [1.0] * 8


def test_lost_last_fragment_emitted_after_slack_frames() -> None:
    c = codec()
    frames, _ = fragments(c)
    st, out = run(c, frames[:-1])
    assert out == []
    st, out = run(c, [c.encode(status(500), "rx")], st)
    assert [r.reading for r in out] == ["heartbeat"]  # slack 2: one frame is not enough
    st, out = run(c, [c.encode(press(501), "rx")], st)
    assert [r.reading for r in out] == ["impact", "press"]
    assert out[0].values["missing_samples"] == 300 - 37 * 8


def test_flush_emits_waiting_window_and_state_survives_json() -> None:
    c = codec()
    frames, _ = fragments(c)
    st, _ = run(c, frames[:20])
    st = json.loads(json.dumps(st))  # the agent persists the state between frames
    st, out = run(c, frames[21:30], st)
    assert out == []
    st, out = c.flush(st, source="someone-else")
    assert out == []
    st, out = c.flush(st)
    [imp] = out
    assert imp.values["missing_samples"] == 300 - 29 * 8
    assert c.pending_windows(st) == {}


def test_interleaved_pendants_on_one_receiver() -> None:
    c = codec()
    a, (xa, _, _) = fragments(c, wid=1)
    b = [
        c.encode(Reading("impact_fragment", {**v, "counter": i}, source="0000BEEF"), "rx")
        for i, v in enumerate(
            c.impact_fragments(1, [0.5] * 40, [0.0] * 40, [1.0] * 40, trigger_index=3, peak_g=2.6)
        )
    ]
    mixed = [f for pair in zip(a, b + [b""] * len(a), strict=False) for f in pair if f]
    _, out = run(c, mixed)
    by_src = {r.source: r for r in impacts(out)}
    assert set(by_src) == {PID, "0000BEEF"}
    assert by_src[PID].values["x"] == xa and by_src["0000BEEF"].values["x"] == [0.5] * 40


def test_fragmenting_clips_to_range_and_quantizes() -> None:
    c = codec()
    [frag] = c.impact_fragments(
        0, [9.5, -12.0, 0.0004], [0.0] * 3, [1.0] * 3, trigger_index=0, peak_g=9.0
    )
    assert frag["x"] == [8.0, -8.0, 0.0]
    with pytest.raises(EncodeError):
        c.impact_fragments(0, [0.0] * 1001, [0.0] * 1001, [0.0] * 1001, trigger_index=0, peak_g=1.0)
    with pytest.raises(EncodeError):
        c.impact_fragments(0, [0.0], [0.0], [0.0], trigger_index=1, peak_g=1.0)


# -- profiles --------------------------------------------------------------------------


def load_yaml(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((builtin_profile_dir() / f"{name}.yaml").read_text())
    return data


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["codec_options"].update(colour="red"), "codec_options"),
        (
            lambda d: d["codec_options"]["frame"].update(max_length=40),
            "codec_options.frame.max_length",
        ),
        (lambda d: d["codec_options"]["frame"].update(crc="CRC-99"), "codec_options.frame.crc"),
        (lambda d: d["codec_options"]["frame"].update(sync=[]), "codec_options.frame.sync"),
        (lambda d: d["codec_options"].update(button="toggle"), "codec_options.button"),
        (lambda d: d["codec_options"].update(sos_repeat_s=0), "codec_options.sos_repeat_s"),
        (lambda d: d["codec_options"].update(dedup_window=0), "codec_options.dedup_window"),
        (lambda d: d["codec_options"]["impact"].update(spf=3), "codec_options.impact"),
        (
            lambda d: d["codec_options"]["messages"]["battery"].update(type=1),
            "codec_options.messages.battery.type",
        ),
        (
            lambda d: d["codec_options"]["messages"]["status"].update(length=2),
            "codec_options.messages.status.length",
        ),
        (lambda d: d["codec_options"]["messages"].pop("press"), "codec_options.messages"),
        (
            lambda d: d["codec_options"]["trigger"].update(threshold_g=9.0),
            "codec_options.trigger.threshold_g",
        ),
        (
            lambda d: d["codec_options"]["impact"].update(max_samples=100),
            "codec_options.impact.max_samples",
        ),
        (
            lambda d: d["resources"][0]["read"]["press"].update(format="u9"),
            "resources[0].read.press.format",
        ),
        (
            lambda d: d["resources"][1]["read"].update(alarm={"offset": 0, "format": "u8"}),
            "resources[1].read.alarm",
        ),
        (
            lambda d: d.update(resources=[r for r in d["resources"] if r["name"] != "activity"]),
            "resources",
        ),
    ],
)
def test_profile_errors_name_the_key(mutate: Any, path: str) -> None:
    data = load_yaml(MOMENTARY)
    mutate(data)
    profile = parse_profile(data, source="p.yaml")
    with pytest.raises(ProfileError) as info:
        codec_for(profile)
    assert info.value.path == path and info.value.file == "p.yaml"


def test_latched_profile_rejects_press_message() -> None:
    data = load_yaml(LATCHED)
    data["codec_options"]["messages"]["press"] = {"type": 1, "length": 1}
    with pytest.raises(ProfileError, match="latched"):
        codec_for(parse_profile(data, source="p.yaml"))


def test_new_model_needs_only_yaml(tmp_path) -> None:
    """A third vendor: other sync, CRC, ids and type codes, a new status field: no code."""
    data = load_yaml(MOMENTARY)
    data["profile"] = "acme-pendant-x1"
    opts = data["codec_options"]
    opts["frame"].update(sync=[0x02], id_bytes=2, crc="CRC-16/XMODEM", crc_byte_order="little")
    opts["messages"]["status"] = {"type": 0x42, "length": 5}
    data["resources"].append(
        {
            "name": "steps",
            "type": "int",
            "min": 0,
            "max": 255,
            "read": {"status": {"offset": 4, "format": "u8"}},
        }
    )
    (tmp_path / "acme-pendant-x1.yaml").write_text(yaml.safe_dump(data))
    c = codec_for(ProfileRegistry.load(tmp_path).get("acme-pendant-x1"))
    assert isinstance(c, PendantFrameCodec)
    frame = c.encode(status(1, steps=12, source="BEEF"), "rx")
    assert frame[0] == 0x02
    _, out = run(c, [frame, frame])
    assert out == [Reading("heartbeat", {"battery": 90, "activity": 3, "steps": 12}, source="BEEF")]
