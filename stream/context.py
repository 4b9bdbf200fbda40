"""The :class:`~stream.detectors.base.DetectorContext` the runtime hands to detectors.

Facts come from the stream config (``sites``, ``residents``) and, for absences, from a
lookup the runtime backs with its state store (absences are recorded through the API).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

AbsenceLookup = Callable[[str, int], bool]


def _never_absent(resident: str, at_ms: int) -> bool:
    return False


class ConfigContext:
    """Read-only site and resident facts for detectors.

    ``sites`` maps a site id to its config mapping (``timezone`` among others),
    ``residents`` a resident id to theirs; ``is_absent`` answers from ``absences``.
    ``default_site`` is the config of every site ``sites`` does not list (the stream
    config's ``sites."*"``, already merged into the listed ones).
    """

    def __init__(
        self,
        sites: Mapping[str, Mapping[str, Any]] | None = None,
        residents: Mapping[str, Mapping[str, Any]] | None = None,
        absences: AbsenceLookup | None = None,
        default_timezone: str = "UTC",
        default_site: Mapping[str, Any] | None = None,
    ) -> None:
        self._sites = dict(sites or {})
        self._residents = dict(residents or {})
        self._absences = absences or _never_absent
        self._default_site: Mapping[str, Any] = dict(default_site or {})
        self._default_tz = _zone(default_timezone)
        self._zones: dict[str, tzinfo] = {}

    def site_config(self, site: str) -> Mapping[str, Any]:
        """The site's configuration; for a site not listed, the default one ({} if none)."""
        return self._sites.get(site, self._default_site)

    def resident_config(self, resident: str) -> Mapping[str, Any]:
        """Per-resident facts and overrides, {} if unknown."""
        return self._residents.get(resident, {})

    def timezone(self, site: str) -> tzinfo:
        """The site's timezone (``sites.<id>.timezone``, else the default site's), else
        ``default_timezone``."""
        zone = self._zones.get(site)
        if zone is None:
            name = self.site_config(site).get("timezone")
            zone = _zone(name) if isinstance(name, str) else self._default_tz
            self._zones[site] = zone
        return zone

    def is_absent(self, resident: str, at_ms: int) -> bool:
        """True when a recorded absence (hospital, travel) covers ``at_ms``."""
        return self._absences(resident, at_ms)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
