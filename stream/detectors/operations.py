"""Site operations: crowding, unusual footfall, devices and gateways that stopped reporting.

Three detectors, each with its own partition, all raising alerts for operations staff
(``Audience.OPERATIONS``, WARNING; the alert manager keeps them from paging at night):

:class:`OccupancyDetector` (partition: the site; footfall ``counts`` events)
    Occupancy is the running sum of the counters' ``in`` minus ``out`` deltas, clamped at
    0 (a missed "in" must not make it negative), reset at local midnight, and reconciled
    to 0 ``close_grace`` after the site closes (people have gone home; whatever is left is
    counter drift). Counters miss some exits (two people side by side), so during the day
    occupancy would creep upward into false crowding: what is left at each reconciliation,
    per counted "out" that day, is learned as the site's drift (decayed mean, at most
    ``max_drift``), and once ``drift_min_days`` days are learned, occupancy is corrected
    by that many missed exits per counted "out" today. Above the site's ``capacity`` it
    raises ``crowding``; the alert clears once occupancy is back to
    ``capacity - hysteresis`` or less. Every local hour it also
    learns the site's usual footfall for that hour (weekdays and weekends apart, decayed
    mean and spread) and raises ``footfall_anomaly`` when, during opening hours,
    ``quiet_hours`` hours in a row had no one coming in although at least
    ``min_expected`` per hour are usual: a broken counter, or a site that did not open.
    It clears when people come in. ``footfall_high`` is the other side: an opening hour
    with far more people coming in than usual for that site and hour ("142 people
    entered between 09:00 and 10:00, usually 20-40 at this hour"): a counter counting
    double, or a crowd nobody planned. "Far more" must clear every bar: ``high_factor``
    times the usual mean, ``high_min_excess`` people above it, and ``high_sigma``
    standard deviations above it (the spread learned, at least the square root of the
    mean: counts of people arriving vary at least that much). It needs ``min_weeks`` of
    history for that hour, like the low side, and clears when an hour is back under it.

:class:`DeviceHealthDetector` (partition: site + device; every device's events)
    ``device_silent`` when a device sends nothing for ``missed_reports`` times its
    reporting interval (the device config's ``report_interval`` / ``report_interval_s``,
    else its profile's ``report_interval_s``); ``device_down`` from the gateway's
    ``device_status`` (``up: false``) or the device's own ``availability``
    (``online: false``); ``low_battery`` below ``low_battery`` % (or ``battery_low``, or a
    pendant's low-battery report), cleared from ``battery_ok`` % on (a new battery);
    ``tamper`` while a device reports ``tamper: true``. Each clears when it is over.

:class:`GatewayDetector` (partition: site + gateway; ``kind="gateway"`` status events)
    ``gateway_offline`` once a gateway has been offline for ``offline_grace`` (uplinks of
    consumer broadband blink); cleared when it is back online.

Config: ``sites.<id>.capacity`` (people), ``opening_hours`` / ``opening_days`` /
``holidays`` (:class:`~stream.detectors.sitetime.OpeningCalendar`), device entries under
``sites.<id>.devices``. Options: :func:`operations_detectors`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.detectors.base import AlertSignal, Audience, Detector, DetectorContext, Severity
from stream.detectors.options import (
    Convert,
    OptionProblems,
    boolean,
    duration,
    integer,
    number,
    optional,
    problems_of,
    read_options,
    section,
)
from stream.detectors.sitetime import (
    HOUR_MS,
    LocalTime,
    OpeningCalendar,
    device_config,
    duration_ms,
    fmt_duration,
    weekday_of_day,
)

log = logging.getLogger(__name__)

CROWDING = "crowding"
FOOTFALL = "footfall_anomaly"
FOOTFALL_HIGH = "footfall_high"
SILENT = "device_silent"
DOWN = "device_down"
LOW_BATTERY = "low_battery"
TAMPER = "tamper"
GATEWAY_OFFLINE = "gateway_offline"
#: Footfall counters remembered per site (last seen).
MAX_COUNTERS = 16
#: Exits counted in a day below which its closing residual is not learned as drift.
MIN_DRIFT_OUTS = 10


def operations_detectors(**options: Any) -> list[Detector[Any]]:
    """The three operations detectors, from the ``detectors.operations`` config section.

    Sub-sections ``occupancy``, ``devices`` and ``gateways`` hold the options of
    :class:`OccupancyDetector`, :class:`DeviceHealthDetector` and :class:`GatewayDetector`.
    Raises :class:`~stream.detectors.options.OptionProblems` naming every bad option.
    """
    check_options(options)
    return [
        OccupancyDetector(**dict(options.get("occupancy") or {})),
        DeviceHealthDetector(**dict(options.get("devices") or {})),
        GatewayDetector(**dict(options.get("gateways") or {})),
    ]


def _intervals(value: Any, path: str) -> dict[str, float]:
    """``{profile: interval}`` (seconds, or a duration such as ``"5m"``) -> seconds."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{value!r} is not a mapping of profile names to intervals", path=path)
    read = duration(positive=True)
    return {str(k): read(v, f"{path}.{k}") / 1000 for k, v in value.items()}


#: The options of each sub-section of ``detectors.operations`` (durations become ms).
OCCUPANCY_OPTIONS: dict[str, Convert] = {
    "hysteresis": number(0, 1, open_hi=True),
    "close_grace": duration(),
    "quiet_hours": integer(1, 24 * 7),
    "min_expected": number(0),
    "min_weeks": number(0),
    "decay": number(0, 1, open_lo=True, open_hi=True),
    "alert_high": boolean,
    "high_factor": number(1),
    "high_sigma": number(0),
    "high_min_excess": number(0),
    "drift_correction": boolean,
    "drift_min_days": number(0),
    "max_drift": number(0, 1),
}
DEVICE_OPTIONS: dict[str, Convert] = {
    "missed_reports": number(1),
    "low_battery": integer(0, 100),
    "battery_ok": integer(0, 100),
    "report_intervals": optional(_intervals),
}
GATEWAY_OPTIONS: dict[str, Convert] = {"offline_grace": duration()}
SECTIONS = {"occupancy": OCCUPANCY_OPTIONS, "devices": DEVICE_OPTIONS, "gateways": GATEWAY_OPTIONS}


def _read_devices(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``devices`` options, including the check of the two battery levels together."""
    o = read_options(raw, where, DEVICE_OPTIONS)
    low, ok = o.get("low_battery", 20), o.get("battery_ok", 30)
    if not low < ok:
        raise OptionProblems([(f"{where}.battery_ok", f"{ok} must be above low_battery ({low})")])
    return o


def check_options(options: Mapping[str, Any], where: str = "detectors.operations") -> None:
    """Raise :class:`~stream.detectors.options.OptionProblems` naming every bad option."""
    problems: list[tuple[str, str]] = []
    for name, raw in options.items():
        path = f"{where}.{name}"
        if name not in SECTIONS:
            problems.append((path, f"unknown section (allowed: {', '.join(SECTIONS)})"))
            continue
        try:
            opts = section(raw, path)
            if name == "devices":
                _read_devices(opts, path)
            else:
                read_options(opts, path, SECTIONS[name])
        except ConfigError as exc:
            problems.extend(problems_of(exc, path))
    if problems:
        raise OptionProblems(problems)


def _ops(
    condition: str,
    subject: str,
    site: str,
    time: int,
    reason: str,
    *,
    action: Literal["raise", "clear"] = "raise",
    severity: Severity = Severity.WARNING,
    device: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AlertSignal:
    return AlertSignal(
        condition=condition,
        subject=subject,
        site=site,
        time=time,
        severity=severity,
        reason=reason,
        audience=Audience.OPERATIONS,
        action=action,
        device=device,
        details=dict(details or {}),
    )


def _zone(cache: dict[str, LocalTime], ctx: DetectorContext, site: str) -> LocalTime:
    tz = ctx.timezone(site)
    lt = cache.get(site)
    if lt is None or lt.tz is not tz:
        lt = cache[site] = LocalTime(tz)
    return lt


# --- occupancy and footfall ---------------------------------------------------------------
class OccupancyState(msgspec.Struct, kw_only=True):
    """One site's occupancy, footfall habits and open alerts."""

    site: str = ""
    day: int = -1
    #: The counters' running in - out since the last reset (before drift correction).
    occupancy: int = 0
    peak: int = 0
    #: "out" counted since the last reset, and the learned missed exits per counted "out"
    #: (decayed mean over reconciled days, and its weight).
    day_out: int = 0
    drift: float = 0.0
    drift_weight: float = 0.0
    crowded: bool = False
    reconciled_day: int = -1
    #: The local hour slot being counted and its "in" count so far.
    slot: int = -1
    slot_in: int = 0
    #: Usual "in" per hour: decayed mean and weight, [weekday hours 0-23, weekend 0-23].
    mean: list[float] = msgspec.field(default_factory=lambda: [0.0] * 48)
    weight: list[float] = msgspec.field(default_factory=lambda: [0.0] * 48)
    #: Decayed sum of squared deviations from the mean (variance = m2 / weight).
    m2: list[float] = msgspec.field(default_factory=lambda: [0.0] * 48)
    #: A ``footfall_high`` alert is open.
    high: bool = False
    #: Consecutive open hours with nobody in although some were expected, and since when.
    quiet: int = 0
    quiet_since: int = 0
    anomaly: bool = False
    counters: dict[str, int] = msgspec.field(default_factory=dict)
    due: int = 0


class OccupancyDetector(Detector[OccupancyState]):
    """Crowding against capacity, and footfall far from the usual for the hour."""

    name: ClassVar[str] = "occupancy"
    state_type: ClassVar[type[msgspec.Struct]] = OccupancyState

    def __init__(
        self,
        *,
        hysteresis: float = 0.1,
        close_grace: Any = "30m",
        quiet_hours: int = 2,
        min_expected: float = 5.0,
        min_weeks: float = 3.0,
        decay: float = 0.85,
        alert_high: bool = True,
        high_factor: float = 2.0,
        high_sigma: float = 4.0,
        high_min_excess: float = 20.0,
        drift_correction: bool = True,
        drift_min_days: float = 3.0,
        max_drift: float = 0.5,
    ) -> None:
        """``hysteresis``: fraction of capacity (at least 1 person) below it to clear
        crowding; ``close_grace``: after closing time, occupancy is reset to 0;
        ``quiet_hours``, ``min_expected`` (people per hour), ``min_weeks`` (decayed samples
        of that hour before it is trusted), ``decay`` (per sample) for footfall anomalies;
        ``alert_high``, ``high_factor``, ``high_sigma``, ``high_min_excess`` (people) for
        footfall far above the usual (every bar must be cleared); ``drift_correction``,
        ``drift_min_days`` (decayed reconciled days), ``max_drift`` (missed exits per
        counted exit, at most) for the occupancy's correction of counter drift.
        """
        o = read_options(
            {
                "hysteresis": hysteresis,
                "close_grace": close_grace,
                "quiet_hours": quiet_hours,
                "min_expected": min_expected,
                "min_weeks": min_weeks,
                "decay": decay,
                "alert_high": alert_high,
                "high_factor": high_factor,
                "high_sigma": high_sigma,
                "high_min_excess": high_min_excess,
                "drift_correction": drift_correction,
                "drift_min_days": drift_min_days,
                "max_drift": max_drift,
            },
            "detectors.operations.occupancy",
            OCCUPANCY_OPTIONS,
        )
        self.hysteresis: float = o["hysteresis"]
        self.close_grace: int = o["close_grace"]
        self.quiet_hours: int = o["quiet_hours"]
        self.min_expected: float = o["min_expected"]
        self.min_weeks: float = o["min_weeks"]
        self.decay: float = o["decay"]
        self.alert_high: bool = o["alert_high"]
        self.high_factor: float = o["high_factor"]
        self.high_sigma: float = o["high_sigma"]
        self.high_min_excess: float = o["high_min_excess"]
        self.drift_correction: bool = o["drift_correction"]
        self.drift_min_days: float = o["drift_min_days"]
        self.max_drift: float = o["max_drift"]
        self._zones: dict[str, LocalTime] = {}
        self._calendars: dict[str, tuple[int, OpeningCalendar]] = {}

    def key(self, event: Event) -> str | None:
        return event.site if event.reading == "counts" else None

    def initial_state(self, key: str) -> OccupancyState:
        return OccupancyState(site=key)

    def deadline(self, state: OccupancyState) -> int | None:
        return state.due or None

    def step(
        self, state: OccupancyState, event: Event, ctx: DetectorContext
    ) -> tuple[OccupancyState, list[AlertSignal]]:
        state.site = event.site
        t = event.time
        lt = _zone(self._zones, ctx, state.site)
        count_in = _count(event.values.get("in"))
        count_out = _count(event.values.get("out"))
        if state.slot >= 0 and lt.slot(t) < state.slot:
            return state, self._late(state, t, (count_in, count_out), ctx, lt)
        alerts = self._advance(state, t, ctx, lt)
        state.counters[event.device] = t
        if len(state.counters) > MAX_COUNTERS:
            state.counters.pop(min(state.counters, key=state.counters.__getitem__))
        if lt.slot(t) == state.slot:
            state.slot_in += count_in
        state.occupancy = max(0, state.occupancy + count_in - count_out)
        state.day_out += count_out
        state.peak = max(state.peak, state.occupancy)
        if count_in > 0 and state.anomaly:
            state.anomaly = False
            alerts.append(
                _ops(
                    FOOTFALL,
                    state.site,
                    state.site,
                    t,
                    f"people coming in again at {lt.hhmm(t)}",
                    action="clear",
                )
            )
        if count_in > 0:
            state.quiet = 0
        alerts.extend(self._crowding(state, t, ctx))
        self._schedule(state, t, ctx, lt)
        return state, alerts

    def _late(
        self,
        state: OccupancyState,
        t: int,
        in_out: tuple[int, int],
        ctx: DetectorContext,
        lt: LocalTime,
    ) -> list[AlertSignal]:
        """A counts event older than the hour being counted (a late delivery).

        It never moves the clock backwards: the hours before are closed and learned, so
        it only changes the occupancy, and only when it belongs to the current local day
        (a day that ended was reset at midnight; its people are not inside today) and the
        site was not reconciled since (after closing, occupancy restarts from 0).
        """
        if lt.day(t) != state.day or state.reconciled_day == state.day:
            return []
        count_in, count_out = in_out
        delta = count_in - count_out
        state.occupancy = max(0, state.occupancy + delta)
        state.day_out += count_out
        state.peak = max(state.peak, state.occupancy)
        return self._crowding(state, t, ctx)

    def tick(
        self, state: OccupancyState, now: int, ctx: DetectorContext
    ) -> tuple[OccupancyState, list[AlertSignal]]:
        lt = _zone(self._zones, ctx, state.site)
        alerts = self._advance(state, now, ctx, lt)
        self._schedule(state, now, ctx, lt)
        return state, alerts

    def _advance(
        self, state: OccupancyState, t: int, ctx: DetectorContext, lt: LocalTime
    ) -> list[AlertSignal]:
        """Close finished hours, reset at midnight, reconcile after closing, up to ``t``."""
        alerts: list[AlertSignal] = []
        slot = lt.slot(t)
        calendar = self._calendar(ctx, state.site)
        if state.slot < 0:
            state.slot, state.day = slot, lt.day(t)
            return alerts
        if slot < state.slot:
            return alerts  # the clock never moves backwards (a late event, see _late)
        # Hours that ended (at most a week of them: a site silent longer is one anomaly).
        first = max(state.slot, slot - 24 * 7)
        for s in range(first, slot):
            count = state.slot_in if s == state.slot else 0
            alerts.extend(self._close_hour(state, s, count, calendar, lt))
        if slot != state.slot:
            state.slot, state.slot_in = slot, 0
        day = lt.day(t)
        if day != state.day:
            state.day, state.occupancy, state.peak, state.day_out = day, 0, 0, 0
            alerts.extend(self._crowding(state, t, ctx, reason="reset at midnight"))
        span = calendar.span(day) if calendar.configured else None
        if span is not None and state.reconciled_day != day:
            close = lt.at(day, span[1]) + self.close_grace
            if span[1] > span[0] and t >= close:
                state.reconciled_day = day
                if state.occupancy:
                    log.debug("site %s: %s left after closing, reset", state.site, state.occupancy)
                self._learn_drift(state)
                state.occupancy, state.day_out = 0, 0
                alerts.extend(self._crowding(state, t, ctx, reason="site closed"))
        return alerts

    def _close_hour(
        self,
        state: OccupancyState,
        slot: int,
        count: int,
        calendar: OpeningCalendar,
        lt: LocalTime,
    ) -> list[AlertSignal]:
        hour, day = slot % 24, slot // 24
        alerts: list[AlertSignal] = []
        # A local hour is not always an hour long: when the clocks go back it lasts two,
        # when they go forward it does not exist. Counts are judged and learned per hour.
        start, end = lt.slot_start(slot), lt.slot_start(slot + 1)
        if end <= start:
            return alerts  # skipped by the clocks: nobody could come in during it
        rate = count * HOUR_MS / (end - start)
        index = hour + (24 if weekday_of_day(day) >= 5 else 0)
        is_open = calendar.is_open(day, hour * 60) if calendar.configured else True
        trusted = state.weight[index] >= self.min_weeks
        limit = self._high_limit(state, index) if trusted else None
        if state.high and (not is_open or limit is None or rate <= limit):
            state.high = False
            what = _entered(count, start, end, lt) if is_open else "the site is closed"
            alerts.append(
                _ops(
                    FOOTFALL_HIGH,
                    state.site,
                    state.site,
                    end,
                    f"footfall back to usual: {what}",
                    action="clear",
                )
            )
        if not is_open:
            return alerts
        learned = rate
        if limit is not None:
            if rate > limit and self.alert_high and not state.high:
                state.high = True
                alerts.append(self._high(state, index, count, (start, end), lt))
            # Learned only up to two spreads above the usual (a Huber-like clip): one
            # crowd hardly moves the usual or its spread, while a lasting change (a new
            # activity every morning) is still learned, within a few weeks.
            learned = min(rate, state.mean[index] + 2 * self._floored_sd(state, index))
        expected = state.mean[index] if trusted else 0.0
        if count == 0 and expected >= self.min_expected:
            if state.quiet == 0:
                state.quiet_since = start
            state.quiet += 1
            if state.quiet >= self.quiet_hours and not state.anomaly:
                state.anomaly = True
                alerts.append(
                    _ops(
                        FOOTFALL,
                        state.site,
                        state.site,
                        end,
                        f"nobody came in from {lt.hhmm(state.quiet_since)} to {lt.hhmm(end)}, "
                        f"usually about {round(expected)} per hour at this time: "
                        "is the counter broken or the site closed?",
                        details={"expected_per_hour": round(expected, 1), "hours": state.quiet},
                    )
                )
            # A silent hour is not learned: it is what we are asking about.
            return alerts
        if count > 0:
            state.quiet = 0
        state.weight[index] = state.weight[index] * self.decay + 1.0
        delta = learned - state.mean[index]
        state.mean[index] += delta / state.weight[index]
        state.m2[index] = state.m2[index] * self.decay + delta * (learned - state.mean[index])
        return alerts

    def _spread(self, state: OccupancyState, index: int) -> float:
        """Learned standard deviation of hour ``index``'s "in" count."""
        weight = state.weight[index]
        return math.sqrt(max(0.0, state.m2[index]) / weight) if weight > 0 else 0.0

    def _floored_sd(self, state: OccupancyState, index: int) -> float:
        # People arrive at random: a count varies at least like a Poisson count does.
        return max(self._spread(state, index), math.sqrt(max(0.0, state.mean[index])))

    def _high_limit(self, state: OccupancyState, index: int) -> float:
        """Above this many people coming in during hour ``index`` is far above usual."""
        mean = state.mean[index]
        sd = self._floored_sd(state, index)
        return max(
            mean * self.high_factor, mean + self.high_min_excess, mean + self.high_sigma * sd
        )

    def _high(
        self,
        state: OccupancyState,
        index: int,
        count: int,
        hour: tuple[int, int],
        lt: LocalTime,
    ) -> AlertSignal:
        mean, sd = state.mean[index], self._spread(state, index)
        low, high = max(0, round(mean - 2 * sd)), round(mean + 2 * sd)
        usual = f"{low}-{high}" if high > low else f"about {round(mean)}"
        start, end = hour
        return _ops(
            FOOTFALL_HIGH,
            state.site,
            state.site,
            end,
            f"{_entered(count, start, end, lt)}, usually {usual} at this hour",
            details={
                "count": count,
                "usual_mean": round(mean, 1),
                "usual_sd": round(sd, 1),
                "limit": round(self._high_limit(state, index), 1),
            },
        )

    def _learn_drift(self, state: OccupancyState) -> None:
        """At closing: what the counters left inside, per counted exit, is drift."""
        if state.day_out < MIN_DRIFT_OUTS:
            return  # too few people today to say anything about the counter
        sample = min(self.max_drift, state.occupancy / state.day_out)
        state.drift_weight = state.drift_weight * self.decay + 1.0
        state.drift += (sample - state.drift) / state.drift_weight

    def _missed_exits(self, state: OccupancyState) -> int:
        """Exits the counters probably missed since the last reset (learned drift)."""
        if not self.drift_correction or state.drift_weight < self.drift_min_days:
            return 0
        return min(state.occupancy, round(state.drift * state.day_out))

    def _crowding(
        self, state: OccupancyState, t: int, ctx: DetectorContext, reason: str = ""
    ) -> list[AlertSignal]:
        capacity = ctx.site_config(state.site).get("capacity")
        if isinstance(capacity, bool) or not isinstance(capacity, int | float) or capacity <= 0:
            return []
        below = capacity - max(1.0, self.hysteresis * capacity)
        missed = self._missed_exits(state)
        inside = state.occupancy - missed
        if not state.crowded and inside > capacity:
            state.crowded = True
            counted = (
                f" ({state.occupancy} counted, less {missed} for exits the counters usually miss)"
                if missed
                else ""
            )
            return [
                _ops(
                    CROWDING,
                    state.site,
                    state.site,
                    t,
                    f"{inside} people inside{counted}, the room holds {int(capacity)}",
                    details={
                        "occupancy": inside,
                        "counted": state.occupancy,
                        "missed_exits": missed,
                        "capacity": capacity,
                    },
                )
            ]
        if state.crowded and inside <= below:
            state.crowded = False
            text = reason or f"{inside} people inside"
            return [
                _ops(
                    CROWDING,
                    state.site,
                    state.site,
                    t,
                    f"back under capacity: {text}",
                    action="clear",
                    details={"occupancy": inside},
                )
            ]
        return []

    def _schedule(
        self, state: OccupancyState, now: int, ctx: DetectorContext, lt: LocalTime
    ) -> None:
        # Next hour boundary (closes the hour, and covers midnight and closing time).
        state.due = lt.slot_start(lt.slot(now) + 1)
        calendar = self._calendar(ctx, state.site)
        day = lt.day(now)
        span = calendar.span(day) if calendar.configured else None
        if span is not None and span[1] > span[0] and state.reconciled_day != day:
            close = lt.at(day, span[1]) + self.close_grace
            if now < close < state.due:
                state.due = close
        if state.due <= now:
            state.due = now + HOUR_MS

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


def _entered(count: int, start: int, end: int, lt: LocalTime) -> str:
    """``142 people entered between 09:00 and 10:00`` (says so when it was not 1 h)."""
    span = "" if end - start == HOUR_MS else f" in the {fmt_duration(end - start)}"
    return f"{count} people entered{span} between {lt.hhmm(start)} and {lt.hhmm(end)}"


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


# --- devices ------------------------------------------------------------------------------
class DeviceState(msgspec.Struct, kw_only=True):
    """One device: when it was last heard of, its interval, and its open alerts."""

    site: str = ""
    device: str = ""
    resident: str | None = None
    last_seen: int = 0
    interval: int = 0
    battery: int = -1
    open: list[str] = msgspec.field(default_factory=list)


class DeviceHealthDetector(Detector[DeviceState]):
    """Devices that went silent or down, low batteries, tamper switches."""

    name: ClassVar[str] = "device_health"
    state_type: ClassVar[type[msgspec.Struct]] = DeviceState

    def __init__(
        self,
        *,
        missed_reports: float = 3.0,
        low_battery: int = 20,
        battery_ok: int = 30,
        report_intervals: Mapping[str, float | str] | None = None,
    ) -> None:
        """``report_intervals`` maps a profile name to its interval in seconds, or a
        duration such as ``"5m"`` (default: every installed profile's
        ``report_interval_s``)."""
        o = _read_devices(
            {
                "missed_reports": missed_reports,
                "low_battery": low_battery,
                "battery_ok": battery_ok,
                "report_intervals": report_intervals,
            },
            "detectors.operations.devices",
        )
        self.missed_reports: float = o["missed_reports"]
        self.low_battery: int = o["low_battery"]
        self.battery_ok: int = o["battery_ok"]
        intervals: dict[str, float] | None = o["report_intervals"]
        self.report_intervals = _profile_intervals() if intervals is None else intervals

    def key(self, event: Event) -> str | None:
        if event.kind == "gateway":
            device = event.values.get("device")
            if event.reading == "device_status" and isinstance(device, str) and device:
                return f"{event.site}/{device}"
            return None
        return f"{event.site}/{event.device}"

    def initial_state(self, key: str) -> DeviceState:
        site, _, device = key.partition("/")
        return DeviceState(site=site, device=device)

    def deadline(self, state: DeviceState) -> int | None:
        if state.interval <= 0 or state.last_seen <= 0 or SILENT in state.open:
            return None
        return state.last_seen + int(self.missed_reports * state.interval)

    def step(
        self, state: DeviceState, event: Event, ctx: DetectorContext
    ) -> tuple[DeviceState, list[AlertSignal]]:
        alerts: list[AlertSignal] = []
        t, values = event.time, event.values
        if event.kind == "gateway":  # the gateway's word about this device
            up = values.get("up")
            if isinstance(up, bool):
                why = values.get("reason")
                text = f" ({why})" if isinstance(why, str) and why else ""
                alerts += self._set(
                    state,
                    DOWN,
                    not up,
                    t,
                    f"the gateway reports it down{text}",
                    "the gateway reports it up again",
                )
            return state, alerts
        state.site, state.device = event.site, event.device
        if event.resident:
            state.resident = event.resident
        if state.interval <= 0:
            state.interval = self._interval(ctx, event)
        state.last_seen = max(t, state.last_seen)
        if SILENT in state.open:
            alerts += self._set(state, SILENT, False, t, "", "reporting again")
        if event.reading == "availability" and isinstance(values.get("online"), bool):
            alerts += self._set(
                state,
                DOWN,
                not values["online"],
                t,
                "unavailable (no radio link)",
                "available again",
            )
        elif DOWN in state.open and event.reading != "availability":
            alerts += self._set(state, DOWN, False, t, "", "reporting again")
        battery = values.get("battery")
        low_flag = values.get("battery_low")
        if isinstance(battery, int | float) and not isinstance(battery, bool):
            state.battery = int(battery)
            if battery < self.low_battery or low_flag is True:
                alerts += self._set(state, LOW_BATTERY, True, t, f"battery at {int(battery)} %", "")
            elif battery >= self.battery_ok:
                alerts += self._set(
                    state, LOW_BATTERY, False, t, "", f"battery at {int(battery)} %"
                )
        elif low_flag is True or (event.kind == "pendant" and event.reading == "battery"):
            alerts += self._set(state, LOW_BATTERY, True, t, "reports a low battery", "")
        tamper = values.get("tamper")
        if isinstance(tamper, bool):
            alerts += self._set(
                state,
                TAMPER,
                tamper,
                t,
                "tamper switch open (cover removed?)",
                "tamper switch closed again",
            )
        return state, alerts

    def tick(
        self, state: DeviceState, now: int, ctx: DetectorContext
    ) -> tuple[DeviceState, list[AlertSignal]]:
        due = self.deadline(state)
        if due is None or now < due:
            return state, []
        lt = LocalTime(ctx.timezone(state.site))
        missed = (now - state.last_seen) / state.interval
        reason = (
            f"nothing heard since {lt.hhmm(state.last_seen)} "
            f"({missed:.0f} reporting intervals of {state.interval // 1000} s missed)"
        )
        return state, self._set(state, SILENT, True, now, reason, "")

    def _set(  # noqa: PLR0917 - the call sites read as a table of edge cases
        self, state: DeviceState, condition: str, on: bool, t: int, why: str, why_clear: str = ""
    ) -> list[AlertSignal]:
        """Raise ``condition`` when it turns on, clear it when it turns off (edges only)."""
        if on == (condition in state.open):
            return []
        if on:
            state.open.append(condition)
        else:
            state.open.remove(condition)
        reason = f"device {state.device}: {why if on else why_clear}"
        return [
            _ops(
                condition,
                state.device,
                state.site,
                t,
                reason,
                action="raise" if on else "clear",
                device=state.device,
                details={"resident": state.resident} if state.resident else None,
            )
        ]

    def _interval(self, ctx: DetectorContext, event: Event) -> int:
        conf = device_config(ctx, event)
        try:
            if "report_interval" in conf:
                return duration_ms(
                    conf["report_interval"], f"devices.{event.device}.report_interval"
                )
            if "report_interval_s" in conf:
                return duration_ms(
                    conf["report_interval_s"], f"devices.{event.device}.report_interval_s"
                )
        except ConfigError as exc:
            log.warning("%s", exc)
            return 0
        profile = conf.get("profile")
        if isinstance(profile, str) and profile in self.report_intervals:
            return int(self.report_intervals[profile] * 1000)
        return 0


def _profile_intervals() -> dict[str, float]:
    try:
        from device_profiles.profiles import ProfileRegistry

        return {p.name: p.report_interval_s for p in ProfileRegistry.load()}
    except Exception as exc:  # a broken profile must not stop the processor
        log.warning("device profiles not loaded, no reporting intervals: %s", exc)
        return {}


# --- gateways -----------------------------------------------------------------------------
class GatewayState(msgspec.Struct, kw_only=True):
    """One gateway's link: online or not, since when, and whether the alert is open."""

    site: str = ""
    gateway: str = ""
    online: bool = True
    since: int = 0
    alerted: bool = False


class GatewayDetector(Detector[GatewayState]):
    """Gateways offline for longer than a grace period."""

    name: ClassVar[str] = "gateway"
    state_type: ClassVar[type[msgspec.Struct]] = GatewayState

    def __init__(self, *, offline_grace: Any = "5m") -> None:
        o = read_options(
            {"offline_grace": offline_grace}, "detectors.operations.gateways", GATEWAY_OPTIONS
        )
        self.grace: int = o["offline_grace"]

    def key(self, event: Event) -> str | None:
        if event.kind == "gateway" and event.reading == "status":
            return f"{event.site}/{event.gateway}"
        return None

    def initial_state(self, key: str) -> GatewayState:
        site, _, gateway = key.partition("/")
        return GatewayState(site=site, gateway=gateway)

    def deadline(self, state: GatewayState) -> int | None:
        if state.online or state.alerted:
            return None
        return state.since + self.grace

    def step(
        self, state: GatewayState, event: Event, ctx: DetectorContext
    ) -> tuple[GatewayState, list[AlertSignal]]:
        online = event.values.get("online")
        if not isinstance(online, bool):
            return state, []
        state.site, state.gateway = event.site, event.gateway
        if online == state.online:
            return state, []
        state.online, state.since = online, event.time
        if online and state.alerted:
            state.alerted = False
            lt = LocalTime(ctx.timezone(state.site))
            return state, [
                _ops(
                    GATEWAY_OFFLINE,
                    state.gateway,
                    state.site,
                    event.time,
                    f"gateway {state.gateway} back online at {lt.hhmm(event.time)}",
                    action="clear",
                )
            ]
        return state, []

    def tick(
        self, state: GatewayState, now: int, ctx: DetectorContext
    ) -> tuple[GatewayState, list[AlertSignal]]:
        if state.online or state.alerted or now < state.since + self.grace:
            return state, []
        state.alerted = True
        lt = LocalTime(ctx.timezone(state.site))
        reason = (
            f"gateway {state.gateway} offline since {lt.hhmm(state.since)}: "
            "its residents' sensors are unknown until it is back"
        )
        return state, [_ops(GATEWAY_OFFLINE, state.gateway, state.site, now, reason)]
