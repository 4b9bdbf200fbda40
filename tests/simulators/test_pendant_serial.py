"""Simulated RF pendants on a real PTY, read with pyserial and decoded through the profile."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator

import pytest
import serial

from device_profiles.codecs import codec_for
from device_profiles.codecs.base import Reading
from device_profiles.codecs.pendant_frame import PendantFrameCodec
from device_profiles.errors import DecodeError
from device_profiles.pendant_trigger import TriggerConfig
from device_profiles.profiles import ProfileRegistry
from simulators.pendant_serial import PendantSerialSimulator

pytestmark = pytest.mark.integration

MOMENTARY = "oem-rf433-button-pendant"
LATCHED = "oem-rf868-latched-pendant"
WAIT_S = 15.0  # bounds a hung test only; frames on a PTY arrive in milliseconds


class Receiver:
    """The gateway's side of the port: pyserial in a thread, then split + decode + track."""

    def __init__(self, codec: PendantFrameCodec, port: str):
        self.codec = codec
        self.ser = serial.Serial(port, 115200, timeout=0.05)
        self._lock = threading.Lock()
        self._incoming = bytearray()
        self._stop = threading.Event()
        self.error: Exception | None = None
        self.rest = b""
        self.received = 0
        self.garbage = 0
        self.faults: list[str] = []
        self.state = codec.initial_state()
        self.readings: list[Reading] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.ser.read(4096)
            except (serial.SerialException, OSError) as exc:
                self.error = exc
                return
            if data:
                with self._lock:
                    self._incoming += data

    def process(self) -> None:
        with self._lock:
            data, self._incoming = bytes(self._incoming), bytearray()
        self.received += len(data)
        frames, self.rest, garbage = self.codec.split(self.rest + data)
        self.garbage += len(garbage)
        for frame in frames:
            try:
                decoded = self.codec.decode(frame, "rf-1")
            except DecodeError as exc:
                self.faults.append(exc.fault)
                continue
            for r in decoded:
                self.state, out = self.codec.track(self.state, r)
                self.readings += out

    def flush(self) -> None:
        self.state, out = self.codec.flush(self.state)
        self.readings += out

    async def until(self, cond: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            self.process()
            if cond():
                return
            if self.error is not None or loop.time() > deadline:
                raise AssertionError(
                    f"condition not met: {self.named()} faults={self.faults} error={self.error}"
                )
            await asyncio.sleep(0.01)

    def named(self, reading: str | None = None) -> list[Reading]:
        return [r for r in self.readings if reading is None or r.reading == reading]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.ser.close()


@pytest.fixture
def registry() -> ProfileRegistry:
    return ProfileRegistry.load()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def open_receiver(sim: PendantSerialSimulator, made: list[Receiver]) -> Receiver:
    codec = codec_for(sim.profile)
    assert isinstance(codec, PendantFrameCodec)
    rx = Receiver(codec, sim.port)
    made.append(rx)
    return rx


def fall_trace(rate_hz: int = 200) -> list[tuple[float, float, float]]:
    """Standing, a short free fall, a hard impact, then lying still on the side."""

    def n(seconds: float) -> int:
        return int(seconds * rate_hz)

    trace = [(0.02, -0.05, 1.0)] * n(3)
    trace += [(0.05, 0.1, 0.25)] * n(0.3)
    trace += [(2.5, -1.8, 5.5), (4.0, -3.0, 9.5), (1.5, -1.0, 3.0)] * 2
    trace += [(0.98, 0.05, 0.1)] * n(5)
    return trace


async def test_press_heartbeat_and_battery_from_several_pendants(registry, receivers) -> None:
    profile = registry.get(MOMENTARY)
    async with PendantSerialSimulator(profile, "rf-1", pendants=["00A1B2C3", "a1b2c4"]) as sim:
        rx = open_receiver(sim, receivers)
        await sim.power_on()
        await sim.press()
        await sim.heartbeat(battery=80, activity=3, pendant="00A1B2C4")
        await sim.low_battery(pendant="00A1B2C4")
        await rx.until(lambda: len(rx.named("battery")) == 1)
    assert [(r.reading, r.source) for r in rx.readings] == [
        ("heartbeat", "00A1B2C3"),  # power-on status of each pendant
        ("heartbeat", "00A1B2C4"),
        ("press", "00A1B2C3"),
        ("heartbeat", "00A1B2C4"),
        ("battery", "00A1B2C4"),
    ]
    press = rx.named("press")[0]
    assert press.urgent and press.values == {"button": "sos"}
    assert rx.readings[3].values == {"battery": 80, "activity": 3}
    assert rx.faults == [] and rx.garbage == 0


async def test_radio_repeats_count_as_one_press(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1", repeats=3) as sim:
        rx = open_receiver(sim, receivers)
        await sim.press()
        await sim.press()
        await sim.heartbeat()
        await rx.until(lambda: len(rx.named("heartbeat")) == 1)
    assert len(sim.history) == 3 * 3
    assert len(rx.named("press")) == 2


async def test_latched_sos_is_edge_triggered(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(LATCHED), "rf-2", pendants=["0A0B0C"]) as sim:
        rx = open_receiver(sim, receivers)
        await sim.press()
        for _ in range(10):  # the latched flag repeated in every status
            await sim.heartbeat()
        await sim.release()
        await sim.press()
        await rx.until(lambda: len(rx.named("heartbeat")) == 1 + 10 + 1 + 1)
    assert len(rx.named("press")) == 2
    assert rx.named("heartbeat")[-1].values["temperature"] == 31


async def test_impact_window_from_trace_arrives_exactly(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1") as sim:
        rx = open_receiver(sim, receivers)
        windows = await sim.impact(fall_trace(200), rate_hz=200)
        await rx.until(lambda: len(rx.named("impact")) == len(windows))
    assert len(windows) == 1
    [w] = windows
    [imp] = rx.named("impact")
    v = imp.values
    assert (v["x"], v["y"], v["z"]) == (list(w.x), list(w.y), list(w.z))
    assert v["trigger_index"] == w.trigger_index and v["complete"] is True
    assert v["rate_hz"] == 50 and imp.urgent and imp.source == "00A1B2C3"
    assert v["peak_g"] == pytest.approx(w.peak_g, abs=0.001)


@pytest.mark.parametrize("fault", ["garbage", "truncated", "bad_checksum", "duplicate"])
async def test_good_frames_come_through_after_fault(registry, receivers, fault) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1") as sim:
        rx = open_receiver(sim, receivers)
        await sim.press()
        await sim.inject(fault)
        await sim.press()
        await sim.heartbeat(battery=70)
        await rx.until(lambda: any(r.values.get("battery") == 70 for r in rx.named("heartbeat")))
    assert len(rx.named("press")) == 2  # the duplicate of a press is not a third press
    if fault == "garbage":
        assert rx.garbage > 0 and set(rx.faults) <= {"truncated"}
    elif fault == "truncated":
        assert rx.faults == ["truncated"]
    elif fault == "bad_checksum":
        assert rx.faults == ["checksum"]
    else:
        assert rx.faults == [] and rx.garbage == 0


async def test_out_of_order_fragments_still_make_one_complete_window(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(LATCHED), "rf-2", pendants=["0A0B0C"]) as sim:
        rx = open_receiver(sim, receivers)
        await sim.inject("out_of_order")
        [w] = await sim.impact(fall_trace(100), rate_hz=100)
        await rx.until(lambda: len(rx.named("impact")) == 1)
    fragments = sim.history
    indices = [int(sim.frame_codec.decode(f, "x")[0].values["index"]) for f in fragments]  # type: ignore[arg-type]
    assert indices != sorted(indices)  # really sent out of order
    [imp] = rx.named("impact")
    assert imp.values["complete"] is True and imp.values["x"] == list(w.x)


async def test_lost_fragments_window_is_emitted_incomplete(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1") as sim:
        rx = open_receiver(sim, receivers)
        cfg = TriggerConfig.from_options(registry.get(MOMENTARY).codec_options["trigger"])
        last = math.ceil(round((cfg.pre_s + cfg.post_s) * cfg.rate_hz) / 8) - 1
        [w] = await sim.impact(fall_trace(), rate_hz=200, drop_fragments=[3, last])
        await rx.until(lambda: rx.received == sum(map(len, sim.history)))
        # The last fragment was lost: the window waits for the agent's reassembly timeout.
        assert rx.named("impact") == [] and sim.dropped == 2
        rx.flush()
    [imp] = rx.named("impact")
    assert imp.values["complete"] is False
    assert imp.values["missing_samples"] == 8 + (len(w) - last * 8)
    assert len(imp.values["x"]) == len(w)  # type: ignore[arg-type]


async def test_disconnect_and_reconnect_on_the_same_path(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1") as sim:
        rx = open_receiver(sim, receivers)
        await sim.heartbeat()
        await rx.until(lambda: len(rx.named("heartbeat")) == 1)
        await sim.inject("disconnect")
        await sim.press()  # nobody hears it: the receiver is unplugged
        for _ in range(int(WAIT_S / 0.01)):
            if rx.error is not None:
                break
            await asyncio.sleep(0.01)
        assert rx.error is not None and sim.dropped == 1
        await sim.reconnect()
        rx2 = open_receiver(sim, receivers)
        await sim.press()
        await rx2.until(lambda: len(rx2.named("press")) == 1)
    assert rx2.faults == []


async def test_battery_drain_and_silence(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1", drain_step=30) as sim:
        rx = open_receiver(sim, receivers)
        for _ in range(3):
            await sim.inject("battery_drain")
        await sim.inject("silence")
        await sim.press()
        await sim.resume()
        await sim.heartbeat()
        await rx.until(lambda: len(rx.named("heartbeat")) == 4)
    levels = [r.values["battery"] for r in rx.named("heartbeat")]
    assert levels == [70, 40, 10, 10]
    assert [r.values for r in rx.named("battery")] == [{"battery": 10}]
    assert rx.named("press") == [] and sim.dropped == 1


async def test_play_script_and_unknown_fault(registry, receivers) -> None:
    async with PendantSerialSimulator(registry.get(MOMENTARY), "rf-1") as sim:
        rx = open_receiver(sim, receivers)
        await sim.play(
            [
                (0.0, "press"),
                (0.01, "heartbeat", {"battery": 55}),
                (0.02, "inject", {"fault": "garbage"}),
            ],
            time_scale=10,
        )
        await rx.until(lambda: len(rx.named("heartbeat")) == 1)
        with pytest.raises(ValueError):
            await sim.inject("wrong_type")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await sim.play([(0, "explode")])
    assert [r.reading for r in rx.readings] == ["press", "heartbeat"]


async def test_periodic_heartbeats_and_latched_repeats(registry, receivers) -> None:
    profile = registry.get(LATCHED)
    sim = PendantSerialSimulator(
        profile, "rf-2", pendants=["0A0B0C", "0A0B0D"], heartbeat_s=0.05, sos_repeat_s=0.01
    )
    async with sim:
        rx = open_receiver(sim, receivers)
        await sim.press(pendant="0A0B0D")
        # the latch is repeated (and heartbeats go on) while it stays latched
        await rx.until(lambda: len(rx.named("heartbeat")) >= 12)
    assert [(r.reading, r.source) for r in rx.named("press")] == [("press", "0A0B0D")]
    assert {r.source for r in rx.named("heartbeat")} == {"0A0B0C", "0A0B0D"}


async def test_per_pendant_views_share_one_receiver(registry, receivers) -> None:
    receiver = PendantSerialSimulator(registry.get(MOMENTARY), "rf-site", pendants=[])
    a = receiver.view(4097, "pendant-r1")  # ids as numbers or hex digits
    b = receiver.view("2002", "pendant-r2")
    assert (a.address, b.address, a.port) == ("00001001", "00002002", receiver.port)
    await a.start()
    await b.start()  # the receiver is started once
    try:
        rx = open_receiver(receiver, receivers)
        await a.press()
        await b.heartbeat(battery=60)
        await b.inject("duplicate")
        await a.stop()  # a view does not close the shared receiver
        await b.press()
        await rx.until(lambda: len(rx.named("press")) == 2)
    finally:
        await receiver.stop()
    assert [(r.reading, r.source) for r in rx.readings] == [
        ("press", "00001001"),
        ("heartbeat", "00002002"),
        ("press", "00002002"),
    ]
    with pytest.raises(ValueError):
        receiver.add_pendant(1 << 32)
    with pytest.raises(ValueError):
        PendantSerialSimulator(registry.get(MOMENTARY), "rf-x", pendants=[]).pendant()
