"""Synthetic single-resident home histories with injected collapses (ground truth).

Used by ``bench/inactivity_quality`` and by the replay tests. SYNTHETIC: the habits below
are plausible, not measured; see docs/detectors.md for what that means for the figures.

Each resident gets their own habits (wake-up and bedtime, naps, how still they sit,
outings, a weekly family visit, day-care days, sick days) and their own sensors (a front
door contact always; motion in all rooms or only two; a fridge door or not). A day is
built as a sequence of intervals (asleep, active, sitting still, napping, out) and turned
into the events the sensors would send. A *collapse* at a time the resident is at home
and awake makes every sensor silent from then on.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from device_profiles.events import Event, Value

TZ = ZoneInfo("Asia/Shanghai")
MIN = 60_000
HOUR = 3_600_000
SITE = "home"
GATEWAY = "home-gw"


@dataclass
class Row:
    """One sensor event of a history (``kind`` as in the replay CSV)."""

    time: int
    device: str
    kind: str
    value: str
    placement: str


@dataclass
class Habits:
    """One resident's habits and home (all times in local hours)."""

    wake: float
    wake_sd: float
    bed: float
    bed_sd: float
    night_trips: float
    nap_prob: float
    nap_start: float
    nap_len_min: float
    sit_prob: float
    sit_median_min: float
    move_gap_min: float
    outings_per_day: float
    family_day: int | None
    daycare_days: tuple[int, ...]
    sick_prob: float
    rooms: tuple[str, ...]
    fridge: bool


@dataclass
class History:
    """A resident's generated events, and the collapse (ms UTC) if one was injected."""

    resident: str
    start: int
    days: int
    rows: list[Row] = field(default_factory=list)
    collapse: int | None = None
    habits: Habits | None = None

    @property
    def end(self) -> int:
        """End of the history (ms UTC)."""
        return self.start + self.days * 24 * HOUR

    def events(self) -> Iterator[Event]:
        """The rows as Events (what replay would make of them)."""
        for seq, row in enumerate(self.rows, 1):
            yield row_to_event(row, seq, self.resident)

    def write_csv(self, path: str) -> None:
        """The history as a replay CSV (time,resident,device,kind,value,placement)."""
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["time", "resident", "device", "kind", "value", "placement"])
            for row in self.rows:
                moment = datetime.fromtimestamp(row.time / 1000, TZ)
                writer.writerow(
                    [
                        moment.isoformat(timespec="seconds"),
                        self.resident,
                        row.device,
                        row.kind,
                        row.value,
                        row.placement,
                    ]
                )


def row_to_event(row: Row, seq: int, resident: str) -> Event:
    """An Event as ``carewatch replay`` builds it from a CSV row."""
    values: dict[str, Value]
    if row.kind == "door":
        is_open = row.value == "1"
        kind, reading, values = "door", "contact", {"contact": not is_open, "open": is_open}
    elif row.kind == "motion":
        kind, reading, values = "motion", "occupancy", {"occupancy": True}
    elif row.kind == "checkin":
        kind, reading = "face_terminal", "checkin"
        values = {"person": resident, "score": 1.0, "liveness": True, "terminal": row.device}
    else:
        raise ValueError(row.kind)
    return Event(
        gateway=GATEWAY,
        seq=seq,
        time=row.time,
        received=row.time,
        site=SITE,
        device=row.device,
        kind=kind,
        reading=reading,
        values=values,
        resident=resident,
    )


def placements(habits: Habits) -> dict[str, str]:
    """device -> placement of a resident's home."""
    out = {"door-front": "front_door"}
    for room in habits.rooms:
        out[f"pir-{room}"] = room
    if habits.fridge:
        out["door-fridge"] = "fridge"
    return out


def make_habits(rng: random.Random) -> Habits:
    """A random resident."""
    full = rng.random() < 0.6
    rooms = (
        ("hall", "living_room", "kitchen", "bedroom", "bathroom")
        if full
        else ("hall", "living_room")
    )
    daycare: tuple[int, ...] = ()
    if rng.random() < 0.2:
        daycare = tuple(sorted(rng.sample(range(5), rng.choice((2, 3)))))
    return Habits(
        wake=rng.uniform(5.5, 8.5),
        wake_sd=rng.uniform(0.2, 0.6),
        bed=rng.uniform(20.5, 23.5),
        bed_sd=rng.uniform(0.2, 0.6),
        night_trips=rng.uniform(0.0, 2.5),
        nap_prob=rng.choice((0.0, 0.3, 0.8)),
        nap_start=rng.uniform(12.5, 14.5),
        nap_len_min=rng.uniform(40, 110),
        sit_prob=rng.uniform(0.2, 0.6),
        sit_median_min=rng.uniform(15, 45) * (1.0 if full else 1.3),
        move_gap_min=rng.uniform(1.5, 4.0) * (1.0 if full else 2.5),
        outings_per_day=rng.uniform(0.2, 1.5),
        family_day=rng.choice((None, None, 5, 6)),
        daycare_days=daycare,
        sick_prob=rng.uniform(0.0, 0.04),
        rooms=rooms,
        fridge=rng.random() < 0.5,
    )


def _local_ms(day0: datetime, day: int, hours: float) -> int:
    moment = day0 + timedelta(days=day, hours=hours)
    return int(moment.timestamp() * 1000)


def generate(
    resident: str,
    seed: int,
    days: int,
    *,
    start: str = "2024-03-04",
    collapse_day: int | None = None,
    collapse_hours: tuple[float, float] = (8.0, 20.0),
) -> History:
    """One resident's history of ``days`` days; a collapse on ``collapse_day`` if given."""
    rng = random.Random(seed)
    habits = make_habits(rng)
    day0 = datetime.fromisoformat(start).replace(tzinfo=TZ)
    history = History(resident, _local_ms(day0, 0, 0), days, habits=habits)
    rows = history.rows
    # Intervals (start, end, what) of the whole history, then the events of each.
    intervals: list[tuple[int, int, str]] = []
    wake = _local_ms(day0, 0, habits.wake)
    for day in range(days):
        weekday = (day0 + timedelta(days=day)).weekday()
        sick = rng.random() < habits.sick_prob
        bed_h = rng.gauss(habits.bed, habits.bed_sd) - (1.5 if sick else 0.0)
        next_wake_h = 24 + rng.gauss(habits.wake, habits.wake_sd) + (1.0 if sick else 0.0)
        bed = _local_ms(day0, day, bed_h)
        t = wake
        plan: list[tuple[int, int, str]] = []
        # Fixed appointments: day care, the family visit, a nap.
        if weekday in habits.daycare_days and not sick:
            leave = _local_ms(day0, day, rng.gauss(8.4, 0.15))
            back = _local_ms(day0, day, rng.gauss(16.2, 0.3))
            plan.append((leave, back, "daycare"))
        elif weekday == habits.family_day and not sick and rng.random() < 0.7:
            leave = _local_ms(day0, day, rng.uniform(9.5, 11.0))
            back = leave + int(rng.uniform(4, 8) * HOUR)
            plan.append((leave, back, "out"))
        else:
            for _ in range(_poisson(rng, habits.outings_per_day * (0.2 if sick else 1.0))):
                leave = _local_ms(day0, day, rng.uniform(8.5, 17.5))
                back = leave + int(min(5.0, rng.lognormvariate(math.log(1.3), 0.6)) * HOUR)
                plan.append((leave, back, "out"))
        if rng.random() < (0.9 if sick else habits.nap_prob):
            nap = _local_ms(day0, day, rng.gauss(habits.nap_start, 0.4))
            length = rng.gauss(habits.nap_len_min, 15) * (2.0 if sick else 1.0)
            plan.append((nap, nap + int(max(15.0, length) * MIN), "nap"))
        plan.sort()
        kept: list[tuple[int, int, str]] = []
        for a, b, what in plan:  # drop overlaps and anything outside the waking day
            if a <= t + 10 * MIN or b >= bed - 20 * MIN:
                continue
            if kept and a < kept[-1][1] + 15 * MIN:
                continue
            kept.append((a, b, what))
        for a, b, what in kept:
            _fill_awake(rng, habits, intervals, t, a, sick=sick)
            intervals.append((a, b, what))
            t = b
        _fill_awake(rng, habits, intervals, t, bed, sick=sick)
        wake = _local_ms(day0, day, next_wake_h)
        intervals.append((bed, wake, "night"))
    # The collapse: a random moment of an active interval within collapse_hours (local)
    # on collapse_day.
    if collapse_day is not None:
        lo = _local_ms(day0, collapse_day, collapse_hours[0])
        hi = _local_ms(day0, collapse_day, collapse_hours[1])
        candidates = [(a, b) for a, b, w in intervals if w == "active" and b > lo and a < hi]
        if candidates:
            a, b = rng.choice(candidates)
            a, b = max(a, lo), min(b, hi)
            history.collapse = rng.randint(a, max(a, b - 1))
    for a, b, what in intervals:
        _events(rng, habits, rows, a, b, what=what)
    rows.sort(key=lambda r: r.time)
    if history.collapse is not None:
        history.rows = [r for r in rows if r.time < history.collapse]
    history.rows = [r for r in history.rows if r.time < history.end]
    return history


def _fill_awake(
    rng: random.Random,
    habits: Habits,
    out: list[tuple[int, int, str]],
    start: int,
    end: int,
    *,
    sick: bool,
) -> None:
    """Alternate active stretches and still sitting between ``start`` and ``end``."""
    t = start
    while t < end:
        active = int(rng.lognormvariate(math.log(20), 0.7) * MIN)
        out.append((t, min(end, t + active), "active"))
        t += active
        if t >= end:
            return
        if rng.random() < (0.8 if sick else habits.sit_prob):
            median = habits.sit_median_min * (2.5 if sick else 1.0)
            sit = int(min(180.0, rng.lognormvariate(math.log(median), 0.55)) * MIN)
            out.append((t, min(end, t + sit), "still"))
            t += sit


def _events(
    rng: random.Random, habits: Habits, rows: list[Row], a: int, b: int, *, what: str
) -> None:
    rooms = habits.rooms
    if what == "active":
        t = a + int(rng.expovariate(1 / habits.move_gap_min) * MIN)
        while t < b:
            room = rng.choice(rooms)
            rows.append(Row(t, f"pir-{room}", "motion", "1", room))
            if habits.fridge and rng.random() < 0.05:
                rows.append(Row(t + 20_000, "door-fridge", "door", "1", "fridge"))
                rows.append(Row(t + 50_000, "door-fridge", "door", "0", "fridge"))
            t += int(rng.expovariate(1 / habits.move_gap_min) * MIN) + 1000
    elif what in ("out", "daycare"):
        hall = "pir-hall"
        rows.append(Row(a - 60_000, hall, "motion", "1", "hall"))
        rows.append(Row(a, "door-front", "door", "1", "front_door"))
        rows.append(Row(a + 8_000, "door-front", "door", "0", "front_door"))
        if what == "daycare":
            rows.append(Row(a + 30 * MIN, "face-center", "checkin", "", ""))
        rows.append(Row(b, "door-front", "door", "1", "front_door"))
        rows.append(Row(b + 10_000, "door-front", "door", "0", "front_door"))
        rows.append(Row(b + 40_000, hall, "motion", "1", "hall"))
    elif what == "night":
        bedroom = "pir-bedroom" if "bedroom" in rooms else "pir-hall"
        for _ in range(_poisson(rng, habits.night_trips)):
            t = rng.randint(a + 30 * MIN, max(a + 30 * MIN, b - 30 * MIN))
            rows.append(Row(t, bedroom, "motion", "1", bedroom[4:]))
            if "bathroom" in rooms:
                rows.append(Row(t + 60_000, "pir-bathroom", "motion", "1", "bathroom"))
                rows.append(Row(t + 5 * MIN, "pir-bathroom", "motion", "1", "bathroom"))
                if rng.random() < 0.7:  # seen again on the way back to bed
                    rows.append(Row(t + 6 * MIN, bedroom, "motion", "1", bedroom[4:]))
        # Going to bed is seen by the bedroom sensor (the hall's in a sparse home).
        rows.append(Row(a - 30_000, bedroom, "motion", "1", bedroom[4:]))
    elif what in ("still", "nap"):
        # Sitting down (mostly in the living room) or lying down for a nap (mostly in the
        # bedroom) is seen by that room's sensor, if it has one; then nothing: a PIR does
        # not see a person sitting or lying still.
        usual = "living_room" if what == "still" else "bedroom"
        likely = 0.75 if what == "still" else 0.85
        room = usual if usual in rooms and rng.random() < likely else rng.choice(rooms)
        rows.append(Row(a - 20_000, f"pir-{room}", "motion", "1", room))


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
