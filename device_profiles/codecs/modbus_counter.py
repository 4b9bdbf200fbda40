"""Modbus RTU people (footfall) counters: in/out totals in registers -> per-poll deltas.

An RS-485 people counter keeps two running totals, people in and people out, in
holding (or input) registers. The gateway polls a block of registers; this codec decodes
the block into totals (:meth:`ModbusCounterCodec.decode`) and turns successive totals into
deltas (:meth:`ModbusCounterCodec.track`), because the totals themselves are not
trustworthy over time:

- they **wrap around** at 2**16 or 2**32 (65535 -> 0 is one person, not -65535);
- they **restart at zero** when the device loses power (a drop from 4711 to 3 is a
  restart followed by 3 people, not a wrap worth 60,828 people).

Which of the two happened is decided with a plausibility bound from the profile
(``codec_options.max_people_per_poll``)::

    new >= old and new - old <= bound          -> delta new - old
    new <  old and new + modulus - old <= bound -> wrap:  delta new + modulus - old
    new <  old otherwise                        -> reset: delta new (reset=True)
    anything larger than the bound              -> discontinuity: delta 0 (reset=True),
                                                   totals re-baselined

so a delta is never negative and never larger than the bound. The ambiguity that
remains is documented rather than hidden: a restart just after a wrap-sized gap (old
close to the top, new small) counts as a wrap, overcounting by at most the bound; a
restart that counts past the old total before the next poll looks like a normal
increase. The first reading (no baseline) gives delta 0. The tracking state is a small
JSON object the agent persists, so a restarted agent does not re-baseline.

Profile layout (see ``device_profiles/profiles/*.yaml`` for complete, documented ones)::

    protocol: modbus-rtu
    codec: modbus_counter
    transport:                       # defaults; a site config may override per device
      baudrate: 9600                 # bits/s
      bytesize: 8                    # 7 | 8
      parity: N                      # N | E | O
      stopbits: 1                    # 1 | 2
      unit_id: 1                     # Modbus unit (slave / device) id, 1..247
      poll_interval_s: 10            # how often the gateway reads the block
      timeout_s: 0.5                 # response timeout per request
    codec_options:
      table: holding                 # holding (FC 03) | input (FC 04)
      word_order: big                # default for uint32: big = high word first (ABCD)
      max_people_per_poll: 100       # plausibility bound that separates wraps from resets
    resources:
      - {name: in_total,  type: int, read: {register: 0, type: uint16}}
      - {name: out_total, type: int, read: {register: 1, type: uint16}}
      - {name: in,  type: int}       # derived by track(): people in since the last poll
      - {name: out, type: int}
      - {name: reset, type: bool}

``register`` is the 0-based protocol address (what goes on the wire), not the
"40001"-style reference some manuals print: holding register 40001 is register 0.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeGuard

from device_profiles.codecs.base import Codec, JsonState, MqttMessage, Raw, Reading
from device_profiles.errors import ConfigError, DecodeError, EncodeError, ProfileError
from device_profiles.profiles import Profile

log = logging.getLogger(__name__)

READING = "counts"
COUNTERS: tuple[str, str] = ("in_total", "out_total")
DERIVED: frozenset[str] = frozenset({"in", "out", "reset"})

#: Registers each register type occupies, and the value where it wraps.
REGISTER_TYPES: Mapping[str, int] = {"uint16": 1, "uint32": 2}
WORD_ORDERS = frozenset({"big", "little"})
TABLES: Mapping[str, int] = {"holding": 3, "input": 4}  # table -> Modbus function code
#: Modbus allows at most 125 registers in one read request (FC 03 / 04).
MAX_BLOCK = 125
DEFAULT_MAX_PEOPLE_PER_POLL = 100

_READ_KEYS = frozenset({"register", "type", "count", "word_order"})
_OPTION_KEYS = frozenset({"table", "word_order", "max_people_per_poll"})
_TRANSPORT_KEYS = frozenset(
    {"baudrate", "bytesize", "parity", "stopbits", "unit_id", "poll_interval_s", "timeout_s"}
)

WordOrder = Literal["big", "little"]


def _int(value: object) -> TypeGuard[int]:
    """True for a real integer (bool is an int subclass, but never a register value)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class CounterField:
    """Where one counter lives: register address, type and word order."""

    name: str
    register: int
    type: str
    word_order: str = "big"

    @property
    def count(self) -> int:
        """Number of 16-bit registers the counter occupies."""
        return REGISTER_TYPES[self.type]

    @property
    def modulus(self) -> int:
        """The value at which the counter wraps back to zero (2**16 or 2**32)."""
        return 1 << (16 * self.count)

    def combine(self, words: Sequence[int]) -> int:
        """Assemble the counter from its registers (as read, in address order)."""
        ordered = list(words) if self.word_order == "big" else list(reversed(words))
        value = 0
        for word in ordered:
            value = (value << 16) | word
        return value

    def split(self, value: int) -> list[int]:
        """The registers holding ``value``, in address order (inverse of :meth:`combine`)."""
        words = [(value >> (16 * i)) & 0xFFFF for i in reversed(range(self.count))]
        return words if self.word_order == "big" else list(reversed(words))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The one register block a poll reads: table, first address, number of registers."""

    table: str
    address: int
    count: int

    @property
    def function_code(self) -> int:
        """Modbus function code for the table (3: holding registers, 4: input registers)."""
        return TABLES[self.table]


@dataclass(frozen=True, slots=True)
class ModbusTransport:
    """Serial line and polling settings of one Modbus RTU device (validated)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    unit_id: int = 1
    poll_interval_s: float = 10.0
    timeout_s: float = 1.0

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        base: ModbusTransport | None = None,
        file: str | None = None,
        prefix: str = "transport",
        error: type[ConfigError] = ConfigError,
    ) -> ModbusTransport:
        """Build settings from ``data`` on top of ``base`` (defaults when None).

        Raises ``error`` (a :class:`ConfigError`) naming the key, the value and what is
        allowed.
        """
        unknown = sorted(set(data) - _TRANSPORT_KEYS)
        if unknown:
            raise error(
                f"unknown key(s) {unknown}; allowed: {sorted(_TRANSPORT_KEYS)} "
                "(unit_id is the Modbus slave / device id)",
                file=file,
                path=prefix,
            )
        cur = base or cls()
        values: dict[str, Any] = {
            "baudrate": cur.baudrate,
            "bytesize": cur.bytesize,
            "parity": cur.parity,
            "stopbits": cur.stopbits,
            "unit_id": cur.unit_id,
            "poll_interval_s": cur.poll_interval_s,
            "timeout_s": cur.timeout_s,
        }

        def bad(key: str, allowed: str) -> ConfigError:
            return error(
                f"{data[key]!r} is not allowed; {allowed}", file=file, path=f"{prefix}.{key}"
            )

        for key, given in data.items():
            value = given
            if key == "baudrate" and not (_int(value) and 300 <= value <= 1_000_000):
                raise bad(key, "expected an integer bit rate 300..1000000 (e.g. 9600)")
            if key == "bytesize" and value not in (7, 8):
                raise bad(key, "expected 7 or 8")
            if key == "parity":
                if not isinstance(value, str) or value.upper() not in ("N", "E", "O"):
                    raise bad(key, "expected N, E or O")
                value = value.upper()
            if key == "stopbits" and value not in (1, 2):
                raise bad(key, "expected 1 or 2")
            if key == "unit_id" and not (_int(value) and 1 <= value <= 247):
                raise bad(key, "expected a Modbus unit id 1..247")
            if key in ("poll_interval_s", "timeout_s"):
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise bad(key, "expected a number of seconds > 0")
                value = float(value)
            values[key] = value
        return cls(**values)


def counter_delta(old: int, new: int, modulus: int, bound: int) -> tuple[int, bool]:
    """People counted between two totals of a wrapping counter.

    Returns ``(delta, reset)`` with ``0 <= delta <= bound``; ``reset`` is True when the
    totals are discontinuous (the device restarted, or the jump is implausible).
    """
    if new >= old:
        if new - old <= bound:
            return new - old, False
        return 0, True  # implausible jump: re-baseline rather than invent people
    wrapped = new + modulus - old
    if wrapped <= bound:
        return wrapped, False
    if new <= bound:
        return new, True  # restarted from zero, then counted `new`
    return 0, True


class ModbusCounterCodec(Codec):
    """Codec for RS-485 people counters read over Modbus RTU.

    Attributes set from the profile: :attr:`plan` (the register block to read),
    :attr:`fields` (where each counter lives), :attr:`max_people_per_poll` and
    :attr:`defaults` (the profile's transport settings).
    """

    name: ClassVar[str] = "modbus_counter"
    protocols: ClassVar[frozenset[str]] = frozenset({"modbus-rtu"})

    def __init__(self, profile: Profile):
        super().__init__(profile)
        src = profile.source
        opts = profile.codec_options
        unknown = sorted(set(opts) - _OPTION_KEYS)
        if unknown:
            raise ProfileError(
                f"unknown key(s) {unknown}; allowed: {sorted(_OPTION_KEYS)}",
                file=src,
                path="codec_options",
            )
        table = opts.get("table", "holding")
        if table not in TABLES:
            raise ProfileError(
                f"{table!r} not one of {sorted(TABLES)}", file=src, path="codec_options.table"
            )
        default_order = opts.get("word_order", "big")
        if default_order not in WORD_ORDERS:
            raise ProfileError(
                f"{default_order!r} not one of {sorted(WORD_ORDERS)}",
                file=src,
                path="codec_options.word_order",
            )
        bound = opts.get("max_people_per_poll", DEFAULT_MAX_PEOPLE_PER_POLL)
        if not (_int(bound) and bound >= 1):
            raise ProfileError(
                f"expected an integer >= 1, got {bound!r}",
                file=src,
                path="codec_options.max_people_per_poll",
            )
        self.max_people_per_poll: int = bound
        self.defaults = ModbusTransport.from_mapping(
            profile.transport, file=src, error=ProfileError
        )

        fields: dict[str, CounterField] = {}
        for i, res in enumerate(profile.resources):
            path = f"resources[{i}]"
            if res.name in COUNTERS:
                fields[res.name] = self._field(res.name, res.read, default_order, src, path)
                if res.type != "int":
                    raise ProfileError("a counter must have type int", file=src, path=path)
            elif res.name in DERIVED:
                if res.name in ("in", "out") and res.max is not None and res.max < bound:
                    raise ProfileError(
                        f"max {res.max:g} is below codec_options.max_people_per_poll ({bound}),"
                        " which a delta may reach",
                        file=src,
                        path=f"{path}.max",
                    )
                if res.read:
                    raise ProfileError(
                        f"{res.name!r} is derived by the codec and cannot be read",
                        file=src,
                        path=f"{path}.read",
                    )
            else:
                raise ProfileError(
                    f"unknown resource {res.name!r}; a people counter has "
                    f"{sorted(COUNTERS)} (read from registers) and {sorted(DERIVED)} (derived)",
                    file=src,
                    path=f"{path}.name",
                )
        for name in COUNTERS:
            if name not in fields:
                raise ProfileError(f"missing counter resource {name!r}", file=src, path="resources")
        self.fields: dict[str, CounterField] = fields

        spans = sorted((f.register, f.register + f.count, f.name) for f in fields.values())
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                raise ProfileError(f"counters {a!r} and {b!r} overlap", file=src, path="resources")
        first, last = spans[0][0], max(end for _, end, _ in spans)
        if last - first > MAX_BLOCK:
            raise ProfileError(
                f"counters span {last - first} registers; one Modbus read takes at most "
                f"{MAX_BLOCK}",
                file=src,
                path="resources",
            )
        if last > 0x10000:
            raise ProfileError("counter runs past register 65535", file=src, path="resources")
        self.plan = ReadPlan(table=str(table), address=first, count=last - first)

    @staticmethod
    def _field(
        name: str, read: Mapping[str, Any], default_order: str, src: str, path: str
    ) -> CounterField:
        where = f"{path}.read"
        if not read:
            raise ProfileError("a counter needs a read block", file=src, path=where)
        unknown = sorted(set(read) - _READ_KEYS)
        if unknown:
            raise ProfileError(
                f"unknown key(s) {unknown}; allowed: {sorted(_READ_KEYS)}", file=src, path=where
            )
        register = read.get("register")
        if not (_int(register) and 0 <= register <= 0xFFFF):
            raise ProfileError(
                f"expected a register address 0..65535, got {register!r}",
                file=src,
                path=f"{where}.register",
            )
        rtype = read.get("type", "uint16")
        if rtype not in REGISTER_TYPES:
            raise ProfileError(
                f"{rtype!r} not one of {sorted(REGISTER_TYPES)}", file=src, path=f"{where}.type"
            )
        count = read.get("count", REGISTER_TYPES[rtype])
        if count != REGISTER_TYPES[rtype]:
            raise ProfileError(
                f"{rtype} occupies {REGISTER_TYPES[rtype]} register(s), not {count!r}",
                file=src,
                path=f"{where}.count",
            )
        order = read.get("word_order", default_order)
        if order not in WORD_ORDERS:
            raise ProfileError(
                f"{order!r} not one of {sorted(WORD_ORDERS)}", file=src, path=f"{where}.word_order"
            )
        return CounterField(name=name, register=register, type=str(rtype), word_order=str(order))

    # -- settings ------------------------------------------------------------------------

    def transport(
        self, overrides: Mapping[str, Any] | None = None, *, file: str | None = None
    ) -> ModbusTransport:
        """The profile's transport defaults with a device's site-config ``overrides``.

        Raises :class:`ConfigError` naming the override key that is wrong.
        """
        if not overrides:
            return self.defaults
        return ModbusTransport.from_mapping(overrides, base=self.defaults, file=file)

    # -- codec hooks ---------------------------------------------------------------------

    def decode(self, raw: Raw, device: str) -> list[Reading]:
        """Decode one register block (as read per :attr:`plan`) into a ``counts`` reading.

        Raises DecodeError (``type``, ``truncated``, ``oversized`` or ``range``) for
        anything that is not a block of :attr:`plan` ``.count`` registers 0..65535.
        """
        if isinstance(raw, bytes | bytearray | memoryview | str | MqttMessage) or not isinstance(
            raw, Sequence
        ):
            raise DecodeError(
                device, "type", f"expected a sequence of registers, got {type(raw).__name__}"
            )
        n = len(raw)
        if n < self.plan.count:
            raise DecodeError(device, "truncated", f"expected {self.plan.count} registers, got {n}")
        if n > self.plan.count:
            raise DecodeError(device, "oversized", f"expected {self.plan.count} registers, got {n}")
        for i, reg in enumerate(raw):
            if not _int(reg):
                raise DecodeError(
                    device, "type", f"register {self.plan.address + i}: not an integer: {reg!r}"
                )
            if not 0 <= reg <= 0xFFFF:
                raise DecodeError(
                    device, "range", f"register {self.plan.address + i}={reg} outside 0..65535"
                )
        values: dict[str, int] = {}
        for name, fld in self.fields.items():
            offset = fld.register - self.plan.address
            total = fld.combine(raw[offset : offset + fld.count])
            checked = self.check_value(device, name, total)
            assert isinstance(checked, int)  # resource type is int, checked at load
            values[name] = checked
        return [Reading(READING, dict(values))]

    def encode(self, reading: Reading, device: str) -> list[int]:
        """The register block a device showing ``reading``'s totals would hold.

        Registers of the block that hold no counter are 0. Raises EncodeError for a
        reading that is not ``counts`` or totals that do not fit their registers.
        """
        if reading.reading != READING:
            raise EncodeError(f"{device}: cannot encode reading {reading.reading!r}")
        block = [0] * self.plan.count
        for name, fld in self.fields.items():
            value = reading.values.get(name)
            if not _int(value):
                raise EncodeError(f"{device}: {name} must be an integer, got {value!r}")
            assert isinstance(value, int)
            if not 0 <= value < fld.modulus:
                raise EncodeError(f"{device}: {name}={value} does not fit {fld.type}")
            offset = fld.register - self.plan.address
            block[offset : offset + fld.count] = fld.split(value)
        return block

    def initial_state(self) -> JsonState:
        """No baseline yet: the first reading gives deltas of 0."""
        return {}

    def track(self, state: JsonState, reading: Reading) -> tuple[JsonState, list[Reading]]:
        """Turn totals into deltas since the previous poll (see the module docstring).

        ``state`` is ``{"in_total": int, "out_total": int}`` (or empty before the first
        reading); a state that does not fit this profile (hand-edited, from another
        model) is ignored with a warning and the reading becomes the new baseline.
        """
        if reading.reading != READING:
            return state, [reading]
        who = reading.source or self.profile.name
        totals: dict[str, int] = {}
        for name, fld in self.fields.items():
            value = reading.values.get(name)
            if not (_int(value) and 0 <= value < fld.modulus):
                raise DecodeError(who, "range", f"{name}={value!r} is not a {fld.type} total")
            assert isinstance(value, int)
            totals[name] = value
        baseline = self._baseline(state, who)
        out: dict[str, bool | int] = {}
        reset = False
        for name, key in (("in_total", "in"), ("out_total", "out")):
            if baseline is None:
                out[key] = 0
                continue
            delta, was_reset = counter_delta(
                baseline[name], totals[name], self.fields[name].modulus, self.max_people_per_poll
            )
            out[key] = delta
            reset = reset or was_reset
        if reset:
            log.info("%s: counter reset detected (%s -> %s)", who, baseline, totals)
        out.update(totals)
        out["reset"] = reset
        values: dict[str, Any] = out
        new_state: JsonState = dict(totals)
        return new_state, [
            Reading(READING, values, time=reading.time, urgent=False, source=reading.source)
        ]

    def _baseline(self, state: JsonState, who: str) -> dict[str, int] | None:
        if not state:
            return None
        base: dict[str, int] = {}
        for name, fld in self.fields.items():
            value = state.get(name) if isinstance(state, Mapping) else None
            if not (_int(value) and 0 <= value < fld.modulus):
                log.warning("%s: ignoring unusable counter state %r; re-baselining", who, state)
                return None
            base[name] = value
        return base
