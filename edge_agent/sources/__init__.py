"""Sources: the transports the agent reads devices from.

A source owns one physical or logical link (a serial port, a Modbus bus, a site-local
MQTT broker) and the devices on it. Hooks (see :class:`Source`):

- :meth:`Source.run` opens the link and reads until the link fails (raise) or the task
  is cancelled. Every decoded reading goes to :meth:`edge_agent.ingest.Ingest.readings`
  and every bad frame to :meth:`edge_agent.ingest.Ingest.fault`; neither may raise.
- :meth:`Source.close` releases the link; called after every ``run``, failed or not.
- ``run`` calls :meth:`Source.up` once the link is open and reading (subscribed, port
  open), which marks the source ``running`` in the heartbeat.

The :class:`~edge_agent.agent.Agent` supervises each source on its own: a source whose
``run`` raises is reported (logged, its devices' health notes why) and retried with a
capped backoff; the other sources keep running.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from device_profiles.errors import CarewatchError
from edge_agent.ingest import Bound, Ingest


class SourceError(CarewatchError):
    """A link cannot be opened or failed (port missing, broker unreachable)."""


class Source(ABC):
    """Base of the agent's sources; see the package docstring for the hooks."""

    kind: ClassVar[str]

    def __init__(self, name: str, devices: Sequence[Bound], ingest: Ingest) -> None:
        self.name = name
        self.devices = list(devices)
        self.ingest = ingest
        self.state = "starting"  # starting | running | failed | stopped
        self.last_error: str | None = None
        self.restarts = 0
        self.on_up: Callable[[Source], None] | None = None

    def up(self) -> None:
        """Called by :meth:`run` once the link is open and data can flow."""
        self.state = "running"
        if self.on_up is not None:
            self.on_up(self)

    @abstractmethod
    async def run(self) -> None:
        """Open the link and read until it fails (raise) or the task is cancelled."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the link. Safe to call when it is not open."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} devices={[d.id for d in self.devices]}>"
