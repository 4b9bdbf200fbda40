"""Serial line devices through pyserial (the pendants' RF receiver).

One :class:`SerialSource` per port. Bytes are read without blocking the event loop
(``loop.add_reader`` on the port's descriptor), cut into frames by the profile's
:class:`~device_profiles.codecs.StreamCodec` (``split``), decoded and tracked.
Garbage between frames and frames that fail to decode are counted and quarantined.
Frames carry the sender's address (``Reading.source``): several devices (pendants) share
one receiver and are told apart by the ``address`` in their config. A port that
disappears (USB receiver unplugged) fails the source, which the agent reopens with
backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from device_profiles.codecs import Reading, StreamCodec
from device_profiles.errors import CarewatchError, DecodeError
from edge_agent.ingest import Bound, Ingest
from edge_agent.sources import Source, SourceError

log = logging.getLogger(__name__)

#: A receive buffer that grows past this without yielding a frame is garbage.
MAX_BUFFER = 64 * 1024


class SerialSource(Source):
    """All devices behind one serial port."""

    kind: ClassVar[str] = "serial"

    def __init__(self, port: str, devices: Sequence[Bound], ingest: Ingest) -> None:
        super().__init__(f"serial:{port}", devices, ingest)
        self.port = port
        first = self.devices[0]
        if not isinstance(first.codec, StreamCodec):
            raise SourceError(
                f"{first.id}: codec {first.codec.name!r} cannot read a byte stream "
                "(profile protocol serial-frame needs a stream codec)"
            )
        self.codec: StreamCodec = first.codec
        self.settings = first.config.transport
        # RF ids are hex: match them whatever the case the installer wrote.
        self.by_address = {d.config.address.upper(): d for d in self.devices if d.config.address}
        # With a single device the frames need no address to be routed.
        self.only = self.devices[0] if len(self.devices) == 1 else None
        self.label = self.only.id if self.only else self.name
        self._serial: Any = None
        self._buffer = b""

    async def run(self) -> None:
        import serial  # lazy: only gateways with serial devices need pyserial

        loop = asyncio.get_running_loop()
        try:
            self._serial = serial.Serial(
                self.port,
                baudrate=int(self.settings.get("baudrate", 9600)),
                bytesize=int(self.settings.get("bytesize", 8)),
                parity=str(self.settings.get("parity", "N")),
                stopbits=self.settings.get("stopbits", 1),
                timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"cannot open {self.port}: {exc}") from exc
        fd = self._serial.fileno()
        failed: asyncio.Future[None] = loop.create_future()
        read_size = int(self.settings.get("read_size", 4096))
        self._buffer = b""
        log.info("%s: open (%s devices)", self.name, len(self.devices))

        def on_readable() -> None:
            try:
                data = os.read(fd, read_size)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    return
                loop.remove_reader(fd)
                if not failed.done():
                    failed.set_exception(SourceError(f"{self.port}: read failed: {exc}"))
                return
            if not data:
                loop.remove_reader(fd)
                if not failed.done():
                    failed.set_exception(SourceError(f"{self.port}: port closed"))
                return
            self.feed(data)

        loop.add_reader(fd, on_readable)
        self.up()
        try:
            await failed
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)

    def feed(self, data: bytes) -> None:
        """Split, decode and route bytes just read (also used by tests)."""
        buffer = self._buffer + data
        try:
            frames, rest, garbage = self.codec.split(buffer)
        except CarewatchError as exc:  # a codec must not raise here, but never stop
            self.ingest.fault(self.label, "split", str(exc), buffer[:512])
            self._buffer = b""
            return
        except Exception as exc:  # a codec bug: counted, and the buffer is not kept,
            # or the same bytes would fail again on every read and wedge the port
            log.exception("%s: codec failed to split the input", self.label)
            self.ingest.fault(self.label, "codec_bug", repr(exc), buffer[:512])
            self._buffer = b""
            return
        if garbage:
            self.ingest.fault(self.label, "garbage", f"{len(garbage)} bytes skipped", garbage)
        if len(rest) > MAX_BUFFER:
            self.ingest.fault(self.label, "oversized", f"{len(rest)} bytes without a frame", rest)
            rest = b""
        self._buffer = rest
        for frame in frames:
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        try:
            readings = self.codec.decode(frame, self.label)
        except DecodeError as exc:
            self.ingest.fault(self.label, exc.fault, exc.detail, frame)
            return
        except CarewatchError as exc:
            self.ingest.fault(self.label, "decode", str(exc), frame)
            return
        except Exception as exc:  # a codec bug: counted and set aside, never a dead port
            log.exception("%s: codec failed on a frame", self.label)
            self.ingest.fault(self.label, "codec_bug", repr(exc), frame)
            return
        routed: dict[str, tuple[Bound, list[Reading]]] = {}
        for r in readings:
            device = self.by_address.get(r.source.upper()) if r.source is not None else None
            if (
                device is None
                and self.only is not None
                and (r.source is None or self.only.config.address is None)
            ):
                device = self.only
            if device is None:
                self.ingest.fault(
                    self.name,
                    "unknown_device",
                    f"frame from address {r.source!r}, not in the config",
                    frame,
                )
                continue
            routed.setdefault(device.id, (device, []))[1].append(r)
        for device, rs in routed.values():
            own = rs
            if device.codec is not self.codec:
                # Another model on the same receiver (same frame format): its own profile
                # says what the message means (e.g. a latched rather than momentary SOS).
                source = rs[0].source
                try:
                    own = [r for r in device.codec.decode(frame, device.id) if r.source == source]
                except DecodeError as exc:
                    self.ingest.fault(device.id, exc.fault, exc.detail, frame)
                    continue
                except CarewatchError as exc:
                    self.ingest.fault(device.id, "decode", str(exc), frame)
                    continue
                except Exception as exc:  # a codec bug: the other frames still flow
                    log.exception("%s: codec failed on a frame", device.id)
                    self.ingest.fault(device.id, "codec_bug", repr(exc), frame)
                    continue
            self.ingest.readings(device, own)

    async def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None
