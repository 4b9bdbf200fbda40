"""Clock correction through the running agent, to the central broker.

A Raspberry Pi without RTC boots at 1970 and learns the time when NTP answers. The
agent's clock is given a wall clock that reads 1970 until the test "answers NTP" (the
real time from then on, and the sync probe says synchronized), through the agent's
``clock_factory``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge_agent.clock import BUILD_FLOOR_MS, Clock
from tests.edge_agent.helpers import (
    Collector,
    door_agent_config,
    number,
    numbers,
    produce,
    running_agent,
    z2m_door,
)
from tests.harness.wait import async_wait_for

pytestmark = pytest.mark.integration

SLACK_MS = 50  # ms truncation of two clocks; the bounds below are instants, not durations


class Ntp:
    """The gateway's wall clock and sync flag: 1970 and unsynchronized until :meth:`sync`."""

    def __init__(self) -> None:
        self.synced = False

    def wall(self) -> float:
        return time.time() if self.synced else 5.0

    def probe(self) -> bool:
        return self.synced

    def sync(self) -> None:
        self.synced = True

    def clock(self, last_trusted_ms: int | None, last_issued_ms: int | None) -> Clock:
        return Clock(
            trust="auto",
            sync_probe=self.probe,
            wall=self.wall,
            last_trusted_ms=last_trusted_ms,
            last_issued_ms=last_issued_ms,
        )


def ms() -> int:
    return int(time.time() * 1000)


async def test_queued_events_are_corrected_when_the_clock_syncs(
    tmp_path: Path, broker_factory, mosquitto, topic_prefix
):
    central, root, cfg = door_agent_config(
        tmp_path,
        broker_factory(),
        mosquitto,
        topic_prefix,
        clock={"trust": "auto"},
    )
    ntp = Ntp()
    started = ms()
    async with (
        Collector(central, root) as col,
        running_agent(cfg, clock_factory=ntp.clock) as agent,
        z2m_door(mosquitto, topic_prefix) as sim,
    ):
        q = agent.queue
        assert q is not None and agent.clock is not None

        async def depth() -> int:
            return (await q.stats()).depth

        async def corrected() -> bool:
            return (await q.stats()).counters.get("clock_corrected", 0) >= 10

        # A: untrusted and sent at once: they stay untrusted
        await col.wait_for(lambda c: any(e.reading == "availability" for e in c.events))
        for n in range(5):
            await produce(sim, n)
        await col.wait_for(lambda c: len(numbers(c)) == 5, what="A sent")
        await async_wait_for(lambda: q.store.depth == 0, message="A acknowledged")

        # B: untrusted and queued (the central broker is down) ...
        await asyncio.to_thread(central.stop)
        b0 = ms()
        for n in range(5, 15):
            await produce(sim, n)
        await async_wait_for(lambda: q.store.depth == 10, timeout=20, message="B queued")
        b1 = ms()
        assert not agent.clock.trusted
        # ... when NTP answers, still queued: corrected in the queue
        ntp.sync()
        await async_wait_for(corrected, timeout=20, message="B corrected in the queue")
        assert (await q.stats()).counters["clock_corrected"] == 10
        # the jump at synchronization is forward: the estimate ran from the build floor
        assert (agent.clock.correction_ms or 0) > 3_600_000
        # C: stamped by the trusted clock
        c0 = ms()
        for n in range(15, 20):
            await produce(sim, n)
        await async_wait_for(lambda: q.store.depth == 15, timeout=20, message="C queued")
        c1 = ms()
        await asyncio.to_thread(central.start)
        await col.wait_for(lambda c: len(numbers(c)) == 20, what="all 20")
        await col.wait_for(
            lambda c: bool(c.health) and c.health[-1]["clock_ok"] is True,
            what="a trusted heartbeat",
        )
        assert await depth() == 0

    events = [e for e in col.first_arrivals() if number(e) is not None]
    by_number = {number(e): e for e in events}
    assert len(by_number) == 20 == len(events)
    for n in range(5):  # the estimate: from the build floor, far behind the real time
        e = by_number[n]
        assert not e.clock_ok
        assert BUILD_FLOOR_MS <= e.received < started - 3_600_000, e
    for n in range(5, 15):  # corrected to the real time they were stamped at
        e = by_number[n]
        assert e.clock_ok, e
        assert b0 - SLACK_MS <= e.received <= b1 + SLACK_MS, (n, e.received - b0, b1 - b0)
        assert e.time == e.received  # no device time: the event time is shifted too
    for n in range(15, 20):
        e = by_number[n]
        assert e.clock_ok and c0 - SLACK_MS <= e.received <= c1 + SLACK_MS, e
    # one sequence, in receive order, whatever the clock did
    assert [number(e) for e in sorted(events, key=lambda e: e.seq)] == list(range(20))
    seqs = [e.seq for e in col.first_arrivals()]
    assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
    stamps = [e.received for e in sorted(col.first_arrivals(), key=lambda e: e.seq)]
    assert stamps == sorted(stamps)
