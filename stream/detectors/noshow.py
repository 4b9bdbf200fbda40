"""Day-care no-shows: a member who usually checks in by now on this weekday, and has not.

What it learns, per member (partition ``{site}/{resident}``, from face-terminal
``checkin`` events at that site):

- per weekday, how often they come: a decayed count of the site's open days and of the
  days they checked in (each weekday's occurrence decays the older ones by ``decay``);
- per weekday, their last ``TIMES`` check-in times (local time of day).

A weekday is *usual* when they checked in on at least ``min_days`` of them and on at least
``min_rate`` (80 %) of the open ones. Every usual day a member stays home unannounced is a
call for the center, so a member who comes less regularly than that is not watched unless
their config fixes the schedule (``daycare``, below): at 60 %, a member who comes on 70 %
of their days was alerted about once a week (``bench/noshow_quality``, synthetic).

On a usual weekday when the site is open (``opening_hours``, ``opening_days``,
``holidays`` in the site config: see
:class:`~stream.detectors.sitetime.OpeningCalendar`) and no known absence covers the day
(``ctx.is_absent``), the alert is due at the latest of their recent check-in times on that
weekday (the second latest once there are four) plus ``margin`` (never before the site
opens + ``margin``, never after it closes).
It fires from :meth:`NoShowDetector.tick` with no data at all, says why ("has not checked
in by 10:15; usually checks in by 09:30 on Tuesdays (8 of the last 9 open Tuesdays)"),
and clears when they check in, or when the day ends.

A member's config may fix the schedule instead of learning it::

    residents:
      r7:
        lives_alone: true            # a no-show is HIGH (else WARNING)
        daycare: {days: [mon, wed, fri], by: "09:30"}   # alert at 09:30 on those days
        noshow: {enabled: true, margin: 45m}             # options, as below

Forgetting: a member not declared in the config (no ``residents.<id>`` entry) who has not
checked in for ``forget_after`` (60 days) is dropped altogether (:meth:`Detector.expired`),
so the state does not keep every face the terminal ever saw; a later check-in starts
learning afresh. Declared members are never dropped.

Options (constructor keywords, overridable in ``sites.<id>.noshow`` and
``residents.<id>.noshow``): ``margin`` (45 min), ``min_days`` (3), ``min_rate`` (0.8),
``decay`` (0.9 per occurrence of a weekday), ``forget_after`` (60 days; 0 = never),
``enabled`` (true).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import msgspec

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.detectors.base import AlertSignal, Detector, DetectorContext, Severity
from stream.detectors.options import Convert, boolean, duration, integer, number, read_options
from stream.detectors.sitetime import (
    DAY_MS,
    MINUTE_MS,
    WEEKDAYS,
    LocalTime,
    OpeningCalendar,
    time_of_day_min,
    weekday_of_day,
    weekday_set,
)

log = logging.getLogger(__name__)

CONDITION = "noshow"
#: Check-in times remembered per weekday.
TIMES = 6
#: Days looked ahead for the next alert, and days rolled over at most at once.
LOOKAHEAD_DAYS = 14
MAX_ROLL_DAYS = 120
_DAY_NAMES = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")


@dataclass(frozen=True, slots=True)
class NoShowOptions:
    """Tuning of the no-show detector (durations in ms)."""

    margin: int = 45 * MINUTE_MS
    min_days: int = 3
    min_rate: float = 0.8
    decay: float = 0.9
    forget_after: int = 60 * DAY_MS
    enabled: bool = True

    @classmethod
    def parse(
        cls, raw: Mapping[str, Any], where: str, base: NoShowOptions | None = None
    ) -> NoShowOptions:
        """``base`` (default: the defaults) with the options ``raw`` sets.

        Raises :class:`~stream.detectors.options.OptionProblems` naming every unknown
        option and bad value (see :data:`OPTIONS`).
        """
        return replace(base or cls(), **read_options(raw, where, OPTIONS))


#: How each option of :class:`NoShowOptions` is read from the config (``detectors.noshow``,
#: and ``noshow`` under a site or a resident); durations become ms. ``min_days`` is at
#: most a year of that weekday (the decayed attendance could never reach more).
OPTIONS: dict[str, Convert] = {
    "margin": duration(),
    "min_days": integer(1, 52),
    "min_rate": number(0, 1, open_lo=True),
    "decay": number(0, 1, open_lo=True),
    "forget_after": duration(),
    "enabled": boolean,
}


def check_options(options: Mapping[str, Any], where: str = "detectors.noshow") -> None:
    """Raise :class:`~stream.detectors.options.OptionProblems` naming every bad option."""
    NoShowOptions.parse(options, where)


class MemberState(msgspec.Struct, kw_only=True):
    """One day-care member at one site."""

    site: str = ""
    resident: str = ""
    #: The local day being tracked, and whether they checked in on it (first time, min).
    day: int = -1
    checkin_min: int = -1
    #: Per weekday: decayed open days, decayed attended days, recent check-in minutes.
    opp: list[float] = msgspec.field(default_factory=lambda: [0.0] * 7)
    att: list[float] = msgspec.field(default_factory=lambda: [0.0] * 7)
    times: list[int] = msgspec.field(default_factory=lambda: [-1] * (7 * TIMES))
    #: Open alert (for ``day``) and next check, ms UTC (0 = none).
    alerted: bool = False
    due: int = 0
    #: A local day not watched: watching began after that day's expected time.
    unwatched_day: int = -1
    #: The last check-in, ms UTC (0: none known), and whether the member was forgotten.
    last_checkin: int = 0
    forgotten: bool = False


class NoShowDetector(Detector[MemberState]):
    """Members who usually check in by a time on their usual days, and have not."""

    name: ClassVar[str] = "noshow"
    state_type: ClassVar[type[msgspec.Struct]] = MemberState

    def __init__(self, **options: Any) -> None:
        self.options = NoShowOptions.parse(options, "detectors.noshow")
        self._zones: dict[str, LocalTime] = {}
        self._calendars: dict[str, tuple[int, OpeningCalendar]] = {}

    def key(self, event: Event) -> str | None:
        if event.reading != "checkin":
            return None
        person = _person(event)
        return f"{event.site}/{person}" if person else None

    def initial_state(self, key: str) -> MemberState:
        site, _, resident = key.partition("/")
        return MemberState(site=site, resident=resident)

    def deadline(self, state: MemberState) -> int | None:
        return state.due or None

    def expired(self, state: MemberState) -> bool:
        """A member not declared in the config and not seen for ``forget_after``."""
        return state.forgotten

    def configured_keys(
        self, sites: Mapping[str, Mapping[str, Any]], residents: Mapping[str, Mapping[str, Any]]
    ) -> list[str]:
        """Members with a fixed ``daycare`` schedule, watched from the first day on.

        Without this a member who never checked in would never be expected anywhere. The
        site is ``daycare.site``, else the only site of ``type: center`` in the config.
        """
        centers = [sid for sid, cfg in sites.items() if cfg.get("type") == "center"]
        keys: list[str] = []
        for rid, cfg in residents.items():
            daycare = cfg.get("daycare")
            if not isinstance(daycare, Mapping) or "by" not in daycare:
                continue
            site = daycare.get("site") or (centers[0] if len(centers) == 1 else None)
            if not isinstance(site, str):
                log.warning(
                    "residents.%s.daycare: no 'site' and not exactly one center site; "
                    "the member is watched after a first check-in only",
                    rid,
                )
                continue
            keys.append(f"{site}/{rid}")
        return keys

    def seed(self, key: str, now: int, ctx: DetectorContext) -> MemberState:
        """A configured member, watched from ``now`` on: today only if not already late."""
        state = self.initial_state(key)
        opts = self._options(ctx, state)
        lt = self._local(ctx, state.site)
        state.day = lt.day(now)
        expected = self._expected(state, state.day, ctx, lt, opts)
        if expected is not None and expected[0] <= now:
            # Whether they came today before we watched is unknown: do not guess.
            state.unwatched_day = state.day
        self._schedule(state, now, ctx, lt, opts)
        return state

    # --- events -------------------------------------------------------------------------
    def step(
        self, state: MemberState, event: Event, ctx: DetectorContext
    ) -> tuple[MemberState, list[AlertSignal]]:
        person = _person(event)
        if not person:
            return state, []
        state.site, state.resident = event.site, person
        opts = self._options(ctx, state)
        lt = self._local(ctx, state.site)
        day = lt.day(event.time)
        if day < state.day:
            return state, []  # a check-in of a day already closed
        alerts = self._roll(state, day, event.time, ctx=ctx, lt=lt, opts=opts)
        state.last_checkin = max(state.last_checkin, event.time)
        if state.checkin_min < 0:
            state.checkin_min = lt.minute_of_day(event.time)
            wd = weekday_of_day(day)
            ring = state.times[wd * TIMES : (wd + 1) * TIMES]
            state.times[wd * TIMES : (wd + 1) * TIMES] = [*ring[1:], state.checkin_min]
            if state.alerted:
                state.alerted = False
                alerts.append(
                    self._signal(
                        state,
                        ctx,
                        event.time,
                        f"checked in at {lt.hhmm(event.time)}",
                        action="clear",
                    )
                )
        self._schedule(state, event.time, ctx, lt, opts)
        return state, alerts

    # --- time ---------------------------------------------------------------------------
    def tick(
        self, state: MemberState, now: int, ctx: DetectorContext
    ) -> tuple[MemberState, list[AlertSignal]]:
        opts = self._options(ctx, state)
        lt = self._local(ctx, state.site)
        alerts = self._roll(state, lt.day(now), now, ctx=ctx, lt=lt, opts=opts)
        forget_at = self._forget_at(state, ctx, opts)
        if forget_at and forget_at <= now:
            state.forgotten, state.due = True, 0
            return state, alerts
        if not state.last_checkin and forget_at is not None:
            state.last_checkin = now  # a state from before check-ins were dated: from now
        if not opts.enabled:
            state.due = 0
            return state, alerts
        expected = self._expected(state, state.day, ctx, lt, opts)
        if (
            expected is not None
            and state.checkin_min < 0
            and not state.alerted
            and state.day != state.unwatched_day
            and now >= expected[0]
            and not ctx.is_absent(state.resident, now)
        ):
            state.alerted = True
            alerts.append(self._signal(state, ctx, now, self._reason(state, now, lt, expected)))
        self._schedule(state, now, ctx, lt, opts)
        return state, alerts

    # --- bookkeeping --------------------------------------------------------------------
    def _roll(
        self,
        state: MemberState,
        day: int,
        now: int,
        *,
        ctx: DetectorContext,
        lt: LocalTime,
        opts: NoShowOptions,
    ) -> list[AlertSignal]:
        """Close the days before ``day``: count open days and attendance per weekday."""
        alerts: list[AlertSignal] = []
        if state.day < 0:
            state.day = day
            return alerts
        if day <= state.day:
            return alerts
        calendar = self._calendar(ctx, state.site)
        first = max(state.day, day - MAX_ROLL_DAYS)
        for d in range(first, day):
            attended = d == state.day and state.checkin_min >= 0
            if d == state.unwatched_day and not attended:
                continue  # not watched that day: it says nothing of their habit
            noon = lt.at(d, 12 * 60)
            if not attended and (calendar.span(d) is None or ctx.is_absent(state.resident, noon)):
                continue
            wd = weekday_of_day(d)
            state.opp[wd] = state.opp[wd] * opts.decay + 1.0
            state.att[wd] = state.att[wd] * opts.decay + (1.0 if attended else 0.0)
        if state.alerted:
            day_end = lt.at(state.day + 1, 0)
            alerts.append(
                self._signal(
                    state,
                    ctx,
                    max(day_end, now - DAY_MS),
                    "the day ended without a check-in",
                    action="clear",
                )
            )
        state.day, state.checkin_min, state.alerted = day, -1, False
        return alerts

    def _expected(
        self,
        state: MemberState,
        day: int,
        ctx: DetectorContext,
        lt: LocalTime,
        opts: NoShowOptions,
    ) -> tuple[int, int, str] | None:
        """(alert time ms, usual latest minute, why) for local ``day``, None: not expected."""
        calendar = self._calendar(ctx, state.site)
        span = calendar.span(day)
        if span is None:
            return None
        wd = weekday_of_day(day)
        fixed = ctx.resident_config(state.resident).get("daycare")
        if isinstance(fixed, Mapping) and "by" in fixed:
            where = f"residents.{state.resident}.daycare"
            try:
                days = weekday_set(fixed.get("days", list(WEEKDAYS[:5])), f"{where}.days")
                by = time_of_day_min(fixed["by"], f"{where}.by")
            except ConfigError as exc:
                log.warning("ignoring the fixed day-care schedule: %s", exc)
            else:
                if wd not in days:
                    return None
                return lt.at(day, by), by, "is expected"
        # ``min_days`` check-ins on this weekday, in a row, decay to this much.
        enough = sum(opts.decay**i for i in range(opts.min_days))
        if state.att[wd] < enough - 1e-9 or state.opp[wd] <= 0:
            return None
        if state.att[wd] / state.opp[wd] < opts.min_rate:
            return None
        recent = [m for m in state.times[wd * TIMES : (wd + 1) * TIMES] if m >= 0]
        if not recent:
            return None
        # The latest recent check-in; with four or more, the second latest, so that one
        # late morning (a doctor's appointment) does not delay the alert for weeks.
        recent.sort()
        latest = recent[-2] if len(recent) >= 4 else recent[-1]
        margin_min = opts.margin // MINUTE_MS
        open_min, close_min = span
        alert_min = max(latest + margin_min, open_min + margin_min)
        if close_min > open_min:
            alert_min = min(alert_min, close_min)
        return lt.at(day, min(alert_min, 24 * 60 - 1)), latest, "usually checks in"

    def _forget_at(
        self, state: MemberState, ctx: DetectorContext, opts: NoShowOptions
    ) -> int | None:
        """When an undeclared member is forgotten (0: no check-in dated yet); None: never."""
        if opts.forget_after <= 0 or ctx.resident_config(state.resident):
            return None
        return state.last_checkin + opts.forget_after if state.last_checkin else 0

    def _schedule(
        self,
        state: MemberState,
        now: int,
        ctx: DetectorContext,
        lt: LocalTime,
        opts: NoShowOptions,
    ) -> None:
        self._schedule_checks(state, now, ctx, lt, opts)
        forget_at = self._forget_at(state, ctx, opts)
        if forget_at and now < forget_at < (state.due or forget_at + 1):
            state.due = forget_at

    def _schedule_checks(
        self,
        state: MemberState,
        now: int,
        ctx: DetectorContext,
        lt: LocalTime,
        opts: NoShowOptions,
    ) -> None:
        if not opts.enabled:
            state.due = 0
            return
        if state.alerted or state.checkin_min >= 0:
            # Close the day at local midnight: the alert ends, today's check-in counts.
            state.due = lt.at(state.day + 1, 0)
            return
        today = lt.day(now)
        for d in range(today, today + LOOKAHEAD_DAYS):
            if d == state.day and state.checkin_min >= 0:
                continue
            expected = self._expected(state, d, ctx, lt, opts)
            if expected is not None and expected[0] > now:
                state.due = expected[0]
                return
        # No usual day ahead: wake up in LOOKAHEAD_DAYS to look again.
        state.due = lt.at(today + LOOKAHEAD_DAYS, 0)

    # --- signals ------------------------------------------------------------------------
    def _reason(
        self, state: MemberState, now: int, lt: LocalTime, expected: tuple[int, int, str]
    ) -> str:
        _, latest, why = expected
        wd = weekday_of_day(state.day)
        by = f"{latest // 60:02d}:{latest % 60:02d}"
        text = f"has not checked in by {lt.hhmm(now)}; {why} by {by} on {_DAY_NAMES[wd]}"
        if why == "usually checks in":
            text += (
                f" (on {round(state.att[wd])} of the last {round(state.opp[wd])} open "
                f"{_DAY_NAMES[wd]}, weighted to recent weeks)"
            )
        return text

    def _signal(
        self,
        state: MemberState,
        ctx: DetectorContext,
        time: int,
        reason: str,
        action: str = "raise",
    ) -> AlertSignal:
        lives_alone = ctx.resident_config(state.resident).get("lives_alone") is True
        return AlertSignal(
            condition=CONDITION,
            subject=state.resident,
            site=state.site,
            time=time,
            severity=Severity.HIGH if lives_alone else Severity.WARNING,
            reason=reason,
            action="clear" if action == "clear" else "raise",
            resident=state.resident,
            details={"day_of_week": WEEKDAYS[weekday_of_day(state.day)]},
        )

    # --- config -------------------------------------------------------------------------
    def _options(self, ctx: DetectorContext, state: MemberState) -> NoShowOptions:
        opts = self.options
        # The stream config checks these when it is read; a context built otherwise may
        # still hold a bad one: only that one is left out, not the site's good ones.
        for raw, where in (
            (ctx.site_config(state.site).get("noshow"), f"sites.{state.site}.noshow"),
            (
                ctx.resident_config(state.resident).get("noshow"),
                f"residents.{state.resident}.noshow",
            ),
        ):
            if isinstance(raw, Mapping) and raw:
                try:
                    opts = NoShowOptions.parse(raw, where, opts)
                except ConfigError as exc:
                    log.warning("ignoring %s: %s", where, exc)
        return opts

    def _calendar(self, ctx: DetectorContext, site: str) -> OpeningCalendar:
        config = ctx.site_config(site)
        cached = self._calendars.get(site)
        if cached is not None and cached[0] == id(config):
            return cached[1]
        try:
            calendar = OpeningCalendar(config, site)
        except ConfigError as exc:
            log.warning("site %s: opening calendar ignored: %s", site, exc)
            calendar = OpeningCalendar({}, site)
        self._calendars[site] = (id(config), calendar)
        return calendar

    def _local(self, ctx: DetectorContext, site: str) -> LocalTime:
        tz = ctx.timezone(site)
        lt = self._zones.get(site)
        if lt is None or lt.tz is not tz:
            lt = self._zones[site] = LocalTime(tz)
        return lt


def _person(event: Event) -> str | None:
    if event.resident:
        return event.resident
    person = event.values.get("person")
    return person if isinstance(person, str) and person else None
