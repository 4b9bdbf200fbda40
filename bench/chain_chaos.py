"""bench/chain_chaos: the whole chain, from the devices to the responder, under every fault.

A site Mosquitto with Zigbee2MQTT door simulators (numbered messages, as in
bench/edge_outage) and LoRaWAN SOS pendants (ChirpStack uplinks), the edge agent
(``python -m carewatch agent``), a central Mosquitto, and the stream processor
(``python -m carewatch stream``) paging a loopback webhook "desk". For ``--duration``
seconds the doors publish and the pendants are pressed; a simulated responder resolves
each alert (``.../acks/{alert_id}``) once the desk got it, and the pendant is pressed
again a little later. Meanwhile a seeded chaos schedule, at random moments, kills the
agent with SIGKILL (a gateway power cut) and restarts it, stops the central broker for
5-15 s, and kills the processor with SIGKILL and restarts it; these overlap freely.

Then everything drains, the processor gets SIGTERM, and the verdict comes from the
processor's own state database and the webhook receiver:

- every numbered door message published at the site is stored once by the processor
  (telemetry is switched on toward a closed port, so every accepted event stays in the
  state database's spool: the processor's record of what it accepted), each
  (gateway, seq) once, each door number once; copies dropped by the dedup are counted
  apart (``dropped_by_dedup``);
- every press is one event, one alert (raised by that event, absorbing no second
  signal) and one ``raised`` notification to the desk (one idempotency key; a resend of
  the same key after a kill is counted apart as ``desk_replays_same_key``).

Progress on stderr, a JSON line of details, and the last line::

    published=N processed=N lost=0 duplicate_effects=0 presses=P alerts=P

Exit status 1 when anything is lost or doubled (or the agent or the processor exited
by itself), 2 when the setup fails. The schedule is seeded (``--seed``); how it meets
the processes' own timing is not, so two runs with one seed differ in detail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from _edge import AgentProcess, agent_config, door_sims, log, queued, send_numbered

from carewatch.services import MosquittoService, ServiceError, free_port
from device_profiles.profiles import Profile, ProfileRegistry
from simulators.pendant_lorawan import PendantLoRaWanSimulator
from stream.state import StateStore
from tests.stream.helpers import desk_boss_config
from tests.stream.receiver import Receiver
from tests.stream.restart_scenario import Processor

SITE = "bench-site"  # the site and gateway of _edge.agent_config
GATEWAY = "gw-bench"
ROOT = "carewatch/v1"
PENDANT_PROFILE = "oem-lorawan-pendant"
RESPONDER = "nurse-bench"
POLL_S = 0.05


# --- the chaos schedule ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault: ``what`` at ``at_s`` (seconds after the load starts), ``for_s`` long,
    and at least ``gap_s`` after the previous fault of its kind ended."""

    what: str  # "agent" (SIGKILL, restart), "broker" (stop, start), "stream" (SIGKILL, restart)
    at_s: float
    for_s: float
    gap_s: float


def chaos_schedule(args: argparse.Namespace, rnd: random.Random) -> dict[str, list[Fault]]:
    """Random moments in the load for each kind of fault. One kind never overlaps itself:
    a fault due while the previous one of its kind lasts, or less than its ``gap_s``
    (1-5 s) after it ended, waits for that; different kinds overlap freely."""
    lo, hi = args.warmup, max(args.warmup + 1.0, args.duration - args.tail)

    def moments(n: int, what: str, low: float, high: float) -> list[Fault]:
        times = sorted(rnd.uniform(lo, hi) for _ in range(n))
        return [
            Fault(what, round(t, 2), round(rnd.uniform(low, high), 2), round(rnd.uniform(1, 5), 2))
            for t in times
        ]

    return {
        "agent": moments(args.agent_kills, "agent", 0.5, 3.0),
        "broker": moments(args.outages, "broker", 5.0, 15.0),
        "stream": moments(args.stream_kills, "stream", 0.0, 2.0),
    }


# --- the desk: what the webhook receiver got -------------------------------------------


class Desk:
    """Indexes the desk's webhook deliveries: alerts raised per resident, alerts resolved."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._seen = 0
        self.raised: dict[str, list[str]] = defaultdict(list)  # resident -> alert ids
        self.resolved: set[str] = set()

    def scan(self) -> None:
        """Take in what arrived since the last scan."""
        for r in self.receiver.received[self._seen :]:
            body = r.json
            alert = body["alert"]
            if r.path.strip("/") != "desk":
                continue
            if body["event"] == "raised" and alert["id"] not in self.raised[alert["subject"]]:
                self.raised[alert["subject"]].append(alert["id"])
            elif body["event"] == "resolved":
                self.resolved.add(alert["id"])
        self._seen = len(self.receiver.received)

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds (scanning what arrives)."""
        while True:
            self.scan()
            if predicate():
                return
            await asyncio.sleep(POLL_S)


async def resolve(central: MosquittoService, alert_id: str) -> int:
    """Publish the responder's resolve (QoS 1) until the broker acknowledges it, as a
    responder app retries through an outage; returns the number of attempts."""
    topic = f"{ROOT}/{SITE}/acks/{alert_id}"
    payload = json.dumps({"by": RESPONDER, "action": "resolve"}).encode()
    attempts = 0
    while True:
        attempts += 1
        try:
            async with aiomqtt.Client(
                central.host, central.port, identifier=f"bench-responder-{uuid.uuid4().hex[:8]}"
            ) as client:
                await client.publish(topic, payload, qos=1, timeout=5)
            return attempts
        except (aiomqtt.MqttError, TimeoutError):
            await asyncio.sleep(0.3)


# --- pendants --------------------------------------------------------------------------


@dataclass
class Press:
    """One SOS press: which pendant, the uplink's time stamp (which becomes the event's
    time, so it names the press in the processor's store), and what followed."""

    device: str
    resident: str
    stamp: int  # ms UTC
    t_s: float  # seconds after the load started
    alert_id: str | None = None
    resolve_attempts: int = 0
    resolved: bool = False


class Pendant:
    """A LoRaWAN pendant simulator bound to a resident, and the press/resolve loop."""

    def __init__(
        self, profile: Profile, k: int, site: MosquittoService, rnd: random.Random
    ) -> None:
        self.resident = f"res-{k}"
        self.rnd = rnd
        self.presses: list[Press] = []
        self.handled: set[str] = set()  # alert ids this loop took as its presses'
        self._stamp = 0
        self.sim = PendantLoRaWanSimulator(
            profile,
            f"pendant-{k}",
            dev_eui=dev_eui(k),
            host=site.host,
            port=site.port,
            clock=lambda: self._stamp,
        )

    async def run(
        self, desk: Desk, central: MosquittoService, t0: float, stop_at: float, pause: float
    ) -> None:
        """Press, wait for the desk's alert, resolve it after a responder's delay, wait
        for the resolution, pause, press again; no new press after ``stop_at``."""
        while True:
            await asyncio.sleep(self.rnd.uniform(0.2, pause))
            if time.monotonic() >= stop_at:
                return
            self._stamp = max(self._stamp + 1, time.time_ns() // 1_000_000)
            press = Press(
                self.sim.device, self.resident, self._stamp, round(time.monotonic() - t0, 2)
            )
            self.presses.append(press)
            await self.sim.press()

            def new_alert() -> bool:
                return any(a not in self.handled for a in desk.raised.get(self.resident, []))

            await desk.wait(new_alert)
            alert_id = next(a for a in desk.raised[self.resident] if a not in self.handled)
            self.handled.add(alert_id)
            press.alert_id = alert_id
            await asyncio.sleep(self.rnd.uniform(0.2, 1.5))  # the responder on the way
            press.resolve_attempts = await resolve(central, alert_id)
            await desk.wait(functools.partial(desk.resolved.__contains__, alert_id))
            press.resolved = True


def pendant_devices(n: int) -> list[dict[str, Any]]:
    """Agent config entries of ``n`` LoRaWAN pendants, each bound to a resident."""
    return [
        {
            "id": f"pendant-{k}",
            "profile": PENDANT_PROFILE,
            "resident": f"res-{k}",
            "mqtt": {"address": dev_eui(k)},
        }
        for k in range(n)
    ]


def dev_eui(k: int) -> str:
    """The DevEUI of pendant ``k``."""
    return f"00c0ffee{k:08x}"


# --- the processor ---------------------------------------------------------------------


def stream_config(work: Path, central: MosquittoService, hook: str) -> Path:
    """One tier (the desk webhook), no reminders, the alarm detector only; telemetry on
    toward a closed port so every accepted event stays in the spool (the processor's
    record of what it accepted, read at the end)."""
    doc = desk_boss_config(
        mqtt={
            "url": central.url,
            "client_id": f"cw-chaos-{uuid.uuid4().hex[:6]}",
            "root": ROOT,
            "reconnect_max": "1s",
        },
        state_path=work / "stream.sqlite",
        hook=hook,
        reminder=0,
        site=SITE,
        delivery={"backoff_initial": "200ms", "backoff_max": "2s", "max_attempts": 1000},
        logging={"level": "info"},
        telemetry={
            "enabled": True,
            "url": f"http://127.0.0.1:{free_port()}",  # nothing listens: all stays spooled
            "retry_max": "5s",
        },
    )
    doc["notifiers"].pop("boss-hook")
    doc["recipients"].pop("boss")
    doc["policies"]["default"]["tiers"] = [{"recipients": ["desk"]}]
    path = work / "stream.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


_FIELD = re.compile(r'([A-Za-z_]\w*)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


@dataclass(frozen=True)
class StoredEvent:
    """An event as the processor stored it (its telemetry line)."""

    gateway: str
    seq: int
    device: str
    reading: str
    time: int  # ms UTC
    ints: dict[str, int]


def parse_event_line(line: str) -> StoredEvent | None:
    """The event of one spooled line protocol line; None for other points (alerts,
    gateway status). Names in this bench need no escapes."""
    head, _, rest = line.partition(" ")
    fields, _, stamp = rest.rpartition(" ")
    tags = dict(t.split("=", 1) for t in head.split(",")[1:] if "=" in t)
    ints = {
        k: int(v[:-1])
        for k, v in _FIELD.findall(fields)
        if v.endswith("i") and v[:-1].lstrip("-").isdigit()
    }
    if "event_seq" not in ints or "gateway" not in tags:
        return None
    return StoredEvent(
        tags["gateway"],
        ints["event_seq"],
        tags.get("device", ""),
        tags.get("reading", ""),
        int(stamp),
        ints,
    )


class Spool:
    """Reads the events the processor accepted from its state database's spool."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.events: list[StoredEvent] = []
        self._last_id = 0

    def read(self, con: sqlite3.Connection) -> None:
        """Take in the batches spooled since the last read."""
        rows = con.execute(
            "SELECT id, lines FROM telemetry WHERE id > ? ORDER BY id", (self._last_id,)
        ).fetchall()
        for row_id, text in rows:
            self._last_id = int(row_id)
            for line in str(text).split("\n"):
                ev = parse_event_line(line)
                if ev is not None and ev.gateway == GATEWAY:
                    self.events.append(ev)

    def poll(self) -> None:
        """A read-only look while the processor runs."""
        if not self.db.exists():
            return
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            self.read(con)
        except sqlite3.OperationalError:
            pass  # the schema not there yet, or busy: next poll
        finally:
            con.close()

    def door_numbers(self) -> set[tuple[str, int]]:
        """(door, number) of every stored door message."""
        return {k for k, _ in self.numbered()}

    def numbered(self) -> list[tuple[tuple[str, int], StoredEvent]]:
        """((door, number), event) of every stored numbered door message."""
        out = []
        for e in self.events:
            b, lq = e.ints.get("battery"), e.ints.get("linkquality")
            if e.reading == "contact" and b is not None and lq is not None:
                out.append(((e.device, b * 256 + lq), e))
        return out


# --- the run ---------------------------------------------------------------------------


@dataclass
class Run:
    """What the run did, for the verdict."""

    published: int = 0
    expected: set[tuple[str, int]] = field(default_factory=set)
    faults: list[dict[str, Any]] = field(default_factory=list)
    pendants: list[Pendant] = field(default_factory=list)
    drained: bool = False
    drain_s: float = 0.0
    sigterm_exit: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # processes the chaos has killed just now
    exited: list[dict[str, Any]] = field(default_factory=list)  # exits nobody asked for
    background: list[asyncio.Task[None]] = field(default_factory=list)  # progress, watch

    @property
    def presses(self) -> list[Press]:
        """Every press of every pendant."""
        return [p for pendant in self.pendants for p in pendant.presses]


async def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    schedule = chaos_schedule(args, rnd)
    log(
        f"seed={seed} duration={args.duration}s doors={args.doors} rate={args.rate}/s "
        f"pendants={args.pendants}; chaos: "
        + "; ".join(f"{f.what} at {f.at_s}s for {f.for_s}s" for fs in schedule.values() for f in fs)
    )
    work = Path(tempfile.mkdtemp(prefix="carewatch-chain-chaos-"))
    site, central = MosquittoService(), MosquittoService()
    try:
        site.start()
        central.start()
    except ServiceError as exc:
        log(f"cannot start Mosquitto: {exc}")
        return 2
    receiver = await Receiver().start()
    processor = Processor(stream_config(work, central, receiver.url), work / "stream.log")
    profile = ProfileRegistry.load().get(PENDANT_PROFILE)
    run = Run()
    agent = AgentProcess(
        agent_config(work, central, site, args.doors, extra_devices=pendant_devices(args.pendants)),
        work / "agent.log",
    )
    doors = door_sims(site, args.doors)
    run.pendants = [
        Pendant(profile, k, site, random.Random(rnd.random())) for k in range(args.pendants)
    ]
    spool = Spool(work / "stream.sqlite")
    desk = Desk(receiver)
    started: list[Any] = []
    try:
        processor.start()
        await processor.wait_connected()  # its persistent session exists from here on
        agent.start()
        if not await agent_up(central, 30):
            log(f"the agent did not come up; see {agent.logfile}")
            return 2
        for sim in [*doors, *(p.sim for p in run.pendants)]:
            await sim.start()
            started.append(sim)
        cycles = await load_under_chaos(
            args,
            run=run,
            schedule=schedule,
            agent=agent,
            central=central,
            processor=processor,
            doors=doors,
            desk=desk,
        )
        t_drain = time.monotonic()
        run.drained = await drain(args, run, spool, agent, cycles)
        run.drain_s = round(time.monotonic() - t_drain, 1)
        if not run.drained:
            log(f"not drained after {args.drain_timeout:.0f} s; judging what arrived")
    finally:
        for task in run.background:
            task.cancel()
        for sim in started:
            with contextlib.suppress(Exception):
                await sim.stop()
        if processor.proc is not None and processor.proc.poll() is None:
            run.sigterm_exit["stream"] = processor.terminate()
        run.sigterm_exit["agent"] = agent.stop()
        await receiver.stop()
        site.close()
        central.close()

    verdict = judge(run, work / "stream.sqlite", receiver, args)
    if verdict["ok"] and not os.environ.get("CAREWATCH_KEEP_TMP"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept for a look: {work} (stream.log, agent.log, stream.sqlite, queue.db)")
    print(json.dumps({"seed": seed, **verdict["details"]}))
    print(verdict["line"])
    return 0 if verdict["ok"] else 1


async def agent_up(central: MosquittoService, limit_s: float) -> bool:
    """Until the agent's heartbeat on the central broker shows every source reading."""
    deadline = time.monotonic() + limit_s
    async with aiomqtt.Client(central.host, central.port) as client:
        await client.subscribe(f"{ROOT}/+/+/health", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                async for msg in client.messages:
                    payload = msg.payload if isinstance(msg.payload, bytes) else b"{}"
                    sources = json.loads(payload).get("sources", {})
                    if sources and all(s["state"] == "running" for s in sources.values()):
                        return True
    return False


async def load_under_chaos(
    args: argparse.Namespace,
    *,
    run: Run,
    schedule: dict[str, list[Fault]],
    agent: AgentProcess,
    central: MosquittoService,
    processor: Processor,
    doors: list[Any],
    desk: Desk,
) -> list[asyncio.Task[None]]:
    """Doors and pendants for ``--duration`` s while the chaos schedule plays. Returns
    once the load has stopped and every fault is over, with the pendants' press cycles
    (tasks), which finish during the drain."""
    t0 = time.monotonic()
    stop_at = t0 + args.duration

    def now_s() -> float:
        return time.monotonic() - t0

    def note(fault: Fault, text: str, **extra: Any) -> None:
        log(f"t={now_s():5.1f}s {text} (published {run.published}, presses {len(run.presses)})")
        run.faults.append(
            {"what": fault.what, "t_s": round(now_s(), 2), "for_s": fault.for_s, **extra}
        )

    async def agent_kill(f: Fault) -> None:
        depth = await asyncio.to_thread(queued, agent.config.parent / "queue.db")
        run.down.add("agent")
        await asyncio.to_thread(agent.kill)
        note(
            f,
            f"agent SIGKILL ({depth} events in its disk queue), restart in {f.for_s} s",
            queue_depth=depth,
        )
        await asyncio.sleep(f.for_s)
        agent.start()
        run.down.discard("agent")
        log(f"t={now_s():5.1f}s agent restarted")

    async def outage(f: Fault) -> None:
        await asyncio.to_thread(central.stop)
        note(f, f"central broker stopped for {f.for_s} s")
        await asyncio.sleep(f.for_s)
        await asyncio.to_thread(central.start)
        log(f"t={now_s():5.1f}s central broker started")

    async def stream_kill(f: Fault) -> None:
        run.down.add("stream")
        await asyncio.to_thread(processor.kill)
        note(f, f"stream processor SIGKILL, restart in {f.for_s} s")
        await asyncio.sleep(f.for_s)
        processor.start()
        run.down.discard("stream")
        log(f"t={now_s():5.1f}s stream processor restarted")

    actions: dict[str, Callable[[Fault], Awaitable[None]]] = {
        "agent": agent_kill,
        "broker": outage,
        "stream": stream_kill,
    }

    async def play(faults: Iterable[Fault]) -> None:
        ended = t0 - 60.0
        for f in faults:
            await asyncio.sleep(
                max(0.0, t0 + f.at_s - time.monotonic(), ended + f.gap_s - time.monotonic())
            )
            await actions[f.what](f)
            ended = time.monotonic()

    async def doors_load() -> None:
        counters = [0] * len(doors)
        period, nxt = 1.0 / args.rate, time.monotonic()
        while time.monotonic() < stop_at:
            i = run.published % len(doors)
            await send_numbered(doors[i], counters[i])
            counters[i] += 1
            run.published += 1
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        run.expected = {(doors[i].device, n) for i in range(len(doors)) for n in range(counters[i])}
        log(f"t={now_s():5.1f}s load stopped: {run.published} door messages published")

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            resolved = sum(p.resolved for p in run.presses)
            log(
                f"t={now_s():5.1f}s published {run.published}, presses {len(run.presses)}"
                f" ({resolved} alerted and resolved)"
            )

    async def watch() -> None:
        """Record (and log) an agent or processor that exits without being killed."""
        while True:
            for name, proc in (("agent", agent.proc), ("stream", processor.proc)):
                code = proc.poll() if proc is not None else None
                if code is not None and name not in run.down:
                    run.exited.append({"what": name, "t_s": round(now_s(), 2), "code": code})
                    log(f"t={now_s():5.1f}s the {name} exited with status {code} by itself")
                    run.down.add(name)  # once; a scheduled restart brings it back
            await asyncio.sleep(0.25)

    ticker = asyncio.create_task(progress())
    watcher = asyncio.create_task(watch())
    run.background += [ticker, watcher]
    cycles = [
        asyncio.create_task(p.run(desk, central, t0, stop_at, args.press_pause))
        for p in run.pendants
    ]
    await asyncio.gather(doors_load(), *(play(fs) for fs in schedule.values()))
    log(f"t={now_s():5.1f}s the last fault is over; draining")
    return cycles


async def drain(
    args: argparse.Namespace,
    run: Run,
    spool: Spool,
    agent: AgentProcess,
    cycles: list[asyncio.Task[None]],
) -> bool:
    """Until every door message is in the processor's store, every press cycle is
    complete and the agent's queue is empty; then ``--settle`` s more for copies in
    flight. False after ``--drain-timeout``."""
    deadline = time.monotonic() + args.drain_timeout
    next_note = time.monotonic() + 5
    queue_db = agent.config.parent / "queue.db"
    while True:
        await asyncio.to_thread(spool.poll)
        missing = len(run.expected - spool.door_numbers())
        open_cycles = sum(not c.done() for c in cycles)
        depth = await asyncio.to_thread(queued, queue_db)
        if missing == 0 and open_cycles == 0 and depth == 0:
            break
        if time.monotonic() > deadline:
            for c in cycles:
                c.cancel()
            await asyncio.gather(*cycles, return_exceptions=True)
            return False
        if time.monotonic() >= next_note:
            log(
                f"draining: {missing} door messages not processed yet, {open_cycles} press"
                f" cycles open, {depth} events in the agent's queue"
            )
            next_note += 5
        await asyncio.sleep(0.5)
    for c in cycles:
        c.result()  # a cycle that failed (not a verdict: a broken bench) raises here
    await asyncio.sleep(args.settle)
    return True


def judge(run: Run, db: Path, receiver: Receiver, args: argparse.Namespace) -> dict[str, Any]:
    """The verdict from the processor's state database (after SIGTERM) and the webhook."""
    store = StateStore(db)
    try:
        spool = Spool(db)
        spool.read(store.db)
        gateway = next(
            (g for g in store.gateways() if (g.site, g.gateway) == (SITE, GATEWAY)), None
        )
        alerts = store.alerts(limit=1_000_000)
        outbox = store.outbox(limit=1_000_000)
    finally:
        store.close()

    # Door messages: each number once, under one seq; each (gateway, seq) once.
    seqs_of: dict[tuple[str, int], set[int]] = defaultdict(set)
    for key, ev in spool.numbered():
        seqs_of[key].add(ev.seq)
    processed = len(run.expected & seqs_of.keys())
    doors_lost = len(run.expected - seqs_of.keys())
    doors_doubled = sum(len(v) - 1 for v in seqs_of.values())
    seq_repeats = sum(c - 1 for c in Counter((e.gateway, e.seq) for e in spool.events).values())

    # Presses: one stored event each, one alert raised by that event, one desk page.
    press_keys = {(p.device, p.stamp) for p in run.presses}
    press_seqs: dict[tuple[str, int], set[int]] = defaultdict(set)
    for ev in spool.events:
        if ev.reading == "press":
            press_seqs[(ev.device, ev.time)].add(ev.seq)
    press_of_seq: dict[int, tuple[str, int]] = {
        seq: key for key, seqs in press_seqs.items() for seq in seqs
    }
    presses_doubled = sum(len(v) - 1 for v in press_seqs.values())
    emergencies = [a for a in alerts if a.condition == "emergency"]
    alerts_of: Counter[tuple[str, int]] = Counter()
    stray_alerts = 0  # raised by no press of this run
    for a in emergencies:
        pressed = press_of_seq.get(int(a.details.get("seq", -1)))
        if pressed is None or a.details.get("gateway") != GATEWAY:
            stray_alerts += 1
        else:
            alerts_of[pressed] += 1
    presses_without_alert = sum(1 for k in press_keys if alerts_of[k] == 0)
    extra_alerts = sum(c - 1 for c in alerts_of.values() if c > 1) + stray_alerts
    absorbed = sum(a.count - 1 for a in emergencies)  # a second press folded into one alert

    desk_keys: dict[str, set[str]] = defaultdict(set)
    desk_raw: Counter[str] = Counter()
    for r in receiver.received:
        body = r.json
        if r.path.strip("/") == "desk" and body["event"] == "raised":
            desk_keys[body["alert"]["id"]].add(r.headers["Idempotency-Key"])
            desk_raw[body["alert"]["id"]] += 1
    desk_missing = sum(1 for a in emergencies if not desk_keys.get(a.id))
    desk_doubled = sum(len(v) - 1 for v in desk_keys.values())
    replays = sum(desk_raw.values()) - sum(len(v) for v in desk_keys.values())
    outbox_raised: Counter[str] = Counter()
    for row in outbox:
        if row.recipient == "desk" and json.loads(row.payload)["event"] == "raised":
            outbox_raised[row.alert_id] += 1

    lost = doors_lost + presses_without_alert + desk_missing
    duplicate_effects = (
        seq_repeats + doors_doubled + presses_doubled + extra_alerts + absorbed + desk_doubled
    )
    ok = (
        lost == 0
        and duplicate_effects == 0
        and len(emergencies) == len(run.presses)
        and not run.exited
    )
    details: dict[str, Any] = {
        "duration_s": args.duration,
        "rate_msg_s": args.rate,
        "doors": args.doors,
        "pendants": args.pendants,
        "faults": run.faults,
        "faults_count": dict(Counter(f["what"] for f in run.faults)),
        "drained": run.drained,
        "drain_s": run.drain_s,
        "doors_lost": doors_lost,
        "doors_doubled": doors_doubled,
        "seq_repeats": seq_repeats,
        "stored_events": len(spool.events),
        "dropped_by_dedup": gateway.duplicates if gateway else None,
        "gateway": (
            {
                "events": gateway.events,
                "lost": gateway.lost,
                "resets": gateway.resets,
                "late": gateway.late,
                "missing_seqs": gateway.seqs.missing(),
            }
            if gateway
            else None
        ),
        "presses_without_alert": presses_without_alert,
        "presses_doubled": presses_doubled,
        "extra_alerts": extra_alerts,
        "alerts_absorbing_a_second_press": absorbed,
        "alerts_not_resolved": sum(a.open for a in emergencies),
        "desk_missing": desk_missing,
        "desk_doubled": desk_doubled,
        "desk_replays_same_key": replays,
        "outbox_raised_rows_not_one": sum(1 for a in emergencies if outbox_raised[a.id] != 1),
        "outbox_pending": sum(1 for row in outbox if row.status == "pending"),
        "resolve_retries": sum(max(0, p.resolve_attempts - 1) for p in run.presses),
        "exited_by_itself": run.exited,
        "sigterm_exit": run.sigterm_exit,
    }
    line = (
        f"published={run.published} processed={processed} lost={lost} "
        f"duplicate_effects={duplicate_effects} presses={len(run.presses)} "
        f"alerts={len(emergencies)}"
    )
    return {"ok": ok, "line": line, "details": details}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/chain_chaos", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="load, s (default 60)")
    p.add_argument("--seed", type=int, default=None, help="chaos schedule seed (printed)")
    p.add_argument("--doors", type=int, default=10, help="door simulators (default 10)")
    p.add_argument("--rate", type=float, default=50.0, help="door messages/s in all (50)")
    p.add_argument("--pendants", type=int, default=5, help="SOS pendants (default 5)")
    p.add_argument(
        "--press-pause", type=float, default=4.0, help="longest pause between presses, s (4)"
    )
    p.add_argument("--agent-kills", type=int, default=2, help="agent SIGKILLs (default 2)")
    p.add_argument("--outages", type=int, default=2, help="central broker outages (default 2)")
    p.add_argument("--stream-kills", type=int, default=3, help="processor SIGKILLs (default 3)")
    p.add_argument("--warmup", type=float, default=5.0, help="no fault before, s (default 5)")
    p.add_argument("--tail", type=float, default=5.0, help="no fault starts in the last s (5)")
    p.add_argument("--settle", type=float, default=2.0, help="wait after the drain, s (2)")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="max drain wait, s (60)")
    args = p.parse_args(argv)
    if args.duration <= args.warmup + args.tail or args.rate <= 0 or args.doors < 1:
        p.error("--duration must exceed --warmup + --tail; --rate and --doors positive")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
