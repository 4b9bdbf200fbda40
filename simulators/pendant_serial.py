"""A serial RF receiver with alarm pendants in range, on a real pseudo-terminal.

:class:`PendantSerialSimulator` opens a PTY pair (``os.openpty``, slave in raw mode, as a
USB serial adapter is) and writes the CWRF/1 frames the receiver would forward, encoded
by the profile's ``pendant_frame`` codec. The gateway opens :attr:`~PendantSerialSimulator.port`
with pyserial: a stable symlink to the PTY (like ``/dev/serial/by-id/...``), so a
reconnect after an unplug finds the receiver at the same path. One receiver serves many
pendants: pass several pendant ids, address actions with ``pendant=``::

    async with PendantSerialSimulator(profile, "rf-1", pendants=["00A1B2C3", "00A1B2C4"]) as sim:
        ser = serial.Serial(sim.port, 115200, timeout=0.1)
        await sim.press()                              # first pendant
        await sim.heartbeat(battery=80, activity=3, pendant="00A1B2C4")
        await sim.impact(trace, rate_hz=200)           # on-device trigger -> fragments
        await sim.inject("garbage")

Faults (:meth:`~PendantSerialSimulator.inject`):

``garbage``
    noise bytes, including a false sync with an impossible length and a false sync with
    a plausible length that the next real frame cuts short;
``truncated``
    a status frame cut in half (a radio dropout), followed by whatever comes next;
``bad_checksum``
    a status frame whose CRC does not match (a bit error the radio missed);
``duplicate``
    the last frame again, byte for byte (same counter: the radio's re-send);
``out_of_order``
    the next impact window's fragments go out shuffled; a single next frame is held
    back and sent after the one that follows it;
``disconnect``
    the receiver is unplugged: the PTY closes (the reader gets an I/O error) until
    :meth:`~PendantSerialSimulator.reconnect`;
``battery_drain``
    the pendant's battery drops by ``drain_step`` points: a status, and a low-battery
    report once at or below 20 %;
``silence``
    the receiver stops forwarding (frames are dropped and counted) until
    :meth:`~PendantSerialSimulator.resume`.

:attr:`history` lists every frame written (faults included), :attr:`dropped` counts
frames lost to silence or a disconnected port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import tempfile
import termios
import tty
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from device_profiles.codecs.base import Reading
from device_profiles.codecs.pendant_frame import PendantFrameCodec
from device_profiles.errors import ProfileError
from device_profiles.pendant_trigger import ImpactWindow
from device_profiles.profiles import Profile
from simulators.base import Fault, Simulator
from simulators.pendant_device import PendantDevice

log = logging.getLogger(__name__)

__all__ = ["PendantSerialSimulator"]

#: How long a write waits for a reader to drain a full PTY before frames are dropped.
WRITE_TIMEOUT_S = 5.0


def _raw(fd: int) -> None:
    """Raw mode without echo on a PTY slave (what a serial adapter gives)."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class PendantSerialSimulator(Simulator):
    """Pendants heard by one serial RF receiver, on a PTY.

    ``pendants`` are the pendant ids (hex, as ``Reading.source``); ``repeats`` sends every
    frame that many times (433 MHz pendants repeat each transmission); ``link_dir`` is
    where the :attr:`port` symlink lives (a temporary directory by default);
    ``heartbeat_s`` starts periodic status messages (``None``: only when asked), and
    ``sos_repeat_s`` the repeats of a latched alarm (default: the profile's
    ``codec_options.sos_repeat_s`` when ``heartbeat_s`` is set).
    """

    actions = frozenset(
        {
            "power_on",
            "press",
            "release",
            "heartbeat",
            "low_battery",
            "impact",
            "inject",
            "resume",
            "reconnect",
            "send_raw",
        }
    )

    def __init__(
        self,
        profile: Profile,
        device: str = "rf-receiver",
        pendants: Sequence[str | int] = ("00A1B2C3",),
        *,
        repeats: int = 1,
        link_dir: str | Path | None = None,
        heartbeat_s: float | None = None,
        sos_repeat_s: float | None = None,
        drain_step: int = 25,
        seed: int = 0,
    ):
        super().__init__(profile, device)
        if not isinstance(self.codec, PendantFrameCodec):
            raise ProfileError(
                f"profile {profile.name!r} is not read by the pendant_frame codec",
                file=profile.source,
                path="codec",
            )
        self.frame_codec: PendantFrameCodec = self.codec
        if repeats < 1:
            raise ValueError("repeats must be >= 1")
        self.pendants: dict[str, PendantDevice] = {}
        for pid in pendants:
            self.add_pendant(pid)
        self.repeats = repeats
        self.heartbeat_s = heartbeat_s
        opt = profile.codec_options.get("sos_repeat_s")
        self.sos_repeat_s = sos_repeat_s if sos_repeat_s is not None else opt
        self.drain_step = drain_step
        self.history: list[bytes] = []
        self.dropped = 0
        self.silent = False
        self._rng = random.Random(seed)
        self._own_dir = link_dir is None
        # Created on start (and removed on stop when ours): the path is known before,
        # so a gateway config can name it.
        self._dir = (
            Path(tempfile.gettempdir()) / f"carewatch-rf-{uuid.uuid4().hex[:12]}"
            if link_dir is None
            else Path(link_dir)
        )
        self._link = self._dir / device
        self._master: int | None = None
        self._slave: int | None = None
        self.pty_path: str | None = None
        self._shuffle_next = False
        self._held: list[bytes] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # -- transport -----------------------------------------------------------------------

    @property
    def port(self) -> str:
        """Path the gateway opens (a symlink to the current PTY slave)."""
        return str(self._link)

    @property
    def connected(self) -> bool:
        """True while the PTY is open (the receiver is plugged in)."""
        return self._master is not None

    def _open(self) -> None:
        master, slave = os.openpty()
        try:
            _raw(slave)
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            tmp = self._link.with_name(self._link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(path)
            tmp.replace(self._link)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # We keep the slave open too: bytes written before the gateway opens the port
        # wait in the PTY, as they would in a USB adapter's buffer.
        self._master, self._slave, self.pty_path = master, slave, path

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()

    async def start(self) -> None:
        """Open the PTY (and start periodic messages when configured).

        Nothing is sent yet: a gateway opening the port discards what was waiting (pyserial
        flushes the input on open). Each pendant's first status carries the ``boot`` flag;
        :meth:`power_on` sends it explicitly.
        """
        if self._started:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        self._open()
        self._started = True
        if self.heartbeat_s:
            self._tasks.append(asyncio.create_task(self._every(self.heartbeat_s, self._beat)))
            if self.sos_repeat_s:
                self._tasks.append(
                    asyncio.create_task(self._every(float(self.sos_repeat_s), self._repeat_sos))
                )

    async def stop(self) -> None:
        """Stop periodic messages, send held frames, close the PTY. Safe to call twice."""
        if not self._started:
            return
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        held, self._held = self._held, []
        for frame in held:
            await self._write(frame)
        self._started = False
        self._close()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def disconnect(self) -> None:
        """Unplug the receiver: the PTY closes and the port path disappears."""
        self._close()

    async def reconnect(self) -> None:
        """Plug the receiver back in: a new PTY behind the same :attr:`port` path."""
        if self._master is None and self._started:
            self._open()

    async def resume(self) -> None:
        """End ``silence``."""
        self.silent = False

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests of the reader's framing)."""
        await self._write(bytes(data))

    async def _write(self, data: bytes) -> None:
        if self.silent or self._master is None:
            self.dropped += 1
            return
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_TIMEOUT_S
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                # Nobody is draining the port: wait a little, then give up like a
                # receiver whose UART buffer overflows.
                if loop.time() > deadline:
                    log.warning("%s: port not read; %d bytes dropped", self.device, len(view))
                    self.dropped += 1
                    return
                await asyncio.sleep(0.005)
                continue
            except OSError as exc:
                log.debug("%s: write failed: %s", self.device, exc)
                self.dropped += 1
                return
            view = view[n:]
        self.history.append(bytes(data))
        self.sent += 1

    def _encode(self, reading: Reading) -> bytes:
        return self.frame_codec.encode(reading, self.device)

    async def _send_readings(self, readings: Iterable[Reading]) -> None:
        frames = [self._encode(r) for r in readings]
        if self._shuffle_next and len(frames) > 1:
            self._shuffle_next = False
            self._rng.shuffle(frames)
        elif self._shuffle_next and frames:
            self._shuffle_next = False
            self._held.extend(frames)
            return
        for frame in frames:
            for _ in range(self.repeats):
                await self._write(frame)
            if self._held:
                held, self._held = self._held, []
                for h in held:
                    await self._write(h)

    def address(self, pendant_id: str | int) -> str:
        """The codec's spelling of a pendant id (fixed-width upper-case hex).

        An ``int`` is the id's number, a ``str`` its hex digits. ValueError when the id
        does not fit the profile's ``frame.id_bytes``.
        """
        width = self.frame_codec.frame.id_bytes
        try:
            number = pendant_id if isinstance(pendant_id, int) else int(pendant_id, 16)
        except ValueError:
            number = -1
        if isinstance(number, bool) or not 0 <= number < 1 << (8 * width):
            raise ValueError(f"pendant id {pendant_id!r} is not a number of {width} bytes")
        return f"{number:0{2 * width}X}"

    def add_pendant(self, pendant_id: str | int) -> str:
        """Put one more pendant in range of this receiver; returns its address."""
        address = self.address(pendant_id)
        if address not in self.pendants:
            self.pendants[address] = PendantDevice(self.frame_codec, address)
        return address

    def pendant(self, pendant: str | int | None = None) -> PendantDevice:
        """The pendant addressed by ``pendant`` (default: the first one)."""
        if pendant is None:
            if not self.pendants:
                raise ValueError(f"{self.device}: no pendant in range; add_pendant() first")
            return next(iter(self.pendants.values()))
        key = self.address(pendant)
        if key not in self.pendants:
            raise ValueError(f"no pendant {pendant!r}; this receiver has {sorted(self.pendants)}")
        return self.pendants[key]

    def view(self, pendant_id: str | int, device: str) -> RfPendant:
        """A :class:`RfPendant` for one pendant of this receiver (added if new)."""
        return RfPendant(self, self.add_pendant(pendant_id), device)

    # -- actions -------------------------------------------------------------------------

    async def press(self, pendant: str | int | None = None) -> None:
        """Press the alarm button (momentary press, or latch the ``sos`` flag)."""
        await self._send_readings(self.pendant(pendant).press())

    async def release(self, pendant: str | int | None = None) -> None:
        """Reset a latched alarm (latched models; nothing to send otherwise)."""
        await self._send_readings(self.pendant(pendant).release())

    async def power_on(self, pendant: str | int | None = None) -> None:
        """Every pendant (or one) sends its power-on status (``boot`` flag set)."""
        targets = self.pendants.values() if pendant is None else [self.pendant(pendant)]
        for p in targets:
            p.power_cycle()
            await self._send_readings([p.status()])

    async def heartbeat(
        self,
        battery: int | None = None,
        activity: int | None = None,
        pendant: str | int | None = None,
    ) -> None:
        """A status message with the given (or current) battery and activity."""
        await self._send_readings([self.pendant(pendant).status(battery, activity)])

    async def low_battery(self, pendant: str | int | None = None) -> None:
        """A low-battery report."""
        await self._send_readings(self.pendant(pendant).low_battery())

    async def impact(
        self,
        trace: Sequence[Sequence[float]],
        rate_hz: float,
        pendant: str | int | None = None,
        drop_fragments: Iterable[int] = (),
    ) -> list[ImpactWindow]:
        """Run the on-device trigger over ``trace`` (g at ``rate_hz``); upload every window.

        ``drop_fragments`` are fragment indices lost on the air (in every window).
        Returns the windows the pendant uploaded (the ground truth).
        """
        windows, uploads = self.pendant(pendant).impact(trace, rate_hz)
        lost = set(drop_fragments)
        for frags in uploads:
            sent = [r for r in frags if r.values.get("index") not in lost]
            self.dropped += len(frags) - len(sent)
            await self._send_readings(sent)
        return windows

    async def inject(self, fault: Fault, pendant: str | int | None = None) -> None:
        """Apply one fault (see the module docstring)."""
        p = self.pendant(pendant)
        if fault == "garbage":
            sync = self.frame_codec.frame.sync
            await self._write(b"\x00\x13\x37" + sync + b"\xff\x42" + sync + b"\x0a\x01\x02")
        elif fault == "truncated":
            frame = self._encode(p.status())
            await self._write(frame[: len(frame) // 2])
        elif fault == "bad_checksum":
            frame = self._encode(p.status())
            await self._write(frame[:-1] + bytes([frame[-1] ^ 0x5A]))
        elif fault == "duplicate":
            if not self.history:
                raise ValueError(f"{self.device}: nothing sent yet to duplicate")
            await self._write(self.history[-1])
        elif fault == "out_of_order":
            self._shuffle_next = True
        elif fault == "disconnect":
            await self.disconnect()
        elif fault == "battery_drain":
            await self._send_readings(p.drain(self.drain_step))
        elif fault == "silence":
            self.silent = True
        else:
            raise ValueError(f"{type(self).__name__} does not simulate fault {fault!r}")

    # -- periodic messages and scripts ---------------------------------------------------

    async def _every(self, period: float, action: Any) -> None:
        while True:
            await asyncio.sleep(period)
            await action()

    async def _beat(self) -> None:
        for p in self.pendants.values():
            await self._send_readings([p.status()])

    async def _repeat_sos(self) -> None:
        for p in self.pendants.values():
            if p.latched:
                await self._send_readings([p.status()])


class RfPendant(Simulator):
    """One pendant of a shared :class:`PendantSerialSimulator`, as a simulator of its own.

    Scenario engines drive one simulator per device id, while one RF receiver (one PTY)
    serves all the pendants of a site: each pendant gets a view. :meth:`start` starts the
    shared receiver if needed; :meth:`stop` leaves it to its owner (other pendants still
    use it). Actions are the receiver's, addressed to this pendant.
    """

    actions = frozenset(
        {"power_on", "press", "release", "heartbeat", "low_battery", "impact", "inject"}
    )

    def __init__(self, receiver: PendantSerialSimulator, address: str, device: str):
        super().__init__(receiver.profile, device)
        self.receiver = receiver
        self.address = address

    @property
    def port(self) -> str:
        """The shared receiver's port."""
        return self.receiver.port

    async def start(self) -> None:
        """Start the shared receiver (idempotent)."""
        await self.receiver.start()

    async def stop(self) -> None:
        """Nothing to close: the receiver belongs to its owner."""

    async def power_on(self) -> None:
        """This pendant's power-on status."""
        await self.receiver.power_on(pendant=self.address)

    async def press(self) -> None:
        """Press this pendant's alarm button."""
        await self.receiver.press(pendant=self.address)

    async def release(self) -> None:
        """Reset this pendant's latched alarm."""
        await self.receiver.release(pendant=self.address)

    async def heartbeat(self, battery: int | None = None, activity: int | None = None) -> None:
        """A status message from this pendant."""
        await self.receiver.heartbeat(battery, activity, pendant=self.address)

    async def low_battery(self) -> None:
        """A low-battery report from this pendant."""
        await self.receiver.low_battery(pendant=self.address)

    async def impact(
        self,
        trace: Sequence[Sequence[float]],
        rate_hz: float,
        drop_fragments: Iterable[int] = (),
    ) -> list[ImpactWindow]:
        """Run this pendant's trigger over ``trace`` and upload its windows."""
        return await self.receiver.impact(
            trace, rate_hz, pendant=self.address, drop_fragments=drop_fragments
        )

    async def inject(self, fault: Fault) -> None:
        """Apply a fault through the shared receiver, on behalf of this pendant."""
        await self.receiver.inject(fault, pendant=self.address)
