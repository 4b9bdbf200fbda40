"""Detectors across daylight-saving changes (Europe/Berlin), with a simulated clock.

carewatch's own sites are in Asia/Shanghai (no DST), but habits and opening hours are
local time in any zone: in Berlin the night of the last Sunday of March is an hour
shorter (02:00 does not exist) and that of the last Sunday of October an hour longer
(02:00-03:00 happens twice).
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from device_profiles.events import Event
from stream.context import ConfigContext
from stream.detectors.base import AlertSignal
from stream.detectors.inactivity import InactivityDetector
from stream.detectors.noshow import NoShowDetector
from stream.detectors.operations import FOOTFALL, FOOTFALL_HIGH, operations_detectors
from stream.detectors.sitetime import LocalTime
from stream.replay import OfflineRunner

BERLIN = ZoneInfo("Europe/Berlin")
H = 3_600_000
SPRING = date(2026, 3, 29)  # 02:00 CET -> 03:00 CEST
AUTUMN = date(2026, 10, 25)  # 03:00 CEST -> 02:00 CET
_seq = itertools.count(1)


def at(day: date, hour: int, minute: int = 0, zone: ZoneInfo = BERLIN) -> int:
    """ms UTC of a local wall-clock time."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp() * 1000)


def local(ms: int, zone: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="minutes")


def event(t: int, site: str, device: str, kind: str, reading: str, values: dict[str, Any]) -> Event:
    person = values.get("person")
    return Event(
        gateway="gw-1",
        seq=next(_seq),
        time=t,
        received=t,
        site=site,
        device=device,
        kind=kind,
        reading=reading,
        values=values,
        resident=person if isinstance(person, str) else ("r1" if kind == "motion" else None),
    )


def replay(
    detectors: list[Any], sites: dict[str, Any], events: list[Event], until: int
) -> list[AlertSignal]:
    runner = OfflineRunner(detectors, ConfigContext(sites, {}))
    out: list[AlertSignal] = []
    for e in sorted(events, key=lambda e: e.time):
        out += runner.feed(e)
    out += runner.advance(until)
    assert runner.errors == 0
    return out


# --- local hours that are not an hour long ------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "day", "lengths_h"),
    [
        ("Europe/Berlin", SPRING, [1, 0, 1]),  # 01:00-02:00, 02:00-03:00, 03:00-04:00
        ("Europe/Berlin", AUTUMN, [1, 2, 1]),
        ("Asia/Shanghai", SPRING, [1, 1, 1]),
        ("America/New_York", date(2026, 3, 8), [1, 0, 1]),
        ("America/New_York", date(2026, 11, 1), [2, 1, 1]),  # 01:00 happens twice there
    ],
)
def test_local_hour_slots_start_and_length(zone: str, day: date, lengths_h: list[int]) -> None:
    lt = LocalTime(ZoneInfo(zone))
    first = lt.slot(at(day, 12, zone=ZoneInfo(zone))) - 12 + 1  # the slot of 01:00 local
    starts = [lt.slot_start(first + i) for i in range(4)]
    assert [(b - a) // H for a, b in itertools.pairwise(starts)] == lengths_h
    assert lt.slot(starts[0]) == first


# --- hourly footfall model ----------------------------------------------------------------
def steady_footfall(first: date, days: int, per_hour: int = 40) -> list[Event]:
    """A site open around the clock: about ``per_hour`` people in per real hour."""
    start = at(first, 0)
    return [
        event(
            start + i * H // 4,
            "s-1",
            "counter-1",
            "footfall",
            "counts",
            {"in": per_hour // 4 + i * 7919 % 5 - 2, "out": per_hour // 4},
        )
        for i in range(days * 24 * 4)
    ]


@pytest.mark.parametrize(
    ("first", "options"),
    [
        # The repeated hour counts two hours of people: twice the usual, so above a
        # high_factor of 1.5 (the default 2 makes it a coin toss).
        (AUTUMN - timedelta(days=24), {"high_factor": 1.5}),
        (SPRING - timedelta(days=24), {"quiet_hours": 1}),  # the skipped hour had nobody
    ],
    ids=["autumn: no false 'far above usual'", "spring: no false 'nobody came in'"],
)
def test_footfall_model_across_dst(first: date, options: dict[str, Any]) -> None:
    events = steady_footfall(first, 28)
    sites = {"s-1": {"timezone": "Europe/Berlin", "capacity": 10_000}}
    detectors = operations_detectors(occupancy=options)
    alerts = replay(detectors, sites, events, events[-1].time)
    footfall = [a for a in alerts if a.condition in (FOOTFALL, FOOTFALL_HIGH)]
    assert [(a.condition, local(a.time), a.reason) for a in footfall] == []


def test_a_double_hour_that_was_busy_says_it_lasted_two_hours() -> None:
    """A crowd in the repeated hour is still judged per hour, and the reason says 2 h."""
    events = steady_footfall(AUTUMN - timedelta(days=24), 28)
    events.append(event(at(AUTUMN, 2, 30), "s-1", "counter-1", "footfall", "counts", {"in": 300}))
    sites = {"s-1": {"timezone": "Europe/Berlin", "capacity": 10_000}}
    alerts = replay(operations_detectors(), sites, events, events[-1].time)
    [high] = [a for a in alerts if a.condition == FOOTFALL_HIGH and a.action == "raise"]
    assert high.reason.startswith("380 people entered in the 2 h between 02:00 and 03:00")
    assert local(high.time) == "2026-10-25T03:00+01:00"


# --- inactivity: hour-of-day habits -------------------------------------------------------
def routine(first: date, days: int) -> list[Event]:
    """Up 07:00-21:00 local with motion every 20 minutes, asleep otherwise."""
    events = []
    for d in range(days):
        day = first + timedelta(days=d)
        for minute in range(7 * 60, 21 * 60, 20):
            t = at(day, minute // 60, minute % 60)
            events.append(event(t, "home-1", "pir-1", "motion", "occupancy", {"occupancy": True}))
    return events


@pytest.mark.parametrize(
    "collapse_day",
    [SPRING, SPRING + timedelta(days=2), AUTUMN, AUTUMN + timedelta(days=2)],
    ids=["spring, that Sunday", "spring, Tuesday", "autumn, that Sunday", "autumn, Tuesday"],
)
def test_inactivity_habits_across_dst(collapse_day: date) -> None:
    """Three weeks of the same local routine, then silence from 10:00 local: no false
    alarm over the short or long night, and the collapse found at 11:30 local (the
    minimum limit), as on any other day."""
    history = routine(collapse_day - timedelta(days=21), 22)
    events = [e for e in history if e.time <= at(collapse_day, 10)]
    sites = {"home-1": {"timezone": "Europe/Berlin"}}
    alerts = replay([InactivityDetector()], sites, events, at(collapse_day, 23))
    assert [(a.condition, local(a.time)) for a in alerts] == [
        ("inactivity", f"{local(at(collapse_day, 11, 30))}")
    ]
    assert "since 10:00 (1 h 30 min), usually under 20 min" in alerts[0].reason


# --- no-shows: the schedule is local time -------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [SPRING, AUTUMN],
    ids=["spring", "autumn"],
)
def test_noshow_schedule_across_dst(change: date) -> None:
    """A member who checks in at 09:00 local on Sundays and Mondays: absent on the Sunday
    of the change and the Monday after, alerted at 09:45 local on both."""
    events = []
    for week in (3, 2, 1):
        for day in (change - timedelta(days=7 * week), change - timedelta(days=7 * week - 1)):
            values = {"person": "m1", "score": 0.9, "liveness": True, "terminal": "face-1"}
            events.append(event(at(day, 9), "c-1", "face-1", "face_terminal", "checkin", values))
    sites = {"c-1": {"timezone": "Europe/Berlin", "opening_hours": "08:00-17:00"}}
    monday = change + timedelta(days=1)
    alerts = replay([NoShowDetector()], sites, events, at(monday, 12))
    raises = [local(a.time) for a in alerts if a.action == "raise"]
    assert raises == [local(at(change, 9, 45)), local(at(monday, 9, 45))]
    assert [r[:16] for r in raises] == [f"{change}T09:45", f"{monday}T09:45"]
