"""Device and gateway health: last-seen, up/down with a reason, decode errors, temperature.

A device is *down* when it has been silent for longer than
``health.down_factor * profile.report_interval_s + health.down_grace`` (a door magnet
reporting hourly is down after about two hours), or when its bridge says so (a
Zigbee2MQTT ``availability`` of offline). It is *up* again with its next reading. Each
transition is logged, becomes a ``device_health`` Event (so the processor sees it in
order with the readings) and triggers a heartbeat. Until its first reading a device is
``unknown`` (down only once the same silence has passed since the agent started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp"


def cpu_temperature(path: str = THERMAL_ZONE) -> float | None:
    """CPU temperature in degrees Celsius where the kernel exposes it, else None."""
    try:
        return round(int(Path(path).read_text(encoding="ascii").strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


@dataclass
class DeviceState:
    """What the agent knows about one device's liveness."""

    device: str
    kind: str
    expected_s: float  # silence after which the device is down
    state: str = "unknown"  # unknown | up | down
    reason: str = "no reading since the agent started"
    last_seen_ms: int | None = None
    last_seen_mono: float | None = None
    readings: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    since_mono: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Transition:
    """A device went down or came back up."""

    device: str
    kind: str
    up: bool
    reason: str


class DeviceHealth:
    """Tracks every configured device; :meth:`check` finds the silent ones."""

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self.devices: dict[str, DeviceState] = {}
        self.source_errors: dict[str, str] = {}  # device -> why its source is failing

    def configure(self, devices: dict[str, tuple[str, float]]) -> None:
        """Set the devices (id -> (kind, expected silence s)), keeping known state."""
        now = self._mono()
        old = self.devices
        self.devices = {}
        for dev, (kind, expected) in devices.items():
            st = old.get(dev)
            if st is None:
                st = DeviceState(dev, kind, expected, since_mono=now)
            else:
                st.kind, st.expected_s = kind, expected
            self.devices[dev] = st

    def seen(self, device: str, now_ms: int) -> Transition | None:
        """A reading arrived; returns the up transition when the device was down."""
        st = self.devices.get(device)
        if st is None:
            return None
        st.readings += 1
        st.last_seen_ms = now_ms
        st.last_seen_mono = self._mono()
        if st.state != "up":
            was_down = st.state == "down"
            st.state, st.reason = "up", ""
            if was_down:
                log.info("%s: device is back up", device)
                return Transition(device, st.kind, True, "reading received")
        return None

    def error(self, device: str, fault: str) -> None:
        """Count a decode fault of a device."""
        st = self.devices.get(device)
        if st is not None:
            st.errors[fault] = st.errors.get(fault, 0) + 1

    def mark_down(self, device: str, reason: str) -> Transition | None:
        """The device's bridge says it is offline."""
        st = self.devices.get(device)
        if st is None or st.state == "down":
            return None
        st.state, st.reason = "down", reason
        log.warning("%s: device down: %s", device, reason)
        return Transition(device, st.kind, False, reason)

    def check(self) -> list[Transition]:
        """Devices silent for longer than they may be become down (with the reason)."""
        now = self._mono()
        out: list[Transition] = []
        for st in self.devices.values():
            if st.state == "down":
                continue
            ref = st.last_seen_mono if st.last_seen_mono is not None else st.since_mono
            silent = now - ref
            if silent <= st.expected_s:
                continue
            what = "no reading" if st.last_seen_mono is not None else "no reading yet"
            reason = f"{what} for {silent:.0f} s (down after {st.expected_s:.0f} s)"
            src = self.source_errors.get(st.device)
            if src:
                reason += f"; {src}"
            st.state, st.reason = "down", reason
            log.warning("%s: device down: %s", st.device, reason)
            out.append(Transition(st.device, st.kind, False, reason))
        return out

    def snapshot(self) -> dict[str, Any]:
        """Per-device state for the heartbeat."""
        return {
            dev: {
                "state": st.state,
                **({"reason": st.reason} if st.reason else {}),
                "last_seen": st.last_seen_ms,
                "readings": st.readings,
                **({"errors": dict(st.errors)} if st.errors else {}),
            }
            for dev, st in self.devices.items()
        }
