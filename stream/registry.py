"""Detectors by name: how the stream config's ``detectors:`` section becomes objects.

A name in the config is looked up in :data:`DETECTORS` (``name -> "module:attribute"``),
else as the module ``stream.detectors.<name>``, in which the
:class:`~stream.detectors.base.Detector` subclass whose ``name`` equals the config name
is used. ``class: "package.module:attribute"`` in a detector's section plugs in a
detector from anywhere. The attribute is a Detector class, or a factory function
returning one detector or a list of them (``operations`` is three detectors). The
remaining keys of the section are passed as keyword arguments, so a detector documents
its options in its ``__init__``; ``enabled: false`` (or ``name: false``) leaves it out.
A plugged-in detector that reads keys of its own under ``sites.<id>`` or
``residents.<id>`` declares them (``site_keys``, ``resident_keys``: :func:`declared_keys`),
else they are reported as unknown keys (a warning).

The module of each built-in detector also defines ``check_options(options, where)``,
which checks a section without building the detector (building loads the fall model
and the device profiles): the stream config runs it when the file is read
(:func:`check_options`), so a bad option is a problem with its path at ``--check`` and
at start, never an error inside a running detector.

::

    detectors:
      alarm: {still_after_s: 120}        # stream/detectors/alarm.py: AlarmDetector
      inactivity: {}                     # stream/detectors/inactivity.py
      operations: {gateways: {offline_grace: 10m}}
      my_rule: {class: "site_rules.door:DoorLeftOpen", minutes: 30}
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

from device_profiles.errors import CarewatchError, ConfigError
from stream.config import ConfigProblems, DetectorConfig
from stream.detectors.base import Detector
from stream.detectors.options import problems_of

#: Explicit entries; names not listed resolve by module convention (see module doc).
DETECTORS: dict[str, str] = {
    "alarm": "stream.detectors.alarm:AlarmDetector",
    "inactivity": "stream.detectors.inactivity:InactivityDetector",
    "noshow": "stream.detectors.noshow:NoShowDetector",
    "operations": "stream.detectors.operations:operations_detectors",
}

Factory = Callable[..., Any]  # a Detector class, or a function returning one or a list


def _find_class(module: ModuleType, name: str) -> type[Detector[Any]] | None:
    candidates = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Detector)
        and obj is not Detector
        and not inspect.isabstract(obj)
        and obj.__module__ == module.__name__
    ]
    for obj in candidates:
        if getattr(obj, "name", None) == name:
            return obj
    return candidates[0] if len(candidates) == 1 else None


def resolve(target: str) -> Factory:
    """The class or factory of a config entry; raises ValueError saying what is wrong."""
    spec = DETECTORS.get(target, target)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
        found = getattr(module, attr, None)
        if found is None or not callable(found):
            raise ValueError(f"{spec!r}: no such detector class or factory")
        if inspect.isclass(found) and not issubclass(found, Detector):
            raise ValueError(f"{spec!r} is not a Detector class")
        factory: Factory = found
        return factory
    try:
        module = importlib.import_module(f"stream.detectors.{spec}")
    except ModuleNotFoundError as exc:
        known = sorted(DETECTORS)
        raise ValueError(
            f"unknown detector {spec!r} (no module stream.detectors.{spec}; "
            f"known: {', '.join(known)})"
        ) from exc
    cls = _find_class(module, spec)
    if cls is None:
        raise ValueError(f"stream.detectors.{spec} has no Detector subclass named {spec!r}")
    return cls


def check_options(cfg: DetectorConfig) -> list[tuple[str, str]]:
    """(path, message) of every bad option of a built-in detector's section.

    Cheap: the detector is not built. Plugged-in detectors (not in :data:`DETECTORS`)
    check their options when they are built.
    """
    spec = DETECTORS.get(cfg.target)
    if spec is None:
        return []
    module = importlib.import_module(spec.partition(":")[0])
    check: Callable[[Mapping[str, Any], str], None] | None = getattr(module, "check_options", None)
    if check is None:
        return []
    path = f"detectors.{cfg.name}"
    try:
        check(cfg.options, path)
    except ConfigError as exc:
        return problems_of(exc, path)
    return []


def declared_keys(
    configs: Sequence[DetectorConfig], detectors: Sequence[Detector[Any]] = ()
) -> tuple[frozenset[str], frozenset[str]]:
    """The site and resident keys the configured detectors declare they read.

    From the class (or factory function) of each config entry, without building it, and
    from already built ``detectors`` (those a factory made, or passed in from Python):
    their :attr:`~stream.detectors.base.Detector.site_keys` and
    :attr:`~stream.detectors.base.Detector.resident_keys`. An entry that cannot be
    resolved declares nothing (it is a problem of its own).
    """
    owners: list[object] = list(detectors)
    for cfg in configs:
        try:
            owners.append(resolve(cfg.target))
        except ValueError:
            continue
    site: set[str] = set()
    resident: set[str] = set()
    for owner in owners:
        site |= _declared(owner, "site_keys")
        resident |= _declared(owner, "resident_keys")
    return frozenset(site), frozenset(resident)


def _declared(owner: object, attribute: str) -> set[str]:
    value = getattr(owner, attribute, None)
    if isinstance(value, str):
        return {value}  # one key, not its letters
    if isinstance(value, Iterable):
        return {str(key) for key in value}
    return set()


def build_detectors(configs: Sequence[DetectorConfig]) -> list[Detector[Any]]:
    """Instantiate every configured detector; raises :class:`ConfigProblems`."""
    problems: list[tuple[str, str]] = []
    out: list[Detector[Any]] = []
    seen: set[str] = set()
    for cfg in configs:
        path = f"detectors.{cfg.name}"
        bad = check_options(cfg)
        if bad:
            problems += bad
            continue
        try:
            made = resolve(cfg.target)(**dict(cfg.options))
        except ConfigError as exc:
            problems += problems_of(exc, path)
            continue
        except (ValueError, TypeError, CarewatchError) as exc:
            problems.append((path, str(exc)))
            continue
        for detector in made if isinstance(made, list) else [made]:
            if not isinstance(detector, Detector):
                problems.append((path, f"{cfg.target!r} did not make a Detector"))
                continue
            if detector.name in seen:
                problems.append((path, f"detector {detector.name!r} configured twice"))
                continue
            seen.add(detector.name)
            out.append(detector)
    if problems:
        raise ConfigProblems("<detectors>", problems)
    return out
