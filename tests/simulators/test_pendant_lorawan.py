"""A simulated LoRaWAN pendant publishing ChirpStack v4 uplinks to the real Mosquitto."""

from __future__ import annotations

import base64
import json
import math
import random

import pytest

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import MqttMessage, Reading
from device_profiles.codecs.chirpstack import ChirpStackPendantCodec
from device_profiles.codecs.pendant_payload import PendantCodecBase
from device_profiles.errors import DecodeError
from device_profiles.profiles import ProfileRegistry
from simulators.pendant_device import PendantDevice
from simulators.pendant_lorawan import PendantLoRaWanSimulator
from tests.simulators.mqtt_helpers import collect, subscriber

pytestmark = pytest.mark.integration

PROFILE = "oem-lorawan-pendant"
EUI = "70b3d57ed0001234"


class Gateway:
    """The agent's side: decode + track every uplink, counting faults."""

    def __init__(self) -> None:
        codec = codec_for(ProfileRegistry.load().get(PROFILE))
        assert isinstance(codec, ChirpStackPendantCodec)
        self.codec = codec
        self.state = codec.initial_state()
        self.readings: list[Reading] = []
        self.faults: list[str] = []

    def feed(self, messages: list[MqttMessage]) -> None:
        for m in messages:
            try:
                decoded = self.codec.decode(m, "lora-1")
            except DecodeError as exc:
                self.faults.append(exc.fault)
                continue
            for r in decoded:
                self.state, out = self.codec.track(self.state, r)
                self.readings += out

    def named(self, name: str) -> list[Reading]:
        return [r for r in self.readings if r.reading == name]


def simulator(mosquitto, topic_prefix: str, **kw) -> PendantLoRaWanSimulator:
    return PendantLoRaWanSimulator(
        ProfileRegistry.load().get(PROFILE),
        "pendant-12",
        dev_eui=EUI,
        application_id=topic_prefix,
        host=mosquitto.host,
        port=mosquitto.port,
        **kw,
    )


def uploads(trace: list[tuple[float, float, float]]) -> list[list[Reading]]:
    """The fragment uplinks of every window the profile's pendant uploads for ``trace``.

    Packed fragments hold as many samples as fit, so how many uplinks a window takes
    depends on the signal: ask the codec, as the simulator does.
    """
    codec = codec_for(ProfileRegistry.load().get(PROFILE))
    assert isinstance(codec, PendantCodecBase)
    return PendantDevice(codec, EUI).impact(trace, 200)[1]


def fall_trace(rate_hz: int = 200) -> list[tuple[float, float, float]]:
    still = [(0.02, -0.05, 1.0)] * (3 * rate_hz)
    fall = [(0.05, 0.1, 0.25)] * (rate_hz // 3)
    hit = [(2.5, -1.8, 5.5), (4.0, -3.0, 9.5), (1.5, -1.0, 3.0)] * 2
    lying = [(0.98, 0.05, 0.1)] * (5 * rate_hz)
    # A real accelerometer is never still: its noise is what the packed deltas cost.
    rng = random.Random(3)
    return [
        (x + rng.gauss(0, 0.02), y + rng.gauss(0, 0.02), z + rng.gauss(0, 0.02))
        for x, y, z in still + fall + hit + lying
    ]


async def test_uplinks_decode_with_fcnt_and_source(mosquitto, topic_prefix) -> None:
    topic = f"application/{topic_prefix}/device/+/event/+"
    async with subscriber(mosquitto.host, mosquitto.port, topic) as client:
        async with simulator(mosquitto, topic_prefix, fcnt=41) as sim:
            await sim.press()
            await sim.heartbeat(battery=80, activity=4)
            await sim.low_battery()
        messages = await collect(client, 3)
    docs = [json.loads(m.payload) for m in messages]
    assert [d["fCnt"] for d in docs] == [41, 42, 43]
    assert all(m.topic == f"application/{topic_prefix}/device/{EUI}/event/up" for m in messages)
    assert docs[0]["deviceInfo"]["deviceName"] == "pendant-12"
    gw = Gateway()
    gw.feed(messages)
    assert [r.reading for r in gw.readings] == ["press", "heartbeat", "battery"]
    assert all(r.source == EUI and r.time is not None for r in gw.readings)
    assert gw.readings[1].values == {"battery": 80, "activity": 4, "rssi": -80, "snr": 7.5}


async def test_faults_and_duplicates(mosquitto, topic_prefix) -> None:
    topic = f"application/{topic_prefix}/device/+/event/+"
    async with subscriber(mosquitto.host, mosquitto.port, topic) as client:
        async with simulator(mosquitto, topic_prefix) as sim:
            await sim.press()
            await sim.inject("duplicate")  # same uplink, same fCnt
            for fault in ("garbage", "truncated", "wrong_type"):
                await sim.inject(fault)
            await sim.press()
            with pytest.raises(ValueError):
                await sim.inject("bad_checksum")
            await sim.inject("battery_drain")
        messages = await collect(client, 7)
    gw = Gateway()
    gw.feed(messages)
    assert gw.faults == ["json", "json", "type"]
    assert len(gw.named("press")) == 2
    assert [r.values["battery"] for r in gw.named("heartbeat")] == [75]


async def test_impact_window_with_out_of_order_uplinks(mosquitto, topic_prefix) -> None:
    [frags] = uploads(fall_trace())
    assert len(frags) >= 2
    topic = f"application/{topic_prefix}/device/+/event/up"
    async with subscriber(mosquitto.host, mosquitto.port, topic) as client:
        async with simulator(mosquitto, topic_prefix) as sim:
            await sim.inject("out_of_order")  # the first fragment goes out after the second
            [w] = await sim.impact(fall_trace(), rate_hz=200)
        messages = await collect(client, len(frags))
    counters = [json.loads(m.payload)["fCnt"] for m in messages]
    assert counters[:2] == [1, 0]
    gw = Gateway()
    gw.feed(messages)
    [imp] = gw.named("impact")
    assert imp.values["x"] == list(w.x) and imp.values["complete"] is True
    assert imp.urgent and imp.source == EUI


async def test_lost_uplink_and_reconnect(mosquitto, topic_prefix) -> None:
    [frags] = uploads(fall_trace())
    start, xs = frags[1].values["start"], frags[1].values["x"]
    assert isinstance(start, int) and isinstance(xs, list)
    n = len(xs)
    topic = f"application/{topic_prefix}/device/+/event/up"
    async with subscriber(mosquitto.host, mosquitto.port, topic) as client:
        async with simulator(mosquitto, topic_prefix, outage_s=0.05) as sim:
            [w] = await sim.impact(fall_trace(), rate_hz=200, drop_fragments=[1])
            await sim.inject("disconnect")
            await sim.press()
            await sim.heartbeat()
        messages = await collect(client, len(frags) - 1 + 2)
    gw = Gateway()
    gw.feed(messages)
    # Two frames after the window went quiet close it (reorder_slack), gap interpolated.
    assert [r.reading for r in gw.readings] == ["press", "impact", "heartbeat"]
    imp = gw.named("impact")[0]
    assert imp.values["complete"] is False and imp.values["missing_samples"] == n
    # Every sample of the fragments that arrived is exact; only the lost ones are guessed.
    got = imp.values["x"]
    assert isinstance(got, list)
    kept = [k for k in range(len(w)) if not start <= k < start + n]
    assert [got[k] for k in kept] == [w.x[k] for k in kept]
    assert sim.reconnects == 1 and sim.dropped == 1


async def test_packed_uplinks_carry_the_window_exactly(mosquitto, topic_prefix) -> None:
    # The profile's encoding: impact_packed (type 0x11) uplinks within 222 bytes, half as
    # many as raw int16 fragments would take, decoded to the very same samples.
    profile = ProfileRegistry.load().get(PROFILE)
    assert profile.codec_options["impact"]["encoding"] == "packed"
    [frags] = uploads(fall_trace())
    topic = f"application/{topic_prefix}/device/+/event/up"
    async with subscriber(mosquitto.host, mosquitto.port, topic) as client:
        async with simulator(mosquitto, topic_prefix) as sim:
            [w] = await sim.impact(fall_trace(), rate_hz=200)
        messages = await collect(client, len(frags))
    data = [base64.b64decode(json.loads(m.payload)["data"]) for m in messages]
    assert all(d[0] == 0x11 and len(d) <= 222 for d in data)
    raw = sim.lora_codec.impact_fragments(
        0, w.x, w.y, w.z, trigger_index=w.trigger_index, peak_g=w.peak_g, encoding="raw"
    )
    assert len(data) * 3 <= len(raw) * 2, (len(data), len(raw))
    gw = Gateway()
    gw.feed(messages)
    [imp] = gw.named("impact")
    assert (imp.values["x"], imp.values["y"], imp.values["z"]) == (list(w.x), list(w.y), list(w.z))
    assert imp.values["complete"] is True and imp.values["missing_samples"] == 0
    assert gw.faults == []


def brisk_walk(seconds: float, rate_hz: int = 200) -> list[tuple[float, float, float]]:
    """Upright walking with 1.9 g steps: fires the impact trigger, never turns the body."""
    out = []
    for i in range(int(seconds * rate_hz)):
        t = i / rate_hz
        out.append(
            (0.02 + 0.08 * math.sin(2 * math.pi * t), -0.05, 1.0 + 0.9 * math.sin(4 * math.pi * t))
        )
    return out


async def test_walking_windows_stay_on_the_pendant(mosquitto, topic_prefix) -> None:
    # The simulator runs the profile's trigger, posture filter included: a walk before
    # the fall fires the trigger again and again, but only the fall's window goes up.
    trace = brisk_walk(20) + fall_trace()
    rf = codec_for(ProfileRegistry.load().get("oem-rf433-button-pendant"))
    assert isinstance(rf, PendantCodecBase)
    unfiltered = PendantDevice(rf, "00A1B2C3").windows(trace, 200)
    assert len(unfiltered) >= 5
    topic = f"application/{topic_prefix}/device/+/event/up"
    async with subscriber(mosquitto.host, mosquitto.port, topic) as client:
        async with simulator(mosquitto, topic_prefix) as sim:
            [w] = await sim.impact(trace, rate_hz=200)
            await sim.heartbeat(battery=90)
        # The heartbeat right after the window's uplinks: nothing else was sent.
        messages = await collect(client, len(uploads(trace)[0]) + 1)
    assert w == unfiltered[-1]
    assert sim.pendant.suppressed == len(unfiltered) - 1
    gw = Gateway()
    gw.feed(messages)
    assert [r.reading for r in gw.readings] == ["impact", "heartbeat"]
    assert gw.named("impact")[0].values["x"] == list(w.x)
