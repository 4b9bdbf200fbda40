"""Silent residents: a quiet period at home that is improbably long for this person, now.

What it learns
    For every resident, from their own history, how long their *quiet periods* (the time
    from one activity to the next) last depending on the local hour at which they start.
    One sample per local hour slot: the longest quiet period that started in it. Samples
    go into 24 hour-of-day buckets, each keeping its ``K`` longest samples with the local
    day they were seen and a decayed sample count (exponential forgetting, half-life
    ``half_life_days``). That is the whole memory: fixed-size lists, never raw history.

When it alerts
    A quiet period that started at local hour ``h`` is "improbably long" once it exceeds
    ``quantile`` of the samples of bucket ``h`` (the two hours either side count with
    weight ``neighbour_weight`` and less, so a bedtime that drifts by an hour is still
    known; a night-long sample from a later hour is lengthened by the difference, as a
    night ends at a time of day), times ``margin_factor``, plus ``margin``; never below
    ``min_limit``, never above
    ``day_cap`` / ``night_cap``. While a resident has fewer than ``min_history_days`` days
    of history the fixed ``default_day_limit`` / ``default_night_limit`` apply. A daytime
    hour at which this person is seldom at home (a job, a daily walk: fewer than
    ``min_samples`` samples near it) is judged against all of their daytime quiet periods
    ("usually under 2 h 40 min during the day"), not the fixed default; a night hour with
    too few samples keeps ``default_night_limit`` (nights end at a time of day, so other
    hours' nights say little). The alert (condition ``inactivity``, HIGH) says why:
    "no door or motion activity at home since 09:40 (3 h 5 min), usually under 1 h 50 min
    at this time of day". It clears when activity resumes.

Evenings: bedtime or not
    An evening silence near bedtime looks like a night. The detector also learns where
    (placement, else device) the resident's nights start (``bedtime_places``): a silence
    starting in ``evening`` at a place where almost none of their nights started, with no
    activity at their usual bedtime place just before it (see :func:`_not_bedtime`), is
    judged by day limits against the quiet periods of that hour that were not nights.

What counts as activity
    A door opening or closing (a change of ``contact`` / ``open``), motion
    (``occupancy: true``), a face-terminal check-in, an SOS press, and a pendant heartbeat
    with ``activity > 0``. An impact is not activity (it may be the fall itself), nor is a
    heartbeat with ``activity: 0`` or a motion sensor's "no more motion".

Went out, silent at home, unknown
    - A front-door event (placement ``front_door``, see below) or a check-in followed by
      nothing is an absence, not a collapse: no inactivity alert. If the resident is not
      back by ``not_back_by`` (local, at least ``away_grace`` after leaving) or after
      ``away_limit`` at the latest, a ``not_back_home`` alert (HIGH) is raised. HIGH,
      not WARNING: it concerns someone living alone who did not come home, and the
      default ``not_back_by`` (22:00) is exactly when default quiet hours begin, when only
      HIGH and CRITICAL page; a WARNING would wait unheard until the morning.
      Motion or an inner door at home ends the absence. Someone who is often out later
      than ``not_back_by`` is judged by their own habit: the returns of the last 60 days
      that came after it are remembered, and once there are three, the alert waits until
      most of those returns (80 %) had happened, plus 30 minutes ("usually back by
      00:40 when out late"), but never more than ``late_return_max`` after
      ``not_back_by``. A night spent away counts as later than that.
    - A resident whose gateway is offline (``kind="gateway"``, ``reading="status"``,
      ``online: false``) or one of whose sensors is down (``reading="device_status"``
      with ``up: false``, or a sensor's own ``availability`` ``online: false``) is
      *unknown*: no inactivity alarm is raised for them (the operations detector reports
      the gateway or device to operations staff). Once everything is back, an alarm waits
      at least ``gateway_grace`` so that the events the gateway queued can arrive. Quiet
      periods that overlap such a gap, an absence, or a known absence (``ctx.is_absent``)
      are not learned.
    - Unknown must not last unheard: after ``unknown_limit`` (12 h) of it, a
      ``home_unseen`` alert goes to the responders ("we cannot see r1's home for 12 h:
      gateway gw-1 offline since 09:00 ..."), HIGH when the resident's config says
      ``lives_alone: true`` (nobody else would notice a collapse), WARNING otherwise. It
      clears when the gateway and the sensors are back.

Placement convention
    Live Events carry no placement: it comes from the config, first the resident's
    ``devices`` then the site's (``devices: {door-1: {placement: front_door}}``, see
    :func:`stream.detectors.sitetime.device_config`). ``carewatch replay`` fills it from
    the CSV's ``placement`` column. A device's config entry may also name its
    ``resident`` when the device itself is not bound to one.

Where it watches
    State is partitioned by site (a home is a site with its own gateway), so that the
    gateway's and the sensors' status reach the residents they concern. A site whose config
    says ``type: center`` or ``type: point`` (or, with no ``type``, has ``opening_hours``)
    is not a home: nobody is watched there. A resident whose config names a ``home`` site
    is watched only there, and only once a sensor at home (door, motion, pendant) has seen
    them: check-ins alone never raise anything here.

Options (constructor keywords; the same names in a site's or a resident's ``inactivity``
config section override them for that site or resident; durations as in
:func:`stream.detectors.sitetime.duration_ms`): see :class:`InactivityOptions`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

import msgspec

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.detectors.base import AlertSignal, Detector, DetectorContext, Severity
from stream.detectors.options import (
    Convert,
    boolean,
    duration,
    integer,
    names,
    number,
    read_options,
    span,
    time_of_day,
)
from stream.detectors.sitetime import (
    HOUR_MS,
    MINUTE_MS,
    LocalTime,
    device_config,
    fmt_duration,
)

log = logging.getLogger(__name__)

CONDITION = "inactivity"
NOT_BACK = "not_back_home"
#: The resident has been unknown (gateway offline, sensor down) for ``unknown_limit``.
UNSEEN = "home_unseen"
#: Longest quiet periods kept per hour-of-day bucket.
K = 8
BUCKETS = 24
#: Quiet periods longer than this are not learned (a trip, a hospital stay).
MAX_LEARNED_MS = 24 * HOUR_MS
#: Bounded per-resident lists (a home has a handful of sensors and one gateway).
MAX_DEVICES = 16
MAX_GATEWAYS = 4
#: How often an absent resident (``ctx.is_absent``) is checked again.
ABSENT_RECHECK_MS = HOUR_MS
NOT_HOME_TYPES = ("center", "point")
#: Hour buckets either side whose samples count, with weight neighbour_weight ** distance,
#: times FAR_WEIGHT beyond the next hour: going to bed two hours early is rare, and a
#: bedtime two hours later must not make an evening silence look like a night.
NEIGHBOURS = 2
FAR_WEIGHT = 0.4
#: Quiet periods at least this long (minutes) are taken as sleep, which ends at a time of
#: day: see _compute_limit.
ANCHORED_MIN = 240
#: Late returns (see "Went out" in the module doc): how many are kept, for how long,
#: how many are needed, which share of them the alert waits for, and the margin.
LATE_KEEP = 16
LATE_MAX_AGE_DAYS = 60
LATE_MIN_SAMPLES = 3
LATE_QUANTILE = 0.8
LATE_MARGIN_MIN = 30
#: Where nights start (see InactivityOptions.bedtime_places): decay of the per-place night
#: counts per night learned, nights needed, and the shares of nights that make a place
#: one nights "never" start from (RARE) or the usual bedtime place (USUAL).
NIGHT_PLACE_DECAY = 0.95
NIGHT_PLACE_MIN = 10.0
NIGHT_PLACE_RARE = 0.05
NIGHT_PLACE_USUAL = 0.25
#: Activity at the usual bedtime place this shortly before a silence: the night has begun
#: (a trip to the bathroom after going to bed passes the bedroom).
BEDTIME_WINDOW_MS = 10 * MINUTE_MS
MAX_PLACES = 16

HOME, OUT, ALIVE = "home", "out", "alive"
#: What a limit was learned from (Limit.basis): nothing yet (the fixed defaults), the
#: quiet periods of this hour and its neighbours, or all daytime ones (a sparse hour).
DEFAULT_BASIS, HOUR_BASIS, DAY_BASIS = "default", "hour", "day"


class Limit(NamedTuple):
    """How long the current quiet period may last (ms), the usual length it came from,
    and what it was learned from (``*_BASIS``)."""

    limit: int
    usual: int
    basis: str

    @property
    def learned(self) -> bool:
        """From this person's own history (not the fixed defaults)."""
        return self.basis != DEFAULT_BASIS


@dataclass(frozen=True, slots=True)
class InactivityOptions:
    """Tuning of the inactivity detector (all durations in ms)."""

    #: Weighted quantile of a bucket's longest quiet periods that is "usual".
    quantile: float = 0.97
    #: Limit = usual * margin_factor + margin.
    margin_factor: float = 1.4
    margin: int = 20 * MINUTE_MS
    min_limit: int = 90 * MINUTE_MS
    day_cap: int = 10 * HOUR_MS
    night_cap: int = 14 * HOUR_MS
    #: Limits while there is too little history.
    default_day_limit: int = 6 * HOUR_MS
    default_night_limit: int = 12 * HOUR_MS
    min_history_days: int = 7
    #: Decayed samples a bucket (with its neighbours) needs before it is trusted.
    min_samples: float = 4.0
    half_life_days: float = 30.0
    neighbour_weight: float = 0.5
    #: Quiet periods starting in this local span use the night limits.
    night: tuple[int, int] = (19 * 60, 8 * 60)
    #: Learn where (placement) this person's nights start; an evening silence that starts
    #: elsewhere, with no activity at the bedtime place just before it, is not bedtime and
    #: is judged like a daytime one. Nights are learned starting in ``evening``.
    bedtime_places: bool = True
    evening: tuple[int, int] = (18 * 60, 2 * 60)
    #: Not back home by this local time (minutes after midnight) ...
    not_back_by: int = 22 * 60
    #: ... but never sooner than this after leaving, and at the latest after away_limit.
    away_grace: int = 2 * HOUR_MS
    away_limit: int = 16 * HOUR_MS
    #: How much later than not_back_by a habit of coming home late may move the alert
    #: (0: never, always at not_back_by).
    late_return_max: int = 4 * HOUR_MS
    #: After a gateway or sensor comes back, wait this long before alarming.
    gateway_grace: int = 15 * MINUTE_MS
    #: Unknown (gateway offline, sensor down) this long: tell the responders (0 = never).
    unknown_limit: int = 12 * HOUR_MS
    #: Door placements that lead outside.
    exit_placements: tuple[str, ...] = ("front_door",)
    enabled: bool = True

    @classmethod
    def parse(
        cls, raw: Mapping[str, Any], where: str, base: InactivityOptions | None = None
    ) -> InactivityOptions:
        """``base`` (default: the defaults) with the options ``raw`` sets.

        Raises :class:`~stream.detectors.options.OptionProblems` naming every unknown
        option and bad value (see :data:`OPTIONS`).
        """
        return replace(base or cls(), **read_options(raw, where, OPTIONS))

    def is_night(self, hour: int) -> bool:
        """True when a quiet period starting at local ``hour`` is judged by night limits."""
        return _in_span(self.night, hour * 60)

    def is_evening(self, hour: int) -> bool:
        """True when a quiet period starting at local ``hour`` may be going to bed."""
        return _in_span(self.evening, hour * 60)


#: How each option of :class:`InactivityOptions` is read from the config (``detectors.
#: inactivity``, and ``inactivity`` under a site or a resident); durations become ms.
OPTIONS: dict[str, Convert] = {
    "quantile": number(0.5, 1, open_hi=True),
    "margin_factor": number(1),
    "margin": duration(),
    "min_limit": duration(),
    "day_cap": duration(positive=True),
    "night_cap": duration(positive=True),
    "default_day_limit": duration(positive=True),
    "default_night_limit": duration(positive=True),
    "min_history_days": integer(0),
    "min_samples": number(0),
    "half_life_days": number(0, open_lo=True),
    "neighbour_weight": number(0, 1),
    "night": span,
    "bedtime_places": boolean,
    "evening": span,
    "not_back_by": time_of_day,
    "away_grace": duration(),
    "away_limit": duration(positive=True),
    "late_return_max": duration(),
    "gateway_grace": duration(),
    "unknown_limit": duration(),
    "exit_placements": names,
    "enabled": boolean,
}


def check_options(options: Mapping[str, Any], where: str = "detectors.inactivity") -> None:
    """Raise :class:`~stream.detectors.options.OptionProblems` naming every bad option."""
    InactivityOptions.parse(options, where)


def _in_span(span: tuple[int, int], minute: int) -> bool:
    start, end = span
    return start <= minute < end if start <= end else minute >= start or minute < end


class Quiet(msgspec.Struct, kw_only=True):
    """One resident's learned quiet periods and current silence (compact, fixed size)."""

    #: Last activity, ms UTC (0: none yet), and what it was ("motion (kitchen)").
    last: int = 0
    last_what: str = ""
    #: Where the last activity was (placement, else device; "" for a pendant).
    last_where: str = ""
    #: Decayed count of the nights that started at each place, and the last activity at
    #: the usual bedtime place (ms UTC).
    night_from: dict[str, float] = msgspec.field(default_factory=dict)
    bed_at: int = 0
    #: > 0: the last activity left the home (front door, check-in) at this time.
    away: int = 0
    #: When the current absence began: ``away`` moves with every front-door event (the
    #: return itself is one), this stays at the first.
    out_since: int = 0
    #: Returns after not_back_by: minutes late and the local day of the evening.
    late_min: list[int] = msgspec.field(default_factory=list)
    late_day: list[int] = msgspec.field(default_factory=list)
    #: Local days with learned quiet periods, and the last of them.
    days: int = 0
    last_day: int = -1
    #: Per hour bucket, the K longest samples (minutes; 0 = empty slot) and their day.
    top_min: list[int] = msgspec.field(default_factory=lambda: [0] * (BUCKETS * K))
    top_day: list[int] = msgspec.field(default_factory=lambda: [0] * (BUCKETS * K))
    #: Per hour bucket, the decayed number of samples, decayed up to ``count_day``.
    count: list[float] = msgspec.field(default_factory=lambda: [0.0] * BUCKETS)
    count_day: int = 0
    commits: int = 0
    #: The local hour slot still collecting (its longest quiet period so far, minutes).
    pend_slot: int = -1
    pend_min: int = 0
    #: Last known door state (True = open) per door device: only changes are activity.
    doors: dict[str, bool] = msgspec.field(default_factory=dict)
    gateways: list[str] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)
    kinds: list[str] = msgspec.field(default_factory=list)
    #: > 0: information is missing (gateway offline, sensor down) since then.
    unknown: int = 0
    #: When information last came back.
    known_at: int = 0
    #: A ``home_unseen`` alert is open (unknown for longer than ``unknown_limit``).
    unseen: bool = False
    #: The open alert ("", CONDITION or NOT_BACK) and the next check (0 = none).
    alert: str = ""
    due: int = 0


class InactivityState(msgspec.Struct, kw_only=True):
    """One site (home): its residents, offline gateways and sensors that are down."""

    site: str = ""
    residents: dict[str, Quiet] = msgspec.field(default_factory=dict)
    offline: dict[str, int] = msgspec.field(default_factory=dict)
    down: dict[str, int] = msgspec.field(default_factory=dict)


_ACTIVITY_READINGS = frozenset(
    {"contact", "occupancy", "checkin", "press", "heartbeat", "availability"}
)


class InactivityDetector(Detector[InactivityState]):
    """Silent residents at home, learned per person and hour of day (see the module doc)."""

    name: ClassVar[str] = "inactivity"
    state_type: ClassVar[type[msgspec.Struct]] = InactivityState

    def __init__(self, **options: Any) -> None:
        self.options = InactivityOptions.parse(options, "detectors.inactivity")
        self._decay = 0.5 ** (1 / self.options.half_life_days)
        self._opt_cache: dict[tuple[str, str], tuple[int, int, InactivityOptions]] = {}
        self._limit_cache: dict[tuple[str, str], tuple[tuple[int, ...], Limit]] = {}
        self._zones: dict[str, LocalTime] = {}

    # --- partitioning ---------------------------------------------------------------------
    def key(self, event: Event) -> str | None:
        if event.kind == "gateway" or event.reading in _ACTIVITY_READINGS:
            return event.site
        return None

    def initial_state(self, key: str) -> InactivityState:
        return InactivityState(site=key)

    def deadline(self, state: InactivityState) -> int | None:
        due = [r.due for r in state.residents.values() if r.due > 0]
        return min(due) if due else None

    # --- events ---------------------------------------------------------------------------
    def step(
        self, state: InactivityState, event: Event, ctx: DetectorContext
    ) -> tuple[InactivityState, list[AlertSignal]]:
        state.site = event.site
        if event.kind == "gateway" or event.reading == "availability":
            return state, self._status(state, event, ctx)
        site_conf = ctx.site_config(event.site)
        site_type = site_conf.get("type")
        if site_type in NOT_HOME_TYPES or (site_type is None and "opening_hours" in site_conf):
            return state, []  # a center or a care point, not a home
        conf = device_config(ctx, event)
        resident = event.resident or conf.get("resident")
        if event.reading == "checkin" and not resident:
            person = event.values.get("person")
            resident = person if isinstance(person, str) else None
        if not isinstance(resident, str) or not resident:
            return state, []
        home = ctx.resident_config(resident).get("home")
        if isinstance(home, str) and home != event.site:
            return state, []
        opts = self._options(ctx, event.site, resident)
        if not opts.enabled:
            state.residents.pop(resident, None)
            return state, []
        r = state.residents.get(resident)
        if r is None:
            r = state.residents[resident] = Quiet()
        placement = conf.get("placement")
        found = _activity(event, placement if isinstance(placement, str) else "", r, opts)
        if found is None:
            return state, []
        what, label = found
        t = event.time
        if t < r.last:
            return state, []  # a late event: the quiet period it belonged to is closed
        lt = self._local(ctx, event.site)
        if r.last > 0:
            self._learn(r, r.last, t, lt, opts=opts, ctx=ctx, resident=resident)
        r.last, r.last_what = t, label
        r.last_where = "" if what == ALIVE else (placement or event.device)
        if r.last_where and _night_share(r, r.last_where) >= NIGHT_PLACE_USUAL:
            r.bed_at = t
        if what != ALIVE and event.reading != "checkin":
            _remember(r.gateways, event.gateway, MAX_GATEWAYS)
            _remember(r.devices, event.device, MAX_DEVICES)
        _remember(r.kinds, _kind_word(event), 4)
        if what == HOME:
            if r.out_since:
                # Back when the front door last moved (the return), else now.
                left, back = r.out_since, (r.away if r.away > r.out_since else t)
                _learn_return(r, left, back, lt, opts, absent=ctx.is_absent(resident, left))
            r.away = r.out_since = 0
        elif what == OUT:
            r.away = t
            r.out_since = r.out_since or t
        alerts: list[AlertSignal] = []
        if r.alert == CONDITION or (r.alert == NOT_BACK and what != ALIVE):
            alerts.append(self._clear(state.site, resident, r, t, lt=lt, label=label))
            r.alert = ""
        self._schedule(state, resident, r, ctx=ctx, opts=opts, lt=lt)
        return state, alerts

    def _status(
        self, state: InactivityState, event: Event, ctx: DetectorContext
    ) -> list[AlertSignal]:
        """Gateway online/offline and sensor up/down: who is unknown from when."""
        values, t = event.values, event.time
        if event.reading == "status" and isinstance(values.get("online"), bool):
            if values["online"]:
                state.offline.pop(event.gateway, None)
            else:
                state.offline.setdefault(event.gateway, t)
        elif event.reading == "device_status" and isinstance(values.get("up"), bool):
            device = values.get("device")
            if not isinstance(device, str):
                return []
            if values["up"]:
                state.down.pop(device, None)
            else:
                state.down.setdefault(device, t)
        elif event.reading == "availability" and isinstance(values.get("online"), bool):
            if values["online"]:
                state.down.pop(event.device, None)
            else:
                state.down.setdefault(event.device, t)
        else:
            return []
        if len(state.down) > 4 * MAX_DEVICES:  # bounded: forget the oldest
            for device, _ in sorted(state.down.items(), key=lambda kv: kv[1])[:MAX_DEVICES]:
                del state.down[device]
        lt = self._local(ctx, state.site)
        alerts: list[AlertSignal] = []
        for resident, r in state.residents.items():
            gateways, devices = _blind(state, r)
            blind = bool(gateways or devices)
            if blind and r.unknown == 0:
                r.unknown = t
            elif not blind and r.unknown > 0:
                r.unknown = 0
                r.known_at = t
                if r.unseen:
                    r.unseen = False
                    alerts.append(self._seen_again(state.site, resident, t, lt))
            self._schedule(
                state, resident, r, ctx=ctx, opts=self._options(ctx, state.site, resident), lt=lt
            )
        return alerts

    # --- time -----------------------------------------------------------------------------
    def tick(
        self, state: InactivityState, now: int, ctx: DetectorContext
    ) -> tuple[InactivityState, list[AlertSignal]]:
        alerts: list[AlertSignal] = []
        lt = self._local(ctx, state.site)
        for resident, r in state.residents.items():
            if r.due <= 0 or r.due > now:
                continue
            opts = self._options(ctx, state.site, resident)
            if ctx.is_absent(resident, now):
                r.due = now + ABSENT_RECHECK_MS
                continue
            if r.unknown:
                unseen_at = _unseen_due(r, opts)
                if 0 < unseen_at <= now:
                    alerts.append(self._unseen(state, resident, r, now, ctx=ctx, lt=lt))
                    r.unseen = True
                self._schedule(state, resident, r, ctx=ctx, opts=opts, lt=lt)
                continue
            if r.alert or r.last <= 0 or not _home_sensors(r):
                r.due = 0
                continue
            if r.away:
                alerts.append(self._not_back(state.site, resident, r, now, lt=lt, opts=opts))
                r.alert = NOT_BACK
                r.due = 0
                continue
            limit = self._limit(state.site, resident, r, lt, opts)
            if now - r.last < limit.limit:  # the limit moved (a config change): check later
                r.due = r.last + limit.limit
                continue
            alerts.append(self._raise(state.site, resident, r, now, lt=lt, opts=opts, limit=limit))
            r.alert = CONDITION
            r.due = 0
        return state, alerts

    # --- learning -------------------------------------------------------------------------
    def _learn(
        self,
        r: Quiet,
        start: int,
        end: int,
        lt: LocalTime,
        *,
        opts: InactivityOptions,
        ctx: DetectorContext,
        resident: str,
    ) -> None:
        """Fold the quiet period [start, end) into the resident's hour buckets."""
        length = end - start
        if r.away or r.unknown or r.known_at > start or length > MAX_LEARNED_MS:
            return
        if ctx.is_absent(resident, start):
            return
        slot = lt.slot(start)
        minutes = max(1, round(length / MINUTE_MS))
        if minutes >= ANCHORED_MIN and r.last_where and opts.is_evening(slot % 24):
            # A night began at r.last_where: remember where this person goes to bed.
            for place in r.night_from:
                r.night_from[place] *= NIGHT_PLACE_DECAY
            r.night_from[r.last_where] = r.night_from.get(r.last_where, 0.0) + 1.0
            if len(r.night_from) > MAX_PLACES:
                del r.night_from[min(r.night_from, key=r.night_from.__getitem__)]
        if slot == r.pend_slot:
            r.pend_min = max(r.pend_min, minutes)
            return
        if slot < r.pend_slot:
            return
        if r.pend_slot >= 0:
            self._commit(r, r.pend_slot, r.pend_min)
        r.pend_slot, r.pend_min = slot, minutes

    def _commit(self, r: Quiet, slot: int, minutes: int) -> None:
        hour, day = slot % 24, slot // 24
        if day > r.count_day:
            factor = self._decay ** (day - r.count_day)
            r.count = [c * factor for c in r.count]
            r.count_day = day
        r.count[hour] += 1.0
        if day > r.last_day:
            r.days += 1
            r.last_day = day
        r.commits += 1
        base = hour * K
        worst, worst_score = -1, math.inf
        for i in range(base, base + K):
            if r.top_min[i] == 0:
                worst = i
                break
            weight = self._decay ** (day - r.top_day[i])
            # Faded samples go first, then the shortest one.
            score = r.top_min[i] if weight >= 0.05 else -1.0
            if score < worst_score:
                worst, worst_score = i, score
        if r.top_min[worst] != 0 and worst_score >= 0 and minutes <= worst_score:
            return
        r.top_min[worst] = minutes
        r.top_day[worst] = day

    def _limit(
        self, site: str, resident: str, r: Quiet, lt: LocalTime, opts: InactivityOptions
    ) -> Limit:
        """The limit of the current quiet period of ``r``."""
        hour = lt.hour(r.last)
        today = lt.day(r.last)
        awake = _not_bedtime(r, hour, opts)
        cache_key = (site, resident)
        stamp = (hour, today, r.commits, r.days, id(opts), awake)
        cached = self._limit_cache.get(cache_key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        result = self._compute_limit(r, hour, today, opts, awake=awake)
        if len(self._limit_cache) > 100_000:
            self._limit_cache.clear()
        self._limit_cache[cache_key] = (stamp, result)
        return result

    def _compute_limit(
        self, r: Quiet, hour: int, today: int, opts: InactivityOptions, *, awake: bool = False
    ) -> Limit:
        """``awake``: an evening silence that is not going to bed (see _not_bedtime):
        judged by day limits against the quiet periods of those hours that were not nights.
        """
        night = opts.is_night(hour) and not awake
        default = opts.default_night_limit if night else opts.default_day_limit
        cap = opts.night_cap if night else opts.day_cap
        if r.days < opts.min_history_days:
            return Limit(default, 0, DEFAULT_BASIS)
        decay = self._decay ** max(0, today - r.count_day)
        total = 0.0
        samples: list[tuple[int, float]] = []
        for offset in range(-NEIGHBOURS, NEIGHBOURS + 1):
            weight = opts.neighbour_weight ** abs(offset) * (FAR_WEIGHT if abs(offset) > 1 else 1)
            h = (hour + offset) % 24
            total += weight * r.count[h] * decay
            for i in range(h * K, h * K + K):
                minutes = r.top_min[i]
                if minutes >= ANCHORED_MIN and awake:
                    # Not bedtime: nights are not what this silence is compared with.
                    total -= weight * self._decay ** max(0, today - r.top_day[i])
                    continue
                if minutes:
                    # A long quiet period (a night) ends at a time of day rather than after
                    # a duration: had it started ``offset`` hours earlier it would have
                    # lasted that much longer. Only lengthen (never shorten): conservative.
                    if offset > 0 and minutes >= ANCHORED_MIN:
                        minutes += 60 * offset
                    age = max(0, today - r.top_day[i])
                    samples.append((minutes, weight * self._decay**age))
        pooled = False
        if total < opts.min_samples or not samples:
            if night:
                return Limit(default, 0, DEFAULT_BASIS)
            # Seldom at home at this hour: judge by all of this person's daytime quiet
            # periods, which their own history has, rather than by the fixed default.
            total, samples = self._day_samples(r, today, opts)
            if total < opts.min_samples or not samples:
                return Limit(default, 0, DEFAULT_BASIS)
            pooled = True
        samples.sort(reverse=True)
        target = (1 - opts.quantile) * total
        usual_min = samples[-1][0]
        acc = 0.0
        for minutes, weight in samples:
            acc += weight
            if acc >= target:
                usual_min = minutes
                break
        usual = usual_min * MINUTE_MS
        limit = int(usual * opts.margin_factor + opts.margin)
        return Limit(
            max(opts.min_limit, min(cap, limit)), usual, DAY_BASIS if pooled else HOUR_BASIS
        )

    def _day_samples(
        self, r: Quiet, today: int, opts: InactivityOptions
    ) -> tuple[float, list[tuple[int, float]]]:
        """(decayed count, weighted samples) of every daytime hour, nights left out."""
        decay = self._decay ** max(0, today - r.count_day)
        total = 0.0
        samples: list[tuple[int, float]] = []
        for h in range(BUCKETS):
            if opts.is_night(h):
                continue
            total += r.count[h] * decay
            for i in range(h * K, h * K + K):
                minutes = r.top_min[i]
                weight = self._decay ** max(0, today - r.top_day[i])
                if minutes >= ANCHORED_MIN and opts.is_evening(h):
                    total -= weight  # a night that began early: not a daytime silence
                    continue
                if minutes:
                    samples.append((minutes, weight))
        return total, samples

    # --- scheduling -----------------------------------------------------------------------
    def _schedule(
        self,
        state: InactivityState,
        resident: str,
        r: Quiet,
        *,
        ctx: DetectorContext,
        opts: InactivityOptions,
        lt: LocalTime,
    ) -> None:
        if r.unknown:
            # No inactivity watch while unknown; only the "cannot see the home" deadline.
            r.due = _unseen_due(r, opts) if opts.enabled else 0
            return
        if r.alert or r.last <= 0 or not opts.enabled or not _home_sensors(r):
            r.due = 0
            return
        if r.away:
            r.due = _not_back_due(r.away, lt, opts, _late_allowance(r, lt.day(r.away), opts))
            return
        due = r.last + self._limit(state.site, resident, r, lt, opts).limit
        if r.known_at:
            due = max(due, r.known_at + opts.gateway_grace)
        r.due = due

    # --- signals --------------------------------------------------------------------------
    def _raise(
        self,
        site: str,
        resident: str,
        r: Quiet,
        now: int,
        *,
        lt: LocalTime,
        opts: InactivityOptions,
        limit: Limit,
    ) -> AlertSignal:
        since = _since(r.last, now, lt)
        silent = fmt_duration(now - r.last)
        words = _sensor_words(r.kinds)
        awake = _not_bedtime(r, lt.hour(r.last), opts)
        if limit.learned:
            when = "during the day" if limit.basis == DAY_BASIS else "at this time of day"
            reason = (
                f"no {words} activity at home since {since} ({silent}), "
                f"usually under {fmt_duration(limit.usual)} {when}"
            )
            if awake:
                reason += (
                    f" when not going to bed (the last activity was {r.last_what}, "
                    "not where this person goes to bed)"
                )
        elif r.days < opts.min_history_days:
            reason = (
                f"no {words} activity at home since {since} ({silent}); "
                f"still learning this person's habits ({r.days} day"
                f"{'' if r.days == 1 else 's'} of history), "
                f"so the fixed limit of {fmt_duration(limit.limit)} applies"
            )
        else:
            reason = (
                f"no {words} activity at home since {since} ({silent}); "
                "this person is seldom at home at this hour, "
                f"so the fixed limit of {fmt_duration(limit.limit)} applies"
            )
        return AlertSignal(
            condition=CONDITION,
            subject=resident,
            site=site,
            time=now,
            severity=Severity.HIGH,
            reason=reason,
            resident=resident,
            details={
                "last_activity": lt.iso(r.last),
                "last": r.last_what,
                "silent_min": (now - r.last) // MINUTE_MS,
                "limit_min": limit.limit // MINUTE_MS,
                "usual_min": limit.usual // MINUTE_MS if limit.learned else None,
                "not_bedtime": awake,
                "learned": limit.learned,
                "learned_from": limit.basis,
                "history_days": r.days,
            },
        )

    def _unseen(
        self,
        state: InactivityState,
        resident: str,
        r: Quiet,
        now: int,
        *,
        ctx: DetectorContext,
        lt: LocalTime,
    ) -> AlertSignal:
        gateways, devices = _blind(state, r)
        causes = [f"gateway {g} offline" for g in gateways]
        if devices:
            plural = "s" if len(devices) > 1 else ""
            causes.append(f"sensor{plural} {', '.join(devices)} down")
        lives_alone = ctx.resident_config(resident).get("lives_alone") is True
        reason = (
            f"we cannot see {resident}'s home for {fmt_duration(now - r.unknown)}: "
            f"{' and '.join(causes) or 'no data'} since {_since(r.unknown, now, lt)}; "
            "nobody is watching for a fall or a collapse until it is back"
        )
        return AlertSignal(
            condition=UNSEEN,
            subject=resident,
            site=state.site,
            time=now,
            # Living alone, nobody else would notice: that must page, also at night.
            severity=Severity.HIGH if lives_alone else Severity.WARNING,
            reason=reason,
            resident=resident,
            details={
                "unknown_since": lt.iso(r.unknown),
                "unknown_min": (now - r.unknown) // MINUTE_MS,
                "gateways_offline": gateways,
                "devices_down": devices,
            },
        )

    def _seen_again(self, site: str, resident: str, t: int, lt: LocalTime) -> AlertSignal:
        return AlertSignal(
            condition=UNSEEN,
            subject=resident,
            site=site,
            time=t,
            severity=Severity.WARNING,
            reason=f"{resident}'s home is seen again since {lt.hhmm(t)}",
            action="clear",
            resident=resident,
        )

    def _not_back(
        self,
        site: str,
        resident: str,
        r: Quiet,
        now: int,
        *,
        lt: LocalTime,
        opts: InactivityOptions,
    ) -> AlertSignal:
        reason = (
            f"went out at {_since(r.away, now, lt)} ({r.last_what}) and has not come back "
            f"home ({fmt_duration(now - r.away)} ago)"
        )
        late = _late_allowance(r, lt.day(r.away), opts)
        if late:
            back_by = (opts.not_back_by + late // MINUTE_MS) % (24 * 60)
            reason += f"; usually back by {back_by // 60:02d}:{back_by % 60:02d} when out late"
        return AlertSignal(
            condition=NOT_BACK,
            subject=resident,
            site=site,
            time=now,
            severity=Severity.HIGH,  # must page in quiet hours (see the module docstring)
            reason=reason,
            resident=resident,
            details={"left": lt.iso(r.away), "away_min": (now - r.away) // MINUTE_MS},
        )

    def _clear(
        self, site: str, resident: str, r: Quiet, t: int, *, lt: LocalTime, label: str
    ) -> AlertSignal:
        condition = r.alert
        text = "back home" if condition == NOT_BACK else "activity again"
        return AlertSignal(
            condition=condition,
            subject=resident,
            site=site,
            time=t,
            severity=Severity.HIGH,
            reason=f"{text} at {lt.hhmm(t)}: {label}",
            action="clear",
            resident=resident,
        )

    # --- config ---------------------------------------------------------------------------
    def _options(self, ctx: DetectorContext, site: str, resident: str) -> InactivityOptions:
        site_raw = ctx.site_config(site).get("inactivity") or {}
        res_raw = ctx.resident_config(resident).get("inactivity") or {}
        key = (site, resident)
        cached = self._opt_cache.get(key)
        if cached is not None and cached[0] == id(site_raw) and cached[1] == id(res_raw):
            return cached[2]
        opts = self.options
        # The stream config checks these when it is read; a context built otherwise may
        # still hold a bad one: only that one is left out, not the site's good ones.
        for raw, where in (
            (site_raw, f"sites.{site}.inactivity"),
            (res_raw, f"residents.{resident}.inactivity"),
        ):
            if isinstance(raw, Mapping) and raw:
                try:
                    opts = InactivityOptions.parse(raw, where, opts)
                except ConfigError as exc:
                    log.warning("ignoring %s: %s", where, exc)
        self._opt_cache[key] = (id(site_raw), id(res_raw), opts)
        return opts

    def _local(self, ctx: DetectorContext, site: str) -> LocalTime:
        tz = ctx.timezone(site)
        lt = self._zones.get(site)
        if lt is None or lt.tz is not tz:
            lt = self._zones[site] = LocalTime(tz)
        return lt


def _activity(
    event: Event, placement: str, r: Quiet, opts: InactivityOptions
) -> tuple[str, str] | None:
    """(HOME | OUT | ALIVE, label) when ``event`` shows the resident doing something."""
    values, reading = event.values, event.reading
    where = f" ({placement.replace('_', ' ')})" if placement else ""
    if reading == "occupancy":
        return (HOME, f"motion{where}") if values.get("occupancy") is True else None
    if reading == "contact":
        if isinstance(values.get("open"), bool):
            is_open = bool(values["open"])
        elif isinstance(values.get("contact"), bool):
            is_open = not values["contact"]
        else:
            return None
        before = r.doors.get(event.device)
        r.doors[event.device] = is_open
        if len(r.doors) > MAX_DEVICES:
            r.doors.pop(next(iter(r.doors)))
        if before is not None and before == is_open:
            return None  # a periodic report, not a person
        verb = "opened" if is_open else "closed"
        if placement in opts.exit_placements:
            return OUT, f"front door {verb}"
        return HOME, f"door{where} {verb}"
    if reading == "checkin":
        return OUT, "check-in at the day-care center"
    if event.kind == "pendant":
        if reading == "press":
            return ALIVE, "SOS button pressed"
        activity = values.get("activity")
        if (
            reading == "heartbeat"
            and isinstance(activity, int | float)
            and not isinstance(activity, bool)
            and activity > 0
        ):
            return ALIVE, "pendant movement"
    return None


def _kind_word(event: Event) -> str:
    if event.reading == "contact":
        return "door"
    if event.reading == "occupancy":
        return "motion"
    if event.reading == "checkin":
        return "check-in"
    return "pendant"


def _blind(state: InactivityState, r: Quiet) -> tuple[list[str], list[str]]:
    """(offline gateways, sensors down) among those that see resident ``r``."""
    gateways = [g for g in r.gateways if g in state.offline]
    devices = [d for d in r.devices if d in state.down]
    return gateways, devices


def _unseen_due(r: Quiet, opts: InactivityOptions) -> int:
    """When an unknown resident's ``home_unseen`` alert is due (0: never, or raised)."""
    if r.unseen or opts.unknown_limit <= 0 or r.last <= 0 or not _home_sensors(r):
        return 0
    return r.unknown + opts.unknown_limit


def _night_share(r: Quiet, place: str) -> float:
    """Share of this person's recent nights that started at ``place`` (0 when unknown)."""
    total = sum(r.night_from.values())
    return r.night_from.get(place, 0.0) / total if total > 0 else 0.0


def _not_bedtime(r: Quiet, hour: int, opts: InactivityOptions) -> bool:
    """True when the current silence, starting in the evening, is not going to bed.

    It started at a place where this person's nights (at least NIGHT_PLACE_MIN of them,
    decayed) almost never start, and there was no activity at their usual bedtime place
    in the BEDTIME_WINDOW_MS before it: someone who sat down in the kitchen at 20:00 and
    stays silent has not gone to bed.
    """
    if not opts.bedtime_places or not r.last_where or not opts.is_evening(hour):
        return False
    if sum(r.night_from.values()) < NIGHT_PLACE_MIN:
        return False
    if _night_share(r, r.last_where) >= NIGHT_PLACE_RARE:
        return False
    return not (r.bed_at and r.last - r.bed_at <= BEDTIME_WINDOW_MS)


def _home_sensors(r: Quiet) -> bool:
    """True once the resident was seen by a sensor at home (check-ins alone are not)."""
    return any(k in r.kinds for k in ("door", "motion", "pendant"))


def _sensor_words(kinds: list[str]) -> str:
    order = [k for k in ("door", "motion", "pendant") if k in kinds] or ["door", "motion"]
    if len(order) == 1:
        return order[0]
    return ", ".join(order[:-1]) + " or " + order[-1]


def _since(t: int, now: int, lt: LocalTime) -> str:
    days = lt.day(now) - lt.day(t)
    hhmm = lt.hhmm(t)
    if days == 0:
        return hhmm
    if days == 1:
        return f"yesterday {hhmm}"
    return f"{lt.iso(t)[:10]} {hhmm}"


def _not_back_due(left: int, lt: LocalTime, opts: InactivityOptions, late: int = 0) -> int:
    """When someone who left at ``left`` is "not back": the first ``not_back_by`` at least
    ``away_grace`` later, plus ``late`` (a learned habit), and after ``away_limit`` at the
    latest."""
    return min(_back_by(left, lt, opts) + late, left + opts.away_limit)


def _back_by(left: int, lt: LocalTime, opts: InactivityOptions) -> int:
    earliest = left + opts.away_grace
    day = lt.day(earliest)
    due = lt.at(day, opts.not_back_by)
    if due < earliest:
        due = lt.at(day + 1, opts.not_back_by)
    return due


def _learn_return(
    r: Quiet, left: int, back: int, lt: LocalTime, opts: InactivityOptions, *, absent: bool
) -> None:
    """Remember a return after ``not_back_by`` (how late, in minutes), for _late_allowance.

    A known absence (hospital, travel) says nothing about habits. A return later than
    ``late_return_max`` (a night away) is kept as that plus one minute: "later than the
    most the alert may wait".
    """
    if absent or opts.late_return_max <= 0:
        return
    deadline = _back_by(left, lt, opts)
    if back <= deadline or deadline > left + opts.away_limit:
        return  # back in time, or away_limit, not not_back_by, bounded this absence
    late = min((back - deadline) // MINUTE_MS, opts.late_return_max // MINUTE_MS + 1)
    r.late_min.append(int(late))
    r.late_day.append(lt.day(deadline))
    if len(r.late_min) > LATE_KEEP:
        del r.late_min[0], r.late_day[0]


def _late_allowance(r: Quiet, today: int, opts: InactivityOptions) -> int:
    """How much later than ``not_back_by`` this person is usually back when out late (ms;
    0 while fewer than LATE_MIN_SAMPLES late returns in LATE_MAX_AGE_DAYS)."""
    if opts.late_return_max <= 0:
        return 0
    recent = sorted(
        m for m, d in zip(r.late_min, r.late_day, strict=True) if today - d <= LATE_MAX_AGE_DAYS
    )
    if len(recent) < LATE_MIN_SAMPLES:
        return 0
    usual = recent[max(0, math.ceil(LATE_QUANTILE * len(recent)) - 1)]
    return min((usual + LATE_MARGIN_MIN) * MINUTE_MS, opts.late_return_max)


def _remember(items: list[str], item: str, limit: int) -> None:
    if item in items:
        return
    items.append(item)
    if len(items) > limit:
        del items[0]
