"""A footfall (people) counter on a real Modbus RTU link.

:class:`FootfallModbusSimulator` runs a pymodbus RTU server on the device end of a
:class:`~simulators.pty.PtyLink` and serves the register block of a ``modbus_counter``
profile. The registers are filled by the profile's own codec (``encode``) on every read,
so the simulated register map cannot drift from what the gateway decodes.

Scriptable, as a scenario needs it::

    async with FootfallModbusSimulator(profile) as sim:
        client_port = sim.client_path                # give this to the gateway
        await sim.enter(3)                           # three people walk in
        await sim.schedule(12, "9:00", "10:00", time_scale=3600)  # 12 over "an hour" = 1 s
        await sim.set_counts(65530, 0)               # park the counter just below a wrap
        await sim.power_cycle()                      # counters restart at 0
        await sim.inject("silence")                  # device stops answering
        sim.clear_faults()                           # ... and is back

A PTY carries no parity: Linux refuses ``PARENB`` on a pseudo-terminal (``tcsetattr``
fails with EINVAL as soon as parity is the only change, pyserial issue #196), so the
simulated device serves with parity N whatever its profile says, and a client on the
link must do the same: use :attr:`FootfallModbusSimulator.client_settings` (or the site
config override ``parity: N``). Speed and framing are otherwise as on a real line.

Faults (:meth:`FootfallModbusSimulator.inject`): ``silence``, ``garbage``,
``bad_checksum``, ``truncated`` act on the link; ``disconnect`` takes the device off
the bus (its server closes the port) until :meth:`FootfallModbusSimulator.reconnect`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_profiles.codecs.base import Reading
from device_profiles.codecs.modbus_counter import READING, ModbusCounterCodec, ModbusTransport
from device_profiles.errors import ProfileError
from device_profiles.profiles import Profile
from simulators.base import Fault, Simulator
from simulators.pty import PtyLink

log = logging.getLogger(__name__)

_CLOCK_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def clock_seconds(value: str | float) -> float:
    """Seconds since midnight for ``"9:00"`` / ``"09:30:15"``, or a number as given."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _CLOCK_RE.match(str(value).strip())
    if not match:
        raise ValueError(f"expected a time of day like '9:00' or seconds, got {value!r}")
    h, m, s = int(match[1]), int(match[2]), int(match[3] or 0)
    if m > 59 or s > 59 or h * 3600 + m * 60 + s > 24 * 3600:
        raise ValueError(f"not a time of day: {value!r}")
    return float(h * 3600 + m * 60 + s)


def arrival_offsets(n: int, span_s: float, *, seed: int | None = None) -> list[float]:
    """When ``n`` people pass within ``span_s`` seconds, as sorted offsets from the start.

    Without a seed the arrivals are evenly spread (one in the middle of each of ``n``
    equal slots), which makes scripted tests exact; with a seed they are uniformly
    random, as walk-ins are, and reproducible.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if span_s < 0:
        raise ValueError("the time span must not be negative")
    if seed is None:
        return [(i + 0.5) * span_s / n for i in range(n)]
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, span_s) for _ in range(n))


class FootfallModbusSimulator(Simulator):
    """One RS-485 people counter, served by pymodbus over a PTY link.

    ``link``: an existing :class:`PtyLink` to serve on (the caller keeps and closes it);
    when None the simulator creates its own and closes it on :meth:`stop`.
    ``transport``: overrides of the profile's serial settings (``unit_id``,
    ``baudrate``...), as a site config would.

    Ground truth for tests: :attr:`entered` / :attr:`left` count every person since
    creation, whatever the raw registers did (wraps, power cycles).
    """

    def __init__(
        self,
        profile: Profile,
        device: str = "footfall-1",
        *,
        link: PtyLink | None = None,
        transport: dict[str, object] | None = None,
    ):
        super().__init__(profile, device)
        if not isinstance(self.codec, ModbusCounterCodec):
            raise ProfileError(
                f"{type(self).__name__} needs a modbus_counter profile, not {profile.codec!r}",
                file=profile.source,
                path="codec",
            )
        self.counter: ModbusCounterCodec = self.codec
        #: The device's serial settings (profile defaults + ``transport`` overrides).
        self.settings: ModbusTransport = self.counter.transport(transport)
        #: What a client on the PTY link must use: the same, with parity N (no parity on a
        #: PTY, see the module docstring).
        self.client_settings: ModbusTransport = dataclasses.replace(self.settings, parity="N")
        self._link = link
        self._own_link = link is None
        self._server: ModbusSerialServer | None = None
        self._in = 0
        self._out = 0
        self.entered = 0
        self.left = 0
        self.power_cycles = 0
        self.reads = 0  # register reads answered (before any link fault)

    # -- transport -----------------------------------------------------------------------

    @property
    def link(self) -> PtyLink:
        """The PTY link the device is on (exists once started)."""
        if self._link is None:
            raise RuntimeError("simulator not started")
        return self._link

    @property
    def client_path(self) -> str:
        """Serial port path the gateway (Modbus client) opens."""
        return self.link.client_path

    @property
    def device_path(self) -> str:
        """Serial port path the simulated device serves on."""
        return self.link.device_path

    @property
    def connected(self) -> bool:
        """True while the device is on the bus (its server holds the port)."""
        return self._server is not None

    async def start(self) -> None:
        """Create the link (unless given) and put the device on the bus."""
        if self._link is None:
            self._link = PtyLink(name=f"pty-{self.device}")
        if self._server is None:
            await self._serve()

    async def stop(self) -> None:
        """Take the device off the bus and close the link it owns. Safe to call twice."""
        await self._unserve()
        if self._own_link and self._link is not None:
            self._link.close()
            self._link = None

    async def _serve(self) -> None:
        plan = self.counter.plan
        device = SimDevice(
            id=self.settings.unit_id,
            simdata=[
                SimData(
                    address=plan.address,
                    count=plan.count,
                    values=0,
                    datatype=DataType.REGISTERS,
                    # Counters are written by people walking by, not by the gateway.
                    readonly=True,
                )
            ],
            action=self._on_access,
        )
        server = ModbusSerialServer(
            device,
            port=self.link.device_path,
            baudrate=self.client_settings.baudrate,
            bytesize=self.client_settings.bytesize,
            parity=self.client_settings.parity,
            stopbits=self.client_settings.stopbits,
        )
        await server.serve_forever(background=True)
        self._server = server

    async def _unserve(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # pymodbus 3.16 leaves shutdown() unannotated.
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def _on_access(  # noqa: PLR0917 (pymodbus calls the action positionally)
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook on every access: load the current totals into the registers."""
        block = self.registers()
        offset = self.counter.plan.address - start_address
        registers[offset : offset + len(block)] = block
        if set_values is None:
            self.reads += 1
            self.sent += 1
        return None

    # -- state ---------------------------------------------------------------------------

    @property
    def counts(self) -> tuple[int, int]:
        """The raw (in, out) totals the registers show now."""
        return self._in, self._out

    def registers(self) -> list[int]:
        """The register block as the gateway would read it now (via the codec)."""
        reading = Reading(READING, {"in_total": self._in, "out_total": self._out})
        return self.counter.encode(reading, self.device)

    # -- script --------------------------------------------------------------------------

    async def enter(self, n: int = 1) -> None:
        """``n`` people walk in."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._in = (self._in + n) % self.counter.fields["in_total"].modulus
        self.entered += n

    async def leave(self, n: int = 1) -> None:
        """``n`` people walk out."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._out = (self._out + n) % self.counter.fields["out_total"].modulus
        self.left += n

    async def set_counts(self, in_total: int, out_total: int) -> None:
        """Force the raw totals (e.g. just below a wrap); ground truth is unchanged."""
        for name, value in (("in_total", in_total), ("out_total", out_total)):
            modulus = self.counter.fields[name].modulus
            if not 0 <= value < modulus:
                raise ValueError(f"{name}={value} outside 0..{modulus - 1}")
        self._in, self._out = in_total, out_total

    async def power_cycle(self, off_s: float = 0.0) -> None:
        """The device loses power: silent for ``off_s`` seconds, then back with totals 0."""
        if off_s > 0:
            self.link.silence()
            try:
                await asyncio.sleep(off_s)
            finally:
                self.link.silence(False)
        self._in = self._out = 0
        self.power_cycles += 1

    async def schedule(
        self,
        n: int,
        start: str | float,
        end: str | float,
        *,
        direction: str = "in",
        time_scale: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """Spread ``n`` people over the scenario time from ``start`` to ``end``.

        ``start`` / ``end`` are times of day (``"9:00"``) or seconds; the scenario begins
        at ``start`` when this is called. ``time_scale`` is scenario seconds per real
        second (3600: an hour in a second). ``direction`` is ``in`` or ``out``; ``seed``
        makes the arrivals random but reproducible (see :func:`arrival_offsets`).
        Returns when the last person has passed; wrap in a task to run it alongside.
        """
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        span = clock_seconds(end) - clock_seconds(start)
        if span < 0:
            raise ValueError(f"end {end!r} is before start {start!r}")
        step = self.enter if direction == "in" else self.leave
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # Absolute deadlines, so the sleeps' own latency does not add up over n people.
        for offset in arrival_offsets(n, span, seed=seed):
            delay = t0 + offset / time_scale - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await step(1)

    # -- faults --------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        """Apply a fault: silence, garbage, bad_checksum, truncated or disconnect."""
        if fault == "silence":
            self.link.silence()
        elif fault == "garbage":
            self.link.inject_garbage()
        elif fault == "bad_checksum":
            self.link.corrupt_next()
        elif fault == "truncated":
            self.link.truncate_next()
        elif fault == "disconnect":
            await self.disconnect()
        else:
            await super().inject(fault)

    async def disconnect(self) -> None:
        """Take the device off the bus: its server closes the port; requests go unanswered."""
        await self._unserve()

    async def reconnect(self) -> None:
        """Put the device back on the bus (requests sent while it was away are dropped)."""
        if self._server is None:
            self.link.flush_device_input()
            await self._serve()

    def clear_faults(self) -> None:
        """Lift the link faults (use :meth:`reconnect` after :meth:`disconnect`)."""
        self.link.clear_faults()
