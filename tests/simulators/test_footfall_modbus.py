"""The footfall counter end to end: pymodbus RTU client <-> PTY link <-> pymodbus RTU server.

The client side is what the gateway does: ``AsyncModbusSerialClient`` reads the profile's
register block with real RTU framing, the profile's codec decodes it and tracks deltas.
Timeouts are short (0.3 s, no retries) so fault tests stay fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from device_profiles.codecs.base import JsonState, Reading
from device_profiles.codecs.modbus_counter import ModbusCounterCodec
from device_profiles.profiles import ProfileRegistry
from simulators.base import Fault
from simulators.footfall_modbus import FootfallModbusSimulator

pytestmark = pytest.mark.integration

REGISTRY = ProfileRegistry.load()
PROFILES = ["beamcount-irc200", "flowsense-tc320"]
TIMEOUT_S = 0.3


@dataclass
class Gateway:
    """The gateway's side of one counter: a Modbus client, the codec, the tracking state."""

    client: AsyncModbusSerialClient
    codec: ModbusCounterCodec
    unit_id: int
    state: JsonState

    async def read_block(self, attempts: int = 1) -> list[int]:
        """Read the profile's block; a timeout is retried up to ``attempts`` times in all.

        Polls that must succeed retry (as the agent does), so a loaded CI machine that
        misses one short timeout does not fail the test; polls that must fail use one
        attempt.
        """
        plan = self.codec.plan
        for attempt in range(attempts):
            try:
                response = await self.client.read_holding_registers(
                    plan.address, count=plan.count, device_id=self.unit_id
                )
            except ModbusIOException:
                if attempt == attempts - 1:
                    raise
                continue
            assert not response.isError(), response
            return list(response.registers)
        raise AssertionError("unreachable")

    async def poll(self, attempts: int = 3) -> Reading:
        """One poll as the agent makes it: read, decode, track."""
        [reading] = self.codec.decode(await self.read_block(attempts), "door-1")
        self.state, [tracked] = self.codec.track(self.state, reading)
        return tracked


@pytest.fixture(params=PROFILES)
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[FootfallModbusSimulator]:
    async with FootfallModbusSimulator(REGISTRY.get(request.param), "door-1") as simulator:
        yield simulator


@pytest.fixture
async def gw(sim: FootfallModbusSimulator) -> AsyncIterator[Gateway]:
    t = sim.client_settings  # parity N: a PTY carries no parity
    client = AsyncModbusSerialClient(
        sim.client_path,
        baudrate=t.baudrate,
        bytesize=t.bytesize,
        parity=t.parity,
        stopbits=t.stopbits,
        timeout=TIMEOUT_S,
        retries=0,
    )
    assert await client.connect()
    try:
        yield Gateway(client, sim.counter, t.unit_id, sim.counter.initial_state())
    finally:
        client.close()


async def test_registers_on_the_wire_are_the_codecs_encoding(
    sim: FootfallModbusSimulator, gw: Gateway
) -> None:
    await sim.set_counts(70, 65535)
    assert await gw.read_block(attempts=3) == sim.registers()
    first = await gw.poll()
    assert (first.values["in_total"], first.values["out_total"], first.values["in"]) == (
        70,
        65535,
        0,
    )


async def test_twelve_people_enter_between_nine_and_ten(
    sim: FootfallModbusSimulator, gw: Gateway
) -> None:
    await gw.poll()  # baseline
    # An hour of scenario time in a tenth of a second, polled while it runs.
    arrivals = asyncio.create_task(sim.schedule(12, "9:00", "10:00", time_scale=36_000))
    total_in = 0
    while not arrivals.done():
        total_in += int(str((await gw.poll()).values["in"]))
        await asyncio.sleep(0.01)
    await arrivals
    last = await gw.poll()
    total_in += int(str(last.values["in"]))
    assert total_in == sim.entered == 12
    assert last.values["out"] == 0
    assert last.values["reset"] is False
    assert sim.reads >= 2


async def test_power_cycle_is_a_reset_not_a_negative_count(
    sim: FootfallModbusSimulator, gw: Gateway
) -> None:
    await gw.poll()
    await sim.enter(30)
    await sim.leave(25)
    assert (await gw.poll()).values["in"] == 30
    await sim.power_cycle()
    await sim.enter(2)
    after = await gw.poll()
    assert after.values == {"in": 2, "out": 0, "in_total": 2, "out_total": 0, "reset": True}


async def test_wrap_gives_a_small_positive_delta(sim: FootfallModbusSimulator, gw: Gateway) -> None:
    top = sim.counter.fields["in_total"].modulus - 1
    await sim.set_counts(top - 4, top)
    await gw.poll()
    await sim.enter(10)
    await sim.leave(3)
    wrapped = await gw.poll()
    assert wrapped.values["in_total"] == 5
    assert wrapped.values["out_total"] == 2
    assert (wrapped.values["in"], wrapped.values["out"], wrapped.values["reset"]) == (10, 3, False)


async def test_silence_times_out_then_recovers_without_losing_people(
    sim: FootfallModbusSimulator, gw: Gateway
) -> None:
    await gw.poll()
    await sim.inject("silence")
    await sim.enter(4)  # people keep walking in while the bus is dead
    with pytest.raises(ModbusException):
        await gw.poll(attempts=1)
    sim.clear_faults()
    back = await gw.poll()
    assert (back.values["in"], back.values["reset"]) == (4, False)


@pytest.mark.parametrize("fault", ["garbage", "bad_checksum", "truncated"])
async def test_spoiled_responses_fail_then_recover(
    sim: FootfallModbusSimulator, gw: Gateway, fault: Fault
) -> None:
    await gw.poll()
    await sim.enter(3)
    await sim.inject(fault)
    with pytest.raises(ModbusException):
        await gw.poll(attempts=1)
    assert gw.state["in_total"] != sim.counts[0]  # the failed poll changed nothing
    back = await gw.poll()
    assert (back.values["in"], back.values["reset"]) == (3, False)


async def test_disconnect_and_reconnect(sim: FootfallModbusSimulator, gw: Gateway) -> None:
    await gw.poll()
    await sim.inject("disconnect")
    on_bus = [sim.connected]
    await sim.enter(1)
    with pytest.raises(ModbusException):
        await gw.poll(attempts=1)
    await sim.reconnect()
    on_bus.append(sim.connected)
    assert on_bus == [False, True]
    back = await gw.poll()
    assert back.values["in"] == 1
    assert back.values["in_total"] == sim.counts[0]


async def test_reading_outside_the_register_map_is_a_modbus_exception(
    sim: FootfallModbusSimulator, gw: Gateway
) -> None:
    plan = sim.counter.plan
    response = await gw.client.read_holding_registers(
        plan.address, count=plan.count + 1, device_id=gw.unit_id
    )
    assert response.isError()
    assert response.exception_code == 2  # ILLEGAL DATA ADDRESS, as a real device answers


async def test_unsupported_fault_is_refused(sim: FootfallModbusSimulator) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        await sim.inject("duplicate")
