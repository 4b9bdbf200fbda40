"""bench/edge_footprint: memory, CPU and throughput of the edge agent on this machine.

Runs the agent as a child process against a site Mosquitto and a central Mosquitto and
prints, for 50 simulated devices:

1. ``realistic``: resident memory (RSS now and peak) and CPU (% of one core) while the
   devices report at realistic rates (46 Zigbee2MQTT doors and motion sensors, 2
   pendants on a serial RF receiver on a PTY, 2 footfall counters polled over Modbus RTU
   every 10 s);
2. ``forward``: how fast it pulls a backlog from the site broker: numbered Zigbee2MQTT
   messages (QoS 1) queued at the site broker while the agent was stopped, rate from the
   first to the last arrival at the central subscriber;
3. ``live``: sustained forwarding while the devices publish: paced paho publishers in
   separate processes send numbered Zigbee2MQTT messages (QoS 1) at each ``--live-rate``
   for ``--live-s`` seconds; per step the offered rate, the rate the site broker
   acknowledged (the publishers share the machine's cores and may be the limit), the
   rate arriving at the central subscriber, what was still on its way when publishing
   stopped (held by the site broker: backpressure), the messages lost and the agent's CPU;
4. ``drain``: with the central broker stopped, a backlog of 100,000 events is queued on
   disk; the broker is started again and the rate at which the backlog arrives at the
   central subscriber is measured, together with the delay from the broker's start to
   the agent's ``online``.

Figures, not assertions: the last lines compare them with the targets of issue 3.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from _edge import (
    AgentProcess,
    Central,
    door_sims,
    log,
    queue_state,
    queued,
)
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.services import MosquittoService
from device_profiles.profiles import ProfileRegistry
from simulators.footfall_modbus import FootfallModbusSimulator
from simulators.pendant_serial import PendantSerialSimulator
from simulators.zigbee import Zigbee2MqttSimulator

TICK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a core (schedstat).

    On a shared machine this tells a starved agent from a slow one.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # a thread that just ended
    return total / 1e9


def config(  # noqa: PLR0917
    work: Path,
    central: MosquittoService,
    site: MosquittoService,
    doors: int,
    rf_port: str,
    pendants: list[str],
    counters: list[FootfallModbusSimulator],
) -> Path:
    devices: list[dict[str, object]] = [
        {
            "id": f"door-{i:03d}",
            "profile": "aqara-mccgq11lm" if i % 2 == 0 else "aqara-rtcgq11lm",
            "mqtt": {"address": f"door{i:03d}"},
        }
        for i in range(doors)
    ]
    devices += [
        {
            "id": f"pendant-{n}",
            "profile": "oem-rf433-button-pendant",
            "serial": {"port": rf_port, "address": pid},
        }
        for n, pid in enumerate(pendants)
    ]
    devices += [
        {
            "id": f"footfall-{n}",
            "profile": "beamcount-irc200",
            "modbus": {
                "port": ff.client_path,
                "unit_id": ff.client_settings.unit_id,
                "parity": "N",
                "poll_interval_s": 10,
            },
        }
        for n, ff in enumerate(counters)
    ]
    doc = {
        "site": "bench-site",
        "gateway": "gw-footprint",
        "log_level": "WARNING",
        "broker": {"url": f"mqtt://{central.host}:{central.port}"},
        "queue": {"path": str(work / "queue.db"), "max_bytes": "512MB"},
        "health": {"heartbeat_interval": "5s"},
        "clock": {"trust": "always"},
        "site_brokers": {"local": {"url": f"mqtt://{site.host}:{site.port}"}},
        "devices": devices,
    }
    path = work / "agent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


class Publisher:
    """A fast paho publisher (its own network thread), QoS 1, optionally paced."""

    def __init__(self, site: MosquittoService) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(site.host, site.port)
        self.client.loop_start()

    def blast(self, messages: list[tuple[str, bytes]], rate: float | None = None) -> float:
        """Publish all; returns the monotonic time of the first publish."""
        first = time.monotonic()
        info = None
        for n, (topic, payload) in enumerate(messages):
            while True:
                info = self.client.publish(topic, payload, qos=1)
                if info.rc == paho.MQTT_ERR_SUCCESS:
                    break
                time.sleep(0.001)
            if rate and n % 100 == 0:
                ahead = first + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        if info is not None:
            info.wait_for_publish(60)
        return first

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def numbered(
    sims: list[Zigbee2MqttSimulator], start: int, count: int
) -> tuple[list[tuple[str, bytes]], set[tuple[str, int]]]:
    """``count`` numbered state messages spread over the door simulators, and the
    (device, number) keys their events will carry."""
    out = []
    keys = set()
    for k in range(start, start + count):
        sim = sims[k % len(sims)]
        n = (k // len(sims)) % (101 * 256)
        sim.state["battery"], sim.state["linkquality"] = divmod(n, 256)
        msg = sim.state_message()
        out.append((msg.topic, msg.payload))
        keys.add((sim.device, n))
    return out, keys


async def settle(col: Central, expected: set[tuple[str, int]], limit_s: float = 10.0) -> int:
    """Give stragglers a moment; returns how many expected keys never arrived."""
    deadline = time.monotonic() + limit_s
    while True:
        missing = len(expected - {k for _, k in col.numbered()})
        if missing == 0 or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.2)


LIVE_INFLIGHT = 100  # QoS 1 publishes awaiting the site broker's PUBACK, per publisher
LIVE_OUTSTANDING = 5000  # published but not acknowledged: above this the publisher waits
LIVE_CHECK_EVERY = 20  # messages between pacing checks


def live_publisher(  # noqa: PLR0917
    host: str,
    port: int,
    client_id: str,
    messages: list[tuple[str, bytes]],
    rate: float,
    go: MpEvent,
    start_at: Synchronized[float],
    out: MpQueue[tuple[str, dict[str, float]]],
) -> None:
    """Child process: publish ``messages`` (QoS 1) at ``rate`` per second from ``start_at``.

    paho without its network thread: publishing and reading PUBACKs in one thread avoids
    the lock hand-offs that cap a threaded client at a few thousand messages a second on
    this machine. It reports what it achieved: the PUBACK count and times, and how far it
    fell behind its schedule (the offered rate is a target, not a result).
    """
    acked = 0
    last_ack = 0.0

    def on_publish(*_: object) -> None:
        nonlocal acked, last_ack
        acked += 1
        last_ack = time.monotonic()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(LIVE_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port)
    while not client.is_connected():
        client.loop(0.1)
    out.put(("ready", {}))
    go.wait(60)
    start = start_at.value
    while (ahead := start - time.monotonic()) > 0:
        client.loop(ahead)
    cpu0 = time.process_time()
    behind = 0.0
    for i, (topic, payload) in enumerate(messages):
        if i % LIVE_CHECK_EVERY == 0:
            client.loop(0)  # read PUBACKs, send what waits for a free in-flight slot
            while i - acked > LIVE_OUTSTANDING:  # the site broker itself is behind
                client.loop(0.005)
            ahead = start + i / rate - time.monotonic()
            while ahead > 0:
                client.loop(ahead)
                ahead = start + i / rate - time.monotonic()
            behind = max(behind, -ahead)
        client.publish(topic, payload, qos=1)
    published = time.monotonic()
    while acked < len(messages) and time.monotonic() < published + 60:
        client.loop(0.01)
    cpu = time.process_time() - cpu0
    client.disconnect()
    out.put(
        (
            "done",
            {
                "n": len(messages),
                "acked": acked,
                "last_publish": published,
                "last_ack": last_ack,
                "behind_s": behind,
                "cpu_s": cpu,
            },
        )
    )


async def live_step(  # noqa: PLR0917
    site: MosquittoService,
    col: Central,
    pid: int,
    db: Path,
    messages: list[tuple[str, bytes]],
    expected: set[tuple[str, int]],
    rate: float,
    publishers: int,
    limit_s: float,
) -> dict[str, Any]:
    """Offer ``messages`` at ``rate`` through ``publishers`` processes; figures of the step."""
    ctx = mp.get_context("spawn")  # no fork of this process's threads and event loop
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    out: MpQueue[tuple[str, dict[str, float]]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=live_publisher,
            args=(
                site.host,
                site.port,
                f"bench-live-{j}",
                messages[j::publishers],
                rate / publishers,
                go,
                start_at,
                out,
            ),
            daemon=True,
        )
        for j in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        await asyncio.to_thread(out.get, True, 60)  # "ready": connected to the site broker
    before = col.n_numbered
    start = time.monotonic() + 0.2
    start_at.value = start
    cpu0, wait0 = cpu_s(pid), runqueue_wait_s(pid)
    samples = [(time.monotonic(), *await asyncio.to_thread(queue_state, db))]
    sampler = asyncio.create_task(_sample_queue(db, samples))
    go.set()
    done = [(await asyncio.to_thread(out.get, True, limit_s))[1] for _ in procs]
    for proc in procs:
        await asyncio.to_thread(proc.join, 10)
    n = len(messages)
    complete = await col.wait(lambda: col.n_numbered - before >= n, limit_s)
    cpu, waited = cpu_s(pid) - cpu0, runqueue_wait_s(pid) - wait0
    sampler.cancel()
    arrivals = col.arrivals[before:]
    lost = await settle(col, expected)
    last_publish = max(d["last_publish"] for d in done)
    acked = sum(d["acked"] for d in done)
    last_ack = max(d["last_ack"] for d in done)
    end = arrivals[-1] if arrivals else time.monotonic()
    hwm = rss_kb(pid)[1]
    published_rate = acked / max(1e-9, last_ack - start)
    # Where the messages not yet arrived were when publishing stopped: not yet taken in by
    # the agent (so still at the site broker: backpressure), or in the agent's disk queue.
    seq0 = samples[0][1]
    _, seq_end, depth_end = min(samples, key=lambda x: abs(x[0] - last_publish))
    return {
        "offered_msg_s": rate,
        "published_msg_s": round(published_rate),
        "publisher_behind_s": round(max(d["behind_s"] for d in done), 2),
        "publisher_cpu_pct_of_core": round(
            sum(d["cpu_s"] for d in done) / max(1e-9, last_ack - start) * 100
        ),
        "central_msg_s": round(len(arrivals) / max(1e-9, end - start)),
        "on_the_way_at_end": n - sum(1 for t in arrivals if t <= last_publish),
        "site_backlog_at_end": max(0, acked - (seq_end - seq0)),
        "in_agent_queue_at_end": depth_end,
        "agent_queue_max": max(d for _, _, d in samples),
        "last_arrival_after_s": round(end - last_publish, 2),
        "lost": lost,
        "complete": complete,
        "agent_cpu_pct_of_core": round(cpu / max(1e-9, end - start) * 100),
        "agent_runqueue_wait_pct": round(waited / max(1e-9, end - start) * 100),
        "messages": n,
        "acked_by_site": acked,
        "peak_rss_mb": round(hwm / 1024, 1),
    }


async def _sample_queue(db: Path, out: list[tuple[float, int, int]]) -> None:
    """Append (time, next seq, events waiting) of the agent's queue 10 times a second."""
    while True:
        seq, depth = await asyncio.to_thread(queue_state, db)
        out.append((time.monotonic(), seq, depth))
        await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="carewatch-edge-footprint-"))
    site, central = MosquittoService(), MosquittoService()
    site.start()
    central.start()
    reg = ProfileRegistry.load()
    doors = args.devices - 4
    pendants = ["00A1B2C3", "00A1B2C4"]
    rf = PendantSerialSimulator(reg.get("oem-rf433-button-pendant"), "rf-1", pendants)
    counters = [
        FootfallModbusSimulator(reg.get("beamcount-irc200"), f"footfall-{n}") for n in range(2)
    ]
    await rf.start()
    for ff in counters:
        await ff.start()
    sims = door_sims(site, doors)
    for i, sim in enumerate(sims):
        if i % 2:  # every other one is a motion sensor
            sims[i] = Zigbee2MqttSimulator(
                reg.get("aqara-rtcgq11lm"),
                sim.device,
                friendly_name=sim.friendly_name,
                host=site.host,
                port=site.port,
            )
    cfg = config(work, central, site, doors, rf.port, pendants, counters)
    agent = AgentProcess(cfg, work / "agent.log")
    col = Central(central)
    results: dict[str, str] = {}
    try:
        await col.start()
        agent.start()
        if not await col.wait(col.sources_up, 30):
            log(f"agent did not come up; see {agent.logfile}")
            return 1
        for sim in sims:
            await sim.start()

        # 1. realistic load ------------------------------------------------------------
        log(
            f"realistic load: {args.devices} devices, {args.realistic_rate} msg/s for "
            f"{args.realistic_s:.0f} s"
        )
        await asyncio.sleep(2)
        pid = agent.pid
        c0, t0 = cpu_s(pid), time.monotonic()
        end = t0 + args.realistic_s
        period = 1.0 / args.realistic_rate
        k = 0
        while time.monotonic() < end:
            sim = sims[k % len(sims)]
            if isinstance(sim, Zigbee2MqttSimulator) and "contact" in sim.state:
                await (sim.open_door() if k % 4 < 2 else sim.close_door())
            else:
                await sim.motion() if k % 4 < 2 else await sim.clear_motion()
            if k % 20 == 0:
                await rf.heartbeat(battery=90, activity=k % 7, pendant=pendants[k % 2])
            if k % 50 == 0:
                await counters[k % 2].enter(1)
            k += 1
            await asyncio.sleep(period)
        cpu = (cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
        rss, hwm = rss_kb(pid)
        results["realistic"] = (
            f"rss_mb={rss / 1024:.1f} peak_rss_mb={hwm / 1024:.1f} cpu_pct_of_core={cpu:.2f} "
            f"msgs={k}"
        )
        print(f"realistic: {results['realistic']}", flush=True)

        # 2. max forward rate --------------------------------------------------------------
        # The burst waits at the site broker (the agent's persistent session) while the
        # agent is stopped, so the rate measured is the agent's, not the publisher's.
        n_fwd = args.forward
        log(f"forward: {n_fwd} numbered messages queued at the site broker, agent stopped")
        agent.stop()
        msgs, expected = numbered(sims, 0, n_fwd)
        pub = Publisher(site)
        await asyncio.to_thread(pub.blast, msgs)
        before = col.n_numbered
        agent.start()
        ok = await col.wait(lambda: col.n_numbered - before >= n_fwd, args.timeout)
        arrivals = col.arrivals[before:]
        lost = await settle(col, expected)
        rate = (len(arrivals) - 1) / max(1e-9, arrivals[-1] - arrivals[0])
        await col.wait(col.sources_up, 30)
        pid = agent.pid
        rss, hwm = rss_kb(pid)
        results["forward"] = (
            f"messages={n_fwd} rate_msg_s={rate:.0f} lost={lost} complete={ok} "
            f"peak_rss_mb={hwm / 1024:.1f}"
        )
        print(f"forward: {results['forward']}", flush=True)

        # 3. sustained live forwarding ------------------------------------------------------
        # Messages published while the agent runs, at a fixed rate per step. Beyond what
        # the agent forwards, the site broker keeps the rest for its session (backpressure):
        # the figure to watch is lost=0, then how far behind the arrivals fall.
        pid = agent.pid
        offset = n_fwd
        for rate in args.live_rate:
            n_live = int(rate * args.live_s)
            msgs, expected = numbered(sims, offset, n_live)
            offset += n_live
            log(
                f"live: {rate:.0f} msg/s offered for {args.live_s:.0f} s "
                f"({args.live_publishers} publisher processes)"
            )
            step = await live_step(
                site,
                col,
                pid,
                work / "queue.db",
                msgs,
                expected,
                rate,
                args.live_publishers,
                args.timeout,
            )
            line = " ".join(f"{k}={v}" for k, v in step.items())
            results[f"live {rate:.0f}"] = line
            print(f"live: {line}", flush=True)
            await asyncio.sleep(2)  # let the queue settle between steps

        # 4. drain a 100,000-event backlog --------------------------------------------------
        n_drain = args.backlog
        log(f"drain: central broker down, queueing {n_drain} events")
        await asyncio.to_thread(central.stop)
        msgs, expected = numbered(sims, offset, n_drain)
        t_in = time.monotonic()
        await asyncio.to_thread(pub.blast, msgs, args.backlog_rate)
        db = work / "queue.db"
        while queued(db) < n_drain:
            await asyncio.sleep(0.2)
            if time.monotonic() - t_in > args.timeout:
                break
        ingest_rate = n_drain / (time.monotonic() - t_in)
        depth = queued(db)
        log(f"drain: {depth} queued ({ingest_rate:.0f} events/s in); starting the broker")
        before = col.n_numbered
        n_status = len(col.status)
        up_at = time.monotonic()
        await asyncio.to_thread(central.start)
        started = time.monotonic()
        ok = await col.wait(lambda: col.n_numbered - before >= n_drain, args.timeout)
        done = time.monotonic()
        online = col.online_after(n_status)
        drain_lost = await settle(col, expected)
        reconnect = (online - started) if online is not None else float("nan")
        drain_rate = n_drain / (done - (online or started))
        rss, hwm = rss_kb(pid)
        results["drain"] = (
            f"backlog={depth} drain_events_s={drain_rate:.0f} lost={drain_lost} "
            f"complete={ok} reconnect_s={reconnect:.2f} broker_start_s={started - up_at:.2f} "
            f"ingest_events_s={ingest_rate:.0f} peak_rss_mb={hwm / 1024:.1f}"
        )
        print(f"drain: {results['drain']}", flush=True)
        pub.close()
    finally:
        for sim in sims:
            await sim.stop()
        await rf.stop()
        for ff in counters:
            await ff.stop()
        code = agent.stop()
        await col.close()
        site.close()
        central.close()
        log(f"agent exit code {code}; log {agent.logfile}")
    print(
        "targets: rss < 40 MB, cpu < 2 % of a core (realistic), forward >= 5000 msg/s "
        "with lost=0, drain >= 5000 events/s, reconnect < 2 s"
    )
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/edge_footprint", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--realistic-rate", type=float, default=5.0, help="msg/s in all (default 5)")
    p.add_argument("--realistic-s", type=float, default=30.0, help="seconds measured")
    p.add_argument("--forward", type=int, default=30000, help="burst size (default 30000)")
    p.add_argument(
        "--live-rate",
        type=float,
        nargs="+",
        default=[2000.0, 5000.0, 8000.0],
        help="offered rates of the live steps, msg/s (default 2000 5000 8000)",
    )
    p.add_argument("--live-s", type=float, default=10.0, help="seconds per live step")
    p.add_argument("--live-publishers", type=int, default=2, help="publisher processes (default 2)")
    p.add_argument("--backlog", type=int, default=100000, help="backlog (default 100000)")
    p.add_argument("--backlog-rate", type=float, default=6000.0, help="publish rate, msg/s")
    p.add_argument("--timeout", type=float, default=180.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
