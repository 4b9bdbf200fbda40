"""Clocks: manual time wakes waiters; fast time is monotonic across restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream.clock import FastClock, ManualClock, SystemClock, clock_from_config


async def test_manual_clock_wakes_a_waiter_when_moved() -> None:
    clock = ManualClock(1_000)
    wake = asyncio.Event()
    waiter = asyncio.ensure_future(clock.wait_until(5_000, wake))
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(1_000)  # not there yet, but a waiter re-checks on every move
    await asyncio.wait_for(waiter, 1)
    assert clock.now_ms() == 2_000
    # a deadline already passed returns at once
    await asyncio.wait_for(clock.wait_until(2_000, wake), 1)
    with pytest.raises(ValueError):
        clock.set(1_999)


async def test_wake_event_interrupts_a_wait() -> None:
    for clock in (ManualClock(0), SystemClock()):
        wake = asyncio.Event()
        waiter = asyncio.ensure_future(clock.wait_until(None, wake))
        await asyncio.sleep(0)
        wake.set()
        await asyncio.wait_for(waiter, 1)


def test_fast_clock_is_anchored_at_its_epoch() -> None:
    epoch = int(time.time() * 1000) - 10_000  # started 10 s ago
    clock = FastClock(60, epoch)
    now = clock.now_ms()
    assert epoch + 590_000 <= now <= epoch + 700_000  # ~10 min of simulated time
    again = FastClock(60, epoch)  # "after a restart": same anchor, no jump back
    assert again.now_ms() >= now
    with pytest.raises(ValueError):
        FastClock(0)


def test_clock_from_config() -> None:
    assert isinstance(clock_from_config("system"), SystemClock)
    assert isinstance(clock_from_config("fast", 10), FastClock)
    with pytest.raises(ValueError):
        clock_from_config("sundial")
