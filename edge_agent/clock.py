"""Clock sanity for gateways without a real-time clock.

A Raspberry Pi has no RTC: it boots at 1970, or at the time ``fake-hwclock`` saved at
the last shutdown, and only learns the real time once NTP answers, which on a 4G
uplink may take minutes or never happen. The gateway must still stamp events, and must
never stamp them in 1970 or backwards.

Rules (:class:`Clock`):

- **Trusted** means: the wall clock is past the build floor (:data:`BUILD_FLOOR_MS`),
  not before the last trusted time this gateway persisted, and synchronized. Synchronized
  is, by ``trust``: ``auto`` (default) when ``/run/systemd/timesync/synchronized`` exists
  or the kernel's ``adjtimex`` does not report ``TIME_ERROR``; ``always`` for gateways
  with a battery-backed RTC (only the floor and the persisted time are checked);
  ``never`` for tests.
- **Untrusted** stamps are estimated from the monotonic clock: the last trusted time
  (persisted by the agent, else the floor) or, when later, the last stamp the previous
  run issued (also persisted), plus the time elapsed since start. The
  estimate never runs ahead of the real time, so the jump at synchronization is forward.
  Such Events carry ``clock_ok=False``.
- **Never backwards:** every stamp is >= the previous one, whatever the wall clock does,
  across a restart too (given the last issued stamp).
- **Correction:** when the clock becomes trusted, :attr:`Clock.correction_ms` gives the
  offset between the estimate and the real time for this run; the agent rewrites the
  still-queued untrusted Events of this run with corrected times (see
  :meth:`edge_agent.queue.QueueStore.correct_times`). Events already sent keep
  ``clock_ok=False``: the processor orders those by ``received``/``seq``, which the
  gateway keeps in receive order regardless of the clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: No event can honestly be older than this release (2026-01-01T00:00:00Z).
BUILD_FLOOR_MS = 1_767_225_600_000
_TIME_ERROR = 5  # adjtimex(2): clock not synchronized
_SYNC_CHECK_EVERY_S = 5.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library may run ldconfig: look it up once, not on every probe.
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


def kernel_synchronized() -> bool | None:
    """What ``adjtimex(2)`` says about synchronization; None where it cannot be asked."""
    libc = _libc()
    if libc is None:
        return None
    try:
        # struct timex is ~208 bytes on 64-bit Linux; modes=0 (first field) only reads.
        buf = ctypes.create_string_buffer(512)
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


def make_sync_probe(sync_file: str) -> Callable[[], bool]:
    """The ``auto`` probe: timesyncd's flag file, else the kernel's view."""

    def probe() -> bool:
        if sync_file and os.path.exists(sync_file):
            return True
        return bool(kernel_synchronized())

    return probe


@dataclass(frozen=True, slots=True)
class Stamp:
    """A gateway timestamp in ms UTC and whether the clock behind it was trusted."""

    ms: int
    ok: bool


class Clock:
    """Hands out non-decreasing, plausible timestamps, marking untrusted ones.

    All sources of time are injectable so that tests run without touching the system.
    """

    def __init__(
        self,
        *,
        trust: str = "auto",
        sync_probe: Callable[[], bool] | None = None,
        last_trusted_ms: int | None = None,
        last_issued_ms: int | None = None,
        floor_ms: int = BUILD_FLOOR_MS,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        sync_file: str = "/run/systemd/timesync/synchronized",
    ) -> None:
        if trust not in ("auto", "always", "never"):
            raise ValueError(f"trust must be auto, always or never, not {trust!r}")
        self.trust = trust
        self._probe = sync_probe or make_sync_probe(sync_file)
        self._wall = wall
        self._mono = mono
        self.floor_ms = floor_ms
        self.last_trusted_ms = max(floor_ms, last_trusted_ms or 0)
        # The anchor of untrusted estimates: a time known to have passed, and when. The
        # previous run may have estimated past the last trusted time (NTP unreachable):
        # starting from there keeps stamps from going backwards across a restart.
        self._anchor_ms = max(self.last_trusted_ms, last_issued_ms or 0)
        self._anchor_mono = mono()
        self._last_issued = 0
        self._synced = False
        self._next_probe = float("-inf")
        self.trusted = False
        #: Offset (real - estimate) in ms learnt when the clock first became trusted.
        self.correction_ms: int | None = None
        self.on_trusted: Callable[[int], None] | None = None

    def _is_synced(self, mono_now: float) -> bool:
        if self.trust == "always":
            return True
        if self.trust == "never":
            return False
        if mono_now >= self._next_probe:
            self._next_probe = mono_now + _SYNC_CHECK_EVERY_S
            try:
                self._synced = bool(self._probe())
            except Exception:  # a probe must never stop stamping
                self._synced = False
        return self._synced

    def estimate_ms(self) -> int:
        """The monotonic estimate: anchor time plus time elapsed since the anchor."""
        return self._anchor_ms + int((self._mono() - self._anchor_mono) * 1000)

    def now(self) -> Stamp:
        """The next stamp (ms UTC, trusted or not); never smaller than the previous one."""
        mono_now = self._mono()
        wall_ms = int(self._wall() * 1000)
        estimate = self._anchor_ms + int((mono_now - self._anchor_mono) * 1000)
        ok = (
            wall_ms >= self.floor_ms
            # a small tolerance for NTP slewing back a little across a restart
            and wall_ms >= self.last_trusted_ms - 5_000
            and self._is_synced(mono_now)
        )
        if ok:
            if not self.trusted:
                self.trusted = True
                if self.correction_ms is None:
                    self.correction_ms = wall_ms - estimate
                log.info(
                    "clock: trusted from now on (%+d ms against the estimate)",
                    wall_ms - estimate,
                )
                if self.on_trusted is not None:
                    self.on_trusted(wall_ms - estimate)
            self.last_trusted_ms = max(self.last_trusted_ms, wall_ms)
            # Keep the anchor current so a later loss of trust continues from here.
            self._anchor_ms, self._anchor_mono = wall_ms, mono_now
            ms = wall_ms
        else:
            if self.trusted:
                log.warning("clock: no longer trusted (wall %d ms); estimating", wall_ms)
                self.trusted = False
            ms = estimate
        ms = max(ms, self._last_issued)
        self._last_issued = ms
        return Stamp(ms, ok)

    def now_ms(self) -> int:
        """Shorthand for ``now().ms``."""
        return self.now().ms
