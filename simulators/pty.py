"""A linked pair of pseudo-terminals: a null-modem cable with a fault switchboard.

A Modbus RTU server (the simulated device) and a Modbus RTU client (the gateway) both
open a serial port *by path*, so one ``os.openpty()`` pair is not enough: its master end
has no path. :class:`PtyLink` creates two PTYs and copies bytes between their masters
in a background thread, like ``socat -d -d pty,raw,echo=0 pty,raw,echo=0``::

    device (pymodbus server) ── device_path ═ master ◀─bridge─▶ master ═ client_path ── agent

Both slave ends are in raw mode without echo, as a serial adapter is. The bridge is where
the faults of a real RS-485 line are injected, on the device -> client direction (what a
gateway sees) unless noted:

- :meth:`PtyLink.silence` drops everything both ways (device unplugged or dead);
- :meth:`PtyLink.inject_garbage` puts noise in front of the next response, or at once;
- :meth:`PtyLink.corrupt_next` flips a byte of the next response(s): the CRC fails;
- :meth:`PtyLink.truncate_next` cuts the next response(s) short;
- :meth:`PtyLink.delay` holds responses back (a slow or congested bus);
- :meth:`PtyLink.clear_faults` lifts them all.

A thread rather than an asyncio task: the link then works for synchronous users
(pyserial, a CLI) and for asyncio users on any event loop, and it keeps copying while an
event loop is blocked, as a cable would.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import termios
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

log = logging.getLogger(__name__)

Direction = Literal["to_client", "to_device"]

#: Noise a line picks up: not a valid RTU frame for any unit (no valid CRC at any cut).
DEFAULT_GARBAGE = b"\x00\xff\x55\xaa\x13\x37\xfe"

_CHUNK = 4096


@dataclass
class LinkStats:
    """Byte counters of a :class:`PtyLink`, for tests and logs."""

    to_client: int = 0
    to_device: int = 0
    dropped: int = 0
    garbage: int = 0
    corrupted: int = 0
    truncated: int = 0


def _raw_slave(fd: int) -> None:
    """Put a PTY slave in raw mode without echo (what a serial adapter does)."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    # setraw leaves these alone on some Pythons; an echoing slave would bounce every
    # request straight back to its sender.
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class PtyLink:
    """Two raw PTYs whose masters are bridged by a background thread.

    ``device_path`` is for the simulated device (the Modbus server), ``client_path`` for
    the gateway (the Modbus client). The link holds both slave ends open itself, so either
    side may close and reopen its port without the bridge seeing a hang-up.

    Use as a context manager, or call :meth:`close`; closing twice is harmless.
    """

    def __init__(self, name: str = "pty-link"):
        self.name = name
        self.stats = LinkStats()
        self._lock = threading.Lock()
        self._closed = False
        # Faults, read by the bridge thread under the lock.
        self._silent = False
        self._delay_s = 0.0
        self._garbage_next = b""
        self._corrupt = 0
        self._truncate = 0
        self._pending_now: list[tuple[Direction, bytes]] = []
        # Delayed chunks toward the client: (due monotonic time, data), in order.
        self._held: deque[tuple[float, bytes]] = deque()

        fds: list[int] = []
        try:
            self._dev_master, self._dev_slave = os.openpty()
            fds += [self._dev_master, self._dev_slave]
            self._cli_master, self._cli_slave = os.openpty()
            fds += [self._cli_master, self._cli_slave]
            self._wake_r, self._wake_w = os.pipe()
            fds += [self._wake_r, self._wake_w]
            for fd in (self._dev_slave, self._cli_slave):
                _raw_slave(fd)
            for fd in (self._dev_master, self._cli_master, self._wake_r, self._wake_w):
                os.set_blocking(fd, False)
            self.device_path = os.ttyname(self._dev_slave)
            self.client_path = os.ttyname(self._cli_slave)
        except BaseException:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        self._fds = fds
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- faults --------------------------------------------------------------------------

    def silence(self, on: bool = True) -> None:
        """Drop every byte both ways while ``on`` (the device stops answering)."""
        with self._lock:
            self._silent = on

    @property
    def silent(self) -> bool:
        """True while :meth:`silence` is in force."""
        return self._silent

    def inject_garbage(self, data: bytes = DEFAULT_GARBAGE, *, now: bool = False) -> None:
        """Send ``data`` toward the client.

        By default the noise goes out glued in front of the next response (the case a
        receiver must resynchronize from); ``now=True`` sends it at once, unsolicited.
        """
        if not data:
            raise ValueError("garbage must not be empty")
        with self._lock:
            if now:
                self._pending_now.append(("to_client", bytes(data)))
            else:
                self._garbage_next += bytes(data)
        self._wake()

    def corrupt_next(self, count: int = 1) -> None:
        """Flip one byte in each of the next ``count`` responses, so their CRC fails."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._corrupt += count

    def truncate_next(self, count: int = 1) -> None:
        """Cut each of the next ``count`` responses to half its length."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._truncate += count

    def delay(self, seconds: float) -> None:
        """Hold every response back by ``seconds`` (0 lifts the delay; order is kept)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0 seconds")
        with self._lock:
            self._delay_s = float(seconds)
        self._wake()

    def clear_faults(self) -> None:
        """Lift every fault; queued garbage and pending corruptions are forgotten."""
        with self._lock:
            self._silent = False
            self._delay_s = 0.0
            self._garbage_next = b""
            self._corrupt = 0
            self._truncate = 0
        self._wake()

    def flush_device_input(self) -> None:
        """Discard bytes waiting unread at the device's port.

        While the device side is closed, requests pile up in its PTY (the link holds the
        slave open); a device coming back on the bus must not answer those stale requests.
        """
        with contextlib.suppress(OSError):
            termios.tcflush(self._dev_slave, termios.TCIFLUSH)

    # -- life cycle ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def close(self) -> None:
        """Stop the bridge and close every descriptor. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PtyLink(device={self.device_path!r}, client={self.client_path!r})"

    # -- the bridge ----------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _write(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` or drop the rest when the peer's buffer is full.

        A full buffer means nobody reads that port; a real line loses those bytes too,
        and the bridge must never block on it.
        """
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                self.stats.dropped += len(view)
                return
            except OSError as exc:  # EIO: the PTY is going away
                log.debug("%s: write failed: %s", self.name, exc)
                self.stats.dropped += len(view)
                return
            view = view[n:]

    def _read(self, fd: int) -> bytes:
        try:
            return os.read(fd, _CHUNK)
        except BlockingIOError:
            return b""
        except OSError as exc:
            # EIO when no slave descriptor is open; the link holds both, so this only
            # happens while closing.
            if exc.errno != errno.EIO:
                log.debug("%s: read failed: %s", self.name, exc)
            return b""

    def _to_client(self, data: bytes) -> None:
        """Apply the response-side faults to one chunk from the device."""
        with self._lock:
            if self._silent:
                self.stats.dropped += len(data)
                return
            if self._corrupt:
                self._corrupt -= 1
                self.stats.corrupted += 1
                # Any single changed byte fails CRC-16; the last one keeps the unit id
                # and function code intact, so the frame still looks like a response.
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            if self._truncate:
                self._truncate -= 1
                self.stats.truncated += 1
                data = data[: max(1, len(data) // 2)]
            if self._garbage_next:
                self.stats.garbage += len(self._garbage_next)
                data = self._garbage_next + data
                self._garbage_next = b""
            delay = self._delay_s
        if delay > 0 or self._held:
            due = time.monotonic() + delay
            if self._held:
                due = max(due, self._held[-1][0])
            self._held.append((due, data))
            return
        self.stats.to_client += len(data)
        self._write(self._cli_master, data)

    def _to_device(self, data: bytes) -> None:
        with self._lock:
            if self._silent:
                self.stats.dropped += len(data)
                return
        self.stats.to_device += len(data)
        self._write(self._dev_master, data)

    def _release_held(self) -> float | None:
        """Send held chunks that are due; returns seconds until the next one, if any."""
        now = time.monotonic()
        while self._held and self._held[0][0] <= now:
            _, data = self._held.popleft()
            self.stats.to_client += len(data)
            self._write(self._cli_master, data)
        if self._held:
            return max(0.0, self._held[0][0] - now)
        return None

    def _run(self) -> None:
        watch = [self._dev_master, self._cli_master, self._wake_r]
        while not self._closed:
            timeout = self._release_held()
            try:
                ready, _, _ = select.select(watch, [], [], timeout)
            except (OSError, ValueError):  # descriptors closed under us
                return
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, _CHUNK)
                with self._lock:
                    pending, self._pending_now = self._pending_now, []
                for _, data in pending:
                    self.stats.garbage += len(data)
                    self.stats.to_client += len(data)
                    self._write(self._cli_master, data)
            if self._dev_master in ready and (data := self._read(self._dev_master)):
                self._to_client(data)
            if self._cli_master in ready and (data := self._read(self._cli_master)):
                self._to_device(data)
