"""The site and resident settings the built-in detectors read, checked when they are read.

Besides the processor's own keys (``timezone``, ``policy``, ``quiet_hours``),
``sites.<id>`` and ``residents.<id>`` hold facts and per-site or per-resident options
for the detectors. The stream config (and ``carewatch replay``) checks the ones the
built-in detectors read with :func:`site_problems` and :func:`resident_problems`, each
problem with its path (``residents.r1.inactivity.night: '19-08' is not a span of time``),
so ``--check`` lists them and a running detector never meets a value it would have to
log and drop. Other keys are not problems, since a plugged-in detector may read facts of
its own (it declares them: :attr:`~stream.detectors.base.Detector.site_keys`,
:attr:`~stream.detectors.base.Detector.resident_keys`); a key that neither the processor,
the built-in detectors (:data:`SITE_KEYS`, :data:`RESIDENT_KEYS`) nor a configured
detector reads is a warning (:func:`unread_keys`, :func:`key_warnings`): a typo such as
``capcity`` would otherwise switch crowding alerts off without a word.
:func:`merge_site` lays a site over ``sites."*"`` (option sections key by key).

``sites.<id>``
    ``type`` (home, center or point), ``capacity`` (people, > 0), ``opening_hours``,
    ``opening_days``, ``holidays`` (:class:`~stream.detectors.sitetime.OpeningCalendar`),
    ``devices`` (below), and ``inactivity`` / ``noshow``: options of those detectors
    for this site, only those that differ.
``residents.<id>``
    ``home`` (a site id), ``lives_alone`` (true or false), ``daycare`` (``site``,
    ``days``, ``by``: a fixed day-care schedule), ``devices``, ``inactivity`` / ``noshow``.
``devices``
    a mapping from device id to its placement (a string) or to a mapping, or a list of
    mappings with an ``id``; in a mapping ``placement``, ``profile``, ``resident``,
    ``report_interval`` / ``report_interval_s`` are checked.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from device_profiles.errors import ConfigError
from stream.detectors.inactivity import InactivityOptions
from stream.detectors.noshow import NoShowOptions
from stream.detectors.options import (
    Convert,
    boolean,
    choice,
    duration,
    identifier,
    number,
    problems_of,
    read_options,
    section,
    text,
    time_of_day,
    weekdays,
)
from stream.detectors.sitetime import OpeningCalendar

Problems = list[tuple[str, str]]

SITE_TYPES = ("home", "center", "point")

#: Detector options a site or a resident may set for itself, and how they are read.
OPTION_SECTIONS: dict[str, Callable[[Mapping[str, Any], str], object]] = {
    "inactivity": InactivityOptions.parse,
    "noshow": NoShowOptions.parse,
}

_SITE_FACTS: dict[str, Convert] = {"type": choice(*SITE_TYPES), "capacity": number(0, open_lo=True)}
_RESIDENT_FACTS: dict[str, Convert] = {"home": identifier, "lives_alone": boolean}
_DEVICE_FACTS: dict[str, Convert] = {
    "placement": text,
    "profile": text,
    "resident": identifier,
    "report_interval": duration(),
    "report_interval_s": duration(),
}
_DAYCARE: dict[str, Convert] = {"site": identifier, "days": weekdays, "by": time_of_day}

#: Keys of ``sites.<id>`` the processor itself reads (the rest is for the detectors).
PROCESSOR_SITE_KEYS = frozenset({"timezone", "policy", "quiet_hours"})
#: Keys of ``sites.<id>`` the processor and the built-in detectors read.
SITE_KEYS = frozenset(
    {*PROCESSOR_SITE_KEYS, *_SITE_FACTS, *OpeningCalendar.KEYS, "devices", *OPTION_SECTIONS}
)
#: Keys of ``residents.<id>`` the built-in detectors read.
RESIDENT_KEYS = frozenset({*_RESIDENT_FACTS, "daycare", "devices", *OPTION_SECTIONS})


def merge_site(defaults: Mapping[str, Any], site: Mapping[str, Any]) -> dict[str, Any]:
    """A site's settings laid over those of ``sites."*"`` (``defaults``).

    The detector option sections (:data:`OPTION_SECTIONS`) merge option by option: a
    site's ``inactivity: {day_cap: 8h}`` keeps the ``margin`` of ``"*"``. Any other key
    of the site replaces that of ``"*"`` as a whole (opening hours, devices...).
    """
    merged = {**defaults, **site}
    for name in OPTION_SECTIONS:
        base, own = defaults.get(name), site.get(name)
        if isinstance(base, Mapping):
            # null (an empty "inactivity:" line) sets nothing: the site keeps those of "*"
            merged[name] = {**base, **own} if isinstance(own, Mapping) else base
    return merged


def site_problems(site: str, raw: Mapping[str, Any]) -> Problems:
    """Problems of the detector settings of ``sites.<site>`` (``"*"`` included)."""
    where = f"sites.{site}"
    problems: Problems = []
    problems += _facts_problems(raw, where, _SITE_FACTS)
    _check(problems, where, lambda: OpeningCalendar(raw, site))
    problems += _common(raw, where)
    return problems


def resident_problems(resident: str, raw: Mapping[str, Any]) -> Problems:
    """Problems of the detector settings of ``residents.<resident>``."""
    where = f"residents.{resident}"
    problems: Problems = []
    problems += _facts_problems(raw, where, _RESIDENT_FACTS)
    if raw.get("daycare") is not None:
        path = f"{where}.daycare"

        def daycare() -> None:
            schedule = section(raw["daycare"], path)
            read_options(schedule, path, _DAYCARE)
            if "by" not in schedule:
                raise ConfigError(
                    "missing: the time the member is expected by (HH:MM)", path=f"{path}.by"
                )

        _check(problems, path, daycare)
    problems += _common(raw, where)
    return problems


def _common(raw: Mapping[str, Any], where: str) -> Problems:
    """``devices`` and the detector option sections, the same for sites and residents."""
    problems: Problems = []
    if raw.get("devices") is not None:
        problems += _device_problems(raw["devices"], f"{where}.devices")
    for name, parse in OPTION_SECTIONS.items():
        if raw.get(name) is None:
            continue
        path = f"{where}.{name}"
        try:
            parse(section(raw[name], path), path)
        except ConfigError as exc:
            problems += problems_of(exc, path)
    return problems


def _device_problems(devices: Any, where: str) -> Problems:
    problems: Problems = []
    if isinstance(devices, Mapping):
        for device, entry in devices.items():
            path = f"{where}.{device}"
            if isinstance(entry, str):
                continue  # the placement
            if not isinstance(entry, Mapping):
                problems.append((path, f"{entry!r}: expected a placement or a mapping"))
                continue
            problems += _facts_problems(entry, path, _DEVICE_FACTS)
    elif isinstance(devices, list):
        for i, entry in enumerate(devices):
            path = f"{where}[{i}]"
            if not isinstance(entry, Mapping):
                problems.append((path, f"{entry!r}: expected a mapping with an id"))
                continue
            if "id" not in entry:
                problems.append((f"{path}.id", "missing: a device in a list needs its id"))
            problems += _facts_problems(entry, path, {**_DEVICE_FACTS, "id": identifier})
    else:
        problems.append(
            (where, f"{devices!r}: expected a mapping of device ids, or a list of {{id: ...}}")
        )
    return problems


def _facts_problems(raw: Mapping[str, Any], where: str, spec: Mapping[str, Convert]) -> Problems:
    """Problems of the keys of ``raw`` that ``spec`` knows (null: not set); others are
    left alone."""
    known = {k: v for k, v in raw.items() if k in spec and v is not None}
    try:
        read_options(known, where, spec)
    except ConfigError as exc:
        return problems_of(exc, where)
    return []


def _check(problems: Problems, where: str, check: Callable[[], object]) -> None:
    try:
        check()
    except ConfigError as exc:
        problems.extend(problems_of(exc, where))


def unread_keys(sites: Any, residents: Any) -> tuple[tuple[str, str, str], ...]:
    """(section, id, key) of each key of a ``sites`` or ``residents`` entry, as written in
    the file, that neither the processor nor the built-in detectors read.

    Whether a plugged-in detector reads it is known only once the detectors are known:
    :func:`key_warnings` says which of these nobody reads.
    """
    found: list[tuple[str, str, str]] = []
    for part, entries, known in (
        ("sites", sites, SITE_KEYS),
        ("residents", residents, RESIDENT_KEYS),
    ):
        if not isinstance(entries, Mapping):
            continue  # a problem of its own
        for entry_id, raw in entries.items():
            if isinstance(raw, Mapping):
                found += [(part, str(entry_id), str(k)) for k in raw if k not in known]
    return tuple(found)


def key_warnings(
    unread: tuple[tuple[str, str, str], ...],
    site_keys: frozenset[str] = frozenset(),
    resident_keys: frozenset[str] = frozenset(),
) -> Problems:
    """(path, message) of each :func:`unread_keys` key that no configured detector
    declares either (``site_keys``, ``resident_keys``: those the detectors declare).

    Warnings, not problems: the processor runs without the key, but a misspelt key
    (``capcity``) silently leaves out what it was meant to set, so the message names
    the closest known key.
    """
    known = {"sites": SITE_KEYS | site_keys, "residents": RESIDENT_KEYS | resident_keys}
    warnings: Problems = []
    for part, entry_id, key in unread:
        if key in known[part]:
            continue
        close = difflib.get_close_matches(key, sorted(known[part]), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        attribute = "site_keys" if part == "sites" else "resident_keys"
        warnings.append(
            (
                f"{part}.{entry_id}.{key}",
                f"unknown key, nothing reads it (a plugged-in detector declares the keys "
                f"it reads in {attribute}){hint}",
            )
        )
    return warnings
