"""The seam between the stream runtime and the detectors.

A detector is pure (see STYLE.md, "Pure detectors"): events and time in, state and alert
signals out; no I/O, no clock reads, no imports of aiomqtt, serial or InfluxDB. The
runtime owns time, persistence and I/O, and runs the same detector code live, in replay
and in tests.

State is partitioned by :meth:`Detector.key` (a resident, a device, a site) so that
10^5 devices do not share one blob; each partition's state is a msgspec Struct of the
detector's :attr:`Detector.state_type`, persisted by the runtime after every change.

Hooks, and when the runtime calls them:

- :meth:`Detector.key` for every event: which partition it belongs to (None: not mine);
- :meth:`Detector.step` with that partition's state and the event;
- :meth:`Detector.tick` for a partition when wall-clock (or simulated) time reaches
  :meth:`Detector.deadline` of its state, also when no data arrives, also for a deadline
  that passed while the processor was down (it fires on restart);
- :meth:`Detector.initial_state` for a partition never seen before;
- :meth:`Detector.expired` after each step and tick: True deletes the partition (its
  state and its timer), e.g. a day-care member not seen for months; an event for it
  later starts it over from :meth:`Detector.initial_state`;
- :meth:`Detector.configured_keys` once at start: partitions the configuration declares
  before any event arrives (a day-care member who has never checked in yet). The runtime
  creates each missing one with :meth:`Detector.seed` and arms its :meth:`deadline`, so
  its timers run even for a resident or device that has never sent anything.

Site and resident settings: :meth:`DetectorContext.site_config` and
:meth:`DetectorContext.resident_config` give a detector the ``sites.<id>`` and
``residents.<id>`` entries of the stream config. A detector that reads keys there besides
those of the processor and the built-in detectors
(:data:`stream.detectors.facts.SITE_KEYS`, :data:`~stream.detectors.facts.RESIDENT_KEYS`)
declares them in :attr:`Detector.site_keys` and :attr:`Detector.resident_keys`; a key
nobody declares is a warning at ``--check`` and at start (with the closest known key), so
a misspelt ``capcity`` does not go unnoticed. A factory function (a ``class:`` target that
is not a class) may set the same two attributes on itself::

    class DoorLeftOpen(Detector[DoorState]):
        name = "door_left_open"
        site_keys = frozenset({"door_open_limit"})

Gateway status (online/offline, from the retained status topic and its last will) and
the gateway's device health reach detectors as synthetic events of ``kind="gateway"``:
``reading="status"`` with values ``{"online": bool}``, and ``reading="device_status"``
with values ``{"device": str, "up": bool, "reason": str}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import msgspec

from device_profiles.events import Event


class Severity(StrEnum):
    """How urgent an alert is; decides escalation times and night paging."""

    CRITICAL = "critical"  # SOS press, confirmed fall: page now, escalate in minutes
    HIGH = "high"  # silent resident, no-show of a member living alone
    WARNING = "warning"  # operations problems that need a visit today
    INFO = "info"  # shown on dashboards, never pages


class Audience(StrEnum):
    """Who an alert is for: on-call responders or operations staff (never paged at night)."""

    RESPONDERS = "responders"
    OPERATIONS = "operations"


@dataclass(frozen=True, slots=True)
class AlertSignal:
    """A detector's statement that a condition started (``raise``) or ended (``clear``).

    ``site`` + ``condition`` + ``subject`` is the dedup key the alert manager keeps one
    open alert for: repeats update it. ``reason`` is for a responder, in plain words
    ("no door or motion activity at home since 09:40, usually under 2 h at this time of
    day"). ``time`` is when the condition was observed, in ms UTC.
    """

    condition: str
    subject: str
    site: str
    time: int
    severity: Severity
    reason: str
    audience: Audience = Audience.RESPONDERS
    action: Literal["raise", "clear"] = "raise"
    resident: str | None = None
    device: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The dedup key: one open alert per key."""
        return f"{self.site}/{self.condition}/{self.subject}"


class DetectorContext(Protocol):
    """Read-only facts a detector may consult besides its own state (site config)."""

    def site_config(self, site: str) -> Mapping[str, Any]:
        """The site's configuration (capacity, opening hours, timezone...), {} if unknown."""
        ...

    def resident_config(self, resident: str) -> Mapping[str, Any]:
        """Per-resident overrides and facts (lives alone, day-care member...), {} if unknown."""
        ...

    def timezone(self, site: str) -> tzinfo:
        """The site's local timezone (residents' habits follow local time)."""
        ...

    def is_absent(self, resident: str, at_ms: int) -> bool:
        """True when a known absence (hospital stay, travel) covers ``at_ms``."""
        ...


S = TypeVar("S", bound=msgspec.Struct)


class Detector(ABC, Generic[S]):
    """Base of every detector. Subclasses set :attr:`name` and :attr:`state_type`."""

    name: ClassVar[str]
    state_type: ClassVar[type[msgspec.Struct]]
    #: Keys of ``sites.<id>`` this detector reads besides the built-in ones (see above).
    site_keys: ClassVar[frozenset[str]] = frozenset()
    #: Keys of ``residents.<id>`` this detector reads besides the built-in ones.
    resident_keys: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def key(self, event: Event) -> str | None:
        """The state partition ``event`` belongs to, or None when it is not for this detector."""

    @abstractmethod
    def initial_state(self, key: str) -> S:
        """State of a partition never seen before."""

    @abstractmethod
    def step(self, state: S, event: Event, ctx: DetectorContext) -> tuple[S, list[AlertSignal]]:
        """Fold one event into the partition's state."""

    def tick(self, state: S, now: int, ctx: DetectorContext) -> tuple[S, list[AlertSignal]]:
        """Called when ``now`` (ms UTC) reaches :meth:`deadline`; default does nothing."""
        return state, []

    def deadline(self, state: S) -> int | None:
        """When :meth:`tick` must next run for this partition (ms UTC), or None."""
        return None

    def expired(self, state: S) -> bool:
        """True when the partition holds nothing worth keeping: the runtime deletes it.

        Called after every :meth:`step` and :meth:`tick`; default: never. Lets a detector
        keyed by something unbounded (every face ever seen) forget what is gone.
        """
        return False

    def configured_keys(
        self, sites: Mapping[str, Mapping[str, Any]], residents: Mapping[str, Mapping[str, Any]]
    ) -> list[str]:
        """Partitions the config declares before any event (see the module docstring).

        ``sites`` and ``residents`` are the config's sections; default: none.
        """
        return []

    def seed(self, key: str, now: int, ctx: DetectorContext) -> S:
        """State of a configured partition created at ``now`` (default: initial state).

        Seeding raises nothing: a processor that starts (or a member added to the config)
        after a deadline of today must not alert for what happened before it watched.
        """
        return self.initial_state(key)
