"""Table-driven tests of the site operations detectors (occupancy, devices, gateways)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.context import ConfigContext
from stream.detectors.base import AlertSignal, Audience, Severity
from stream.detectors.operations import (
    CROWDING,
    DOWN,
    FOOTFALL,
    FOOTFALL_HIGH,
    GATEWAY_OFFLINE,
    LOW_BATTERY,
    SILENT,
    TAMPER,
    DeviceHealthDetector,
    GatewayDetector,
    OccupancyDetector,
    operations_detectors,
)
from stream.replay import OfflineRunner

MON = 1_767_571_200_000  # 2026-01-05T00:00Z, a Monday (site on UTC)
H = 3_600_000
M = 60_000
D = 24 * H
SITE = "point-1"
SITE_CONFIG = {
    "capacity": 10,
    "opening_hours": "08:00-18:00",
    "opening_days": ["mon", "tue", "wed", "thu", "fri"],
    "devices": {
        "door-1": {"report_interval": "1h"},
        "pendant-1": {"profile": "demo-pendant"},
    },
}

_seq = itertools.count(1)


def ev(hours: float, device: str, kind: str, reading: str, values: dict[str, Any]) -> Event:
    t = MON + round(hours * H)
    return Event(
        gateway="gw-1",
        seq=next(_seq),
        time=t,
        received=t,
        site=SITE,
        device=device,
        kind=kind,
        reading=reading,
        values=values,
    )


def counts(hours: float, n_in: int, n_out: int = 0) -> Event:
    return ev(hours, "counter-1", "footfall", "counts", {"in": n_in, "out": n_out})


def status(hours: float, online: bool) -> Event:
    return ev(hours, "gw-1", "gateway", "status", {"online": online})


def run(events: list[Event], until_h: float, **site: Any) -> list[AlertSignal]:
    ctx = ConfigContext({SITE: {**SITE_CONFIG, **site}}, {})
    detectors = operations_detectors(devices={"report_intervals": {"demo-pendant": 300}})
    runner = OfflineRunner(detectors, ctx)
    out: list[AlertSignal] = []
    for event in sorted(events, key=lambda e: e.time):
        out += runner.feed(event)
    out += runner.advance(MON + round(until_h * H))
    assert runner.errors == 0
    assert all(a.audience is Audience.OPERATIONS for a in out)
    return out


def summary(alerts: list[AlertSignal]) -> list[tuple[str, str, str, float]]:
    return [(a.action, a.condition, a.subject, round((a.time - MON) / H, 2)) for a in alerts]


CASES: list[tuple[str, list[Event], float, list[tuple[str, str, str, float]]]] = [
    (
        "crowding raised above capacity, cleared with hysteresis",
        [counts(9.0, 8), counts(9.5, 3), counts(10.0, 0, 1), counts(10.5, 0, 1)],
        11,
        [("raise", CROWDING, SITE, 9.5), ("clear", CROWDING, SITE, 10.5)],
    ),
    (
        "occupancy never goes below zero (a missed 'in')",
        [counts(9.0, 0, 5), counts(9.5, 11)],
        10,
        [("raise", CROWDING, SITE, 9.5)],
    ),
    (
        "reconciled after closing: drift does not carry over",
        [counts(9.0, 11)],
        20,
        [("raise", CROWDING, SITE, 9.0), ("clear", CROWDING, SITE, 18.5)],
    ),
    (
        "after closing time, extra people are taken as counter drift",
        [counts(22.0, 11)],
        25,
        [("raise", CROWDING, SITE, 22.0), ("clear", CROWDING, SITE, 23.0)],
    ),
    (
        "device silent after three reporting intervals, clears when heard",
        [
            ev(9.0, "door-1", "door", "contact", {"contact": True}),
            ev(13.0, "door-1", "door", "contact", {"contact": True}),
        ],
        14,
        [("raise", SILENT, "door-1", 12.0), ("clear", SILENT, "door-1", 13.0)],
    ),
    (
        "interval from the device's profile",
        [ev(9.0, "pendant-1", "pendant", "heartbeat", {"battery": 90, "activity": 1})],
        10,
        [("raise", SILENT, "pendant-1", 9.25)],
    ),
    (
        "gateway reports a device down, then up",
        [
            ev(
                9.0,
                "gw-1",
                "gateway",
                "device_status",
                {"device": "pir-2", "up": False, "reason": "no report"},
            ),
            ev(9.5, "gw-1", "gateway", "device_status", {"device": "pir-2", "up": True}),
        ],
        10,
        [("raise", DOWN, "pir-2", 9.0), ("clear", DOWN, "pir-2", 9.5)],
    ),
    (
        "zigbee availability offline, then a report",
        [
            ev(9.0, "pir-3", "motion", "availability", {"online": False}),
            ev(9.2, "pir-3", "motion", "occupancy", {"occupancy": True}),
        ],
        10,
        [("raise", DOWN, "pir-3", 9.0), ("clear", DOWN, "pir-3", 9.2)],
    ),
    (
        "low battery with hysteresis: 19 raises, 25 keeps, 95 clears",
        [
            ev(9.0, "pir-4", "motion", "occupancy", {"occupancy": True, "battery": 19}),
            ev(9.1, "pir-4", "motion", "occupancy", {"occupancy": True, "battery": 25}),
            ev(9.2, "pir-4", "motion", "occupancy", {"occupancy": True, "battery": 18}),
            ev(9.3, "pir-4", "motion", "occupancy", {"occupancy": True, "battery": 95}),
        ],
        10,
        [("raise", LOW_BATTERY, "pir-4", 9.0), ("clear", LOW_BATTERY, "pir-4", 9.3)],
    ),
    (
        "pendant low-battery report",
        [ev(9.0, "p-9", "pendant", "battery", {})],
        10,
        [("raise", LOW_BATTERY, "p-9", 9.0)],
    ),
    (
        "tamper on and off",
        [
            ev(9.0, "door-7", "door", "contact", {"contact": True, "tamper": True}),
            ev(9.1, "door-7", "door", "contact", {"contact": True, "tamper": True}),
            ev(9.5, "door-7", "door", "contact", {"contact": True, "tamper": False}),
        ],
        10,
        [("raise", TAMPER, "door-7", 9.0), ("clear", TAMPER, "door-7", 9.5)],
    ),
    (
        "gateway offline past the grace, then back",
        [status(9.0, False), status(10.0, True)],
        11,
        [("raise", GATEWAY_OFFLINE, "gw-1", 9.08), ("clear", GATEWAY_OFFLINE, "gw-1", 10.0)],
    ),
    (
        "a short blip of the gateway is not an alert",
        [status(9.0, False), status(9.05, True)],
        11,
        [],
    ),
]


@pytest.mark.parametrize(
    ("events", "until_h", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_operations_table(
    events: list[Event], until_h: float, expected: list[tuple[str, str, str, float]]
) -> None:
    assert summary(run(events, until_h)) == expected


def feed_in_order(events: list[Event], until_h: float, **site: Any) -> list[AlertSignal]:
    """Like run(), but in the order given: late deliveries stay late."""
    ctx = ConfigContext({SITE: {**SITE_CONFIG, **site}}, {})
    runner = OfflineRunner(operations_detectors(), ctx)
    out: list[AlertSignal] = []
    for event in events:
        out += runner.feed(event)
    out += runner.advance(MON + round(until_h * H))
    assert runner.errors == 0
    return out


def test_a_late_event_from_yesterday_does_not_reset_occupancy() -> None:
    """8 inside, a late 'in' from 23:59 the day before, then 5 more: 13 > capacity 10."""
    events = [counts(24 + 12.0, 8), counts(23 + 59 / 60, 1), counts(24 + 12.5, 5)]
    got = summary(feed_in_order(events, 24 + 13.0, opening_hours=None, opening_days=None))
    assert got == [("raise", CROWDING, SITE, 36.5)]


def test_a_late_event_from_an_earlier_hour_today_counts_without_rewinding() -> None:
    """A late 'in' from an hour ago still counts today; the current hour is not restarted."""
    events = [counts(12.2, 8), counts(11.5, 3), counts(12.4, 0, 2)]
    got = summary(feed_in_order(events, 12.6))
    assert got == [("raise", CROWDING, SITE, 11.5), ("clear", CROWDING, SITE, 12.4)]
    detector = OccupancyDetector()
    ctx = ConfigContext({SITE: SITE_CONFIG}, {})
    state = detector.initial_state(SITE)
    for event in events[:2]:
        state, _ = detector.step(state, event, ctx)
    assert (state.slot % 24, state.slot_in, state.occupancy) == (12, 8, 11)


def test_midnight_reset_without_opening_hours() -> None:
    got = summary(run([counts(22.0, 11)], 25, opening_hours=None, opening_days=None))
    assert got == [("raise", CROWDING, SITE, 22.0), ("clear", CROWDING, SITE, 24.0)]


def test_footfall_far_below_usual() -> None:
    """Three weeks of ~10 visitors an hour, then a Monday with nobody: a broken counter."""
    events = []
    for day in range(21):
        if day % 7 >= 5:
            continue
        for hour in range(8, 18):
            events.append(counts(day * 24 + hour + 0.5, 10, 10))
    quiet_day = 21 * 24
    events.append(counts(quiet_day + 12.2, 4, 0))  # someone at last, at 12:12
    alerts = run(events, quiet_day + 13)
    footfall = [a for a in alerts if a.condition == FOOTFALL]
    assert summary(footfall) == [
        ("raise", FOOTFALL, SITE, quiet_day + 10.0),
        ("clear", FOOTFALL, SITE, quiet_day + 12.2),
    ]
    assert footfall[0].severity is Severity.WARNING
    assert "nobody came in from 08:00 to 10:00, usually about 10 per hour" in footfall[0].reason


def test_no_footfall_alarm_when_closed_or_unlearned() -> None:
    events = [counts(day * 24 + 9.5, 10, 10) for day in range(21) if day % 7 < 5]
    # Only 09:00-10:00 has visitors: other hours are usually empty, no alarm there; the
    # weekend is closed.
    alerts = run(events, 21 * 24 + 9.0)
    assert [a for a in alerts if a.condition == FOOTFALL] == []


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="operations"):
        operations_detectors(bogus={})
    with pytest.raises(ConfigError, match="hysteresis"):
        OccupancyDetector(hysteresis=2)
    with pytest.raises(ConfigError):
        DeviceHealthDetector(low_battery=50, battery_ok=40)
    with pytest.raises(ConfigError, match="offline_grace"):
        GatewayDetector(offline_grace="a while")


def test_states_survive_encode_decode() -> None:
    import msgspec

    ctx = ConfigContext({SITE: SITE_CONFIG}, {})

    def make() -> list[Any]:
        return operations_detectors(devices={"report_intervals": {}})

    first = OfflineRunner(make(), ctx)
    for event in [
        counts(9.0, 11),
        status(9.5, False),
        ev(9.6, "door-1", "door", "contact", {"contact": True, "battery": 5}),
    ]:
        first.feed(event)
    second = OfflineRunner(make(), ctx)
    for (index, key), state in first.states.items():
        second.restore(
            index, key, msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=type(state))
        )
    alerts = second.advance(MON + round(19 * H))
    # (The gateway went offline at 9.5 and was alerted at 9.58, before the restart.)
    assert [(a.action, a.condition, round((a.time - MON) / H, 2)) for a in alerts] == [
        ("raise", SILENT, 12.6),
        ("clear", CROWDING, 18.5),
    ]


# --- footfall far above the usual -----------------------------------------------------------
def usual_weekdays(weeks: float, low: int = 20, high: int = 40) -> list[Event]:
    """``weeks`` of weekday opening hours (08:00-18:00), ``low``..``high`` people in."""
    events = []
    for day in range(round(weeks * 7)):
        if day % 7 >= 5:
            continue
        for hour in range(8, 18):
            n = low + (day * 7 + hour * 13) % (high - low + 1)
            events.append(counts(day * 24 + hour + 0.5, n, n))
    return events


WEEK4 = 21 * 24  # Monday of the fourth week, hours after MON
HIGH_CASES: list[tuple[str, list[Event], float, list[tuple[str, str, str, float]]]] = [
    (
        "142 people in an hour that usually has 20-40: raised at its end, cleared after",
        [*usual_weekdays(3), counts(WEEK4 + 9.5, 142, 142), counts(WEEK4 + 10.5, 30, 30)],
        WEEK4 + 11.01,
        [
            ("raise", FOOTFALL_HIGH, SITE, WEEK4 + 10.0),
            ("clear", FOOTFALL_HIGH, SITE, WEEK4 + 11.0),
        ],
    ),
    (
        "somewhat busier than usual (55 for 20-40) is not far above it",
        [*usual_weekdays(3), counts(WEEK4 + 9.5, 55, 55)],
        WEEK4 + 11.01,
        [],
    ),
    (
        "too little history for that hour: nothing",
        [*usual_weekdays(2 / 7), counts(2 * 24 + 9.5, 142, 142)],
        2 * 24 + 11.01,
        [],
    ),
    (
        "a small site: 15 in an hour that usually has 1-3 is under the minimum excess",
        [*usual_weekdays(3, 1, 3), counts(WEEK4 + 9.5, 15, 15)],
        WEEK4 + 11.01,
        [],
    ),
    (
        "weekends are learned apart: a Saturday crowd without Saturday history is not judged",
        [*usual_weekdays(3), counts(WEEK4 - 2 * 24 + 9.5, 142, 142)],
        WEEK4 - 2 * 24 + 11.01,
        [],
    ),
    (
        "the last opening hour: cleared when the site is closed",
        [
            *usual_weekdays(3),
            *[counts(WEEK4 + h + 0.5, 30, 30) for h in range(8, 17)],
            counts(WEEK4 + 17.5, 142, 142),
        ],
        WEEK4 + 19.01,
        [
            ("raise", FOOTFALL_HIGH, SITE, WEEK4 + 18.0),
            ("clear", FOOTFALL_HIGH, SITE, WEEK4 + 19.0),
        ],
    ),
]


@pytest.mark.parametrize(
    ("events", "until_h", "expected"),
    [c[1:] for c in HIGH_CASES],
    ids=[c[0] for c in HIGH_CASES],
)
def test_footfall_far_above_usual(
    events: list[Event], until_h: float, expected: list[tuple[str, str, str, float]]
) -> None:
    # Capacity out of the way: only footfall is under test here.
    alerts = run(events, until_h, capacity=1000)
    assert summary([a for a in alerts if a.condition in (FOOTFALL, FOOTFALL_HIGH)]) == expected


def test_footfall_high_reason_severity_audience() -> None:
    events = [*usual_weekdays(3), counts(WEEK4 + 9.5, 142, 142)]
    [alert] = [a for a in run(events, WEEK4 + 10.5, capacity=1000) if a.condition == FOOTFALL_HIGH]
    assert alert.audience is Audience.OPERATIONS and alert.severity is Severity.WARNING
    assert re.fullmatch(
        r"142 people entered between 09:00 and 10:00, usually (1\d|2\d)-(3\d|4\d) at this hour",
        alert.reason,
    ), alert.reason
    assert alert.details["count"] == 142


def test_a_lasting_rise_in_footfall_is_learned() -> None:
    """Twice the people every morning from week 4 on: alerted at first, then usual."""
    events = [e for e in usual_weekdays(9) if e.time < MON + 21 * D or (e.time - MON) % D > 10 * H]
    for day in range(21, 63):
        if day % 7 < 5:
            events.append(counts(day * 24 + 9.5, 80, 80))
    alerts = [a for a in run(events, 63 * 24, capacity=1000) if a.condition == FOOTFALL_HIGH]
    raised_days = [int((a.time - MON) // D) for a in alerts if a.action == "raise"]
    assert raised_days and raised_days[0] == 21
    assert max(raised_days) < 28  # usual after a week of it


# --- occupancy drift: a counter that misses exits ---------------------------------------------
def leaky_days(days: int, last_out: int = 8) -> list[Event]:
    """Weekdays of 36 people in and out; the counter sees 12 + 12 + ``last_out`` leave.

    With the default, 4 of 36 exits are missed: 1 per 8 counted.
    """
    events = []
    for day in range(days):
        if day % 7 >= 5:
            continue
        base = day * 24
        events += [counts(base + 8.5, 36), counts(base + 12.0, 0, 12)]
        events += [counts(base + 14.0, 0, 12), counts(base + 16.5, 0, last_out)]
    return events


WEEK2 = 7 * 24  # Monday of the second week
#: A day with 38 inside at a time (capacity 40): 38 in, 38 out of whom 4 are missed, 38 in.
BUSY_DAY = [counts(WEEK2 + 9.0, 38), counts(WEEK2 + 11.0, 0, 34), counts(WEEK2 + 13.0, 38)]
DRIFT_CASES: list[tuple[str, list[Event], float, list[tuple[str, str, str, float]]]] = [
    (
        "no history of the counter: missed exits make a false crowding",
        BUSY_DAY,
        WEEK2 + 14,
        [("raise", CROWDING, SITE, WEEK2 + 13.0)],
    ),
    (
        "a week of the counter missing exits: corrected, no false crowding",
        [*leaky_days(5), *BUSY_DAY],
        WEEK2 + 14,
        [],
    ),
    (
        "corrected, a real crowd is still raised",
        [*leaky_days(5), *BUSY_DAY, counts(WEEK2 + 13.5, 6)],
        WEEK2 + 14,
        [("raise", CROWDING, SITE, WEEK2 + 13.5)],
    ),
    (
        "no correction before anyone left: a full room in the morning is raised",
        [*leaky_days(5), counts(WEEK2 + 9.0, 41)],
        WEEK2 + 10,
        [("raise", CROWDING, SITE, WEEK2 + 9.0)],
    ),
    (
        "an accurate counter learns no drift",
        [*leaky_days(5, last_out=12), *BUSY_DAY],
        WEEK2 + 14,
        [("raise", CROWDING, SITE, WEEK2 + 13.0)],
    ),
]


@pytest.mark.parametrize(
    ("events", "until_h", "expected"),
    [c[1:] for c in DRIFT_CASES],
    ids=[c[0] for c in DRIFT_CASES],
)
def test_occupancy_corrects_learned_counter_drift(
    events: list[Event], until_h: float, expected: list[tuple[str, str, str, float]]
) -> None:
    alerts = run(events, until_h, capacity=40)
    assert summary([a for a in alerts if a.condition == CROWDING]) == expected


def test_drift_correction_is_in_the_reason() -> None:
    events = [*leaky_days(5), *BUSY_DAY, counts(WEEK2 + 13.5, 6)]
    [alert] = [a for a in run(events, WEEK2 + 14, capacity=40) if a.condition == CROWDING]
    # 82 in, 34 out counted: 48; the counter misses 1 exit per 8 counted: 34 / 8 = 4 more.
    assert alert.reason == (
        "44 people inside (48 counted, less 4 for exits the counters usually miss), "
        "the room holds 40"
    )
    assert alert.details["missed_exits"] == 4
