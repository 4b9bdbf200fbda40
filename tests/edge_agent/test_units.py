"""Pure parts of the agent: backoff, health, ingest decisions, broker settings."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from pathlib import Path

import yaml

from device_profiles.codecs import Reading
from device_profiles.profiles import ProfileRegistry
from edge_agent.clock import Clock
from edge_agent.config import load_config
from edge_agent.health import DeviceHealth, cpu_temperature
from edge_agent.ingest import Ingest
from edge_agent.queue import EventQueue, Priority
from edge_agent.uplink import BACKOFF_CAP_S, backoff_delays, client_kwargs

T0 = 1_800_000_000_000


def test_backoff_doubles_and_is_capped_with_jitter():
    delays = list(itertools.islice(backoff_delays(), 12))
    assert 0.05 <= delays[0] <= 0.1
    assert all(0 < d <= BACKOFF_CAP_S for d in delays)
    assert all(d >= BACKOFF_CAP_S / 2 for d in delays[5:])  # capped, jittered in [cap/2, cap]
    assert len(set(delays)) > 6  # jitter: reconnecting gateways do not stampede


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_device_down_after_its_interval_and_up_with_the_next_reading():
    mono = Mono()
    h = DeviceHealth(mono=mono)
    h.configure({"door-1": ("door", 100.0), "ff-1": ("footfall", 30.0)})
    assert h.check() == []
    mono.t += 31
    [t] = h.check()
    assert (t.device, t.up) == ("ff-1", False) and "no reading yet" in t.reason
    assert h.seen("door-1", T0) is None  # unknown -> up is not a transition
    h.source_errors["ff-1"] = "modbus:/dev/ttyUSB1: timeout"
    mono.t += 101
    [t] = h.check()
    assert t.device == "door-1" and "no reading for 101 s" in t.reason
    assert h.check() == []  # reported once
    back = h.seen("ff-1", T0 + 5)
    assert back is not None and back.up
    snap = h.snapshot()
    assert snap["ff-1"]["state"] == "up" and snap["door-1"]["state"] == "down"
    assert h.mark_down("ff-1", "bridge says offline") is not None
    assert h.mark_down("ff-1", "again") is None


def test_cpu_temperature_reads_the_thermal_zone(tmp_path: Path):
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert cpu_temperature(str(zone)) == 48.3
    assert cpu_temperature(str(tmp_path / "missing")) is None


def _config(tmp_path: Path, devices: list[dict[str, object]]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "site": "s1",
                "gateway": "g1",
                "broker": {"url": "mqtts://central.example:8883", "username": "g1"},
                "queue": {"path": str(tmp_path / "q.db")},
                "site_brokers": {"local": {"url": "mqtt://127.0.0.1:1883"}},
                "devices": devices,
            }
        )
    )
    return path


async def test_ingest_decisions(tmp_path: Path):
    cfg = load_config(
        _config(
            tmp_path,
            [
                {"id": "face-1", "profile": "hikvision-ds-k1t341"},
                {"id": "door-1", "profile": "aqara-mccgq11lm", "resident": "r-1"},
            ],
        )
    )
    q = await EventQueue.open(cfg.queue.path, gateway="g1", site="s1")
    times = iter(range(10))

    def wall() -> float:
        return (T0 + next(times)) / 1000

    ingest = Ingest(
        cfg,
        q,
        clock=Clock(trust="always", wall=wall),
        health=DeviceHealth(),
        registry=ProfileRegistry.load(),
    )
    face, door = ingest.devices["face-1"], ingest.devices["door-1"]
    res = await ingest.readings(
        face,
        [
            Reading("checkin", {"person": "m-7", "score": 0.9}, time=T0 - 60_000),
            Reading("checkin", {"person": "m-8"}, time=5),  # a device clock in 1970
            Reading("heartbeat", {"terminal": "t"}),
        ],
    )
    a, b, c = res.events
    assert (a.resident, a.time) == ("m-7", T0 - 60_000)  # the device's own time
    assert b.time == b.received  # implausible device time: the gateway's
    assert c.resident is None
    res = await ingest.readings(door, [Reading("contact", {"contact": True, "battery": 90})])
    [d] = res.events
    assert d.resident == "r-1" and not d.urgent
    stats = await q.stats()
    assert stats.counters["device_time_invalid.face-1"] == 1
    # priorities: heartbeats are telemetry, alarms urgent
    assert ingest._draft(face, Reading("heartbeat"), ingest.clock.now(), {}).priority == (
        Priority.TELEMETRY
    )
    urgent = ingest._draft(face, Reading("press", urgent=True), ingest.clock.now(), {})
    assert urgent.priority == Priority.URGENT
    await q.close()


def test_client_kwargs_for_tls(tmp_path: Path):
    cfg = load_config(_config(tmp_path, []))
    kw = client_kwargs(cfg.broker)
    assert kw["hostname"] == "central.example" and kw["port"] == 8883
    assert kw["identifier"] == "carewatch-s1-g1" and kw["username"] == "g1"
    assert kw["tls_params"].cert_reqs == ssl.CERT_REQUIRED


async def test_a_codec_bug_is_a_counted_fault_not_a_dead_device(tmp_path: Path, monkeypatch):
    """A codec must raise only DecodeError; if one has a bug, the agent still goes on."""
    cfg = load_config(_config(tmp_path, [{"id": "door-1", "profile": "aqara-mccgq11lm"}]))
    q = await EventQueue.open(cfg.queue.path, gateway="g1", site="s1")
    ingest = Ingest(
        cfg,
        q,
        clock=Clock(trust="always", wall=lambda: T0 / 1000),
        health=DeviceHealth(),
        registry=ProfileRegistry.load(),
    )
    door = ingest.devices["door-1"]
    real_track = door.codec.track

    def buggy(state, reading):
        if reading.values.get("battery") == 13:
            raise ZeroDivisionError("codec bug")
        return real_track(state, reading)

    monkeypatch.setattr(door.codec, "track", buggy)
    bad = await ingest.readings(door, [Reading("contact", {"contact": True, "battery": 13})])
    good = await ingest.readings(door, [Reading("contact", {"contact": False, "battery": 90})])
    assert bad.events == [] and len(good.events) == 1
    stats = await q.stats()
    assert stats.counters["decode_errors.door-1.codec_bug"] == 1
    await q.close()


async def test_a_codec_bug_in_split_does_not_wedge_a_serial_port(tmp_path: Path, monkeypatch):
    """A codec raising from split() is counted; the buffer restarts and frames flow on."""
    from edge_agent.sources.serial import SerialSource

    cfg = load_config(
        _config(
            tmp_path,
            [
                {
                    "id": "p-1",
                    "profile": "oem-rf433-button-pendant",
                    "serial": {"port": "/dev/ttyNONE"},
                }
            ],
        )
    )
    q = await EventQueue.open(cfg.queue.path, gateway="g1", site="s1")
    ingest = Ingest(
        cfg,
        q,
        clock=Clock(trust="always", wall=lambda: T0 / 1000),
        health=DeviceHealth(),
        registry=ProfileRegistry.load(),
    )
    pendant = ingest.devices["p-1"]
    src = SerialSource("/dev/ttyNONE", [pendant], ingest)
    frame = pendant.codec.encode(
        Reading("press", {"button": "sos", "counter": 1}, source="00A1B2"), "p-1"
    )
    assert isinstance(frame, bytes)
    real_split = src.codec.split

    def buggy(buffer: bytes) -> tuple[list[bytes], bytes, bytes]:
        if buffer.startswith(b"\xde\xad"):
            raise IndexError("codec bug")
        return real_split(buffer)

    monkeypatch.setattr(src.codec, "split", buggy)
    src.feed(b"\xde\xad" + frame[:3])  # before: IndexError escaped the reader callback
    assert src._buffer == b""
    src.feed(frame)
    await q.flush()
    stats = await q.stats()
    assert stats.counters["decode_errors.p-1.codec_bug"] == 1
    batch = await q.peek(urgent=True, after=0, limit=10, max_bytes=1 << 20)
    assert batch is not None and len(batch) == 1  # the press after the bug got through
    await q.close()


async def test_a_codec_bug_of_a_second_model_on_a_receiver_is_counted(tmp_path: Path, monkeypatch):
    """Another model sharing the receiver decodes its frames itself; its bug is counted."""
    from edge_agent.sources.serial import SerialSource

    port = {"port": "/dev/ttyNONE", "baudrate": 115200}
    cfg = load_config(
        _config(
            tmp_path,
            [
                {
                    "id": "p-1",
                    "profile": "oem-rf433-button-pendant",
                    "serial": {**port, "address": "0000A1B2"},
                },
                {
                    "id": "p-2",
                    "profile": "oem-rf868-latched-pendant",
                    "serial": {**port, "address": "0000C3D4"},
                },
            ],
        )
    )
    q = await EventQueue.open(cfg.queue.path, gateway="g1", site="s1")
    ingest = Ingest(
        cfg,
        q,
        clock=Clock(trust="always", wall=lambda: T0 / 1000),
        health=DeviceHealth(),
        registry=ProfileRegistry.load(),
    )
    p1, p2 = ingest.devices["p-1"], ingest.devices["p-2"]
    src = SerialSource("/dev/ttyNONE", [p1, p2], ingest)
    assert p2.codec is not src.codec

    def buggy(raw: bytes, device: str) -> list[Reading]:
        raise KeyError("codec bug")

    monkeypatch.setattr(p2.codec, "decode", buggy)
    press = Reading("press", {"button": "sos", "counter": 1}, source="00C3D4")
    frame2 = src.codec.encode(press, "p-2")
    frame1 = src.codec.encode(Reading("press", press.values, source="0000A1B2"), "p-1")
    assert isinstance(frame1, bytes) and isinstance(frame2, bytes)
    src.feed(frame2)  # before: KeyError escaped the reader callback
    src.feed(frame1)
    await q.flush()
    assert (await q.stats()).counters["decode_errors.p-2.codec_bug"] == 1
    batch = await q.peek(urgent=True, after=0, limit=10, max_bytes=1 << 20)
    assert batch is not None and len(batch) == 1
    await q.close()


async def test_a_heartbeat_asked_for_while_one_is_built_is_sent_too(tmp_path: Path):
    """A source coming up (or a device going down) while a heartbeat is being built
    must bring another heartbeat, not wait a whole interval (30 s here)."""
    from typing import Any, cast

    import aiomqtt

    from edge_agent.uplink import Uplink
    from tests.harness.wait import async_wait_for

    published: list[str] = []

    class Client:
        async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
            published.append(topic)

    async def health() -> dict[str, Any]:
        if not published:
            uplink.poke_health()  # arrives between the snapshot and the publish
        return {}

    cfg = load_config(_config(tmp_path, []))
    assert cfg.health.heartbeat_interval_s >= 30
    uplink = Uplink(cfg, cast(EventQueue, None), health)
    beat = asyncio.create_task(uplink._heartbeat(cast(aiomqtt.Client, Client())))
    try:
        await async_wait_for(lambda: len(published) >= 2, timeout=10, message="2 heartbeats")
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
