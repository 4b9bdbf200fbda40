"""Device profiles: one YAML file per device model, loaded into frozen, checked values.

A profile keeps apart *how to read* a device (``transport`` defaults and each
resource's ``read``), *what each value means* (``type``, ``unit``, ``min``/``max``) and
*commands*. Device instances live in the site config and name their profile by
``profile``. The codec named by ``codec`` validates the parts only it understands
(``codec_options`` and each resource's ``read``) when the profile is bound to it.

Layout of a profile file (see ``device_profiles/profiles/*.yaml``)::

    profile: vendor-model          # unique name, equal to the file stem
    kind: pendant                  # device kind carried by every Event
    manufacturer: ...
    model: ...
    description: ...
    protocol: serial-frame | modbus-rtu | zigbee2mqtt | mqtt-json | chirpstack-v4
    codec: pendant_frame           # a name in device_profiles.codecs.CODECS
    report_interval_s: 300         # expected reporting interval (health checks)
    transport: {...}               # transport defaults, overridable per device
    codec_options: {...}           # codec-specific layout
    resources:                     # every value the device reports
      - name: battery
        type: int                  # int | float | bool | str | list
        unit: "%"
        min: 0
        max: 100
        read: {...}                # codec-specific: register, JSON path, frame offset
        description: ...
    commands: [...]                # optional, informative
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources as ilr
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from device_profiles.errors import ProfileError

PROTOCOLS = frozenset({"serial-frame", "modbus-rtu", "zigbee2mqtt", "mqtt-json", "chirpstack-v4"})
VALUE_TYPES = frozenset({"int", "float", "bool", "str", "list"})
_TOP_KEYS = frozenset(
    {
        "profile",
        "kind",
        "manufacturer",
        "model",
        "description",
        "protocol",
        "codec",
        "report_interval_s",
        "transport",
        "codec_options",
        "resources",
        "commands",
        "references",
    }
)
_RESOURCE_KEYS = frozenset({"name", "type", "unit", "min", "max", "read", "description", "scale"})


@dataclass(frozen=True, slots=True)
class Resource:
    """One value a device reports: what it means and how to read it."""

    name: str
    type: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    scale: float = 1.0
    read: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""

    def in_range(self, value: float) -> bool:
        """True when ``value`` lies within [min, max] (open bounds are not checked)."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded, checked device profile. Immutable: codecs and agents trust it."""

    name: str
    kind: str
    protocol: str
    codec: str
    report_interval_s: float
    manufacturer: str = ""
    model: str = ""
    description: str = ""
    transport: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    codec_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    resources: tuple[Resource, ...] = ()
    commands: tuple[Mapping[str, Any], ...] = ()
    source: str = ""

    def resource(self, name: str) -> Resource:
        """The resource called ``name``; raises :class:`ProfileError` when absent."""
        for res in self.resources:
            if res.name == name:
                return res
        raise ProfileError(f"profile {self.name!r} has no resource {name!r}", file=self.source)

    @property
    def resource_names(self) -> tuple[str, ...]:
        """Names of all resources, in file order."""
        return tuple(r.name for r in self.resources)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _num(value: Any, file: str, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"must be a number, got {value!r}", file=file, path=path)
    return float(value)


def parse_profile(data: Any, source: str = "<profile>") -> Profile:
    """Check a parsed YAML document and build a :class:`Profile`.

    Raises :class:`ProfileError` naming the file and the key path for every fault.
    """
    if not isinstance(data, Mapping):
        raise ProfileError("a profile must be a mapping at the top level", file=source)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ProfileError(f"unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}", file=source)
    for key in ("profile", "kind", "protocol", "codec", "report_interval_s", "resources"):
        if key not in data:
            raise ProfileError("missing required key", file=source, path=key)
    for key in ("profile", "kind", "codec"):
        if not isinstance(data[key], str) or not data[key]:
            raise ProfileError(
                f"must be a non-empty string, got {data[key]!r}", file=source, path=key
            )
    if data["protocol"] not in PROTOCOLS:
        raise ProfileError(
            f"unknown protocol {data['protocol']!r}; allowed: {sorted(PROTOCOLS)}",
            file=source,
            path="protocol",
        )
    interval = _num(data["report_interval_s"], source, "report_interval_s")
    if interval is None or interval <= 0:
        raise ProfileError("must be > 0 seconds", file=source, path="report_interval_s")
    for key in ("transport", "codec_options"):
        if key in data and not isinstance(data[key], Mapping):
            raise ProfileError("must be a mapping", file=source, path=key)
    raw_resources = data["resources"]
    if not isinstance(raw_resources, list) or not raw_resources:
        raise ProfileError("must be a non-empty list", file=source, path="resources")
    resources: list[Resource] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_resources):
        path = f"resources[{i}]"
        if not isinstance(raw, Mapping):
            raise ProfileError("must be a mapping", file=source, path=path)
        bad = sorted(set(raw) - _RESOURCE_KEYS)
        if bad:
            raise ProfileError(
                f"unknown key(s) {bad}; allowed: {sorted(_RESOURCE_KEYS)}", file=source, path=path
            )
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ProfileError("must be a non-empty string", file=source, path=f"{path}.name")
        if name in seen:
            raise ProfileError(f"duplicate resource {name!r}", file=source, path=f"{path}.name")
        seen.add(name)
        vtype = raw.get("type")
        if vtype not in VALUE_TYPES:
            raise ProfileError(
                f"type {vtype!r} not one of {sorted(VALUE_TYPES)}", file=source, path=f"{path}.type"
            )
        lo = _num(raw.get("min"), source, f"{path}.min")
        hi = _num(raw.get("max"), source, f"{path}.max")
        if lo is not None and hi is not None and lo > hi:
            raise ProfileError(f"min {lo} > max {hi}", file=source, path=path)
        scale = _num(raw.get("scale", 1.0), source, f"{path}.scale")
        read = raw.get("read", {})
        if not isinstance(read, Mapping):
            raise ProfileError("must be a mapping", file=source, path=f"{path}.read")
        resources.append(
            Resource(
                name=name,
                type=str(vtype),
                unit=None if raw.get("unit") is None else str(raw.get("unit")),
                min=lo,
                max=hi,
                scale=1.0 if scale is None else scale,
                read=_freeze(read),
                description=str(raw.get("description", "")),
            )
        )
    commands = data.get("commands") or []
    if not isinstance(commands, list):
        raise ProfileError("must be a list", file=source, path="commands")
    return Profile(
        name=data["profile"],
        kind=data["kind"],
        protocol=data["protocol"],
        codec=data["codec"],
        report_interval_s=interval,
        manufacturer=str(data.get("manufacturer", "")),
        model=str(data.get("model", "")),
        description=str(data.get("description", "")),
        transport=_freeze(data.get("transport") or {}),
        codec_options=_freeze(data.get("codec_options") or {}),
        resources=tuple(resources),
        commands=tuple(_freeze(c) for c in commands),
        source=source,
    )


def load_profile_file(path: str | Path) -> Profile:
    """Load one profile YAML file; the ``profile`` key must equal the file stem."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read: {exc}", file=str(p)) from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"not valid YAML: {exc}", file=str(p)) from exc
    profile = parse_profile(data, source=str(p))
    if profile.name != p.stem:
        raise ProfileError(
            f"profile name {profile.name!r} must equal the file name {p.stem!r}",
            file=str(p),
            path="profile",
        )
    return profile


def builtin_profile_dir() -> Path:
    """Directory of the profiles shipped with carewatch."""
    return Path(str(ilr.files("device_profiles") / "profiles"))


class ProfileRegistry:
    """Profiles by name, from the built-in directory plus any extra directories.

    A later directory overrides a built-in profile of the same name, so a site can ship
    a corrected profile without touching the package.
    """

    def __init__(self, profiles: Mapping[str, Profile]):
        self._profiles = dict(profiles)

    @classmethod
    def load(cls, *extra_dirs: str | Path, builtin: bool = True) -> ProfileRegistry:
        """Load every ``*.yaml`` profile; raises :class:`ProfileError` on the first bad file."""
        dirs = ([builtin_profile_dir()] if builtin else []) + [Path(d) for d in extra_dirs]
        found: dict[str, Profile] = {}
        for d in dirs:
            if not d.is_dir():
                raise ProfileError("profile directory does not exist", file=str(d))
            for f in sorted(d.glob("*.yaml")):
                prof = load_profile_file(f)
                found[prof.name] = prof
        return cls(found)

    def get(self, name: str) -> Profile:
        """The profile called ``name``; raises :class:`ProfileError` listing known names."""
        try:
            return self._profiles[name]
        except KeyError:
            raise ProfileError(
                f"unknown profile {name!r}; known: {sorted(self._profiles)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._profiles

    def names(self) -> list[str]:
        """Sorted names of all loaded profiles."""
        return sorted(self._profiles)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._profiles.values())
