"""Base of the device simulators.

A simulator is one device model on its real transport (a PTY for serial, a Modbus RTU
server on a PTY, MQTT for Zigbee2MQTT / face terminals / ChirpStack). What it sends is
encoded by the profile's codec, so simulators and device layer cannot drift apart.

Hooks the runtime calls:

- :meth:`Simulator.start` opens the transport (and returns once a reader can connect);
- :meth:`Simulator.stop` closes it; both are idempotent;
- scripted actions (``press()``, ``open_door()``, ``enter(n)``...) are plain async methods
  of each simulator, and :meth:`Simulator.inject` applies one of :data:`FAULTS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Literal, Self, get_args

from device_profiles.codecs import Codec, codec_for
from device_profiles.profiles import Profile

Fault = Literal[
    "garbage",
    "truncated",
    "bad_checksum",
    "duplicate",
    "out_of_order",
    "disconnect",
    "battery_drain",
    "silence",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)


class Simulator(ABC):
    """One simulated device. ``device`` is its id in the site config."""

    def __init__(self, profile: Profile, device: str):
        self.profile = profile
        self.device = device
        self.codec: Codec = codec_for(profile)
        self.sent = 0  # raw messages put on the transport, faults included

    @abstractmethod
    async def start(self) -> None:
        """Open the transport; when this returns a reader can connect."""

    @abstractmethod
    async def stop(self) -> None:
        """Close the transport. Safe to call twice."""

    async def inject(self, fault: Fault) -> None:
        """Apply one fault. Raises ValueError for a fault this device cannot show."""
        raise ValueError(f"{type(self).__name__} does not simulate fault {fault!r}")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
