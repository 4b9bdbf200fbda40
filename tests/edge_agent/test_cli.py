"""`carewatch agent` as installers use it, and the footprint rule (no numpy)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from edge_agent.config import check_config

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carewatch", "agent", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_sample_config_is_valid():
    assert check_config(REPO / "deploy" / "agent.sample.yaml") == []


def test_check_prints_every_problem_with_its_path_and_fails(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(
        textwrap.dedent(
            """
            site: s1
            gateway: g1
            broker: {url: "mqtt://localhost"}
            devices:
              - {id: p1, profile: oem-rf433-button-pendant}
              - id: f1
                profile: beamcount-irc200
                modbus: {port: /dev/ttyUSB1, poll_interval_s: 0}
              - {id: x1, profile: acme-unknown}
            """
        )
    )
    out = run("--check", str(path))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert f"{path}: devices[0].serial.port: missing" in lines
    assert f"{path}: devices[1].modbus.poll_interval_s: must be > 0" in lines
    assert any(
        line.startswith(f"{path}: devices[2].profile: unknown profile 'acme-unknown'")
        for line in lines
    )
    assert "3 problem(s)" in out.stderr


def test_check_ok_and_bad_config_refuses_to_run(tmp_path):
    assert run("--check", str(REPO / "deploy" / "agent.sample.yaml")).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: s1\n")
    out = run("--config", str(bad))
    assert out.returncode == 2 and "gateway: missing" in out.stderr


def test_agent_never_imports_numpy_or_sklearn():
    code = textwrap.dedent(
        """
        import json, sys
        import carewatch.cli, edge_agent.cli, edge_agent.agent, edge_agent.uplink
        import edge_agent.sources.serial, edge_agent.sources.modbus, edge_agent.sources.mqtt
        from device_profiles.codecs import CODECS, codec_class
        from device_profiles.profiles import ProfileRegistry
        for name in CODECS:
            codec_class(name)
        ProfileRegistry.load()
        import pymodbus.client, serial, aiomqtt
        heavy = ("numpy", "sklearn", "scipy")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert json.loads(out.stdout) == []


def test_sample_config_shows_every_option():
    from edge_agent import config as c

    text = (REPO / "deploy" / "agent.sample.yaml").read_text()
    keys = [
        *c._TOP_KEYS,
        *c._BROKER_KEYS,
        *c._TLS_KEYS,
        *c._QUEUE_KEYS,
        *c._HEALTH_KEYS,
        *c._CLOCK_KEYS,
        *c._PROFILES_KEYS,
        *c._DEVICE_KEYS,
        *(k for keys in c.TRANSPORT_KEYS.values() for k in keys),
    ]
    missing = sorted({k for k in keys if f"{k}:" not in text})
    assert missing == []


def test_check_finds_what_only_the_sources_check(tmp_path):
    # A custom mqtt-json profile naming no topic passes the schema; only the MQTT
    # source finds it. --check must say so (before, it said OK and start exited 2).
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    face = (REPO / "device_profiles" / "profiles" / "hikvision-ds-k1t341.yaml").read_text()
    face = face.replace("profile: hikvision-ds-k1t341", "profile: acme-face")
    face = face.replace("transport:\n  topic: hikvision/{device}/event\n", "")
    assert "topic:" not in face
    (profiles / "acme-face.yaml").write_text(face)
    path = tmp_path / "agent.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            site: s1
            gateway: g1
            broker: {{url: "mqtt://localhost"}}
            profiles: {{dirs: ["{profiles}"]}}
            site_brokers: {{local: {{url: "mqtt://127.0.0.1:1883"}}}}
            devices:
              - {{id: door-1, profile: aqara-mccgq11lm}}
              - {{id: face-1, profile: acme-face}}
            """
        )
    )
    problems = [str(p) for p in check_config(path)]
    assert len(problems) == 1
    assert problems[0].startswith("devices[1].mqtt: face-1: profile 'acme-face' names no topic")
