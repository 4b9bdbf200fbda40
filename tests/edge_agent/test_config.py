"""The gateway config checker: every problem, with its path in the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from device_profiles.errors import ConfigError
from edge_agent.config import check_config, load_config, parse_duration, parse_size


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


GOOD = """
site: center-01
gateway: gw-01
broker:
  url: mqtt://127.0.0.1:1883
queue:
  path: q.db
  max_bytes: 64MB
  max_age: 3d
site_brokers:
  local: {url: "mqtt://127.0.0.1:1884"}
devices:
  - id: door-101
    profile: aqara-mccgq11lm
    resident: r-101
    mqtt: {address: hall_door}
  - id: footfall-1
    profile: beamcount-irc200
    modbus: {port: /dev/ttyUSB1, unit_id: 3, poll_interval_s: 5}
  - id: face-1
    profile: hikvision-ds-k1t341
"""


def test_good_config_loads_frozen(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.site == "center-01" and cfg.gateway == "gw-01"
    assert cfg.broker.host == "127.0.0.1" and cfg.broker.port == 1883 and cfg.broker.tls is None
    assert cfg.broker.client_id == "carewatch-center-01-gw-01"
    assert cfg.queue.max_bytes == 64 * 1024**2
    assert cfg.queue.max_age_s == 3 * 86400
    assert cfg.queue.path == str(tmp_path.resolve() / "q.db")
    door = cfg.device("door-101")
    assert door.section == "mqtt" and door.address == "hall_door" and door.resident == "r-101"
    assert door.transport["broker"] == "local"
    assert door.transport["base_topic"] == "zigbee2mqtt"  # profile default kept
    ff = cfg.device("footfall-1")
    assert ff.transport["unit_id"] == 3 and ff.transport["poll_interval_s"] == 5
    assert ff.transport["baudrate"] == 9600  # from the profile
    assert cfg.device("face-1").address == "face-1"  # mqtt address defaults to the id
    with pytest.raises(AttributeError):
        cfg.site = "x"  # type: ignore[misc]


def test_every_problem_is_reported_with_its_path(tmp_path):
    path = write(
        tmp_path,
        """
        site: center 01
        gatway: gw-01
        broker:
          url: http://example
          password: secret
        queue:
          max_bytes: 0
          linger: -1
          batch_sise: 10
        devices:
          - id: d1
            profile: no-such-profile
          - id: d2
            profile: beamcount-irc200
            modbus: {baudrate: fast}
          - id: d2
            profile: aqara-mccgq11lm
            serial: {port: /dev/ttyS0}
        """,
    )
    problems = {p.path: p.message for p in check_config(path)}
    assert "site" in problems and "not a valid id" in problems["site"]
    assert "did you mean 'gateway'" in problems["gatway"]
    assert problems["gateway"] == "missing"
    assert "scheme 'http'" in problems["broker.url"]
    assert "requires a username" in problems["broker.password"]
    assert problems["queue.max_bytes"] == "must be > 0"
    assert "must be >= 0" in problems["queue.linger"]
    assert "did you mean 'batch_size'" in problems["queue.batch_sise"]
    assert problems["devices[0].profile"].startswith("unknown profile 'no-such-profile'")
    assert "known: [" in problems["devices[0].profile"]
    assert problems["devices[1].modbus.port"] == "missing"
    assert "integer" in problems["devices[1].modbus.baudrate"]
    assert "configure it under 'mqtt:'" in problems["devices[2].serial"]
    assert "no site_brokers" in problems["devices[2].mqtt.broker"]
    assert "duplicate device id 'd2'" in problems["devices[2].id"]


def test_load_config_raises_listing_everything(tmp_path):
    path = write(tmp_path, "site: s\ngateway: alerts\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "gateway: 'alerts' is reserved" in text
    assert "broker: missing" in text


def test_shared_bus_conflicts(tmp_path):
    path = write(
        tmp_path,
        """
        site: s1
        gateway: g1
        broker: {url: mqtt://localhost}
        devices:
          - {id: a, profile: beamcount-irc200, modbus: {port: /dev/ttyUSB0, unit_id: 1}}
          - {id: b, profile: beamcount-irc200, modbus: {port: /dev/ttyUSB0, unit_id: 1}}
          - {id: c, profile: flowsense-tc320, modbus: {port: /dev/ttyUSB0, unit_id: 2}}
        """,
    )
    problems = {p.path: p.message for p in check_config(path)}
    assert "unit 1 on /dev/ttyUSB0 is already 'a'" in problems["devices[1].modbus.unit_id"]
    # flowsense runs at 19200 E by default: the shared bus disagrees
    assert "differs from 'a'" in problems["devices[2].modbus.baudrate"]
    assert "differs from 'a'" in problems["devices[2].modbus.parity"]


def test_password_file_and_tls(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("x")
    path = write(
        tmp_path,
        """
        site: s1
        gateway: g1
        broker:
          url: mqtts://broker.example:8883
          username: gw
          password_file: pw
          tls: {ca_file: ca.pem, cert_file: missing.pem}
        """,
    )
    problems = {p.path: p.message for p in check_config(path)}
    assert "file not found" in problems["broker.tls.cert_file"]
    assert "go together" in problems["broker.tls"]
    assert "broker.tls.ca_file" not in problems
    path.write_text(path.read_text().replace(", cert_file: missing.pem", ""))
    cfg = load_config(path)
    assert cfg.broker.password == "s3cret" and cfg.broker.username == "gw"
    assert cfg.broker.tls is not None and cfg.broker.tls.ca_file == str(
        tmp_path.resolve() / "ca.pem"
    )
    assert "s3cret" not in repr(cfg.broker)


def test_not_yaml_and_not_mapping(tmp_path):
    assert "not valid YAML" in str(check_config(write(tmp_path, "a: [b"))[0])
    assert "must be a YAML mapping" in str(check_config(write(tmp_path, "- a\n"))[0])
    assert "cannot read" in str(check_config(tmp_path / "nope.yaml")[0])


@pytest.mark.parametrize(
    ("text", "seconds"), [(5, 5.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("7d", 604800.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_sizes():
    assert parse_size("64MB") == 64 * 1024**2
    assert parse_size(1000) == 1000
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
