"""Detector options: each declared once with its type and range, checked when it is read.

A detector declares its options as a mapping from name to a converter (:func:`number`,
:func:`integer`, :func:`boolean`, :func:`duration`, :func:`choice`...).
:func:`read_options` converts a config section with it and reports *every* bad or unknown
option at once, each with its path in the config file::

    detectors.alarm.fall_threshold: 'high' is not a number (allowed: 0 to 1)

The stream config runs the same declarations when the file is read, so
``carewatch stream --check`` lists these problems and a running detector never meets a
value it cannot use (a fall alert must not be lost to a TypeError in a comparison).
Durations take the forms of :func:`stream.detectors.sitetime.duration_ms` (seconds as a
number, or ``"90s"``, ``"45m"``, ``"2h"``, ``"1h30m"``, ``"1d"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from device_profiles.errors import ConfigError
from device_profiles.events import valid_id
from stream.detectors.sitetime import duration_ms, span_min, time_of_day_min, weekday_set

#: Converts one option's config value; raises ConfigError naming ``path`` when it is bad.
Convert = Callable[[Any, str], Any]


class OptionProblems(ConfigError):
    """Every bad option of one config section; ``problems`` holds (path, message) pairs.

    ``path`` and ``message`` are the first problem's (the others follow in the message),
    so code that knows only :class:`ConfigError` still says where the first one is.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], *, file: str | None = None) -> None:
        self.problems = list(problems)
        first_path, first = self.problems[0]
        rest = "".join(f"; {p}: {m}" for p, m in self.problems[1:])
        super().__init__(first + rest, file=file, path=first_path)


def problems_of(exc: ConfigError, path: str) -> list[tuple[str, str]]:
    """(path, message) pairs of a ConfigError: all of an OptionProblems, else its own."""
    found = getattr(exc, "problems", None)
    if isinstance(found, list) and found:
        return [(str(p), str(m)) for p, m in found]
    return [(exc.path or path, exc.message)]


def read_options(raw: Mapping[str, Any], where: str, spec: Mapping[str, Convert]) -> dict[str, Any]:
    """The converted value of every option ``raw`` sets (section ``where`` of the file).

    Raises :class:`OptionProblems` listing every unknown option and every bad value.
    """
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name, value in raw.items():
        path = f"{where}.{name}"
        convert = spec.get(str(name))
        if convert is None:
            problems.append((path, f"unknown option (allowed: {', '.join(sorted(spec))})"))
            continue
        try:
            out[str(name)] = convert(value, path)
        except ConfigError as exc:
            problems.extend(problems_of(exc, path))
    if problems:
        raise OptionProblems(problems)
    return out


def section(value: Any, path: str) -> Mapping[str, Any]:
    """A config section that must be a mapping (null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping of options, got {value!r}", path=path)
    return value


# --- converters ------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _range_words(lo: float | None, hi: float | None, open_lo: bool, open_hi: bool) -> str:
    """``0.5 <= value < 1``, ``value >= 0``..."""
    left = f"{_fmt(lo)} {'<' if open_lo else '<='} " if lo is not None else ""
    right = f" {'<' if open_hi else '<='} {_fmt(hi)}" if hi is not None else ""
    if lo is not None and hi is None:
        return f"value {'>' if open_lo else '>='} {_fmt(lo)}"
    return f"{left}value{right}" if left or right else "any number"


def _in_range(
    value: float, lo: float | None, hi: float | None, open_lo: bool, open_hi: bool
) -> bool:
    if lo is not None and (value <= lo if open_lo else value < lo):
        return False
    return not (hi is not None and (value >= hi if open_hi else value > hi))


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    open_lo: bool = False,
    open_hi: bool = False,
) -> Convert:
    """A finite number (not a boolean, not a string), within [lo, hi] (open ends if asked)."""
    allowed = _range_words(lo, hi, open_lo, open_hi)

    def convert(value: Any, path: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{value!r} is not a number (allowed: {allowed})", path=path)
        if not _in_range(value, lo, hi, open_lo, open_hi):
            raise ConfigError(f"{value!r} is out of range (allowed: {allowed})", path=path)
        return float(value)

    return convert


def integer(lo: int | None = None, hi: int | None = None) -> Convert:
    """A whole number within [lo, hi]: ``2.5`` is refused, never truncated."""
    allowed = _range_words(lo, hi, False, False)

    def convert(value: Any, path: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{value!r} is not a whole number (allowed: {allowed})", path=path)
        if not _in_range(value, lo, hi, False, False):
            raise ConfigError(f"{value!r} is out of range (allowed: {allowed})", path=path)
        return value

    return convert


def boolean(value: Any, path: str) -> bool:
    """``true`` or ``false`` (YAML booleans only: the string ``"no"`` is not false)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{value!r} is not true or false", path=path)
    return value


def duration(*, positive: bool = False) -> Convert:
    """A duration in ms (seconds as a number, or ``"2m"``...); ``positive``: not 0."""

    def convert(value: Any, path: str) -> int:
        ms = duration_ms(value, path)
        if positive and ms <= 0:
            raise ConfigError(f"{value!r} must be longer than 0", path=path)
        return ms

    return convert


def choice(*allowed: str) -> Convert:
    """One of ``allowed`` (strings)."""

    def convert(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(
                f"{value!r} is not allowed (allowed: {', '.join(allowed)})", path=path
            )
        return value

    return convert


def optional(convert: Convert) -> Convert:
    """``convert``, or None for ``null`` (the option's own default applies)."""

    def convert_optional(value: Any, path: str) -> Any:
        return None if value is None else convert(value, path)

    return convert_optional


def time_of_day(value: Any, path: str) -> int:
    """``"HH:MM"`` as minutes after local midnight."""
    return time_of_day_min(value, path)


def span(value: Any, path: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` as (start, end) minutes after midnight (end may be < start)."""
    return span_min(value, path)


def names(value: Any, path: str) -> tuple[str, ...]:
    """A list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{value!r} is not a list of names", path=path)
    return tuple(value)


def text(value: Any, path: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{value!r} is not a name (a non-empty string)", path=path)
    return value


def identifier(value: Any, path: str) -> str:
    """An id of a site, a resident or a device ([A-Za-z0-9_.:-], 1-64 characters)."""
    if not isinstance(value, str) or not valid_id(value):
        raise ConfigError(f"{value!r} is not an id ([A-Za-z0-9_.:-], 1-64 characters)", path=path)
    return value


def weekdays(value: Any, path: str) -> set[int]:
    """``[mon, wed, fri]`` or ``all``, as weekday indexes (0 = Monday)."""
    return weekday_set(value, path)
