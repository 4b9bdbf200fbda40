"""Scenarios: parsing with errors that name the key, and playing every device type."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import serial
import yaml

from device_profiles.codecs import MqttMessage, Reading, codec_for
from device_profiles.errors import ConfigError, DecodeError
from device_profiles.profiles import ProfileRegistry
from simulators.cli import main as simulate_main
from simulators.scenario import (
    Environment,
    SimulatorSet,
    load_scenario,
    parse_scenario,
    parse_time,
)

DEMO = Path(__file__).parents[2] / "simulators" / "scenarios" / "demo.yaml"


def base(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "t",
        "site": "s1",
        "devices": [{"id": "door-1", "profile": "aqara-mccgq11lm", "resident": "r1"}],
        "steps": [{"at": "2s", "device": "door-1", "action": "open_door"}],
    }
    doc.update(over)
    return doc


def test_times() -> None:
    assert parse_time("1h30m") == 5400
    assert parse_time("90s") == 90
    assert parse_time(12) == 12
    assert parse_time("09:15", start_of_day_s=8 * 3600) == 4500
    for bad in ("soon", "", -1, True, "25:00"):
        with pytest.raises(ValueError):
            parse_time(bad, start_of_day_s=0)
    with pytest.raises(ValueError, match="needs a 'start'"):
        parse_time("09:15")


def test_the_shipped_demo_scenario_is_valid() -> None:
    scenario = load_scenario(DEMO)
    kinds = {d.profile.kind for d in scenario.devices}
    assert {"pendant", "door", "motion", "footfall", "face_terminal"} <= kinds
    assert [s.at for s in scenario.steps] == sorted(s.at for s in scenario.steps)
    assert {e.subject for e in scenario.expect if e.condition == "emergency"} == {"wang", "li"}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"site": "a b"}, "site"),
        ({"time_scale": 0}, "time_scale"),
        ({"devices": []}, "devices"),
        ({"devices": [{"id": "d", "profile": "nope"}]}, "devices[0].profile"),
        ({"devices": [{"id": "d/1", "profile": "aqara-mccgq11lm"}]}, "devices[0].id"),
        ({"steps": [{"at": "x", "device": "door-1", "action": "a"}]}, "steps[0].at"),
        ({"steps": [{"at": 1, "device": "door-9", "action": "a"}]}, "steps[0].device"),
        ({"steps": [{"at": 1, "device": "door-1"}]}, "steps[0]"),
        ({"steps": [{"at": 1, "device": "door-1", "fault": "fire"}]}, "steps[0].fault"),
        ({"steps": [{"at": 1, "device": "door-1", "action": "_x"}]}, "steps[0].action"),
        ({"expect": [{"at": 1}]}, "expect[0]"),
        ({"colour": 1}, "unknown key"),
    ],
)
def test_errors_name_the_key(change: dict[str, Any], path: str, tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(base(**change)), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_scenario(file)
    assert path in str(info.value) and str(file) in str(info.value)


def test_cli_reports_bad_scenarios_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(base(devices="x")), encoding="utf-8")
    assert simulate_main(["--scenario", str(file)]) == 2
    assert "devices: must be a non-empty list" in capsys.readouterr().err
    assert simulate_main(["--list"]) == 0
    assert "oem-rf433-button-pendant" in capsys.readouterr().out


@pytest.mark.integration
async def test_playing_a_scenario_drives_every_transport(
    mosquitto: Any, topic_prefix: str, tmp_path: Path
) -> None:
    """Pendant on a PTY, counter on Modbus RTU, Zigbee, face and LoRaWAN on MQTT."""
    doc = base(
        site="s1",
        time_scale=20,
        devices=[
            {
                "id": "door-1",
                "profile": "aqara-mccgq11lm",
                "resident": "r1",
                "options": {"base_topic": f"{topic_prefix}/z2m", "friendly_name": "front"},
            },
            {
                "id": "face-1",
                "profile": "hikvision-ds-k1t341",
                "options": {"topic": f"{topic_prefix}/face/{{device}}/event"},
            },
            {
                "id": "pendant-1",
                "profile": "oem-rf433-button-pendant",
                "resident": "r1",
                "options": {"pendant_id": "00A1B2C3"},
            },
            {
                "id": "pendant-2",
                "profile": "oem-lorawan-pendant",
                "resident": "r2",
                "options": {"application_id": topic_prefix, "dev_eui": "70b3d57ed0000001"},
            },
            {"id": "counter-1", "profile": "beamcount-irc200"},
        ],
        steps=[
            {"at": "1s", "device": "door-1", "action": "open_door"},
            {"at": "2s", "device": "face-1", "action": "checkin", "args": {"person": "p7"}},
            {"at": "3s", "device": "pendant-1", "action": "press"},
            {"at": "4s", "device": "pendant-2", "action": "press"},
            {"at": "5s", "device": "counter-1", "action": "enter", "args": {"n": 12}},
            {"at": "6s", "device": "pendant-1", "fault": "garbage"},
            {"at": "7s", "device": "pendant-1", "action": "no_such_action"},
        ],
    )
    scenario = parse_scenario(doc, ProfileRegistry.load())
    env = Environment(mosquitto.host, mosquitto.port, serial_dir=str(tmp_path))
    sims = SimulatorSet(scenario, env)
    received: list[MqttMessage] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(f"{topic_prefix}/#", qos=1)
        await client.subscribe(f"application/{topic_prefix}/#", qos=1)
        await sims.start()
        try:
            port = serial.Serial(sims.sims["pendant-1"].port, timeout=0)  # type: ignore[attr-defined]
            await sims.play()

            wanted = {
                f"{topic_prefix}/z2m/front",
                f"{topic_prefix}/face/face-1/event",
                f"application/{topic_prefix}/device/70b3d57ed0000001/event/up",
            }

            async def gather() -> None:
                async for m in client.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else b""
                    received.append(MqttMessage(str(m.topic), payload))
                    if wanted <= {r.topic for r in received}:
                        return

            await asyncio.wait_for(gather(), 15)
            raw = port.read(4096)
            port.close()
            counter = sims.sims["counter-1"]
            assert counter.entered == 12  # type: ignore[attr-defined]
        finally:
            await sims.stop()

    errors = [(s.action, e) for _, s, e in sims.log if e]
    assert len(errors) == 1 and errors[0][0] == "no_such_action", errors
    assert "has no 'no_such_action'" in str(errors[0][1])
    registry = ProfileRegistry.load()
    rf = codec_for(registry.get("oem-rf433-button-pendant"))
    frames, _rest, garbage = rf.split(raw)  # type: ignore[attr-defined]
    readings: list[Reading] = []
    state = rf.initial_state()
    for frame in frames:
        try:
            for reading in rf.decode(frame, "pendant-1"):
                state, out = rf.track(state, reading)
                readings += out
        except DecodeError:
            pass
    assert [r.reading for r in readings].count("press") == 1
    assert garbage, "the garbage fault must reach the port"
    topics = {m.topic for m in received}
    assert f"{topic_prefix}/z2m/front" in topics
    assert f"application/{topic_prefix}/device/70b3d57ed0000001/event/up" in topics
    door = codec_for(registry.get("aqara-mccgq11lm"))
    door_msgs = [m for m in received if m.topic == f"{topic_prefix}/z2m/front"]
    assert any(r.values.get("open") is True for m in door_msgs for r in door.decode(m, "door-1"))


def test_cli_names_a_bad_broker_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate_main(["--scenario", str(DEMO), "--mqtt", "localhost:mqtt"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
