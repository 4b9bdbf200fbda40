"""Table-driven tests of the day-care no-show detector (ticks fire with no data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.context import ConfigContext
from stream.detectors.base import AlertSignal, Severity
from stream.detectors.noshow import CONDITION, MemberState, NoShowDetector
from stream.replay import OfflineRunner

# 2026-01-05T00:00Z is a Monday; the site runs on UTC here.
MON = 1_767_571_200_000
H = 3_600_000
D = 24 * H
SITE = "center-1"
CENTER = {"opening_hours": "08:00-17:00", "opening_days": ["mon", "tue", "wed", "thu", "fri"]}


def checkin(day: int, hour: float, person: str = "m-1", seq: int = 0) -> Event:
    t = MON + day * D + round(hour * H)
    return Event(
        gateway="gw-c",
        seq=seq or 1 + day * 100 + int(hour * 10),
        time=t,
        received=t,
        site=SITE,
        device="face-1",
        kind="face_terminal",
        reading="checkin",
        values={"person": person, "score": 0.93, "liveness": True, "terminal": "face-1"},
        resident=person,
    )


def weeks_of(weeks: int, days: tuple[int, ...] = (0, 1, 2, 3, 4), hour: float = 9.0) -> list[Event]:
    """Check-ins at ``hour`` on ``days`` of the week for ``weeks`` weeks."""
    return [checkin(w * 7 + d, hour + 0.05 * (w % 3)) for w in range(weeks) for d in days]


def run(
    events: list[Event],
    until_day: float,
    *,
    site: dict[str, Any] | None = None,
    member: dict[str, Any] | None = None,
    absent_days: tuple[int, ...] = (),
    options: dict[str, Any] | None = None,
) -> list[AlertSignal]:
    def is_absent(who: str, at_ms: int) -> bool:
        return (at_ms - MON) // D in absent_days

    ctx = ConfigContext({SITE: {**CENTER, **(site or {})}}, {"m-1": member or {}}, is_absent)
    runner = OfflineRunner([NoShowDetector(**(options or {}))], ctx)
    out: list[AlertSignal] = []
    for event in sorted(events, key=lambda e: e.time):
        out += runner.feed(event)
    out += runner.advance(MON + round(until_day * D))
    assert runner.errors == 0
    return out


def summary(alerts: list[AlertSignal]) -> list[tuple[str, float]]:
    """(action, day + hour/24 after MON) of each alert, hours rounded to 0.01."""
    return [(a.action, round((a.time - MON) / H, 2)) for a in alerts]


@dataclass
class Case:
    name: str
    events: list[Event]
    until_day: float
    expected: list[tuple[str, float]]
    kw: dict[str, Any] = field(default_factory=dict)


WEEK4_MON = 21 * 24  # hours after MON
CASES = [
    Case(
        "usual Monday member missing: alert at latest usual time + 45 min",
        weeks_of(3),
        22.01,
        [("raise", WEEK4_MON + 9.1 + 0.75), ("clear", WEEK4_MON + 24.0)],
    ),
    Case(
        "late check-in clears the alert",
        [*weeks_of(3), checkin(21, 11.0)],
        21.8,
        [("raise", WEEK4_MON + 9.85), ("clear", WEEK4_MON + 11.0)],
    ),
    Case("checked in on time: nothing", [*weeks_of(3), checkin(21, 9.0)], 21.99, []),
    Case("too little history: nothing", weeks_of(2), 14.99, []),
    Case(
        "holiday: nothing",
        weeks_of(3),
        21.99,
        [],
        {"site": {"holidays": ["2026-01-26"]}},
    ),
    Case("weekend is not a usual day", weeks_of(3), 20.99, []),
    Case("known absence: nothing", weeks_of(3), 21.99, [], {"absent_days": (21,)}),
    Case(
        "only Mondays and Thursdays are usual",
        weeks_of(3, days=(0, 3)),
        22.99,
        [("raise", WEEK4_MON + 9.85), ("clear", WEEK4_MON + 24.0)],
    ),
    Case(
        "fixed schedule from the config, with no history",
        [checkin(0, 9.0)],
        2.01,
        [("raise", 24 + 9.5), ("clear", 48.0)],
        {"member": {"daycare": {"days": ["tue"], "by": "09:30"}}},
    ),
    Case("disabled", weeks_of(3), 21.99, [], {"member": {"noshow": {"enabled": False}}}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_noshow_table(case: Case) -> None:
    assert summary(run(case.events, case.until_day, **case.kw)) == case.expected


def test_reason_and_severity() -> None:
    [alert, _] = run(weeks_of(3), 22.01, member={"lives_alone": True})
    assert alert.condition == CONDITION and alert.subject == "m-1" and alert.site == SITE
    assert alert.severity is Severity.HIGH
    assert alert.reason.startswith("has not checked in by 09:51; usually checks in by 09:06")
    assert "Mondays" in alert.reason
    [alert, _] = run(weeks_of(3), 22.01)
    assert alert.severity is Severity.WARNING


def test_a_member_who_stopped_coming_is_not_alerted_forever() -> None:
    """After weeks of absence the weekday is no longer usual (attendance decays)."""
    alerts = run(weeks_of(3), 21 + 7 * 8)
    raises = [a for a in alerts if a.action == "raise"]
    assert 3 <= len(raises) < 40  # alerts for a while, then the habit is forgotten


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="margin"):
        NoShowDetector(margin="later")
    with pytest.raises(ConfigError, match="unknown option"):
        NoShowDetector(grace=1)


def test_state_survives_encode_decode() -> None:
    import msgspec

    ctx = ConfigContext({SITE: CENTER}, {})
    first = OfflineRunner([NoShowDetector()], ctx)
    for event in weeks_of(3):
        first.feed(event)
    second = OfflineRunner([NoShowDetector()], ctx)
    for (index, key), state in first.states.items():
        decoded = msgspec.json.decode(msgspec.json.encode(state), type=type(state))
        second.restore(index, key, decoded)
    [alert] = second.advance(MON + 21 * D + 12 * H)
    assert alert.condition == CONDITION and alert.time == MON + 21 * D + round(9.85 * H)


def test_one_late_morning_does_not_delay_the_alert() -> None:
    events = [*weeks_of(4, days=(0,)), checkin(28, 11.5)]  # five Mondays, the last one late
    raises = [t for action, t in summary(run(events, 35.99)) if action == "raise"]
    # Day 28 (raised at 09:48, before the late check-in), then day 35 at the second latest
    # of 09:00, 09:03, 09:06, 09:00, 11:30 plus 45 min, not at 11:30 + 45 min.
    assert raises == [28 * 24 + 9.8, 35 * 24 + 9.85]


def test_configured_member_is_watched_before_any_checkin() -> None:
    """``daycare`` in the config: expected from the start, never alerted for a past time."""
    member = {"daycare": {"site": SITE, "days": "all", "by": "09:30"}}
    ctx = ConfigContext({SITE: {**CENTER, "type": "center"}}, {"m-1": member})
    detector = NoShowDetector()
    assert detector.configured_keys({SITE: {"type": "center"}}, {"m-1": member}) == [f"{SITE}/m-1"]
    # Watching starts Monday 08:00: the alert comes at 09:30 without any event.
    runner = OfflineRunner([detector], ctx)
    runner.seed(MON + 8 * H, {SITE: CENTER}, {"m-1": member})
    assert summary(runner.advance(MON + 10 * H)) == [("raise", 9.5)]
    # Watching starts Monday 11:00, after 09:30: nothing that day, Tuesday 09:30 alerts.
    runner = OfflineRunner([NoShowDetector()], ctx)
    runner.seed(MON + 11 * H, {SITE: CENTER}, {"m-1": member})
    assert [a.action for a in runner.advance(MON + 23 * H)] == []
    assert summary(runner.advance(MON + D + 10 * H)) == [("raise", 24 + 9.5)]
    assert runner.errors == 0


def test_the_only_center_is_the_default_daycare_site() -> None:
    member = {"daycare": {"by": "09:30"}}
    detector = NoShowDetector()
    one = {"c1": {"type": "center"}, "home-1": {}}
    assert detector.configured_keys(one, {"m-1": member}) == ["c1/m-1"]
    two = {"c1": {"type": "center"}, "c2": {"type": "center"}}
    assert detector.configured_keys(two, {"m-1": member}) == []
    assert detector.configured_keys(one, {"m-2": {"lives_alone": True}}) == []


# --- forgetting members gone for good ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "residents", "options", "kept_at_day", "gone_at_day"),
    [
        ("undeclared: dropped 60 days after the last check-in", {}, {}, 18 + 59.9, 18 + 60.5),
        ("forget_after from the config", {}, {"forget_after": "30d"}, 18 + 29.9, 18 + 30.5),
        ("declared in the config: never dropped", {"m-1": {"lives_alone": True}}, {}, 400, None),
        ("forget_after 0: never dropped", {}, {"forget_after": 0}, 400, None),
    ],
)
def test_members_gone_for_good_are_forgotten(
    name: str,
    residents: dict[str, Any],
    options: dict[str, Any],
    kept_at_day: float,
    gone_at_day: float | None,
) -> None:
    ctx = ConfigContext({SITE: CENTER}, residents)
    runner = OfflineRunner([NoShowDetector(**options)], ctx)
    for event in weeks_of(3):
        runner.feed(event)
    runner.advance(MON + round(kept_at_day * D))
    assert (0, f"{SITE}/m-1") in runner.states
    if gone_at_day is not None:
        runner.advance(MON + round(gone_at_day * D))
        assert runner.states == {}
        assert runner.next_deadline() is None
    assert runner.errors == 0


def test_a_forgotten_member_who_comes_back_is_learned_afresh() -> None:
    back = 84  # a Monday, six days after being forgotten (day 18 + 60)
    assert (back % 7, (back + 1) % 7) == (0, 1)
    events = [*weeks_of(3), checkin(back, 9.0)]
    # Learned afresh: one check-in is not a habit, so no alert the next Monday.
    after = [a for a in run(events, back + 7.99) if a.time >= MON + back * D]
    assert after == []
    ctx = ConfigContext({SITE: CENTER}, {})
    runner = OfflineRunner([NoShowDetector()], ctx)
    for event in events:
        runner.feed(event)
    [state] = runner.states.values()
    assert isinstance(state, MemberState)
    assert sum(state.opp) == 0.0 and [m for m in state.times if m >= 0] == [9 * 60]
    assert state.last_checkin == MON + back * D + 9 * H


def test_min_rate_default_a_member_who_comes_on_60_percent_is_not_alerted() -> None:
    """3 of 5 Mondays: staying home is usual for them, so a no-show is no news."""
    events = [checkin(w * 7, 9.0) for w in (0, 1, 3, 5, 6, 8)]  # 6 of 9 Mondays
    assert [a for a in run(events, 9 * 7 + 0.99) if a.action == "raise"] == []
    at_60 = run(events, 9 * 7 + 0.99, options={"min_rate": 0.6})
    assert [a.action for a in at_60].count("raise") >= 1  # the old default alerted


def test_a_bad_member_override_keeps_the_site_overrides() -> None:
    """A bad ``residents.<id>.noshow`` (from a context not built by the stream config)
    is left out alone: the site's own overrides still apply."""
    member = {"daycare": {"days": "all", "by": "09:00"}, "noshow": {"margin": "later"}}
    monday_only = [checkin(0, 9.0)]
    # Expected on Tuesday at 09:00 and not there: alerted, bad override or not...
    assert summary(run(monday_only, 1.5, member=member)) == [("raise", 33.0)]
    # ...unless the site switches no-shows off: a bad member override must not undo that.
    assert run(monday_only, 1.5, site={"noshow": {"enabled": False}}, member=member) == []
