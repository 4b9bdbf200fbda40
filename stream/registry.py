"""Detectors by name: how the stream config's ``detectors:`` section becomes objects.

A name in the config is looked up here: first in :data:`DETECTORS` (``name ->
"module:Class"``), else as the module ``stream.detectors.<name>``, in which the
:class:`~stream.detectors.base.Detector` subclass whose ``name`` equals the config name
is used. ``class: "package.module:Class"`` in a detector's section plugs in a detector
from anywhere. The remaining keys of the section are passed to the class as keyword
arguments, so a detector documents its options in its ``__init__``.

::

    detectors:
      alarm: {still_after_s: 120}        # stream/detectors/alarm.py: AlarmDetector
      inactivity: {}                     # stream/detectors/inactivity.py
      my_rule: {class: "site_rules.door:DoorLeftOpen", minutes: 30}
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from stream.config import ConfigProblems, DetectorConfig
from stream.detectors.base import Detector

#: Explicit entries; names not listed resolve by module convention (see module doc).
DETECTORS: dict[str, str] = {
    "alarm": "stream.detectors.alarm:AlarmDetector",
}


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


def resolve(name: str, target: str) -> type[Detector[Any]]:
    """The detector class for a config entry; raises ValueError saying what is wrong."""
    spec = DETECTORS.get(target, target)
    if ":" in spec:
        module_name, _, class_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Detector)):
            raise ValueError(f"{spec!r} is not a Detector class")
        return cls
    try:
        module = importlib.import_module(f"stream.detectors.{spec}")
    except ModuleNotFoundError as exc:
        known = sorted(DETECTORS)
        raise ValueError(
            f"unknown detector {spec!r} (no module stream.detectors.{spec}; "
            f"registered: {', '.join(known)})"
        ) from exc
    found = _find_class(module, spec)
    if found is None:
        raise ValueError(f"stream.detectors.{spec} has no Detector subclass named {spec!r}")
    return found


def build_detectors(configs: Sequence[DetectorConfig]) -> list[Detector[Any]]:
    """Instantiate every configured detector; raises :class:`ConfigProblems`."""
    problems: list[tuple[str, str]] = []
    out: list[Detector[Any]] = []
    seen: set[str] = set()
    for cfg in configs:
        path = f"detectors.{cfg.name}"
        try:
            cls = resolve(cfg.name, cfg.target)
            detector = cls(**dict(cfg.options))
        except (ValueError, TypeError) as exc:
            problems.append((path, str(exc)))
            continue
        if detector.name in seen:
            problems.append((path, f"detector {detector.name!r} configured twice"))
            continue
        seen.add(detector.name)
        out.append(detector)
    if problems:
        raise ConfigProblems("<detectors>", problems)
    return out
