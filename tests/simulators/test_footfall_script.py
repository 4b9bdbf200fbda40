"""Scripting helpers of the footfall simulator, and its script on the raw counters."""

from __future__ import annotations

import pytest

from device_profiles.profiles import ProfileRegistry
from simulators.footfall_modbus import FootfallModbusSimulator, arrival_offsets, clock_seconds

REGISTRY = ProfileRegistry.load()


def test_clock_and_arrival_helpers() -> None:
    assert clock_seconds("9:00") == 32400.0
    assert clock_seconds("10:00:30") == 36030.0
    assert clock_seconds(12.5) == 12.5
    for bad in ("9h", "25:00", "9:60"):
        with pytest.raises(ValueError):
            clock_seconds(bad)
    even = arrival_offsets(12, 3600)
    assert even == sorted(even)
    assert len(even) == 12
    assert 0 < even[0] < even[-1] < 3600
    assert arrival_offsets(12, 3600, seed=7) == arrival_offsets(12, 3600, seed=7)
    assert arrival_offsets(0, 60) == []
    assert clock_seconds("24:00") == 86400.0
    with pytest.raises(ValueError):
        clock_seconds("24:30")
    with pytest.raises(ValueError):
        arrival_offsets(-1, 60)


@pytest.mark.parametrize("name", ["beamcount-irc200", "flowsense-tc320"])
async def test_script_keeps_ground_truth_across_wraps_and_power_cycles(name: str) -> None:
    sim = FootfallModbusSimulator(REGISTRY.get(name), "door-1")  # not started: no I/O
    top = sim.counter.fields["in_total"].modulus - 1
    await sim.set_counts(top - 1, 0)
    await sim.enter(5)
    await sim.leave(2)
    assert sim.counts == (3, 2)  # the raw counter wrapped
    assert (sim.entered, sim.left) == (5, 2)  # ground truth did not
    assert sim.counter.decode(sim.registers(), "door-1")[0].values == {
        "in_total": 3,
        "out_total": 2,
    }
    await sim.power_cycle()
    assert sim.counts == (0, 0)
    assert (sim.entered, sim.left, sim.power_cycles) == (5, 2, 1)
    with pytest.raises(ValueError):
        await sim.set_counts(top + 1, 0)
    with pytest.raises(ValueError):
        await sim.enter(-1)


async def test_schedule_spreads_people_in_either_direction() -> None:
    sim = FootfallModbusSimulator(REGISTRY.get("beamcount-irc200"), "door-1")
    await sim.schedule(12, "9:00", "10:00", time_scale=1e9)
    await sim.schedule(5, 0, 60, direction="out", time_scale=1e9, seed=3)
    assert (sim.entered, sim.left) == (12, 5)
    assert sim.counts == (12, 5)
    for kwargs in ({"direction": "sideways"}, {"time_scale": 0}):
        with pytest.raises(ValueError):
            await sim.schedule(1, "9:00", "10:00", **kwargs)
    with pytest.raises(ValueError, match="before"):
        await sim.schedule(1, "10:00", "9:00")


def test_only_modbus_counter_profiles_and_site_overrides() -> None:
    from device_profiles.errors import ConfigError, ProfileError

    other = next(p for p in REGISTRY if p.codec != "modbus_counter")
    with pytest.raises(ProfileError):
        FootfallModbusSimulator(other, "x")
    sim = FootfallModbusSimulator(REGISTRY.get("flowsense-tc320"), "x", transport={"unit_id": 42})
    assert (sim.settings.unit_id, sim.settings.parity) == (42, "E")
    assert (sim.client_settings.unit_id, sim.client_settings.parity) == (42, "N")
    with pytest.raises(ConfigError):
        FootfallModbusSimulator(REGISTRY.get("flowsense-tc320"), "x", transport={"unit_id": 0})
    with pytest.raises(RuntimeError, match="not started"):
        _ = sim.client_path
