"""Modbus RTU devices polled through pymodbus (footfall counters on RS-485).

One :class:`ModbusSource` per bus (serial port); each device on it is polled at its
``poll_interval_s`` (site config, else the profile) for the register block its codec's
read plan names. A unit that does not answer is counted (fault ``timeout``), noted in
its health and polled again at its next turn; the other units keep being polled. A bus
whose port disappears fails the source, which the agent reopens with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from device_profiles.errors import CarewatchError, DecodeError
from edge_agent.ingest import Bound, Ingest
from edge_agent.sources import Source, SourceError

log = logging.getLogger(__name__)


class ModbusSource(Source):
    """All units on one Modbus RTU bus."""

    kind: ClassVar[str] = "modbus"

    def __init__(self, port: str, devices: Sequence[Bound], ingest: Ingest) -> None:
        super().__init__(f"modbus:{port}", devices, ingest)
        self.port = port
        for d in self.devices:
            if not hasattr(d.codec, "plan"):
                raise SourceError(f"{d.id}: codec {d.codec.name!r} has no register read plan")
        self.settings = self.devices[0].config.transport
        self._client: Any = None
        self.failures: dict[str, int] = {d.id: 0 for d in self.devices}

    async def run(self) -> None:
        from pymodbus.client import AsyncModbusSerialClient  # lazy: only Modbus gateways

        t = self.settings
        timeout = min(float(d.config.transport.get("timeout_s", 1.0)) for d in self.devices)
        retries = max(int(d.config.transport.get("retries", 1)) for d in self.devices)
        self._client = client = AsyncModbusSerialClient(
            self.port,
            baudrate=int(t.get("baudrate", 9600)),
            bytesize=int(t.get("bytesize", 8)),
            parity=str(t.get("parity", "N")),
            stopbits=int(t.get("stopbits", 1)),
            timeout=timeout,
            retries=retries,
            reconnect_delay=0,  # the agent's supervisor reopens the bus with its backoff
            name=self.name,
        )
        if not await client.connect():
            raise SourceError(f"cannot open {self.port}")
        log.info("%s: open (%d units)", self.name, len(self.devices))
        self.up()
        due = {d.id: time.monotonic() for d in self.devices}
        by_id = {d.id: d for d in self.devices}
        while True:
            dev_id = min(due, key=due.__getitem__)
            wait = due[dev_id] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            device = by_id[dev_id]
            await self.poll(device)
            interval = float(device.config.transport.get("poll_interval_s", 10.0))
            # Keep the cadence without bursts after a stall (a slow bus, a suspended Pi).
            due[dev_id] = max(due[dev_id] + interval, time.monotonic())
            if not client.connected:
                raise SourceError(f"{self.port}: bus connection lost")

    async def poll(self, device: Bound) -> None:
        """Read one unit's block and hand it to the codec; faults are counted."""
        from pymodbus.exceptions import ModbusException

        plan = device.codec.plan  # type: ignore[attr-defined]
        unit = int(device.config.transport.get("unit_id", 1))
        read = (
            self._client.read_input_registers
            if plan.function_code == 4
            else self._client.read_holding_registers
        )
        try:
            response = await read(plan.address, count=plan.count, device_id=unit)
        except ModbusException as exc:
            self._failed(device, "timeout", f"unit {unit} on {self.port} did not answer: {exc}")
            return
        if response.isError():
            self._failed(device, "modbus_exception", f"unit {unit} answered {response}")
            return
        if self.failures[device.id]:
            log.info(
                "%s: answering again after %d failed polls", device.id, self.failures[device.id]
            )
            self.failures[device.id] = 0
            self.ingest.health.source_errors.pop(device.id, None)
        registers = list(response.registers)
        try:
            readings = device.codec.decode(registers, device.id)
        except DecodeError as exc:
            self.ingest.fault(device.id, exc.fault, exc.detail, registers)
            return
        except CarewatchError as exc:
            self.ingest.fault(device.id, "decode", str(exc), registers)
            return
        except Exception as exc:  # a codec bug: counted and set aside, never a dead poller
            log.exception("%s: codec failed on registers %s", device.id, registers)
            self.ingest.fault(device.id, "codec_bug", repr(exc), registers)
            return
        self.ingest.readings(device, readings)

    def _failed(self, device: Bound, fault: str, detail: str) -> None:
        self.failures[device.id] += 1
        self.ingest.health.source_errors[device.id] = detail
        self.ingest.fault(device.id, fault, detail)

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
