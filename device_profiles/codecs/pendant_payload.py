"""CWPL/1, the carewatch pendant payload layer, shared by every transport of a pendant.

A fall-alarm pendant sends a handful of small binary messages. The same message bytes
travel inside a serial RF receiver's radio frame (CWRF/1, :mod:`.pendant_frame`) and as
the FRMPayload of a LoRaWAN uplink that ChirpStack v4 publishes (:mod:`.chirpstack`); the
transports add the pendant's address, a message counter and their own integrity check.

Message layout (``byte_order`` of the profile applies to every multi-byte field)::

    offset  size  field
    0       1     type code (profile: codec_options.messages.<role>.type)
    1       n     body

Message roles (the profile names the type code and body length of each):

``press`` (momentary-button models)
    The alarm button was pressed. Fixed-length body; the ``button`` resource maps a
    button code to a name (``{1: sos}``).
``status`` (every model)
    Periodic heartbeat and state: ``battery`` (%), ``activity`` (movement count since the
    last status) and, on latched-button models, the ``sos`` flag bit, repeated in every
    status while the alarm is latched. An optional ``boot`` flag bit marks the first
    status after power-on (the pendant's counters restart).
``battery``
    Low-battery report (``battery`` %).
``impact``
    One fragment of an acceleration window around an impact the pendant detected::

        0  u8   window id (per pendant, wraps)
        1  u8   fragment index (0-based)
        2  u8   fragment count
        3  u16  total samples in the window
        5  u16  trigger_index (index of the impact sample in the window)
        7  u16  peak magnitude, milli-g
        9  ...  samples: (x, y, z) int16 milli-g each, clipped to +-range_g

    Fragment ``i`` carries samples ``i * samples_per_fragment`` on (the last one fewer).
    Every fragment repeats the header, so a window survives the loss of any fragment.
``impact_packed``
    The same window, losslessly delta-coded: about half the bytes of ``impact`` on real
    movement, hence half the uplinks and airtime on a duty-cycled radio (LoRaWAN). A
    profile sends it when ``codec_options.impact.encoding`` is ``packed`` (default
    ``raw``: ``impact``); a profile may declare both roles, so that pendants still on the
    raw firmware keep being read. Each fragment is decodable on its own::

        0   u8   window id
        1   u8   fragment index (0-based)
        2   u8   fragment count
        3   u16  total samples in the window
        5   u16  trigger_index
        7   u16  peak magnitude, milli-g
        9   u16  start: window index of this fragment's first sample
        11  u16  n: samples in this fragment (>= 1)
        13  i16  x, y, z of sample ``start``, milli-g (3 x i16)
        19  ...  bit stream: the n - 1 deltas, in blocks of 8 (the last block shorter)

    Bit stream, most significant bit first, zero-padded to a whole byte; per block, for
    each axis x, y, z in turn: a 5-bit width ``w`` (0-17), then that axis' deltas of the
    block, ``w`` bits each, zig-zag coded (``d >= 0 -> 2d``, ``d < 0 -> -2d - 1``; a
    delta of two int16 values needs at most 17 bits, a constant axis 0). Decoded samples
    are the int16 milli-g samples the raw format would carry, bit for bit.

    The pendant cuts a window into fragments of at most ``impact.max_fragment_bytes``
    (type byte included; default 222, the largest LoRaWAN EU868 FRMPayload at DR4, which
    also leaves room for the longest FOpts at DR5; at least 73, one block at the widest
    deltas), packing as many samples into each as fit, so ``n`` varies with the signal:
    a still pendant fills a fragment with hundreds of samples, an impact with a few
    dozen. Fragments of a window are contiguous: the first starts at sample 0, the last
    ends at ``total``. A lost fragment loses only its own samples, as with ``impact``.
    ``max_samples`` is checked at load against the worst case (every delta 17 bits) so
    that a window never needs more than 255 fragments. Faults, on top of the header
    ones: a bit stream that ends too soon (``truncated``), bytes after it or a fragment
    over ``max_fragment_bytes`` (``oversized``), non-zero padding (``encoding``), a width
    above 17 or a sample outside +-range_g (``range``), a fragment that contradicts the
    window's layout (``inconsistent``: the first fragment not at sample 0, another one
    ending at ``total``, the last one not; or, found by the tracker, a fragment
    overlapping another one of the same window or repeating its index with other
    samples).

Where each scalar value sits in a body is data, not code: a resource's ``read`` block maps
message roles to a location, EdgeX-style::

    - name: battery
      type: int
      unit: "%"
      min: 0
      max: 100
      read:
        status: {offset: 0, format: u8}     # u8 i8 u16 i16 u32 i32
        battery: {offset: 0, format: u8}
    - name: sos
      type: bool
      read: {status: {offset: 3, format: u8, bit: 0}}
    - name: button
      type: str
      read: {press: {offset: 0, format: u8, map: {1: sos}}}

Decoded readings (input of :meth:`PendantCodecBase.track`): ``press``, ``status``,
``battery`` and ``impact_fragment`` (from either impact role; a packed one also carries
``start``, its first sample's index), each with the transport's message ``counter``.
:meth:`~PendantCodecBase.track` turns them into the readings of the Event contract:

- ``press`` (urgent, ``{"button": "sos"}``): ONE per press. A momentary press re-sent by
  the radio (same counter, same content) counts once; a latched ``sos`` flag makes a
  press on its rising edge only (released and latched again is a second press).
- ``heartbeat`` (``{"battery", "activity", ...}``) for every status; ``battery`` reports.
- ``impact`` (urgent): the reassembled window, ``{"rate_hz", "range_g", "trigger_index",
  "peak_g", "x", "y", "z", "window", "complete", "missing_samples"}``.

The tracking state is JSON, kept per pendant address (``Reading.source``), since one RF
receiver serves many pendants. Duplicates: it remembers the last ``dedup_window``
(counter, content) pairs of each pendant; an equal reading is a re-send and is dropped.
A status up to ``dedup_window`` counts behind the newest one is a reordered, stale repeat
and does not move the latch. A power-on status (``boot`` flag) clears that memory, as the
pendant's counters restart; a power-on status equal to the one just before it is the
radio's re-send. Known limit: a pendant model without a ``boot`` flag that restarts and,
within ``dedup_window`` messages, sends a message with the same counter and content as
before its restart has that message taken for a re-send.

Fragment reassembly policy: a complete window is emitted as soon as its last missing
fragment arrives, in any order. A window that lost fragments is emitted *anyway*
(``complete: false``; missing samples linearly interpolated from their neighbours and
counted in ``missing_samples``) as soon as the pendant has evidently moved on: a fragment
of another window arrives, ``impact.reorder_slack`` other frames arrive from the same
pendant, the pendant reboots, or the runtime calls :meth:`PendantCodecBase.flush` because
the pendant has been quiet for ``impact.reassembly_timeout_s`` (the codec reads no clock).
A possible fall is never dropped for want of a fragment; late fragments of a window
already emitted are dropped.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from device_profiles.codecs.base import Codec, JsonState, Reading
from device_profiles.errors import DecodeError, EncodeError, ProfileError
from device_profiles.events import Value
from device_profiles.pendant_trigger import TriggerConfig
from device_profiles.profiles import Profile

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PACKED_FRAGMENT",
    "FORMATS",
    "IMPACT_ENCODINGS",
    "IMPACT_HEADER_SIZE",
    "IMPACT_ROLES",
    "MESSAGE_ROLES",
    "MIN_PACKED_FRAGMENT",
    "PACKED_BLOCK",
    "PACKED_HEADER_SIZE",
    "PACKED_MAX_WIDTH",
    "PACKED_WIDTH_BITS",
    "FieldSpec",
    "ImpactSpec",
    "MessageSpec",
    "PayloadLayout",
    "PendantCodecBase",
    "pack_deltas",
    "packed_cuts",
    "unzigzag",
    "zigzag",
]

#: Integer formats a ``read`` block may name: size in bytes and signedness.
FORMATS: Mapping[str, tuple[int, bool]] = {
    "u8": (1, False),
    "i8": (1, True),
    "u16": (2, False),
    "i16": (2, True),
    "u32": (4, False),
    "i32": (4, True),
}
MESSAGE_ROLES = ("press", "status", "battery", "impact", "impact_packed")
#: Roles that carry fragments of an acceleration window (variable length).
IMPACT_ROLES = ("impact", "impact_packed")
#: ``codec_options.impact.encoding`` values: which impact role the pendant sends.
IMPACT_ENCODINGS = ("raw", "packed")
IMPACT_HEADER_SIZE = 9
#: impact_packed: window header, start and n, then the first sample in full.
PACKED_HEADER_SIZE = IMPACT_HEADER_SIZE + 4 + 6
PACKED_BLOCK = 8  # deltas per block: smallest SisFall windows of 4-16 (all within 3 %)
PACKED_WIDTH_BITS = 5
PACKED_MAX_WIDTH = 17  # zig-zag of a difference of two int16 values
#: Smallest ``max_fragment_bytes``: type, header and one block at the widest deltas, so
#: that any signal moves at least 9 samples per fragment.
MIN_PACKED_FRAGMENT = (
    1 + PACKED_HEADER_SIZE + -(-(3 * PACKED_WIDTH_BITS + 3 * PACKED_MAX_WIDTH * PACKED_BLOCK) // 8)
)
DEFAULT_PACKED_FRAGMENT = 222
_IMPACT_ROLE: Mapping[str, str] = {"raw": "impact", "packed": "impact_packed"}
_SAMPLE_SIZE = 6  # x, y, z as int16
_INT16_MAX = 32767
_STATE_VERSION = 1
_DONE_WINDOWS = 8  # emitted windows remembered per pendant, to drop their late fragments
_DECODED = frozenset({"press", "status", "battery", "impact_fragment"})
_IMPACT_RESOURCES = ("x", "y", "z", "peak_g", "trigger_index")
_PAYLOAD_OPTIONS = frozenset(
    {"byte_order", "button", "messages", "impact", "dedup_window", "trigger", "sos_repeat_s"}
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where one resource sits in a message body and how to read it."""

    resource: str
    type: str
    offset: int
    format: str
    bit: int | None = None
    mapping: Mapping[int, str] | None = None
    scale: float = 1.0

    @property
    def size(self) -> int:
        """Bytes the field occupies."""
        return FORMATS[self.format][0]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One message role: its type code, fixed body length (None: impact) and fields."""

    role: str
    type_code: int
    length: int | None
    fields: tuple[FieldSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ImpactSpec:
    """Acceleration windows: sensor rate and range, fragmentation and reassembly.

    ``samples_per_fragment`` belongs to the raw ``impact`` message and
    ``max_fragment_bytes`` to ``impact_packed``; each is None when the profile does not
    declare that message. ``encoding`` says which of the two the pendant sends.
    """

    rate_hz: int
    range_g: float
    samples_per_fragment: int | None
    max_samples: int
    reorder_slack: int
    reassembly_timeout_s: float
    encoding: Literal["raw", "packed"] = "raw"
    max_fragment_bytes: int | None = None

    @property
    def range_mg(self) -> int:
        """Full scale in milli-g (samples beyond it are out of range)."""
        return round(self.range_g * 1000)

    def fragment_count(self, total: int) -> int:
        """Raw ``impact`` fragments a window of ``total`` samples is cut into."""
        if self.samples_per_fragment is None:
            raise ValueError("the profile declares no raw 'impact' message")
        return -(-total // self.samples_per_fragment)

    @property
    def max_body(self) -> int:
        """Largest impact message of either role, type byte included."""
        sizes = [0]
        if self.samples_per_fragment is not None:
            sizes.append(1 + IMPACT_HEADER_SIZE + _SAMPLE_SIZE * self.samples_per_fragment)
        if self.max_fragment_bytes is not None:
            sizes.append(self.max_fragment_bytes)
        return max(sizes)


# -- impact_packed: zig-zag deltas, bit-packed in blocks -----------------------------------
# Plain Python on purpose: the device layer runs on Raspberry Pi gateways without numpy.


def zigzag(value: int) -> int:
    """Signed -> unsigned, small magnitudes to small codes: 0, -1, 1, -2 -> 0, 1, 2, 3."""
    return value << 1 if value >= 0 else (-value << 1) - 1


def unzigzag(code: int) -> int:
    """Inverse of :func:`zigzag`."""
    return code >> 1 if not code & 1 else -((code + 1) >> 1)


def _block_bits(widths: Sequence[int], deltas: int) -> int:
    """Bits of one block of ``deltas`` deltas per axis at the given per-axis widths."""
    return 3 * PACKED_WIDTH_BITS + deltas * sum(widths) if deltas else 0


def pack_deltas(axes: Sequence[Sequence[int]]) -> bytes:
    """The ``impact_packed`` bit stream of one fragment's samples (x, y, z in milli-g).

    ``axes`` holds the three axes' int16 samples, equal length >= 1; the first sample
    travels in full in the header, so the stream holds the ``n - 1`` deltas.
    """
    n = len(axes[0])
    acc = 0
    bits = 0
    for lo in range(1, n, PACKED_BLOCK):
        hi = min(n, lo + PACKED_BLOCK)
        for axis in axes:
            codes = [zigzag(axis[k] - axis[k - 1]) for k in range(lo, hi)]
            width = max(codes).bit_length()
            acc = (acc << PACKED_WIDTH_BITS) | width
            bits += PACKED_WIDTH_BITS
            for code in codes:
                acc = (acc << width) | code
            bits += width * len(codes)
    pad = -bits % 8
    return (acc << pad).to_bytes((bits + pad) // 8, "big")


def packed_cuts(axes: Sequence[Sequence[int]], max_bytes: int) -> list[tuple[int, int]]:
    """(start, n) of each ``impact_packed`` fragment of a window, in order.

    Greedy, as the pendant does it: every fragment takes as many samples as fit in
    ``max_bytes`` (type byte included). The size only grows with each added sample (a
    block's width never shrinks), so stopping at the first sample that does not fit is
    optimal for that fragment. ``max_bytes`` >= :data:`MIN_PACKED_FRAGMENT`.
    """
    if max_bytes < 1 + PACKED_HEADER_SIZE:
        raise ValueError(f"max_bytes {max_bytes} below the fixed part of a fragment")
    budget = 8 * (max_bytes - 1 - PACKED_HEADER_SIZE)
    total = len(axes[0])
    cuts: list[tuple[int, int]] = []
    start = 0
    while start < total:
        done = 0  # bits of the fragment's completed blocks
        widths = [0, 0, 0]  # the open block's widths
        in_block = 0  # deltas in the open block
        end = start + 1
        while end < total:
            codes = [zigzag(a[end] - a[end - 1]) for a in axes]
            if in_block == PACKED_BLOCK:
                new_done = done + _block_bits(widths, in_block)
                new_widths = [c.bit_length() for c in codes]
                new_in = 1
            else:
                new_done = done
                new_widths = [max(w, c.bit_length()) for w, c in zip(widths, codes, strict=True)]
                new_in = in_block + 1
            if new_done + _block_bits(new_widths, new_in) > budget:
                break
            done, widths, in_block = new_done, new_widths, new_in
            end += 1
        cuts.append((start, end - start))
        start = end
    return cuts


def _packed_worst_samples(max_bytes: int) -> int:
    """Samples a fragment of ``max_bytes`` holds at the widest deltas (17 bits, all axes)."""
    budget = 8 * (max_bytes - 1 - PACKED_HEADER_SIZE)
    full = _block_bits([PACKED_MAX_WIDTH] * 3, PACKED_BLOCK)
    blocks, rest = divmod(budget, full)
    extra = max(0, (rest - 3 * PACKED_WIDTH_BITS) // (3 * PACKED_MAX_WIDTH))
    return 1 + blocks * PACKED_BLOCK + min(extra, PACKED_BLOCK - 1)


class _BitReader:
    """Reads an ``impact_packed`` bit stream; DecodeError (named fault) on a bad one."""

    def __init__(self, data: bytes, device: str):
        self.value = int.from_bytes(data, "big")
        self.size = 8 * len(data)
        self.pos = 0
        self.device = device

    def take(self, width: int, what: str) -> int:
        if self.pos + width > self.size:
            raise DecodeError(
                self.device,
                "truncated",
                f"bit stream ends at bit {self.size} in {what}, needs {self.pos + width}",
            )
        self.pos += width
        return (self.value >> (self.size - self.pos)) & ((1 << width) - 1)

    def finish(self) -> None:
        """The stream must end here, padded with zero bits to a whole byte."""
        used = -(-self.pos // 8)
        if 8 * used < self.size:
            raise DecodeError(
                self.device,
                "oversized",
                f"{self.size // 8 - used} byte(s) after the {used}-byte bit stream",
            )
        if self.value & ((1 << (self.size - self.pos)) - 1):
            raise DecodeError(self.device, "encoding", "non-zero padding after the bit stream")


def _unpack_deltas(
    data: bytes, first: Sequence[int], n: int, lim: int, device: str
) -> list[list[int]]:
    """Samples (x, y, z lists, milli-g) of one fragment from its first sample and stream."""
    reader = _BitReader(data, device)
    axes = [[v] for v in first]
    for lo in range(1, n, PACKED_BLOCK):
        hi = min(n, lo + PACKED_BLOCK)
        block = (lo - 1) // PACKED_BLOCK
        for a, axis in enumerate(axes):
            name = "xyz"[a]
            width = reader.take(PACKED_WIDTH_BITS, f"block {block} {name} width")
            if width > PACKED_MAX_WIDTH:
                raise DecodeError(
                    device,
                    "range",
                    f"block {block}: {name} delta width {width} bits (at most {PACKED_MAX_WIDTH})",
                )
            value = axis[-1]
            for k in range(lo, hi):
                value += unzigzag(reader.take(width, f"block {block} {name} deltas"))
                if not -lim <= value <= lim:
                    raise DecodeError(
                        device,
                        "range",
                        f"{name}={value} mg outside +-{lim} mg (sample {k} of the fragment)",
                    )
                axis.append(value)
    reader.finish()
    return axes


def _opt_int(
    value: Any, file: str, path: str, lo: int, hi: int, *, default: int | None = None
) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProfileError(
            f"must be an integer in [{lo}, {hi}], got {value!r}", file=file, path=path
        )
    return value


@dataclass(frozen=True, slots=True)
class PayloadLayout:
    """The CWPL/1 layout a profile declares; built (and checked) once per codec."""

    byte_order: Literal["big", "little"]
    button: Literal["momentary", "latched"]
    messages: Mapping[str, MessageSpec]
    by_type: Mapping[int, MessageSpec]
    impact: ImpactSpec
    dedup_window: int
    trigger: TriggerConfig

    @property
    def max_message(self) -> int:
        """Largest message this layout produces, type byte included."""
        sizes = [1 + (m.length or 0) for m in self.messages.values()]
        return max([*sizes, self.impact.max_body])

    @classmethod
    def from_profile(cls, profile: Profile) -> PayloadLayout:
        """Read ``codec_options`` and the resources' ``read`` blocks; ProfileError on faults."""
        src = profile.source
        opts = profile.codec_options
        base = "codec_options"
        byte_order = opts.get("byte_order", "big")
        if byte_order not in ("big", "little"):
            raise ProfileError(
                f"must be 'big' or 'little', got {byte_order!r}",
                file=src,
                path=f"{base}.byte_order",
            )
        button = opts.get("button")
        if button not in ("momentary", "latched"):
            raise ProfileError(
                f"must be 'momentary' or 'latched', got {button!r}", file=src, path=f"{base}.button"
            )
        raw_msgs = opts.get("messages")
        if not isinstance(raw_msgs, Mapping):
            raise ProfileError(
                "must be a mapping of message roles", file=src, path=f"{base}.messages"
            )
        for role in raw_msgs:
            if role not in MESSAGE_ROLES:
                raise ProfileError(
                    f"unknown message role {role!r}; known: {list(MESSAGE_ROLES)}",
                    file=src,
                    path=f"{base}.messages.{role}",
                )
        encoding = _encoding(profile)
        if _IMPACT_ROLE[encoding] not in raw_msgs:
            raise ProfileError(
                f"impact.encoding {encoding!r} sends message {_IMPACT_ROLE[encoding]!r}, "
                "which is not declared",
                file=src,
                path=f"{base}.messages",
            )
        required = ["status"] + (["press"] if button == "momentary" else [])
        for role in required:
            if role not in raw_msgs:
                raise ProfileError(
                    f"a {button}-button pendant needs message {role!r}",
                    file=src,
                    path=f"{base}.messages",
                )
        if button == "latched" and "press" in raw_msgs:
            raise ProfileError(
                "a latched-button pendant reports the button in its status 'sos' flag, "
                "not with a 'press' message",
                file=src,
                path=f"{base}.messages.press",
            )
        fields = _fields_by_role(profile, raw_msgs)
        messages: dict[str, MessageSpec] = {}
        by_type: dict[int, MessageSpec] = {}
        for role, spec in raw_msgs.items():
            path = f"{base}.messages.{role}"
            if not isinstance(spec, Mapping):
                raise ProfileError("must be a mapping {type, length}", file=src, path=path)
            bad = sorted(set(spec) - {"type", "length"})
            if bad:
                raise ProfileError(
                    f"unknown key(s) {bad}; allowed: type, length", file=src, path=path
                )
            code = _opt_int(spec.get("type"), src, f"{path}.type", 0, 255)
            if code in by_type:
                raise ProfileError(
                    f"type code {code:#04x} already used by {by_type[code].role!r}",
                    file=src,
                    path=f"{path}.type",
                )
            length: int | None = None
            if role in IMPACT_ROLES:
                if "length" in spec:
                    size = "samples_per_fragment" if role == "impact" else "max_fragment_bytes"
                    raise ProfileError(
                        f"impact fragments have a variable length; set impact.{size}",
                        file=src,
                        path=f"{path}.length",
                    )
            else:
                length = _opt_int(spec.get("length"), src, f"{path}.length", 0, 255)
                for f in fields.get(role, ()):
                    if f.offset + f.size > length:
                        raise ProfileError(
                            f"resource {f.resource!r} at offset {f.offset} ({f.format}) does not "
                            f"fit a {length}-byte {role} body",
                            file=src,
                            path=f"{path}.length",
                        )
            msg = MessageSpec(role, code, length, tuple(fields.get(role, ())))
            messages[role] = msg
            by_type[code] = msg
        _require_fields(profile, button, messages)
        trigger = _trigger(profile)
        impact = _impact(profile, trigger, encoding, frozenset(messages))
        repeat = opts.get("sos_repeat_s")
        if repeat is not None and (
            isinstance(repeat, bool) or not isinstance(repeat, int | float) or not repeat > 0
        ):
            raise ProfileError(
                f"must be a number of seconds > 0, got {repeat!r}",
                file=src,
                path=f"{base}.sos_repeat_s",
            )
        dedup = _opt_int(opts.get("dedup_window"), src, f"{base}.dedup_window", 1, 256, default=8)
        return cls(
            byte_order=byte_order,
            button=button,
            messages=messages,
            by_type=by_type,
            impact=impact,
            dedup_window=dedup,
            trigger=trigger,
        )


def _fields_by_role(profile: Profile, roles: Mapping[str, Any]) -> dict[str, list[FieldSpec]]:
    src = profile.source
    out: dict[str, list[FieldSpec]] = {}
    for i, res in enumerate(profile.resources):
        for role, loc in res.read.items():
            path = f"resources[{i}].read.{role}"
            if role not in roles or role in IMPACT_ROLES:
                raise ProfileError(
                    f"no such message {role!r} with scalar fields; "
                    f"messages: {sorted(r for r in roles if r not in IMPACT_ROLES)}",
                    file=src,
                    path=path,
                )
            if not isinstance(loc, Mapping):
                raise ProfileError("must be a mapping {offset, format, ...}", file=src, path=path)
            bad = sorted(set(loc) - {"offset", "format", "bit", "map"})
            if bad:
                raise ProfileError(
                    f"unknown key(s) {bad}; allowed: offset, format, bit, map", file=src, path=path
                )
            fmt = loc.get("format")
            if not isinstance(fmt, str) or fmt not in FORMATS:
                raise ProfileError(
                    f"format {fmt!r} not one of {sorted(FORMATS)}", file=src, path=f"{path}.format"
                )
            offset = _opt_int(loc.get("offset"), src, f"{path}.offset", 0, 254)
            bit: int | None = None
            if "bit" in loc:
                bit = _opt_int(loc.get("bit"), src, f"{path}.bit", 0, 8 * FORMATS[fmt][0] - 1)
                if res.type != "bool":
                    raise ProfileError("a 'bit' field must be of type bool", file=src, path=path)
            elif res.type == "bool":
                raise ProfileError("a bool resource needs 'bit'", file=src, path=path)
            mapping: dict[int, str] | None = None
            if "map" in loc:
                raw_map = loc["map"]
                if res.type != "str" or not isinstance(raw_map, Mapping) or not raw_map:
                    raise ProfileError(
                        "'map' must map codes to names on a str resource",
                        file=src,
                        path=f"{path}.map",
                    )
                mapping = {}
                for code, label in raw_map.items():
                    # The profile loader turns mapping keys into strings: "1", "0x01".
                    try:
                        number = int(code, 0) if isinstance(code, str) else int(code)
                    except (TypeError, ValueError):
                        number = -1
                    if not 0 <= number < 1 << (8 * FORMATS[fmt][0]) or not isinstance(label, str):
                        raise ProfileError(
                            f"map entry {code!r}: {label!r} must be code: name",
                            file=src,
                            path=f"{path}.map",
                        )
                    mapping[number] = label
            elif res.type == "str":
                raise ProfileError("a str resource needs 'map' (code -> name)", file=src, path=path)
            if res.type in ("list",):
                raise ProfileError(
                    "list resources cannot be read from a scalar field", file=src, path=path
                )
            out.setdefault(str(role), []).append(
                FieldSpec(res.name, res.type, offset, str(fmt), bit, mapping, res.scale)
            )
    for role, fields in out.items():
        used: dict[int, str] = {}
        for f in fields:
            for b in range(f.offset, f.offset + f.size):
                other = used.get(b)
                if other is not None and (f.bit is None or other == "*"):
                    raise ProfileError(
                        f"resource {f.resource!r} overlaps another field at byte {b} of {role}",
                        file=src,
                        path="resources",
                    )
                used[b] = "*" if f.bit is None else "bits"
    return out


def _require_fields(profile: Profile, button: str, messages: Mapping[str, MessageSpec]) -> None:
    def has(role: str, name: str) -> bool:
        msg = messages.get(role)
        return msg is not None and any(f.resource == name for f in msg.fields)

    needs = [("status", "battery"), ("status", "activity")]
    if button == "momentary":
        needs.append(("press", "button"))
    else:
        needs.append(("status", "sos"))
    if "battery" in messages:
        needs.append(("battery", "battery"))
    for role, name in needs:
        if not has(role, name):
            raise ProfileError(
                f"needs a resource {name!r} with a read.{role} location",
                file=profile.source,
                path="resources",
            )
    for name in _IMPACT_RESOURCES:
        profile.resource(name)  # declares meaning and range; raises ProfileError when absent


def _trigger(profile: Profile) -> TriggerConfig:
    try:
        return TriggerConfig.from_options(profile.codec_options.get("trigger", {}))
    except ProfileError as exc:
        raise ProfileError(exc.message, file=profile.source, path=exc.path) from None


def _encoding(profile: Profile) -> Literal["raw", "packed"]:
    """``codec_options.impact.encoding``: which impact message the pendant sends."""
    raw = profile.codec_options.get("impact", {})
    path = "codec_options.impact"
    if not isinstance(raw, Mapping):
        raise ProfileError("must be a mapping", file=profile.source, path=path)
    value = raw.get("encoding", "raw")
    if value == "raw":
        return "raw"
    if value == "packed":
        return "packed"
    raise ProfileError(
        f"must be 'raw' (int16 samples, message 'impact') or 'packed' (bit-packed deltas, "
        f"message 'impact_packed'), got {value!r}",
        file=profile.source,
        path=f"{path}.encoding",
    )


def _impact(
    profile: Profile,
    trigger: TriggerConfig,
    encoding: Literal["raw", "packed"],
    roles: frozenset[str],
) -> ImpactSpec:
    src = profile.source
    raw = profile.codec_options.get("impact", {})
    path = "codec_options.impact"
    if not isinstance(raw, Mapping):
        raise ProfileError("must be a mapping", file=src, path=path)
    allowed = {
        "encoding",
        "samples_per_fragment",
        "max_fragment_bytes",
        "max_samples",
        "reorder_slack",
        "reassembly_timeout_s",
    }
    bad = sorted(set(raw) - allowed)
    if bad:
        raise ProfileError(f"unknown key(s) {bad}; allowed: {sorted(allowed)}", file=src, path=path)
    # Each size belongs to one message: a size for an undeclared message is a mistake
    # (most likely a forgotten message declaration), not something to ignore.
    for key, role in (("samples_per_fragment", "impact"), ("max_fragment_bytes", "impact_packed")):
        if key in raw and role not in roles:
            raise ProfileError(
                f"sizes the {role!r} message, which codec_options.messages does not declare",
                file=src,
                path=f"{path}.{key}",
            )
    # A window may not need more than 255 fragments (u8 count), whatever the signal.
    caps = [65535]
    spf: int | None = None
    if "impact" in roles:
        spf = _opt_int(raw.get("samples_per_fragment"), src, f"{path}.samples_per_fragment", 1, 255)
        caps.append(255 * spf)
    max_bytes: int | None = None
    if "impact_packed" in roles:
        max_bytes = _opt_int(
            raw.get("max_fragment_bytes"),
            src,
            f"{path}.max_fragment_bytes",
            MIN_PACKED_FRAGMENT,
            255,
            default=DEFAULT_PACKED_FRAGMENT,
        )
        caps.append(255 * _packed_worst_samples(max_bytes))
    if round(trigger.range_g * 1000) > _INT16_MAX:
        raise ProfileError(
            f"{trigger.range_g} g does not fit the int16 milli-g samples of impact messages "
            "(at most 32.767 g)",
            file=src,
            path="codec_options.trigger.range_g",
        )
    window = trigger.pre_n + trigger.post_n
    max_samples = _opt_int(
        raw.get("max_samples"),
        src,
        f"{path}.max_samples",
        1,
        min(caps),
        default=2 * window,
    )
    if max_samples < window:
        raise ProfileError(
            f"{max_samples} is shorter than the trigger's window of {window} samples",
            file=src,
            path=f"{path}.max_samples",
        )
    slack = _opt_int(raw.get("reorder_slack"), src, f"{path}.reorder_slack", 1, 1000, default=2)
    timeout = raw.get("reassembly_timeout_s", 2.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ProfileError(
            f"must be a number of seconds > 0, got {timeout!r}",
            file=src,
            path=f"{path}.reassembly_timeout_s",
        )
    return ImpactSpec(
        rate_hz=trigger.rate_hz,
        range_g=trigger.range_g,
        samples_per_fragment=spf,
        max_samples=max_samples,
        reorder_slack=slack,
        reassembly_timeout_s=float(timeout),
        encoding=encoding,
        max_fragment_bytes=max_bytes,
    )


def _digest(reading: Reading) -> int:
    """A content fingerprint: a re-sent frame is byte-identical, so its values are too."""
    body = {k: v for k, v in reading.values.items() if k != "counter"}
    text = json.dumps([reading.reading, body], sort_keys=True, default=str)
    return zlib.crc32(text.encode())


def _fill(axis: list[int | None]) -> list[float]:
    """Milli-g samples with gaps -> g; gaps linearly interpolated, edges hold the nearest."""
    n = len(axis)
    prev: list[int | None] = [None] * n
    nxt: list[int | None] = [None] * n
    last: int | None = None
    for i in range(n):
        if axis[i] is not None:
            last = i
        prev[i] = last
    last = None
    for i in range(n - 1, -1, -1):
        if axis[i] is not None:
            last = i
        nxt[i] = last
    out: list[float] = []
    for i, v in enumerate(axis):
        if v is not None:
            out.append(v / 1000)
            continue
        a, b = prev[i], nxt[i]
        lo = axis[a] if a is not None else None
        hi = axis[b] if b is not None else None
        if a is not None and b is not None and lo is not None and hi is not None:
            value: float = lo + (hi - lo) * (i - a) / (b - a)
        elif lo is not None:
            value = lo
        elif hi is not None:
            value = hi
        else:
            value = 0
        out.append(round(value) / 1000)
    return out


class PendantCodecBase(Codec):
    """CWPL/1 messages, edge-triggered presses and window reassembly for pendant codecs.

    Subclasses add the transport (radio frame, LoRaWAN uplink) and set
    :attr:`counter_modulus` (the message counter's wrap-around).
    """

    counter_modulus: int = 1 << 16
    #: ``codec_options`` keys of the transport, on top of the payload layer's.
    transport_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, profile: Profile):
        super().__init__(profile)
        allowed = _PAYLOAD_OPTIONS | self.transport_options
        bad = sorted(set(profile.codec_options) - allowed)
        if bad:
            raise ProfileError(
                f"unknown key(s) {bad}; allowed: {sorted(allowed)}",
                file=profile.source,
                path="codec_options",
            )
        self.layout = PayloadLayout.from_profile(profile)

    # -- payload layer -----------------------------------------------------------------

    def decode_message(
        self,
        data: bytes,
        device: str,
        *,
        counter: int,
        source: str,
        time: int | None = None,
    ) -> list[Reading]:
        """Decode one CWPL/1 message; raises DecodeError (truncated, unknown_message, range)."""
        if not data:
            raise DecodeError(device, "truncated", "empty message (no type code)")
        spec = self.layout.by_type.get(data[0])
        if spec is None:
            raise DecodeError(device, "unknown_message", f"message type {data[0]:#04x}")
        body = data[1:]
        if spec.role in IMPACT_ROLES:
            if spec.role == "impact":
                fragment = self._decode_impact(body, device)
            else:
                fragment = self._decode_impact_packed(body, device)
            fragment["counter"] = counter
            return [Reading("impact_fragment", fragment, time, urgent=True, source=source)]
        assert spec.length is not None
        if len(body) < spec.length:
            raise DecodeError(
                device,
                "truncated",
                f"{spec.role} body has {len(body)} bytes, needs {spec.length}",
            )
        if len(body) > spec.length:
            # Newer firmware may append fields: worth a look, not a rejection.
            log.warning(
                "%s: %s message has %d bytes beyond the %d known; ignored",
                device,
                spec.role,
                len(body) - spec.length,
                spec.length,
            )
        values: dict[str, Value] = {}
        for f in spec.fields:
            values[f.resource] = self._read_field(body, f, device)
        values["counter"] = counter
        urgent = spec.role == "press" or values.get("sos") is True
        return [Reading(spec.role, values, time, urgent=urgent, source=source)]

    def _read_field(self, body: bytes, f: FieldSpec, device: str) -> Value:
        size, signed = FORMATS[f.format]
        raw = int.from_bytes(
            body[f.offset : f.offset + size], self.layout.byte_order, signed=signed
        )
        if f.bit is not None:
            return bool((raw >> f.bit) & 1)
        if f.mapping is not None:
            label = f.mapping.get(raw)
            if label is None:
                raise DecodeError(
                    device, "range", f"{f.resource}: code {raw} not one of {sorted(f.mapping)}"
                )
            return label
        value: float | int = raw * f.scale if f.scale != 1.0 else raw
        if f.type == "float":
            value = float(value)
        return self.check_value(device, f.resource, value)

    def _decode_impact(self, body: bytes, device: str) -> dict[str, Value]:
        imp = self.layout.impact
        if len(body) < IMPACT_HEADER_SIZE:
            raise DecodeError(
                device, "truncated", f"impact fragment header needs {IMPACT_HEADER_SIZE} bytes"
            )
        order = self.layout.byte_order
        window, index, count = body[0], body[1], body[2]
        total = int.from_bytes(body[3:5], order)
        trigger_index = int.from_bytes(body[5:7], order)
        peak_mg = int.from_bytes(body[7:9], order)
        samples = body[IMPACT_HEADER_SIZE:]
        if len(samples) % _SAMPLE_SIZE:
            raise DecodeError(
                device, "truncated", f"impact samples of {len(samples)} bytes: not (x, y, z) int16"
            )
        if not 1 <= total <= imp.max_samples:
            raise DecodeError(device, "range", f"window of {total} samples (max {imp.max_samples})")
        spf = imp.samples_per_fragment
        assert spf is not None  # declared, or its type code is unknown
        if count != imp.fragment_count(total) or index >= count:
            raise DecodeError(
                device,
                "range",
                f"fragment {index}/{count} of a {total}-sample window ({spf} per fragment)",
            )
        expected = min(spf, total - index * spf)
        n = len(samples) // _SAMPLE_SIZE
        if n < expected:
            raise DecodeError(
                device, "truncated", f"fragment {index} has {n} of {expected} samples"
            )
        if n > expected:
            raise DecodeError(
                device, "oversized", f"fragment {index} has {n} of {expected} samples"
            )
        axes: list[list[float]] = [[], [], []]
        lim = imp.range_mg
        for k in range(n):
            for a in range(3):
                off = k * _SAMPLE_SIZE + 2 * a
                mg = int.from_bytes(samples[off : off + 2], order, signed=True)
                if not -lim <= mg <= lim:
                    raise DecodeError(
                        device, "range", f"{'xyz'[a]}={mg} mg outside +-{lim} mg (sample {k})"
                    )
                axes[a].append(mg / 1000)
        if trigger_index >= total:
            raise DecodeError(device, "range", f"trigger_index {trigger_index} >= {total} samples")
        values: dict[str, Value] = {
            "window": window,
            "index": index,
            "count": count,
            "total": total,
            "trigger_index": self.check_value(device, "trigger_index", trigger_index),
            "peak_g": self.check_value(device, "peak_g", peak_mg / 1000),
        }
        values.update(self._axes_values(axes, device))
        return values

    def _decode_impact_packed(self, body: bytes, device: str) -> dict[str, Value]:
        imp = self.layout.impact
        assert imp.max_fragment_bytes is not None  # declared, or its type code is unknown
        if len(body) < PACKED_HEADER_SIZE:
            raise DecodeError(
                device,
                "truncated",
                f"packed impact fragment has {len(body)} bytes, its header {PACKED_HEADER_SIZE}",
            )
        if 1 + len(body) > imp.max_fragment_bytes:
            raise DecodeError(
                device,
                "oversized",
                f"packed impact fragment of {1 + len(body)} bytes "
                f"(impact.max_fragment_bytes {imp.max_fragment_bytes})",
            )
        order = self.layout.byte_order
        window, index, count = body[0], body[1], body[2]
        total, trigger_index, peak_mg, start, n = (
            int.from_bytes(body[k : k + 2], order) for k in range(3, 13, 2)
        )
        if not 1 <= total <= imp.max_samples:
            raise DecodeError(device, "range", f"window of {total} samples (max {imp.max_samples})")
        if not index < count <= total:
            raise DecodeError(
                device, "range", f"fragment {index}/{count} of a {total}-sample window"
            )
        if n < 1 or start + n > total:
            raise DecodeError(
                device,
                "range",
                f"fragment {index}: samples {start}..{start + n - 1} of a {total}-sample window",
            )
        # Fragments are contiguous: the ends of the window pin the first and last one.
        if (index == 0) != (start == 0) or (index == count - 1) != (start + n == total):
            raise DecodeError(
                device,
                "inconsistent",
                f"fragment {index}/{count} holds samples {start}..{start + n - 1} "
                f"of {total}: the first must start at 0 and only the last end at {total}",
            )
        if trigger_index >= total:
            raise DecodeError(device, "range", f"trigger_index {trigger_index} >= {total} samples")
        lim = imp.range_mg
        first = [
            int.from_bytes(body[k : k + 2], order, signed=True)
            for k in range(IMPACT_HEADER_SIZE + 4, PACKED_HEADER_SIZE, 2)
        ]
        for a, mg in enumerate(first):
            if not -lim <= mg <= lim:
                raise DecodeError(
                    device, "range", f"{'xyz'[a]}={mg} mg outside +-{lim} mg (first sample)"
                )
        axes = _unpack_deltas(body[PACKED_HEADER_SIZE:], first, n, lim, device)
        values: dict[str, Value] = {
            "window": window,
            "index": index,
            "count": count,
            "total": total,
            "start": start,
            "trigger_index": self.check_value(device, "trigger_index", trigger_index),
            "peak_g": self.check_value(device, "peak_g", peak_mg / 1000),
        }
        values.update(self._axes_values([[v / 1000 for v in a] for a in axes], device))
        return values

    def _axes_values(self, axes: Sequence[list[float]], device: str) -> dict[str, Value]:
        """x, y, z in g, checked against the resources' ranges."""
        values: dict[str, Value] = {}
        for a, name in enumerate("xyz"):
            res = self.profile.resource(name)
            if axes[a] and not (res.in_range(min(axes[a])) and res.in_range(max(axes[a]))):
                raise DecodeError(
                    device, "range", f"{name} outside [{res.min}, {res.max}] {res.unit or ''}"
                )
            values[name] = axes[a]
        return values

    def encode_message(self, reading: Reading) -> bytes:
        """Encode a decoded-form reading (press, status/heartbeat, battery, impact_fragment).

        An ``impact_fragment`` with a ``start`` value is an ``impact_packed`` message (as
        :meth:`impact_fragments` cuts them for ``encoding: packed``), else an ``impact``.
        """
        if reading.reading == "impact":
            raise EncodeError(
                "an impact window does not fit one message: cut it with impact_fragments() "
                "and encode each impact_fragment"
            )
        role = {"heartbeat": "status", "impact_fragment": "impact"}.get(
            reading.reading, reading.reading
        )
        if role == "impact" and "start" in reading.values:
            role = "impact_packed"
        spec = self.layout.messages.get(role)
        if spec is None:
            raise EncodeError(
                f"profile {self.profile.name!r} has no {role!r} message "
                f"(has {sorted(self.layout.messages)})"
            )
        if role == "impact":
            return bytes([spec.type_code]) + self._encode_impact(reading.values)
        if role == "impact_packed":
            return bytes([spec.type_code]) + self._encode_impact_packed(reading.values)
        assert spec.length is not None
        body = bytearray(spec.length)
        for f in spec.fields:
            self._write_field(body, f, reading.values)
        return bytes([spec.type_code]) + bytes(body)

    def _write_field(self, body: bytearray, f: FieldSpec, values: Mapping[str, Value]) -> None:
        size, signed = FORMATS[f.format]
        value = values.get(f.resource)
        if f.bit is not None:
            if value is None:
                value = False
            if not isinstance(value, bool):
                raise EncodeError(f"{f.resource}: expected bool, got {value!r}")
            current = int.from_bytes(body[f.offset : f.offset + size], self.layout.byte_order)
            raw = current | (int(value) << f.bit)
            body[f.offset : f.offset + size] = raw.to_bytes(size, self.layout.byte_order)
            return
        if f.mapping is not None:
            codes = [c for c, label in f.mapping.items() if label == value]
            if not codes:
                raise EncodeError(
                    f"{f.resource}: {value!r} not one of {sorted(f.mapping.values())}"
                )
            raw = codes[0]
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EncodeError(f"{f.resource}: expected a number, got {value!r}")
            res = self.profile.resource(f.resource)
            if not res.in_range(value):
                raise EncodeError(f"{f.resource}={value!r} outside [{res.min}, {res.max}]")
            raw = round(value / f.scale)
        try:
            body[f.offset : f.offset + size] = raw.to_bytes(
                size, self.layout.byte_order, signed=signed
            )
        except OverflowError:
            raise EncodeError(f"{f.resource}={value!r} does not fit {f.format}") from None

    def _impact_head(
        self, values: Mapping[str, Value], default_count: Callable[[int], int] | None = None
    ) -> tuple[bytes, list[list[int]]]:
        """The header both impact roles share and the fragment's samples in milli-g."""
        order = self.layout.byte_order
        try:
            window = int(_num(values["window"]))
            index = int(_num(values["index"]))
            total = int(_num(values["total"]))
            if "count" in values or default_count is None:
                count = int(_num(values["count"]))
            else:
                count = default_count(total)
            trigger_index = int(_num(values["trigger_index"]))
            peak_mg = round(_num(values["peak_g"]) * 1000)
            head = bytes([window, index, count])
            head += total.to_bytes(2, order) + trigger_index.to_bytes(2, order)
            head += min(peak_mg, 65535).to_bytes(2, order)
            axes = [values["x"], values["y"], values["z"]]
            if not all(isinstance(a, list) for a in axes) or not (
                len(axes[0]) == len(axes[1]) == len(axes[2])  # type: ignore[arg-type]
            ):
                raise EncodeError("impact fragment x, y, z must be lists of equal length")
            lim = self.layout.impact.range_mg
            mg = [
                [max(-lim, min(lim, round(_num(v) * 1000))) for v in a]  # type: ignore[union-attr]
                for a in axes
            ]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"impact fragment values: {exc!r}") from None
        return head, mg

    def _encode_impact(self, values: Mapping[str, Value]) -> bytes:
        order = self.layout.byte_order
        head, axes = self._impact_head(values, self.layout.impact.fragment_count)
        out = bytearray(head)
        for sample in zip(*axes, strict=True):
            for mg in sample:
                out += mg.to_bytes(2, order, signed=True)
        return bytes(out)

    def _encode_impact_packed(self, values: Mapping[str, Value]) -> bytes:
        imp = self.layout.impact
        assert imp.max_fragment_bytes is not None  # the role is declared
        order = self.layout.byte_order
        head, axes = self._impact_head(values)
        n = len(axes[0])
        if not n:
            raise EncodeError("a packed impact fragment needs at least one sample")
        try:
            head += int(_num(values["start"])).to_bytes(2, order) + n.to_bytes(2, order)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"impact fragment values: {exc!r}") from None
        first = b"".join(a[0].to_bytes(2, order, signed=True) for a in axes)
        body = head + first + pack_deltas(axes)
        if 1 + len(body) > imp.max_fragment_bytes:
            raise EncodeError(
                f"packed impact fragment of {n} samples takes {1 + len(body)} bytes, over "
                f"impact.max_fragment_bytes {imp.max_fragment_bytes}: cut it with "
                "impact_fragments()"
            )
        return body

    def impact_fragments(
        self,
        window: int,
        x: Sequence[float],
        y: Sequence[float],
        z: Sequence[float],
        *,
        trigger_index: int,
        peak_g: float,
        encoding: Literal["raw", "packed"] | None = None,
    ) -> list[dict[str, Value]]:
        """Cut one window into ``impact_fragment`` values (add ``counter`` before encoding).

        Samples are clipped to the sensor range and quantized to 1 mg, as the pendant does.
        ``encoding`` (default: the profile's ``impact.encoding``) picks the message: raw
        fragments of ``samples_per_fragment`` samples, or packed ones (with ``start``)
        holding as many samples as fit in ``max_fragment_bytes``.
        """
        imp = self.layout.impact
        encoding = encoding or imp.encoding
        role = _IMPACT_ROLE[encoding]
        if role not in self.layout.messages:
            raise EncodeError(f"profile {self.profile.name!r} has no {role!r} message")
        total = len(x)
        if not total or not len(x) == len(y) == len(z):
            raise EncodeError("a window needs equal, non-empty x, y, z")
        if total > imp.max_samples:
            raise EncodeError(f"window of {total} samples exceeds max_samples {imp.max_samples}")
        if not 0 <= trigger_index < total:
            raise EncodeError(f"trigger_index {trigger_index} outside the window of {total}")
        g = imp.range_g
        try:
            mg = [[round(max(-g, min(g, float(v))) * 1000) for v in a] for a in (x, y, z)]
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"window samples: {exc!r}") from None
        if encoding == "packed":
            assert imp.max_fragment_bytes is not None
            cuts = packed_cuts(mg, imp.max_fragment_bytes)
        else:
            spf = imp.samples_per_fragment
            assert spf is not None
            cuts = [(lo, min(spf, total - lo)) for lo in range(0, total, spf)]
        count = len(cuts)
        if count > 255:  # max_samples is validated against the worst case: never here
            raise EncodeError(f"window of {total} samples needs {count} fragments (max 255)")
        out: list[dict[str, Value]] = []
        for i, (lo, n) in enumerate(cuts):
            values: dict[str, Value] = {
                "window": window % 256,
                "index": i,
                "count": count,
                "total": total,
                "trigger_index": trigger_index,
                "peak_g": round(min(peak_g, 65.535) * 1000) / 1000,
            }
            if encoding == "packed":
                values["start"] = lo
            for name, axis in zip("xyz", mg, strict=True):
                values[name] = [v / 1000 for v in axis[lo : lo + n]]
            out.append(values)
        return out

    # -- tracking: edge-triggered presses, duplicates, window reassembly ---------------

    def initial_state(self) -> JsonState:
        """Per-device state: one entry per pendant address (one receiver serves many)."""
        return {"v": _STATE_VERSION, "pendants": {}}

    def track(self, state: JsonState, reading: Reading) -> tuple[JsonState, list[Reading]]:
        """Duplicates dropped, presses edge-triggered, fragments reassembled into windows.

        The input ``state`` is not modified; the returned state shares unchanged parts.
        """
        if reading.reading not in _DECODED:
            return state, [reading]
        pendants = self._pendants(state)
        src = reading.source or ""
        p = _copy_pendant(pendants.get(src))
        raw_counter = reading.values.get("counter")
        counter = (
            raw_counter
            if isinstance(raw_counter, int) and not isinstance(raw_counter, bool)
            else None
        )
        out: list[Reading] = []
        boot = reading.reading == "status" and reading.values.get("boot") is True
        if counter is not None:
            entry = [counter, _digest(reading)]
            # A radio re-send follows its original at once; a power-on status equal to an
            # older one is a new power-on (the counter restarted), not a duplicate.
            recent = p["recent"][-1:] if boot else p["recent"]
            if entry in recent:
                log.debug("%s: duplicate %s (counter %s) dropped", src, reading.reading, counter)
                return state, []
        if boot:
            # Power-on: counters and window ids restart, so history no longer applies.
            out += self._close_all(p, src)
            p["recent"], p["done"], p["last_status"] = [], [], None
        if counter is not None:
            p["recent"] = [*p["recent"], entry][-self.layout.dedup_window :]
        if reading.reading == "impact_fragment":
            out += self._on_fragment(p, reading, src)
        else:
            out += self._age(p, src)
            out += self._on_message(p, reading, src, counter)
        new_pendants = dict(pendants)
        new_pendants[src] = p
        return {"v": _STATE_VERSION, "pendants": new_pendants}, out

    def flush(self, state: JsonState, source: str | None = None) -> tuple[JsonState, list[Reading]]:
        """Emit every window still waiting for fragments (of ``source``, or of all pendants).

        The runtime calls this when a pendant has been quiet for
        ``codec_options.impact.reassembly_timeout_s``, and on shutdown.
        """
        pendants = self._pendants(state)
        new_pendants = dict(pendants)
        out: list[Reading] = []
        for src in list(pendants):
            if source is not None and src != source:
                continue
            p = _copy_pendant(pendants[src])
            if p["windows"]:
                out += self._close_all(p, src)
                new_pendants[src] = p
        return {"v": _STATE_VERSION, "pendants": new_pendants}, out

    @staticmethod
    def pending_windows(state: JsonState) -> dict[str, int]:
        """Windows waiting for fragments, per pendant (for health reports and tests)."""
        pendants = state.get("pendants") if isinstance(state, dict) else None
        if not isinstance(pendants, dict):
            return {}
        return {
            src: len(p.get("windows") or {})
            for src, p in pendants.items()
            if isinstance(p, dict) and p.get("windows")
        }

    def _pendants(self, state: JsonState) -> dict[str, Any]:
        if (
            isinstance(state, dict)
            and state.get("v") == _STATE_VERSION
            and isinstance(state.get("pendants"), dict)
        ):
            return state["pendants"]  # type: ignore[no-any-return]
        if state:
            log.warning("%s: unusable tracking state dropped", self.profile.name)
        return {}

    def _on_message(
        self, p: dict[str, Any], reading: Reading, src: str, counter: int | None
    ) -> list[Reading]:
        values = {k: v for k, v in reading.values.items() if k != "counter"}
        name = reading.reading
        if name == "press":
            return [self._press(reading, values.get("button", "sos"))]
        if name == "battery":
            return [Reading("battery", values, reading.time, urgent=False, source=reading.source)]
        # status
        out: list[Reading] = []
        sos = values.pop("sos", None)
        values.pop("boot", None)
        if isinstance(sos, bool) and self.layout.button == "latched":
            last = p.get("last_status")
            stale = False
            if counter is not None and isinstance(last, int):
                back = (last - counter) % self.counter_modulus
                # A status a few counts behind the newest is a reordered, stale repeat: it
                # must not flip the latch (a real latch is repeated in every later status).
                stale = 0 < back <= self.layout.dedup_window
            if not stale:
                if sos and not p.get("sos"):
                    out.append(self._press(reading, "sos"))
                p["sos"] = sos
                if counter is not None:
                    p["last_status"] = counter
        out.append(Reading("heartbeat", values, reading.time, urgent=False, source=reading.source))
        return out

    @staticmethod
    def _press(reading: Reading, button: Value) -> Reading:
        return Reading(
            "press", {"button": button}, reading.time, urgent=True, source=reading.source
        )

    def _on_fragment(self, p: dict[str, Any], reading: Reading, src: str) -> list[Reading]:
        v = reading.values
        wid = v.get("window")
        index = v.get("index")
        header = [v.get("count"), v.get("total"), v.get("trigger_index"), v.get("peak_g")]
        if not isinstance(wid, int) or not isinstance(index, int):
            return []
        if [wid, header] in p["done"]:
            log.debug("%s: late fragment %s of window %s dropped", src, index, wid)
            return []
        xs, ys, zs = (v.get(a) for a in "xyz")
        flat: list[int] | None = None
        if isinstance(xs, list) and isinstance(ys, list) and isinstance(zs, list):
            flat = [round(float(s) * 1000) for t in zip(xs, ys, zs, strict=False) for s in t]
        # Packed fragments say where they start; raw ones start at index * samples_per_fragment.
        given = v.get("start")
        start = given if isinstance(given, int) and not isinstance(given, bool) else None
        key = str(wid)
        win = p["windows"].get(key)
        if win is not None and win["header"] == header and flat is not None:
            self._check_fragment(win, index, start, len(flat) // 3, src)
        out: list[Reading] = []
        windows: dict[str, Any] = dict(p["windows"])
        for other in list(windows):
            if other != key or windows[other]["header"] != header:
                # The pendant moved on to another window: this one will not complete.
                out.append(self._emit(p, windows.pop(other), src, reading.time))
        win = windows.get(key)
        if win is None:
            win = {"window": wid, "header": header, "frags": {}, "idle": 0}
        frags = dict(win["frags"])
        if str(index) not in frags and flat is not None:
            frags[str(index)] = flat
            if start is not None:
                # Kept apart from the samples so that raw windows keep their stored form.
                win = {**win, "starts": {**win.get("starts", {}), str(index): start}}
        win = {**win, "frags": frags}
        count = header[0]
        if isinstance(count, int) and len(frags) >= count:
            windows.pop(key, None)
            p["windows"] = windows
            out.append(self._emit(p, win, src, reading.time))
        else:
            windows[key] = win
            p["windows"] = windows
        return out

    def _frag_start(self, win: Mapping[str, Any], idx: str) -> int | None:
        """Window index of fragment ``idx``'s first sample (None: cannot be placed)."""
        start = win.get("starts", {}).get(idx)
        if isinstance(start, int):
            return start
        spf = self.layout.impact.samples_per_fragment
        return int(idx) * spf if spf is not None else None

    def _check_fragment(
        self, win: Mapping[str, Any], index: int, start: int | None, n: int, src: str
    ) -> None:
        """A new fragment of a waiting window must not contradict the ones already in.

        Raises DecodeError ``inconsistent`` (counted, the fragment dropped): fragments
        of one window never overlap, and a fragment index keeps its samples.
        """
        if start is None:
            start = self._frag_start(win, str(index))
            if start is None:
                return
        for idx, flat in win["frags"].items():
            other = self._frag_start(win, idx)
            if other is None:
                continue
            m = len(flat) // 3
            if idx == str(index):
                if (other, m) != (start, n):
                    raise DecodeError(
                        src or self.profile.name,
                        "inconsistent",
                        f"window {win['window']} fragment {index} again, as samples "
                        f"{start}..{start + n - 1} instead of {other}..{other + m - 1}",
                    )
            elif start < other + m and other < start + n:
                raise DecodeError(
                    src or self.profile.name,
                    "inconsistent",
                    f"window {win['window']} fragment {index} (samples {start}.."
                    f"{start + n - 1}) overlaps fragment {idx} ({other}..{other + m - 1})",
                )

    def _age(self, p: dict[str, Any], src: str) -> list[Reading]:
        """Count a non-fragment frame against every waiting window; close the idle ones."""
        if not p["windows"]:
            return []
        out: list[Reading] = []
        windows: dict[str, Any] = {}
        for key, win in p["windows"].items():
            idle = win["idle"] + 1
            if idle >= self.layout.impact.reorder_slack:
                out.append(self._emit(p, win, src, None))
            else:
                windows[key] = {**win, "idle": idle}
        p["windows"] = windows
        return out

    def _close_all(self, p: dict[str, Any], src: str) -> list[Reading]:
        out = [self._emit(p, win, src, None) for win in p["windows"].values()]
        p["windows"] = {}
        return out

    def _emit(self, p: dict[str, Any], win: dict[str, Any], src: str, time: int | None) -> Reading:
        imp = self.layout.impact
        count, total, trigger_index, peak_g = win["header"]
        axes: list[list[int | None]] = [[None] * total for _ in range(3)]
        for idx, flat in win["frags"].items():
            start = self._frag_start(win, idx)
            if start is None:  # a raw fragment kept from before the profile changed
                continue
            for k in range(len(flat) // 3):
                if 0 <= start + k < total:
                    for a in range(3):
                        axes[a][start + k] = flat[3 * k + a]
        missing = sum(1 for s in axes[0] if s is None)
        p["done"] = [*p["done"], [win["window"], win["header"]]][-_DONE_WINDOWS:]
        if missing:
            log.info(
                "%s: impact window %s emitted with %d of %d samples missing (%d/%d fragments)",
                src,
                win["window"],
                missing,
                total,
                len(win["frags"]),
                count,
            )
        values: dict[str, Value] = {
            "rate_hz": imp.rate_hz,
            "range_g": imp.range_g,
            "trigger_index": trigger_index,
            "peak_g": peak_g,
            "x": _fill(axes[0]),
            "y": _fill(axes[1]),
            "z": _fill(axes[2]),
            "window": win["window"],
            "complete": missing == 0,
            "missing_samples": missing,
        }
        return Reading("impact", values, time, urgent=True, source=src or None)


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _copy_pendant(p: Any) -> dict[str, Any]:
    """A fresh per-pendant state (shallow: fragment lists are never mutated in place)."""
    if not isinstance(p, dict):
        return {"recent": [], "sos": False, "last_status": None, "windows": {}, "done": []}
    windows = p.get("windows")
    return {
        "recent": list(p.get("recent") or []),
        "sos": bool(p.get("sos", False)),
        "last_status": p.get("last_status") if isinstance(p.get("last_status"), int) else None,
        "windows": {k: w for k, w in windows.items() if _valid_window(w)}
        if isinstance(windows, dict)
        else {},
        "done": list(p.get("done") or []),
    }


def _valid_window(w: Any) -> bool:
    """A stored window is usable (state read back from disk may be from anywhere)."""
    if not isinstance(w, dict) or not isinstance(w.get("window"), int):
        return False
    header, frags = w.get("header"), w.get("frags")
    if not (isinstance(header, list) and len(header) == 4 and isinstance(frags, dict)):
        return False
    count, total, trigger_index, _ = header
    starts = w.get("starts", {})
    return (
        all(isinstance(h, int) and not isinstance(h, bool) for h in (count, total, trigger_index))
        and 0 < total <= 65535
        and isinstance(w.get("idle"), int)
        and all(isinstance(k, str) and k.isdigit() for k in frags)
        and all(isinstance(f, list) and all(isinstance(s, int) for s in f) for f in frags.values())
        and isinstance(starts, dict)
        and all(isinstance(s, int) and not isinstance(s, bool) for s in starts.values())
    )
