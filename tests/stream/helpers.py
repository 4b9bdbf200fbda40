"""Small builders shared by the stream tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device_profiles.events import Event

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def ev(
    seq: int,
    reading: str = "press",
    *,
    t: int | None = None,
    gateway: str = "gw-1",
    site: str = "site-a",
    device: str = "pendant-1",
    kind: str = "pendant",
    resident: str | None = "res-1",
    values: dict[str, Any] | None = None,
    urgent: bool | None = None,
) -> Event:
    """An Event with sensible defaults; ``t`` is ms after :data:`T0` (default: seq s)."""
    time = T0 + (seq * 1000 if t is None else t)
    if values is None:
        values = {"button": "sos"} if reading == "press" else {}
    return Event(
        gateway=gateway,
        seq=seq,
        time=time,
        received=time,
        site=site,
        device=device,
        kind=kind,
        reading=reading,
        values=values,
        resident=resident,
        urgent=reading in ("press", "impact") if urgent is None else urgent,
    )


def desk_boss_config(
    *,
    mqtt: dict[str, Any],
    state_path: Path,
    hook: str,
    reminder: Any,
    secret: str | None = "k",
    site: str = "site-a",
    **sections: Any,
) -> dict[str, Any]:
    """A processor config with a two-tier policy: webhook ``{hook}/desk``, then
    ``{hook}/boss`` after 3 minutes for critical alerts; no quiet hours, no fall model."""

    def hook_cfg(name: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {"type": "webhook", "url": f"{hook}/{name}"}
        if secret is not None:
            cfg["secret"] = secret
        return cfg

    doc: dict[str, Any] = {
        "mqtt": mqtt,
        "state": {"path": str(state_path), "synchronous": "normal"},
        "api": {"enabled": False},
        "detectors": {"alarm": {"fall": False}},
        "notifiers": {"desk-hook": hook_cfg("desk"), "boss-hook": hook_cfg("boss")},
        "recipients": {
            "desk": {"notifiers": ["desk-hook"]},
            "boss": {"notifiers": ["boss-hook"]},
        },
        "policies": {
            "default": {
                "tiers": [{"recipients": ["desk"]}, {"recipients": ["boss"]}],
                "ack_timeout": {"critical": "3m"},
                "reminder": reminder,
            }
        },
        "sites": {site: {"timezone": "Asia/Shanghai", "quiet_hours": False}},
    }
    doc.update(sections)
    return doc
