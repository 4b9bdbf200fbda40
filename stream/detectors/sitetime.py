"""Local time, durations, opening calendars and device placement, shared by the detectors.

Residents' habits and sites' opening hours follow the site's local time, so detectors work
in *local hour slots*: ``slot = floor((utc_ms + utc_offset_ms) / 1 h)``. ``slot % 24`` is
the local hour of day and ``slot // 24`` the local day number (days since 1970-01-01 in
local time), which is all the calendar arithmetic the detectors need.

Config values accepted everywhere:

- durations: a number of seconds, or a string such as ``"500ms"``, ``"45s"``, ``"90m"``,
  ``"2h"``, ``"1h30m"``, ``"1d"`` (the stream config's own durations take the same);
- times of day: ``"HH:MM"``;
- opening hours: ``"08:00-17:00"`` (one span for every opening day) or a mapping from
  weekday (``mon`` .. ``sun``) to a span;
- opening days: a list of weekdays, or ``all``; holidays: a list of ISO dates
  (``"2024-10-01"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, ClassVar

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.detectors.base import DetectorContext

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Units largest first, each at most once: "1d", "2h30m", "1m30s", "500ms". "m" must not be
# followed by "s", or "500ms" would read as 500 minutes and a stray "s".
_DURATION_RE = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*m(?:in)?(?!s))?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*ms)?\s*$"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def duration_text_ms(text: str) -> int | None:
    """Milliseconds of ``"1h30m"``, ``"90s"``, ``"500ms"``...; None if it is not one."""
    match = _DURATION_RE.match(text)
    if not match or not any(match.groups()):
        return None
    d, h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return int(((d * 24 + h) * 60 + m) * MINUTE_MS + s * 1000 + ms)


def duration_ms(value: Any, option: str) -> int:
    """Milliseconds of a config duration (seconds as a number, or ``"1h30m"``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{value!r} is not a duration (e.g. 90, '45m', '2h')", path=option)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"{value!r} is not a duration (e.g. 90, '45m', '2h')", path=option)
        if value < 0:
            raise ConfigError(f"{value!r} must not be negative", path=option)
        return int(value * 1000)
    if isinstance(value, str):
        ms = duration_text_ms(value)
        if ms is not None:
            return ms
    raise ConfigError(f"{value!r} is not a duration (e.g. 90, '45m', '2h')", path=option)


def time_of_day_min(value: Any, option: str) -> int:
    """Minutes after local midnight of ``"HH:MM"`` (``"24:00"`` allowed for a span's end)."""
    if isinstance(value, str):
        match = re.match(r"^\s*(\d{1,2}):(\d{2})\s*$", value)
        if match:
            hours, minutes = int(match.group(1)), int(match.group(2))
            if minutes < 60 and (hours < 24 or (hours == 24 and minutes == 0)):
                return hours * 60 + minutes
    raise ConfigError(f"{value!r} is not a time of day (HH:MM)", path=option)


def span_min(value: Any, option: str) -> tuple[int, int]:
    """``"08:00-17:00"`` as (start, end) minutes after midnight; end may be < start."""
    if isinstance(value, str) and "-" in value:
        start, _, end = value.partition("-")
        try:
            return time_of_day_min(start, option), time_of_day_min(end, option)
        except ConfigError:
            pass  # say what the whole value should look like
    raise ConfigError(f"{value!r} is not a span of time (HH:MM-HH:MM)", path=option)


def fmt_duration(ms: int) -> str:
    """A duration for a responder: ``45 min``, ``2 h``, ``3 h 20 min``, ``2 d 4 h``.

    Under a minute (only short, test-sized limits) it says seconds, never ``0 min``.
    """
    if 0 <= ms < MINUTE_MS - 500:
        return f"{round(ms / 1000)} s"
    minutes = max(0, round(ms / MINUTE_MS))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        days, hours = divmod(hours, 24)
        return f"{days} d {hours} h" if hours else f"{days} d"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class LocalTime:
    """Converts ms UTC to local hour slots for one timezone (cached per UTC hour)."""

    __slots__ = ("_cache", "tz")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._cache: dict[int, int] = {}

    def offset_ms(self, ms: int) -> int:
        """The zone's UTC offset at ``ms``."""
        utc_hour = ms // HOUR_MS
        off = self._cache.get(utc_hour)
        if off is None:
            delta = datetime.fromtimestamp(ms / 1000, self.tz).utcoffset()
            off = int(delta.total_seconds() * 1000) if delta is not None else 0
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[utc_hour] = off
        return off

    def local_ms(self, ms: int) -> int:
        """``ms`` shifted to local wall-clock time (still counted from 1970-01-01)."""
        return ms + self.offset_ms(ms)

    def slot(self, ms: int) -> int:
        """Local hour slot of ``ms``."""
        return self.local_ms(ms) // HOUR_MS

    def hour(self, ms: int) -> int:
        """Local hour of day (0-23)."""
        return self.slot(ms) % 24

    def day(self, ms: int) -> int:
        """Local day number."""
        return self.local_ms(ms) // DAY_MS

    def minute_of_day(self, ms: int) -> int:
        """Minutes after local midnight."""
        return (self.local_ms(ms) % DAY_MS) // MINUTE_MS

    def weekday(self, ms: int) -> int:
        """0 = Monday .. 6 = Sunday, local."""
        return weekday_of_day(self.day(ms))

    def at(self, day: int, minute: int) -> int:
        """ms UTC of local ``day`` at ``minute`` after midnight (DST gaps: best effort)."""
        guess = day * DAY_MS + minute * MINUTE_MS
        utc = guess - self.offset_ms(guess)
        # The offset at the result may differ from the one at the guess (DST change).
        return guess - self.offset_ms(utc)

    def slot_start(self, slot: int) -> int:
        """ms UTC at which local hour ``slot`` begins.

        When the clocks go back, the repeated local hour begins at its first occurrence
        (it lasts two hours); when they go forward, the skipped hour begins where the next
        one does (it lasts nothing).
        """
        t = self.at(slot // 24, (slot % 24) * 60)
        # In a gap or an overlap at() may land an hour off: step to the first instant
        # whose local slot is ``slot`` or later (slots never decrease as time goes on).
        for _ in range(3):
            if self.slot(t - HOUR_MS) < slot:
                break
            t -= HOUR_MS
        for _ in range(3):
            if self.slot(t) >= slot:
                break
            t += HOUR_MS
        return t

    def hhmm(self, ms: int) -> str:
        """``HH:MM`` local."""
        minute = self.minute_of_day(ms)
        return f"{minute // 60:02d}:{minute % 60:02d}"

    def iso(self, ms: int) -> str:
        """ISO-8601 local time with offset, to the second."""
        return datetime.fromtimestamp(ms / 1000, self.tz).isoformat(timespec="seconds")


def weekday_of_day(day: int) -> int:
    """0 = Monday .. 6 = Sunday of a local day number (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def day_of_date(value: date) -> int:
    """Local day number of a calendar date."""
    return value.toordinal() - _EPOCH_ORDINAL


def date_of_day(day: int) -> date:
    """Calendar date of a local day number."""
    return date.fromordinal(day + _EPOCH_ORDINAL)


class OpeningCalendar:
    """When a site is open, from its config (``opening_hours``, ``opening_days``, ``holidays``).

    A site without ``opening_hours`` is treated as always open (homes, and sites whose
    hours nobody entered): detectors that need opening hours then rely on what they learn.
    """

    #: The site config keys a calendar reads.
    KEYS: ClassVar[frozenset[str]] = frozenset({"opening_hours", "opening_days", "holidays"})

    def __init__(self, site_config: Mapping[str, Any], site: str = "") -> None:
        where = f"sites.{site}" if site else "site"
        hours = site_config.get("opening_hours")
        days = site_config.get("opening_days")
        self.configured = hours is not None or days is not None
        self.spans: list[tuple[int, int] | None] = [(0, 24 * 60)] * 7
        if isinstance(hours, Mapping):
            self.spans = [None] * 7
            for name, span in hours.items():
                index = _weekday_index(name, f"{where}.opening_hours")
                self.spans[index] = span_min(span, f"{where}.opening_hours.{name}")
        elif hours is not None:
            span = span_min(hours, f"{where}.opening_hours")
            self.spans = [span] * 7
        if days is not None:
            # the same forms as a day-care schedule's days: a list of weekdays, or "all"
            allowed = weekday_set(days, f"{where}.opening_days")
            self.spans = [s if i in allowed else None for i, s in enumerate(self.spans)]
        self.holidays: set[int] = set()
        holidays = site_config.get("holidays")
        if holidays is not None and not isinstance(holidays, list):
            raise ConfigError("must be a list of dates (YYYY-MM-DD)", path=f"{where}.holidays")
        for i, value in enumerate(holidays or []):
            self.holidays.add(day_of_date(_as_date(value, f"{where}.holidays[{i}]")))

    def span(self, day: int) -> tuple[int, int] | None:
        """(open, close) minutes after midnight on local ``day``, None when closed."""
        if day in self.holidays:
            return None
        return self.spans[weekday_of_day(day)]

    def is_open(self, day: int, minute: int) -> bool:
        """True when the site is open on local ``day`` at ``minute`` after midnight."""
        span = self.span(day)
        if span is None:
            return False
        start, end = span
        return start <= minute < end if start <= end else minute >= start or minute < end


def _weekday_index(name: Any, option: str) -> int:
    if isinstance(name, str) and name[:3].lower() in WEEKDAYS:
        return WEEKDAYS.index(name[:3].lower())
    raise ConfigError(f"{name!r} is not a weekday (mon..sun)", path=option)


def _as_date(value: Any, option: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{value!r} is not a date (YYYY-MM-DD)", path=option)


def weekday_set(value: Any, option: str) -> set[int]:
    """Weekday indexes (0 = Monday) of a config list such as ``[mon, wed, fri]``, or ``all``."""
    if value == "all":
        return set(range(7))
    if not isinstance(value, list):
        raise ConfigError("must be a list of weekdays (mon..sun) or 'all'", path=option)
    return {_weekday_index(v, option) for v in value}


def device_config(ctx: DetectorContext, event: Event) -> Mapping[str, Any]:
    """The config entry of ``event.device``: the resident's ``devices``, else the site's.

    Both ``devices: {door-1: {placement: front_door}}`` and
    ``devices: [{id: door-1, placement: front_door}]`` are accepted; a plain string value
    (``devices: {door-1: front_door}``) is the placement.
    """
    sources: list[Mapping[str, Any]] = []
    if event.resident:
        sources.append(ctx.resident_config(event.resident))
    sources.append(ctx.site_config(event.site))
    for source in sources:
        entry = _find_device(source.get("devices"), event.device)
        if entry is not None:
            return entry
    return {}


def _find_device(devices: Any, device: str) -> Mapping[str, Any] | None:
    if isinstance(devices, Mapping):
        entry = devices.get(device)
        if isinstance(entry, str):
            return {"placement": entry}
        if isinstance(entry, Mapping):
            return entry
    elif isinstance(devices, list):
        for entry in devices:
            if isinstance(entry, Mapping) and entry.get("id") == device:
                return entry
    return None


def placement_of(ctx: DetectorContext, event: Event) -> str:
    """Where the device of ``event`` is installed (``front_door``, ``kitchen``...), or ""."""
    value = device_config(ctx, event).get("placement")
    return value if isinstance(value, str) else ""


def utc_iso(ms: int) -> str:
    """ISO-8601 UTC of ms (for details fields)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat()
