"""The uplink's promises, against a real central Mosquitto: last will, resend after a
crash, alarms ahead of a backlog, batching with linger.

A central broker stopped with SIGSTOP (:func:`paused`) keeps its connections open but
reads nothing: what the agent publishes then waits in the broker's socket
(:func:`unread_by` sees it arrive) and no PUBACK comes back. That makes "sent but not
acknowledged" a state a test can produce and check, instead of a race.

Door messages are numbered through the simulator's state (see ``test_faults.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from device_profiles.events import Event, decode_batch, decode_event, encode_event
from device_profiles.profiles import ProfileRegistry
from simulators.pendant_serial import PendantSerialSimulator
from tests.edge_agent.helpers import (
    AgentProcess,
    Collector,
    door_agent_config,
    door_config,
    number,
    numbers,
    paused,
    produce,
    running_agent,
    unread_by,
    write_config,
    z2m_door,
)
from tests.harness.wait import WaitTimeout, async_wait_for

pytestmark = pytest.mark.integration

STATUS = "site-1/gw-1/status"
P1 = "00A1B2C3"


async def retained_status(broker: Any, root: str) -> tuple[str, bool]:
    """What a new subscriber gets on the gateway's status topic: (payload, retained)."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"probe-{uuid.uuid4().hex[:8]}"
    ) as client:
        await client.subscribe(f"{root}/{STATUS}", qos=1)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                return payload.decode(), msg.retain
    raise AssertionError("no status message")


def has(n: int) -> Callable[[Collector], bool]:
    """Whether door message ``n`` arrived."""
    return lambda c: n in numbers(c)


def queued_rows(path: Path) -> dict[int, Event]:
    """The events still in a (dead) agent's queue file, by seq; read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, payload FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    return {int(seq): decode_event(bytes(payload)) for seq, payload in rows}


async def test_sigkill_leaves_the_retained_status_offline_by_the_last_will(
    tmp_path: Path, broker_factory, topic_prefix
):
    central = broker_factory()
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path, central=central, root=root, broker={"keepalive": 5}, log_level="INFO"
    )
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    async with Collector(central, root) as col:
        agent.start()
        try:
            await col.wait_for(lambda c: c.status[-1:] == ["online"], what="online", limit_s=30)
            assert await retained_status(central, root) == ("online", True)
            await asyncio.to_thread(agent.kill)
            # The kernel closes the dead agent's socket: Mosquitto sees the connection
            # end without a DISCONNECT and publishes the will at once. (A gateway that
            # loses power sends nothing: then the broker fires the will after 1.5 x the
            # keepalive the agent announced, checked below.)
            await col.wait_for(lambda c: c.status[-1:] == ["offline"], what="the will")
            assert await retained_status(central, root) == ("offline", True)
            announced = "as carewatch-site-1-gw-1 (p2, c1, k5)"
            assert announced in central.log_text(200), central.log_text(20)
            agent.start()  # back: retained online again
            await col.wait_for(lambda c: c.status[-1:] == ["online"], what="online again")
            assert await retained_status(central, root) == ("online", True)
        finally:
            code = await asyncio.to_thread(agent.terminate)
    assert code == 0, agent.log()[-3000:]
    assert "uplink: connected" in agent.log()


async def test_a_silent_gateway_goes_offline_when_its_keepalive_expires(
    tmp_path: Path, broker_factory, topic_prefix
):
    """A power cut or a dead uplink: no FIN, no DISCONNECT, nothing more on the wire.
    Freezing the agent (SIGSTOP) keeps its socket open and silent; the broker must fire
    the will once 1.5 x the announced keepalive (5 s) passes without a packet."""
    central = broker_factory()
    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path, central=central, root=root, broker={"keepalive": 5}, log_level="INFO"
    )
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    async with Collector(central, root) as col:
        agent.start()
        assert agent.proc is not None
        try:
            await col.wait_for(lambda c: c.status[-1:] == ["online"], what="online", limit_s=30)
            agent.proc.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            await col.wait_for(lambda c: c.status[-1:] == ["offline"], what="the will", limit_s=20)
            # Not the socket closing: the broker waited for the keepalive to run out.
            assert time.monotonic() - frozen >= 5.0
            assert await retained_status(central, root) == ("offline", True)
            agent.proc.send_signal(signal.SIGCONT)  # power back: it reconnects by itself
            await col.wait_for(
                lambda c: c.status[-1:] == ["online"], what="online again", limit_s=30
            )
            assert await retained_status(central, root) == ("online", True)
        finally:
            with contextlib.suppress(ProcessLookupError):
                agent.proc.send_signal(signal.SIGCONT)
            code = await asyncio.to_thread(agent.terminate)
    assert code == 0, agent.log()[-3000:]


async def test_a_batch_unacknowledged_at_sigkill_is_sent_again_with_the_same_seqs(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
        # no heartbeat while the broker is paused: only event batches reach its socket
        health={"heartbeat_interval": 3600},
        # the first event goes alone, the next 19 in one full batch: the test knows
        # how many bytes the agent has sent once both are in the broker's socket
        queue={"linger": "60s", "batch_size": 19},
        log_level="INFO",
    )
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    async with Collector(central, root) as col, z2m_door(mosquitto, topic_prefix) as sim:
        agent.start()
        try:
            await col.wait_for(lambda c: c.sources_up(), what="agent subscribed", limit_s=30)
            await produce(sim, 0)
            await col.wait_for(lambda c: 0 in numbers(c), what="the first message")
            queue_db = tmp_path / "queue.db"
            # The collector can see message 0 before the agent has handled its PUBACK:
            # pausing the broker only once the row is gone keeps it out of the batch.
            await async_wait_for(
                lambda: not queued_rows(queue_db), timeout=20, message="message 0 acknowledged"
            )
            with paused(central):
                # stored, then published into the paused broker's socket, never acked
                await produce(sim, 1)
                await async_wait_for(lambda: unread_by(central) > 0, timeout=20, message="1 sent")
                for n in range(2, 21):
                    await produce(sim, n)
                try:
                    await async_wait_for(
                        lambda: len(queued_rows(queue_db)) == 20, timeout=20, message="20 queued"
                    )
                except WaitTimeout as timeout:
                    got = sorted(map(number, queued_rows(queue_db).values()), key=str)
                    raise AssertionError(f"{timeout}; queued door numbers: {got}") from None
                rows = queued_rows(queue_db)
                size = sum(len(encode_event(e)) for e in rows.values())
                await async_wait_for(
                    lambda: unread_by(central) >= size, timeout=20, message="both batches sent"
                )
                await asyncio.to_thread(agent.kill)
            # SIGCONT: the broker reads the dead agent's batches, delivers them and
            # fires the will; their PUBACKs go nowhere.
            await col.wait_for(lambda c: len(numbers(c)) == 21, what="the first copies")
            await col.wait_for(lambda c: c.status[-1:] == ["offline"], what="the will")
            unacked = queued_rows(queue_db)
            assert sorted(unacked) == sorted(rows)  # still queued: no PUBACK was stored
            assert {number(e) for e in unacked.values()} == set(range(1, 21))
            agent.start()
            await col.wait_for(
                lambda c: all(sum(e.seq == s for e in c.events) == 2 for s in unacked),
                what="the batch sent again",
            )
            for n in range(21, 30):  # one at a time: nothing in flight, no linger
                await produce(sim, n)
                await col.wait_for(has(n), what=f"message {n}")
        finally:
            code = await asyncio.to_thread(agent.terminate)
    assert code == 0, agent.log()[-3000:]
    # the resend carries the same seqs with the same content, and nothing else doubled
    copies: dict[int, list[Event]] = {}
    for e in col.events:
        copies.setdefault(e.seq, []).append(e)
    assert {s for s, c in copies.items() if len(c) > 1} == set(unacked)
    for s in unacked:
        assert copies[s] == [unacked[s], unacked[s]]
    assert numbers(col) == set(range(30))
    seqs_of: dict[int, set[int]] = {}
    for e in col.events:
        if (k := number(e)) is not None:
            seqs_of.setdefault(k, set()).add(e.seq)
    assert all(len(s) == 1 for s in seqs_of.values())  # no message became two events
    assert sorted(copies) == list(range(1, len(copies) + 1))


def presses(col: Collector) -> list[Event]:
    return [e for e in col.first_arrivals() if e.reading == "press"]


async def test_an_alarm_press_overtakes_a_telemetry_backlog(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central = broker_factory()
    root = f"{topic_prefix}/carewatch/v1"
    rf = PendantSerialSimulator(
        ProfileRegistry.load().get("oem-rf433-button-pendant"), "rf-1", [P1]
    )
    await rf.start()
    batch_size, inflight = 10, 4
    cfg = write_config(
        tmp_path,
        central=central,
        site_broker=mosquitto,
        root=root,
        devices=[
            door_config(topic_prefix),
            {
                "id": "pendant-1",
                "profile": "oem-rf433-button-pendant",
                "resident": "r-1",
                "serial": {"port": rf.port, "address": P1},
            },
        ],
        # door reports count as telemetry here; small batches make a long backlog
        queue={
            "batch_size": batch_size,
            "inflight": inflight,
            "low_priority_readings": ["contact"],
        },
    )
    try:
        async with (
            Collector(central, root) as col,
            running_agent(cfg) as agent,
            z2m_door(mosquitto, topic_prefix) as sim,
        ):
            q = agent.queue
            assert q is not None

            async def queued(depth: int, urgent: int) -> bool:
                stats = await q.stats()
                return stats.depth >= depth and stats.urgent == urgent

            # 1. the central broker is down: 300 door reports wait, then a press
            await asyncio.to_thread(central.stop)
            for n in range(300):
                await produce(sim, n)
            await async_wait_for(lambda: queued(300, 0), timeout=30, message="the backlog")
            await rf.press(pendant=P1)
            await async_wait_for(lambda: queued(301, 1), timeout=20, message="the press queued")
            await asyncio.to_thread(central.start)
            await col.wait_for(
                lambda c: len(numbers(c)) == 300 and len(presses(c)) == 1, what="all of phase 1"
            )
            # 2. the broker stops answering mid-session (paused): the batches already
            # in flight are its head; the press queued after the rest goes before them
            with paused(central):
                for n in range(300, 600):
                    await produce(sim, n)
                await async_wait_for(lambda: queued(300, 0), timeout=30, message="backlog 2")
                await rf.press(pendant=P1)
                await async_wait_for(lambda: queued(301, 1), timeout=20, message="press 2")
            await col.wait_for(
                lambda c: len(numbers(c)) == 600 and len(presses(c)) == 2, what="all of phase 2"
            )
    finally:
        await rf.stop()
    order = col.first_arrivals()
    at = {number(e): i for i, e in enumerate(order) if number(e) is not None}
    first, second = (order.index(p) for p in presses(col))
    # phase 1: at the reconnect the press goes before the whole backlog
    assert first < min(at[n] for n in range(300)), [number(e) for e in order[:5]]
    # phase 2: before the backlog's tail; only what was already in flight came first
    head = [n for n in range(300, 600) if at[n] < second]
    assert second < at[599]
    assert len(head) <= batch_size * inflight, len(head)
    assert all(p.urgent and p.resident == "r-1" for p in presses(col))
    # within the backlog, seq order holds
    seqs = [e.seq for e in order if not e.urgent]
    assert seqs == sorted(seqs)


async def test_events_close_together_share_a_batch_and_a_lone_one_still_goes(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
        queue={"linger": "1s", "batch_size": 5},
        # no heartbeat while the broker is paused: only event batches reach its socket
        health={"heartbeat_interval": 3600},
    )
    async with (
        Collector(central, root) as col,
        running_agent(cfg) as agent,
        z2m_door(mosquitto, topic_prefix) as sim,
    ):
        q = agent.queue
        assert q is not None
        await col.wait_for(
            lambda c: any(e.reading == "availability" for e in c.events), what="the door online"
        )
        await async_wait_for(lambda: q.store.depth == 0, message="nothing in flight")
        with paused(central):
            base = unread_by(central)
            # nothing in flight: the first report goes at once, alone
            await produce(sim, 0)
            await async_wait_for(lambda: unread_by(central) > base, message="report 0 sent")
            # while it awaits its PUBACK, the next ones wait to fill a batch: 1-5 fill
            # one (batch_size), 6 and 7 go when their linger is over, no PUBACK needed
            for n in range(1, 8):
                await produce(sim, n)
            await async_wait_for(lambda: q.store.depth == 8, message="8 queued")
            pending = await q.peek(urgent=False, after=0, limit=100, max_bytes=1 << 20)
            assert pending is not None
            size = sum(len(encode_event(e)) for e in decode_batch(pending.payload))
            await async_wait_for(
                lambda: unread_by(central) >= base + size, message="all 8 sent while paused"
            )
        await col.wait_for(lambda c: len(numbers(c)) == 8, what="the 8 reports")
        # a lone report with nothing in flight goes at once, without more traffic
        await produce(sim, 8)
        await col.wait_for(lambda c: 8 in numbers(c), what="the lone report")
    num = {e.seq: number(e) for e in col.events}
    doors = [tuple(num[s] for s in b) for b in col.batches if num.get(b[0]) is not None]
    assert doors == [(0,), (1, 2, 3, 4, 5), (6, 7), (8,)]
