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

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, get_args

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

#: ``(seconds, action)`` or ``(seconds, action, kwargs)``: one step of :meth:`Simulator.play`.
Step = tuple[float, str] | tuple[float, str, Mapping[str, Any]]


class Simulator(ABC):
    """One simulated device. ``device`` is its id in the site config."""

    #: Method names :meth:`play` may call (each subclass lists its scripted actions).
    actions: ClassVar[frozenset[str]] = frozenset()

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

    async def play(self, steps: Iterable[Step], *, time_scale: float = 1.0) -> None:
        """Run ``steps`` at their offsets (seconds / ``time_scale`` of real time).

        Each step names one of :attr:`actions`; its kwargs are passed on. Steps are
        checked before the first runs, then run in offset order; one that runs late does
        not make the others wait longer.
        """
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        plan: list[tuple[float, str, Mapping[str, Any]]] = []
        for step in steps:
            at, action = step[0], step[1]
            kwargs: Mapping[str, Any] = step[2] if len(step) == 3 else {}
            if action not in self.actions:
                raise ValueError(
                    f"{type(self).__name__} has no action {action!r}; it has {sorted(self.actions)}"
                )
            if at < 0:
                raise ValueError(f"step {action!r}: offset must be >= 0, got {at}")
            plan.append((float(at), action, kwargs))
        plan.sort(key=lambda s: s[0])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for at, action, kwargs in plan:
            delay = start + at / time_scale - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await getattr(self, action)(**kwargs)

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
