"""Table-driven tests of the inactivity (silent resident) detector, with a simulated clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.context import ConfigContext
from stream.detectors.base import AlertSignal, Severity
from stream.detectors.inactivity import CONDITION, NOT_BACK, UNSEEN, InactivityDetector
from stream.replay import OfflineRunner
from tests.stream.helpers import T0  # 2026-01-01T00:00Z, a Thursday

H = 3_600_000
M = 60_000
SITE = "home-1"
DEVICES = {
    "door-front": {"placement": "front_door"},
    "pir-kitchen": {"placement": "kitchen"},
    "door-fridge": {"placement": "fridge"},
}


class Maker:
    """Events of one home (site home-1, gateway gw-1, resident res-1), times in hours."""

    def __init__(self) -> None:
        self.seq = 0

    def event(
        self, hours: float, kind: str, reading: str, values: dict[str, Any], **kw: Any
    ) -> Event:
        self.seq += 1
        t = T0 + round(hours * H)
        fields: dict[str, Any] = {
            "gateway": "gw-1",
            "seq": self.seq,
            "time": t,
            "received": t,
            "site": SITE,
            "device": f"{kind}-x",
            "kind": kind,
            "reading": reading,
            "values": values,
            "resident": "res-1",
        }
        fields.update(kw)
        return Event(**fields)

    def motion(self, hours: float) -> Event:
        return self.event(hours, "motion", "occupancy", {"occupancy": True}, device="pir-kitchen")

    def door(self, hours: float, is_open: bool, device: str = "door-front") -> Event:
        values = {"contact": not is_open, "open": is_open}
        return self.event(hours, "door", "contact", values, device=device)

    def gateway(self, hours: float, online: bool, gateway: str = "gw-1") -> Event:
        return self.event(
            hours,
            "gateway",
            "status",
            {"online": online},
            device=gateway,
            gateway=gateway,
            resident=None,
        )

    def device_status(self, hours: float, device: str, up: bool) -> Event:
        values = {"device": device, "up": up, "reason": "no report"}
        return self.event(hours, "gateway", "device_status", values, device="gw-1", resident=None)

    def heartbeat(self, hours: float, activity: int) -> Event:
        return self.event(
            hours, "pendant", "heartbeat", {"battery": 90, "activity": activity}, device="pendant-1"
        )


def run(
    events: list[Event],
    until_h: float,
    *,
    options: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    resident: dict[str, Any] | None = None,
    absent: tuple[float, float] | None = None,
) -> list[AlertSignal]:
    sites = {SITE: {"devices": DEVICES, **(site or {})}}
    residents = {"res-1": resident or {}}

    def is_absent(who: str, at_ms: int) -> bool:
        return absent is not None and T0 + absent[0] * H <= at_ms < T0 + absent[1] * H

    ctx = ConfigContext(sites, residents, is_absent)
    runner = OfflineRunner([InactivityDetector(**(options or {}))], ctx)
    alerts: list[AlertSignal] = []
    for event in sorted(events, key=lambda e: e.time):
        alerts += runner.feed(event)
    alerts += runner.advance(T0 + round(until_h * H))
    assert runner.errors == 0
    return alerts


def summary(alerts: list[AlertSignal]) -> list[tuple[str, str, float]]:
    """(action, condition, hours after T0) of each alert."""
    return [(a.action, a.condition, round((a.time - T0) / H, 2)) for a in alerts]


@dataclass
class Case:
    name: str
    events: list[Event]
    until_h: float
    expected: list[tuple[str, str, float]]
    kw: dict[str, Any] = field(default_factory=dict)


m = Maker()
CASES = [
    Case("learning: fixed day limit of 6 h", [m.motion(9.0)], 20, [("raise", CONDITION, 15.0)]),
    Case("learning: night limit of 12 h", [m.motion(22.0)], 40, [("raise", CONDITION, 34.0)]),
    Case("activity in time: nothing", [m.motion(9.0), m.motion(14.0)], 19.9, []),
    Case(
        "activity after the alert clears it",
        [m.motion(9.0), m.motion(16.0)],
        17,
        [("raise", CONDITION, 15.0), ("clear", CONDITION, 16.0)],
    ),
    Case(
        "front door then silence: away, not back by 22:00",
        [m.motion(9.0), m.door(9.1, True), m.door(9.11, False)],
        30,
        [("raise", NOT_BACK, 22.0)],
    ),
    Case(
        "away, back home before night: nothing",
        [m.door(9.0, True), m.door(9.01, False), m.door(12.0, True), m.motion(12.05)],
        17.9,
        [],
    ),
    Case(
        "away and back in the evening: the not-back alert clears",
        [m.door(9.0, True), m.door(9.01, False), m.door(23.0, True), m.motion(23.05)],
        23.5,
        [("raise", NOT_BACK, 22.0), ("clear", NOT_BACK, 23.0)],
    ),
    Case(
        "inner door (fridge) is activity at home, not an outing",
        [m.motion(8.0), m.door(9.0, True, "door-fridge"), m.door(9.01, False, "door-fridge")],
        16,
        [("raise", CONDITION, 15.01)],
    ),
    Case(
        "gateway offline: unknown, no inactivity alarm",
        [m.motion(9.0), m.gateway(10.0, False)],
        21.9,
        [],
    ),
    Case(
        "gateway offline for 12 h: the responders hear the home is unseen",
        [m.motion(9.0), m.gateway(10.0, False)],
        40,
        [("raise", UNSEEN, 22.0)],
    ),
    Case(
        "unseen clears when the gateway is back, then the inactivity watch resumes",
        [m.motion(9.0), m.gateway(10.0, False), m.gateway(23.0, True)],
        24,
        [("raise", UNSEEN, 22.0), ("clear", UNSEEN, 23.0), ("raise", CONDITION, 23.25)],
    ),
    Case(
        "a sensor down for 12 h: unseen too",
        [m.motion(9.0), m.device_status(10.0, "pir-kitchen", False)],
        30,
        [("raise", UNSEEN, 22.0)],
    ),
    Case(
        "unknown_limit from the resident's config",
        [m.motion(9.0), m.gateway(10.0, False)],
        30,
        [("raise", UNSEEN, 14.0)],
        {"resident": {"inactivity": {"unknown_limit": "4h"}}},
    ),
    Case(
        "unknown_limit 0: never",
        [m.motion(9.0), m.gateway(10.0, False)],
        80,
        [],
        {"options": {"unknown_limit": 0}},
    ),
    Case(
        "unknown during a known absence: nothing",
        [m.motion(9.0), m.gateway(10.0, False)],
        30,
        [],
        {"absent": (9.5, 40.0)},
    ),
    Case(
        "a gateway that never saw the resident at home does not blind them",
        [m.motion(9.0), m.gateway(10.0, False, gateway="gw-other")],
        16,
        [("raise", CONDITION, 15.0)],
    ),
    Case(
        "gateway back online: the alarm waits the grace after it",
        [m.motion(9.0), m.gateway(10.0, False), m.gateway(20.0, True)],
        21,
        [("raise", CONDITION, 20.25)],
    ),
    Case(
        "a sensor of the resident down: unknown",
        [m.motion(9.0), m.device_status(10.0, "pir-kitchen", False)],
        21.9,
        [],
    ),
    Case(
        "another site's device down does not blind the resident",
        [m.motion(9.0), m.device_status(10.0, "pir-elsewhere", False)],
        16,
        [("raise", CONDITION, 15.0)],
    ),
    Case(
        "pendant heartbeat with activity counts, activity 0 does not",
        [m.motion(9.0), m.heartbeat(11.0, 12), m.heartbeat(12.0, 0)],
        18,
        [("raise", CONDITION, 17.0)],
    ),
    Case(
        "an impact is not activity (it may be the fall)",
        [m.motion(9.0), m.event(9.5, "pendant", "impact", {"peak_g": 4.0}, device="p-1")],
        16,
        [("raise", CONDITION, 15.0)],
    ),
    Case(
        "a door report with an unchanged contact is not activity",
        [m.door(9.0, False, "door-fridge"), m.door(12.0, False, "door-fridge")],
        16,
        [("raise", CONDITION, 15.0)],
    ),
    Case(
        "motion sensor's 'no more motion' is not activity",
        [m.motion(9.0), m.event(10.0, "motion", "occupancy", {"occupancy": False})],
        16,
        [("raise", CONDITION, 15.0)],
    ),
    Case(
        "resident override of the limit",
        [m.motion(9.0)],
        12,
        [("raise", CONDITION, 11.0)],
        {"resident": {"inactivity": {"default_day_limit": "2h"}}},
    ),
    Case(
        "disabled for the resident",
        [m.motion(9.0)],
        30,
        [],
        {"resident": {"inactivity": {"enabled": False}}},
    ),
    Case("a day-care center is not a home", [m.motion(9.0)], 30, [], {"site": {"type": "center"}}),
    Case(
        "home elsewhere: not watched here",
        [m.motion(9.0)],
        30,
        [],
        {"resident": {"home": "home-2"}},
    ),
    Case("known absence: nothing", [m.motion(9.0)], 20, [], {"absent": (10.0, 30.0)}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_inactivity_table(case: Case) -> None:
    assert summary(run(case.events, case.until_h, **case.kw)) == case.expected


def test_not_back_home_pages_in_quiet_hours() -> None:
    """Raised at 22:00, when quiet hours begin: its severity must be one that pages then."""
    from stream.config import DEFAULT_NIGHT_PAGING

    mk = Maker()
    alerts = run([mk.door(9.0, True), mk.door(9.01, False), mk.door(23.0, True)], 23.5)
    alerts += run([mk.door(9.0, True), mk.door(9.01, False)], 22.5)
    assert [(a.action, a.condition) for a in alerts[:2]] == [
        ("raise", NOT_BACK),
        ("clear", NOT_BACK),
    ]
    for alert in alerts:
        assert alert.severity is Severity.HIGH
        assert alert.severity.value in DEFAULT_NIGHT_PAGING


def test_unseen_home_reason_and_severity() -> None:
    """Living alone: HIGH (it pages at night too); otherwise WARNING. Says what is down."""
    mk = Maker()
    events = [mk.motion(9.0), mk.gateway(10.0, False), mk.device_status(11.0, "pir-kitchen", False)]
    [alert] = run(events, 30, resident={"lives_alone": True})
    assert alert.condition == UNSEEN and alert.resident == alert.subject == "res-1"
    assert alert.severity is Severity.HIGH
    assert alert.reason == (
        "we cannot see res-1's home for 12 h: gateway gw-1 offline and sensor pir-kitchen "
        "down since 10:00; nobody is watching for a fall or a collapse until it is back"
    )
    assert alert.details["gateways_offline"] == ["gw-1"]
    [alert] = run(events, 30)
    assert alert.severity is Severity.WARNING


def test_reason_is_plain_words() -> None:
    mk = Maker()
    [alert] = run([mk.motion(9 + 40 / 60)], 16)
    assert alert.severity is Severity.HIGH
    assert alert.reason.startswith("no motion activity at home since 09:40 (6 h)")
    assert alert.resident == alert.subject == "res-1"
    assert alert.details["learned"] is False


def routine(days: int, mk: Maker, *, step_min: int = 20) -> list[Event]:
    """Awake 07:00-21:00 with motion every ``step_min`` minutes, asleep otherwise."""
    events = []
    for day in range(days):
        t = day * 24 + 7.0
        while t < day * 24 + 21.0:
            events.append(mk.motion(t))
            t += step_min / 60
    return events


def test_learned_limit_is_short_for_an_active_person() -> None:
    mk = Maker()
    collapse_h = 14 * 24 + 10.0  # day 15, 10:00: last motion, then silence
    history = [e for e in routine(15, mk) if e.time <= T0 + collapse_h * H]
    alerts = run(history, collapse_h + 12)
    raises = [a for a in alerts if a.action == "raise"]
    # No false alarm in two weeks of the routine (nights included) ...
    assert all(a.time >= T0 + collapse_h * H for a in raises), summary(raises)
    # ... and the silence after 10:00 is caught after the minimum limit (1.5 h), well
    # before the 6 h default, with a reason that says what is usual.
    [alert] = raises
    assert T0 + (collapse_h + 1.5) * H <= alert.time <= T0 + (collapse_h + 2.0) * H
    assert "usually under 20 min at this time of day" in alert.reason
    assert alert.details["learned"] is True


def test_learned_night_is_not_an_alarm() -> None:
    mk = Maker()
    history = routine(20, mk)
    alerts = run(history, 20 * 24 + 9)  # the last night ends at 07:00 on day 21: no event
    raises = [a for a in alerts if a.action == "raise"]
    # Only the final silence (no wake-up on day 21 at all) may alert, and not before 10 h
    # after going to bed at 21:00.
    assert all(a.time >= T0 + (19 * 24 + 21 + 10) * H for a in raises), summary(raises)


def test_state_is_compact_and_fixed_size() -> None:
    import msgspec

    mk = Maker()
    ctx = ConfigContext({SITE: {"devices": DEVICES}}, {})
    detector = InactivityDetector()
    runner = OfflineRunner([detector], ctx)
    for event in routine(60, mk, step_min=5):
        runner.feed(event)
    [state] = runner.states.values()
    size_60 = len(msgspec.msgpack.encode(state))
    for event in routine(30, mk, step_min=5):
        runner.feed(event)
    [state] = runner.states.values()
    assert len(msgspec.msgpack.encode(state)) <= size_60 + 64  # does not grow with history
    assert size_60 < 4096


def test_bad_options_name_the_option() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        InactivityDetector(quantile=1.5)
    with pytest.raises(ConfigError, match="margin"):
        InactivityDetector(margin="soon")
    with pytest.raises(ConfigError, match="unknown option"):
        InactivityDetector(bogus=1)


@pytest.mark.parametrize("cut_day", [10, 17])
def test_restart_from_stored_state_gives_the_same_alerts(cut_day: int) -> None:
    """States survive an encode/decode (the runtime persists them) mid-history."""
    import msgspec

    mk = Maker()
    collapse_h = 20 * 24 + 10.0
    events = [e for e in routine(21, mk) if e.time <= T0 + collapse_h * H]
    events.insert(len(events) // 3, mk.gateway(5 * 24 + 3, False))
    events.insert(len(events) // 3 + 1, mk.gateway(5 * 24 + 4, True))
    events.sort(key=lambda e: e.time)
    until = T0 + round((collapse_h + 12) * H)
    ctx = ConfigContext({SITE: {"devices": DEVICES}}, {})

    straight = OfflineRunner([InactivityDetector()], ctx)
    expected = [a for e in events for a in straight.feed(e)] + straight.advance(until)

    first = OfflineRunner([InactivityDetector()], ctx)
    cut = T0 + cut_day * 24 * H
    got = [a for e in events if e.time < cut for a in first.feed(e)]
    got += first.advance(cut)
    second = OfflineRunner([InactivityDetector()], ctx)  # a fresh process
    for (index, key), state in first.states.items():
        blob = msgspec.msgpack.encode(state)
        second.restore(index, key, msgspec.msgpack.decode(blob, type=type(state)))
    got += [a for e in events if e.time >= cut for a in second.feed(e)]
    got += second.advance(until)
    assert got == expected
    assert [a.action for a in expected if a.condition == CONDITION][-1] == "raise"


# --- evenings: going to bed, or silent in the kitchen ------------------------------------------
DEVICES_WITH_BEDROOM = {
    **DEVICES,
    "pir-bedroom": {"placement": "bedroom"},
    "pir-bathroom": {"placement": "bathroom"},
}


OCCUPIED = {"occupancy": True}


def evening_history(cut_h: float | None = None, *then: tuple[float, str]) -> list[Event]:
    """15 days up 07:00-21:00 (kitchen motion every 20 min), to bed at 21:00 through the
    bedroom; cut after ``cut_h`` hours, then motion at (hours, device) ``then``."""
    mk = Maker()
    events = []
    for day in range(15):
        t = day * 24 + 7.0
        while t < day * 24 + 20.9:
            events.append(mk.motion(t))
            t += 1 / 3
        events.append(
            mk.event(day * 24 + 21.0, "motion", "occupancy", OCCUPIED, device="pir-bedroom")
        )
    if cut_h is not None:
        events = [e for e in events if e.time <= T0 + cut_h * H]
    return events + [
        mk.event(hours, "motion", "occupancy", OCCUPIED, device=device) for hours, device in then
    ]


DAY15 = 14 * 24
EVENING_CASES = [
    (
        "silent in the kitchen from 20:20, before bedtime: found after the day's 1.5 h",
        evening_history(DAY15 + 20.4),
        {},
        DAY15 + 36,
        [("raise", CONDITION, DAY15 + 21.83)],
    ),
    (
        "the same with bedtime_places off: judged as a night, found next morning",
        evening_history(DAY15 + 20.4),
        {"bedtime_places": False},
        DAY15 + 36,
        [("raise", CONDITION, DAY15 + 34.33)],
    ),
    (
        "to bed through the bedroom as usual: no alarm over the night",
        evening_history(),
        {},
        DAY15 + 30.9,
        [],
    ),
    (
        "to bed an hour early, through the bedroom: no alarm",
        evening_history(DAY15 + 19.9, (DAY15 + 20.0, "pir-bedroom")),
        {},
        DAY15 + 30.9,
        [],
    ),
    (
        "a bathroom trip after going to bed is part of the night",
        evening_history(None, (DAY15 + 21.5, "pir-bedroom"), (DAY15 + 21.52, "pir-bathroom")),
        {},
        DAY15 + 30.9,
        [],
    ),
]


@pytest.mark.parametrize(
    ("events", "options", "until_h", "expected"),
    [c[1:] for c in EVENING_CASES],
    ids=[c[0] for c in EVENING_CASES],
)
def test_evening_silence_is_not_bedtime_when_it_starts_elsewhere(
    events: list[Event],
    options: dict[str, Any],
    until_h: float,
    expected: list[tuple[str, str, float]],
) -> None:
    alerts = run(events, until_h, options=options, site={"devices": DEVICES_WITH_BEDROOM})
    assert summary([a for a in alerts if a.time >= T0 + (DAY15 + 12) * H]) == expected


def test_evening_silence_reason_says_it_is_not_bedtime() -> None:
    events = evening_history(DAY15 + 20.4)
    [alert] = [
        a
        for a in run(events, DAY15 + 23, site={"devices": DEVICES_WITH_BEDROOM})
        if a.time >= T0 + DAY15 * H
    ]
    assert alert.reason == (
        "no motion activity at home since 20:20 (1 h 30 min), usually under 20 min at this "
        "time of day when not going to bed (the last activity was motion (kitchen), not "
        "where this person goes to bed)"
    )
    assert alert.details["not_bedtime"] is True


def test_a_bad_resident_override_keeps_the_site_overrides() -> None:
    """Overrides are checked when the config is read; a context built by other means
    (replay, embedders) may still hold a bad one: it alone is left out."""
    ctx = ConfigContext(
        {SITE: {"devices": DEVICES, "inactivity": {"enabled": False}}},
        {"res-1": {"inactivity": {"margin": "soon"}}},
    )
    detector = InactivityDetector()
    state, _ = detector.step(detector.initial_state(SITE), Maker().motion(9.0), ctx)
    assert "res-1" not in state.residents  # not watched at this site, as it says


def commuter(days: int, mk: Maker) -> list[Event]:
    """Home 07:00-08:30 and 18:00-21:00 (motion every 20 min), out at work in between."""
    events = []
    for day in range(days):
        base = day * 24
        events += [mk.motion(base + 7 + i / 3) for i in range(5)]  # 07:00-08:20
        events += [mk.door(base + 8.5, True), mk.door(base + 8.51, False)]
        events += [mk.door(base + 18, True), mk.door(base + 18.01, False)]
        events += [mk.motion(base + 18.02 + i / 3) for i in range(9)]  # 18:01-20:42
    return events


def test_an_hour_seldom_spent_at_home_is_judged_by_the_persons_whole_day() -> None:
    """A commuter stays home one day and goes silent at 13:00, an hour never seen at home:
    judged against their own daytime quiet periods (20 min), not the 6 h default."""
    mk = Maker()
    day = 10 * 24
    stay = [mk.motion(day + 7 + i / 3) for i in range(19)]  # 07:00-13:00, then silence
    alerts = run(commuter(10, mk) + stay, day + 24)
    raises = [a for a in alerts if a.action == "raise"]
    assert [(a.condition, round((a.time - T0) / H - day, 2)) for a in raises] == [
        (CONDITION, 13 + 1.5)  # 13:00 + min_limit; the fixed default would say 19:00
    ], summary(raises)
    [alert] = raises
    assert alert.reason.endswith("usually under 20 min during the day"), alert.reason
    assert alert.details["learned"] is True and alert.details["learned_from"] == "day"
    # A person with too little history in all is still judged by the fixed default.
    stay = [mk.motion(3 * 24 + 7 + i / 3) for i in range(19)]
    alerts = run(commuter(3, mk) + stay, 4 * 24)
    [early] = [a for a in alerts if a.action == "raise"]
    assert early.time == T0 + (3 * 24 + 13 + 6) * H
    assert "still learning this person's habits (4 days of history)" in early.reason


def night_owl(evenings: int, mk: Maker, *, back_h: float = 24.5) -> list[Event]:
    """Home all day, out from 19:00 every evening, back at ``back_h`` (00:30) at night."""
    events = []
    for day in range(evenings):
        base = day * 24
        events += [mk.motion(base + h) for h in (8, 10, 12, 14, 16, 18)]
        events += [mk.door(base + 19, True), mk.door(base + 19.01, False)]
        events += [mk.door(base + back_h, True), mk.door(base + back_h + 0.01, False)]
        events.append(mk.motion(base + back_h + 0.02))
    return events


#: Evenings 0-2 alert at 22:00: fewer than three late returns are known yet.
LEARNING = [22.0, 46.0, 70.0]


@pytest.mark.parametrize(
    ("options", "raised", "back_by"),
    [
        # Once known, 00:30 returns no longer alert; the evening with no return alerts at
        # 80 % of the late returns (00:30) + 30 min.
        ({}, [*LEARNING, 6 * 24 + 25.0], "01:00"),
        # At most 1 h after not_back_by: the 00:30 returns alert too, at 23:00.
        ({"late_return_max": "1h"}, [*LEARNING, 95.0, 119.0, 143.0, 6 * 24 + 23.0], "23:00"),
        # Never learned: always not_back_by.
        ({"late_return_max": 0}, [d * 24 + 22.0 for d in range(7)], None),
    ],
)
def test_someone_often_back_late_is_judged_by_their_own_late_returns(
    options: dict[str, Any], raised: list[float], back_by: str | None
) -> None:
    mk = Maker()
    last = 6 * 24
    then = [mk.motion(last + h) for h in (8, 10, 12, 14, 16, 18)]
    then += [mk.door(last + 19, True), mk.door(last + 19.01, False)]
    alerts = run(night_owl(6, mk) + then, last + 30, options=options)
    assert all(a.condition == NOT_BACK for a in alerts), summary(alerts)
    assert [round((a.time - T0) / H, 2) for a in alerts if a.action == "raise"] == raised
    final = alerts[-1]
    if back_by is None:
        assert "usually back by" not in final.reason
    else:
        assert final.reason.endswith(f"; usually back by {back_by} when out late"), final.reason


def test_a_known_absence_teaches_nothing_about_late_returns() -> None:
    """Three nights back late during a recorded absence (travel) are not a habit."""
    mk = Maker()
    last = 6 * 24
    then = [mk.motion(last + h) for h in (8, 10, 12, 14, 16, 18)]
    then += [mk.door(last + 19, True), mk.door(last + 19.01, False)]
    alerts = run(night_owl(6, mk) + then, last + 30, absent=(0, 5 * 24))
    raised = [round((a.time - T0) / H, 2) for a in alerts if a.action == "raise"]
    assert raised[-1] == last + 22.0, summary(alerts)
