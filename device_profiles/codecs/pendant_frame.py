"""CWRF/1: framed binary messages of alarm pendants through a serial RF receiver.

A 433/868 MHz receiver on the gateway's serial port forwards every radio frame it hears
from any pendant in range (one receiver serves many pendants). A frame wraps one CWPL/1
message (:mod:`.pendant_payload`) with the pendant's address, its message counter and a
CRC::

    offset     size  field
    0          S     sync bytes                  codec_options.frame.sync (e.g. AA 55)
    S          1     length L = I + C + len(message)   (at most frame.max_length)
    S+1        I     pendant id, unsigned        frame.id_bytes   (Reading.source: hex)
    S+1+I      C     message counter, unsigned   frame.counter_bytes (wraps; a radio
                                                 re-send repeats it)
    S+1+I+C    M     CWPL/1 message: type code + body
    S+1+L      2     CRC-16 over the length byte .. end of message (sync excluded)

Multi-byte fields use ``codec_options.byte_order``; the CRC uses ``frame.crc_byte_order``.
CRC algorithms (parameters as in the reveng CRC catalogue, with their check value over
the ASCII digits ``123456789``):

- ``CRC-16/CCITT-FALSE`` (a.k.a. CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, not
  reflected, xorout 0x0000, check 0x29B1;
- ``CRC-16/XMODEM``: poly 0x1021, init 0x0000, not reflected, check 0x31C3;
- ``CRC-16/KERMIT``: poly 0x1021, init 0x0000, reflected, check 0x2189;
- ``CRC-16/MODBUS``: poly 0x8005, init 0xFFFF, reflected, check 0x4B37;
- ``CRC-16/ARC``: poly 0x8005, init 0x0000, reflected, check 0xBB3D.

:meth:`PendantFrameCodec.split` cuts frames out of the receive buffer: it resynchronizes
on the sync bytes after noise (returned as garbage), rejects length fields outside
[min, max] (the sync byte becomes garbage and the scan goes on), keeps an incomplete tail
(including a partial sync at the very end) for the next read, and, when a candidate frame
fails its CRC but a valid frame starts inside it, hands the cut-short prefix to
:meth:`~PendantFrameCodec.decode` (which reports it as ``truncated``) and resumes at the
valid frame, so a frame cut by a radio dropout never swallows the next one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from device_profiles.codecs.base import MqttMessage, Raw, Reading, StreamCodec
from device_profiles.codecs.pendant_payload import PendantCodecBase
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.profiles import Profile

__all__ = ["CRC16", "Crc16", "FrameSpec", "PendantFrameCodec"]


@dataclass(frozen=True)  # no slots: cached_property keeps the table in __dict__
class Crc16:
    """A table-driven CRC-16 with the reveng catalogue's parameters."""

    name: str
    poly: int
    init: int
    reflected: bool
    xorout: int
    check: int  # CRC of b"123456789", verified by the tests

    @cached_property
    def _table(self) -> tuple[int, ...]:
        table = []
        if self.reflected:
            rpoly = int(f"{self.poly:016b}"[::-1], 2)
            for byte in range(256):
                crc = byte
                for _ in range(8):
                    crc = (crc >> 1) ^ rpoly if crc & 1 else crc >> 1
                table.append(crc)
        else:
            for byte in range(256):
                crc = byte << 8
                for _ in range(8):
                    crc = ((crc << 1) ^ self.poly) if crc & 0x8000 else crc << 1
                table.append(crc & 0xFFFF)
        return tuple(table)

    def __call__(self, data: bytes) -> int:
        table = self._table
        crc = self.init
        if self.reflected:
            for b in data:
                crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
        else:
            for b in data:
                crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
        return crc ^ self.xorout


CRC16: Mapping[str, Crc16] = {
    c.name: c
    for c in (
        Crc16("CRC-16/CCITT-FALSE", 0x1021, 0xFFFF, False, 0x0000, 0x29B1),
        Crc16("CRC-16/XMODEM", 0x1021, 0x0000, False, 0x0000, 0x31C3),
        Crc16("CRC-16/KERMIT", 0x1021, 0x0000, True, 0x0000, 0x2189),
        Crc16("CRC-16/MODBUS", 0x8005, 0xFFFF, True, 0x0000, 0x4B37),
        Crc16("CRC-16/ARC", 0x8005, 0x0000, True, 0x0000, 0xBB3D),
    )
}


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """The radio framing a profile declares (``codec_options.frame``)."""

    sync: bytes
    id_bytes: int
    counter_bytes: int
    max_length: int
    crc: Crc16
    crc_byte_order: Literal["big", "little"]

    @property
    def header(self) -> int:
        """Bytes of address + counter inside the length-covered part."""
        return self.id_bytes + self.counter_bytes

    @property
    def min_length(self) -> int:
        """Smallest valid length field: address, counter and a type code."""
        return self.header + 1

    def frame_size(self, length: int) -> int:
        """Whole frame size for a length field value."""
        return len(self.sync) + 1 + length + 2

    @classmethod
    def from_options(cls, profile: Profile, max_message: int) -> FrameSpec:
        """Read ``codec_options.frame``; ProfileError naming the key on faults."""
        src = profile.source
        path = "codec_options.frame"
        raw = profile.codec_options.get("frame")
        if not isinstance(raw, Mapping):
            raise ProfileError("must be a mapping", file=src, path=path)
        allowed = {"sync", "id_bytes", "counter_bytes", "max_length", "crc", "crc_byte_order"}
        bad = sorted(set(raw) - allowed)
        if bad:
            raise ProfileError(
                f"unknown key(s) {bad}; allowed: {sorted(allowed)}", file=src, path=path
            )
        sync = raw.get("sync")
        if (
            not isinstance(sync, Sequence)
            or isinstance(sync, str)
            or not 1 <= len(sync) <= 4
            or not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in sync
            )
        ):
            raise ProfileError(
                f"must be a list of 1-4 byte values, got {sync!r}", file=src, path=f"{path}.sync"
            )
        id_bytes = _int(raw.get("id_bytes"), src, f"{path}.id_bytes", 1, 8)
        counter_bytes = raw.get("counter_bytes")
        if counter_bytes not in (1, 2, 4) or isinstance(counter_bytes, bool):
            raise ProfileError(
                f"must be 1, 2 or 4, got {counter_bytes!r}", file=src, path=f"{path}.counter_bytes"
            )
        max_length = _int(raw.get("max_length"), src, f"{path}.max_length", 1, 255)
        need = id_bytes + counter_bytes + max_message
        if max_length < need:
            raise ProfileError(
                f"{max_length} is too small for the largest message ({need} bytes with address "
                "and counter); lower impact.samples_per_fragment (raw impact) or "
                "impact.max_fragment_bytes (impact_packed), or raise max_length",
                file=src,
                path=f"{path}.max_length",
            )
        crc_name = raw.get("crc")
        if not isinstance(crc_name, str) or crc_name not in CRC16:
            raise ProfileError(
                f"unknown CRC {crc_name!r}; known: {sorted(CRC16)}", file=src, path=f"{path}.crc"
            )
        crc_order = raw.get("crc_byte_order", "big")
        if crc_order not in ("big", "little"):
            raise ProfileError(
                f"must be 'big' or 'little', got {crc_order!r}",
                file=src,
                path=f"{path}.crc_byte_order",
            )
        return cls(
            bytes(sync), id_bytes, int(counter_bytes), max_length, CRC16[crc_name], crc_order
        )


def _int(value: Any, file: str, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProfileError(
            f"must be an integer in [{lo}, {hi}], got {value!r}", file=file, path=path
        )
    return value


class PendantFrameCodec(PendantCodecBase, StreamCodec):
    """CWRF/1 frames from a serial RF receiver carrying CWPL/1 pendant messages."""

    name = "pendant_frame"
    protocols = frozenset({"serial-frame"})
    transport_options = frozenset({"frame"})

    def __init__(self, profile: Profile):
        super().__init__(profile)
        self.frame = FrameSpec.from_options(profile, self.layout.max_message)
        self.counter_modulus = 1 << (8 * self.frame.counter_bytes)

    # -- splitting ---------------------------------------------------------------------

    def _probe(self, buf: bytes, at: int) -> Literal["valid", "invalid", "incomplete"]:
        """What starts at ``at`` (where the sync bytes are): a whole valid frame or not."""
        f = self.frame
        s = len(f.sync)
        if at + s + 1 > len(buf):
            return "incomplete"
        length = buf[at + s]
        if not f.min_length <= length <= f.max_length:
            return "invalid"
        end = at + f.frame_size(length)
        if end > len(buf):
            return "incomplete"
        return "valid" if self._crc_ok(buf[at:end]) else "invalid"

    def _crc_ok(self, frame: bytes) -> bool:
        f = self.frame
        s = len(f.sync)
        want = int.from_bytes(frame[-2:], f.crc_byte_order)
        return f.crc(frame[s:-2]) == want

    def _inner(self, buf: bytes, start: int, stop: int) -> tuple[str, int] | None:
        """First sync in ``buf[start:stop]`` that starts a valid (or maybe-valid) frame."""
        sync = self.frame.sync
        k = buf.find(sync, start, stop + len(sync) - 1)
        while 0 <= k < stop:
            state = self._probe(buf, k)
            if state != "invalid":
                return state, k
            k = buf.find(sync, k + 1, stop + len(sync) - 1)
        return None

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes, bytes]:
        """Cut CWRF/1 frames out of ``buffer``: ``(frames, rest, garbage)``."""
        buf = bytes(buffer)
        f = self.frame
        sync, s = f.sync, len(f.sync)
        frames: list[bytes] = []
        garbage = bytearray()
        i, n = 0, len(buf)
        while i < n:
            j = buf.find(sync, i)
            if j < 0:
                # Keep a partial sync at the very end: the rest of it may be on its way.
                keep = next(
                    (k for k in range(min(s - 1, n - i), 0, -1) if buf[n - k :] == sync[:k]), 0
                )
                garbage += buf[i : n - keep]
                return frames, buf[n - keep :], bytes(garbage)
            garbage += buf[i:j]
            if j + s + 1 > n:
                return frames, buf[j:], bytes(garbage)
            length = buf[j + s]
            if not f.min_length <= length <= f.max_length:
                # An impossible length: a false sync in noise (or a corrupted header).
                garbage += buf[j : j + 1]
                i = j + 1
                continue
            end = j + f.frame_size(length)
            if end <= n:
                if self._crc_ok(buf[j:end]):
                    frames.append(buf[j:end])
                    i = end
                    continue
                found = self._inner(buf, j + 1, end)
                if found is None:
                    frames.append(buf[j:end])  # decode reports the checksum fault
                    i = end
                    continue
                state, k = found
                if state == "incomplete":
                    return frames, buf[j:], bytes(garbage)
                frames.append(buf[j:k])  # cut short by the next frame: decode says truncated
                i = k
                continue
            found = self._inner(buf, j + 1, n)
            if found is not None and found[0] == "valid":
                frames.append(buf[j : found[1]])
                i = found[1]
                continue
            return frames, buf[j:], bytes(garbage)
        return frames, b"", bytes(garbage)

    # -- decode / encode ---------------------------------------------------------------

    def decode(self, raw: Raw, device: str) -> list[Reading]:
        """Decode one CWRF/1 frame; DecodeError for sync, truncated, oversized, checksum..."""
        if isinstance(raw, MqttMessage):
            raise DecodeError(device, "type", "an MQTT message is not a radio frame")
        try:
            buf = bytes(raw)
        except (TypeError, ValueError) as exc:
            raise DecodeError(device, "type", f"not bytes: {exc}") from None
        f = self.frame
        s = len(f.sync)
        if len(buf) < s + 1:
            raise DecodeError(device, "truncated", f"{len(buf)} bytes: no length field")
        if buf[:s] != f.sync:
            raise DecodeError(device, "sync", f"starts {buf[:s].hex()}, want {f.sync.hex()}")
        length = buf[s]
        if length > f.max_length:
            raise DecodeError(device, "oversized", f"length field {length} > {f.max_length}")
        if length < f.min_length:
            raise DecodeError(device, "truncated", f"length field {length} < {f.min_length}")
        size = f.frame_size(length)
        if len(buf) < size:
            raise DecodeError(device, "truncated", f"{len(buf)} of {size} bytes")
        if len(buf) > size:
            raise DecodeError(device, "oversized", f"{len(buf)} bytes, length field says {size}")
        if not self._crc_ok(buf):
            raise DecodeError(
                device,
                "checksum",
                f"{f.crc.name} {f.crc(buf[s:-2]):04x} != {buf[-2:].hex()}",
            )
        order = self.layout.byte_order
        pid = int.from_bytes(buf[s + 1 : s + 1 + f.id_bytes], order)
        at = s + 1 + f.id_bytes
        counter = int.from_bytes(buf[at : at + f.counter_bytes], order)
        source = f"{pid:0{2 * f.id_bytes}X}"
        return self.decode_message(
            buf[at + f.counter_bytes : -2], device, counter=counter, source=source
        )

    def encode(self, reading: Reading, device: str) -> bytes:
        """One CWRF/1 frame for a decoded-form reading; ``source`` is the pendant id (hex),
        ``values["counter"]`` the message counter."""
        f = self.frame
        source = reading.source if reading.source is not None else device
        try:
            pid = int(source, 16)
            pid_bytes = pid.to_bytes(f.id_bytes, self.layout.byte_order)
        except (ValueError, OverflowError):
            raise EncodeError(
                f"pendant id {source!r} is not a hex number of {f.id_bytes} bytes"
            ) from None
        counter = reading.values.get("counter", 0)
        if isinstance(counter, bool) or not isinstance(counter, int):
            raise EncodeError(f"counter must be an integer, got {counter!r}")
        body = (
            pid_bytes
            + (counter % self.counter_modulus).to_bytes(f.counter_bytes, self.layout.byte_order)
            + self.encode_message(reading)
        )
        if len(body) > f.max_length:
            raise EncodeError(f"frame content of {len(body)} bytes exceeds {f.max_length}")
        content = bytes([len(body)]) + body
        return f.sync + content + f.crc(content).to_bytes(2, f.crc_byte_order)
