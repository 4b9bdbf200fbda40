"""Small builders shared by the stream tests."""

from __future__ import annotations

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
