"""Stream config: the sample is valid, problems are all listed with their paths."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import yaml

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.cli import main
from stream.clock import ManualClock
from stream.config import (
    ConfigProblems,
    DetectorConfig,
    load_config,
    parse_config,
    parse_duration_ms,
    parse_time_ms,
)
from stream.detectors.alarm import AlarmDetector
from stream.detectors.base import AlertSignal, Detector, DetectorContext
from stream.detectors.inactivity import InactivityDetector
from stream.detectors.noshow import NoShowDetector
from stream.detectors.operations import (
    DeviceHealthDetector,
    GatewayDetector,
    OccupancyDetector,
    operations_detectors,
)
from stream.detectors.sitetime import duration_ms
from stream.registry import DETECTORS, build_detectors

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "stream.sample.yaml"


def test_sample_config_is_valid_and_shows_the_defaults() -> None:
    cfg = load_config(SAMPLE)
    assert cfg.mqtt.client_id == "carewatch-stream"
    assert cfg.state.synchronous == "full"
    assert cfg.policies["default"].tiers[0] == ("center-desk",)
    assert cfg.policies["default"].ack_timeout_ms["critical"] == 180_000
    assert cfg.site("point-07").timezone == "Asia/Shanghai"  # from "*"
    assert cfg.site("unknown-site").quiet_start_min == 22 * 60
    assert cfg.site("point-07").raw["capacity"] == 15
    names = [d.name for d in build_detectors(cfg.detectors)]
    assert names[0] == "alarm"
    assert {"inactivity", "noshow"} <= set(names)
    # Every default written in the sample is the code's default.
    defaults = parse_config({})
    assert cfg.mqtt.root == defaults.mqtt.root
    assert cfg.ingest == defaults.ingest
    assert cfg.clock == defaults.clock
    assert cfg.delivery == defaults.delivery
    assert cfg.api == defaults.api
    assert cfg.state == defaults.state
    assert cfg.logging == defaults.logging
    assert [d.name for d in defaults.detectors] == [d.name for d in cfg.detectors]


def _keyword_options(cls: type[Any], skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A detector's keyword-only constructor arguments (its config options) and defaults."""
    params = inspect.signature(cls).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in skip}


def _is_duration(value: Any) -> bool:
    try:
        duration_ms(value, "")
    except ConfigError:
        return False
    return True


def _assert_shows_keywords(
    cls: type[Any], shown: Mapping[str, Any], where: str, skip: frozenset[str] = frozenset()
) -> None:
    options = _keyword_options(cls, skip)
    assert options, f"{cls.__name__} has no keyword options any more: update this test"
    assert set(shown) == set(options), (
        f"{where} in the sample: missing {sorted(set(options) - set(shown))}, "
        f"not options {sorted(set(shown) - set(options))}"
    )
    for name, default in options.items():
        value = shown[name]
        if isinstance(default, str) and _is_duration(default):
            # The constructor reads it with duration_ms: "30m" and 1800 are the same.
            assert duration_ms(value, name) == duration_ms(default, name), f"{where}.{name}"
        else:
            assert value == default, f"{where}.{name}: sample {value!r}, default {default!r}"
            assert isinstance(value, bool) == isinstance(default, bool), f"{where}.{name}"


def test_sample_shows_every_detector_option_with_its_default() -> None:
    """A new detector option, or a changed default, must show in the sample operators copy."""
    shown = yaml.safe_load(SAMPLE.read_text())["detectors"]
    assert set(shown) == set(DETECTORS)
    # inactivity and noshow parse their options (and the per-site, per-resident
    # overrides) into a frozen dataclass with its own parse().
    for name, cls in (("inactivity", InactivityDetector), ("noshow", NoShowDetector)):
        options_type = type(cls().options)
        names = {f.name for f in fields(options_type)}
        assert set(shown[name]) == names, (
            f"detectors.{name} in the sample: missing {sorted(names - set(shown[name]))}, "
            f"not options {sorted(set(shown[name]) - names)}"
        )
        parsed, default = options_type.parse(shown[name], f"detectors.{name}"), options_type()
        wrong = {
            f.name: (getattr(parsed, f.name), getattr(default, f.name))
            for f in fields(options_type)
            if getattr(parsed, f.name) != getattr(default, f.name)
        }
        assert not wrong, f"detectors.{name} in the sample is not the default: {wrong}"
    # The alarm and the operations detectors take keyword arguments. The fall scorer is
    # a Python callable (tests and embedders pass one), not a config option.
    _assert_shows_keywords(
        AlarmDetector, shown["alarm"], "detectors.alarm", skip=frozenset({"scorer"})
    )
    sections: dict[str, type[Any]] = {
        "occupancy": OccupancyDetector,
        "devices": DeviceHealthDetector,
        "gateways": GatewayDetector,
    }
    made = {type(d) for d in operations_detectors()}
    assert made == set(sections.values()), "operations makes other detectors: update this test"
    assert set(shown["operations"]) == set(sections)
    for section, cls in sections.items():
        where = f"detectors.operations.{section}"
        _assert_shows_keywords(cls, shown["operations"][section], where)


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", str(SAMPLE)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"url": "http://x", "keepalive": "often"},
                "state": {"synchronous": "sometimes"},
                "notifiers": {"hook": {"type": "webhook"}, "x": {"type": "pager"}},
                "recipients": {"desk": {"notifiers": ["hook", "nope"]}},
                "policies": {
                    "default": {
                        "tiers": [{"recipients": ["desk"]}, {"recipients": ["nurse"]}],
                        "ack_timeout": {"critical": "soon", "urgent": "1m"},
                    }
                },
                "sites": {"site-a": {"timezone": "Mars/Olympus", "policy": "gold"}},
                "telemetry": {"url": "ftp://x"},
                "extra": 1,
            }
        )
    )
    assert main(["--check", str(bad)]) == 1
    err = capsys.readouterr().err
    for expected in (
        "mqtt.url: 'http://x': expected mqtt://host:port",
        "mqtt.keepalive: 'often'",
        "state.synchronous: 'sometimes': allowed: full, normal",
        "notifiers.hook.url: a webhook notifier needs a url",
        "notifiers.x.type: 'pager'",
        "recipients.desk.notifiers[1]: unknown notifier 'nope'",
        "policies.default.tiers[1].recipients[0]: unknown recipient 'nurse'",
        "policies.default.ack_timeout.critical: 'soon'",
        "policies.default.ack_timeout.urgent: unknown option",
        "sites.site-a.timezone: 'Mars/Olympus': unknown timezone",
        "sites.site-a.policy: unknown policy 'gold'",
        "telemetry.url: 'ftp://x'",
        "extra: unknown option",
    ):
        assert expected in err, f"{expected!r} not in:\n{err}"


def test_unknown_detector_and_bad_options_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("detectors:\n  alarm: {merge_s: -1}\n  teleport: {}\n  noshow: false\n")
    from stream.config import check_config

    problems = check_config(path)
    assert any(p.startswith("detectors.alarm.merge_s: -1") for p in problems)
    assert any(p.startswith("detectors.teleport: unknown detector") for p in problems)
    assert not any(p.startswith("detectors.noshow") for p in problems)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("mqtt: [unclosed\n")
    with pytest.raises(ConfigProblems, match="not valid YAML"):
        load_config(broken)
    assert main(["--config", str(broken)]) == 1


@pytest.mark.parametrize(
    ("text", "ms"),
    [(90, 90_000), ("90s", 90_000), ("3m", 180_000), ("2h", 7_200_000), ("500ms", 500),
     ("1d", 86_400_000), (0.5, 500), ("1h30m", 5_400_000), ("2m30s", 150_000),
     ("1s500ms", 1_500), ("5min", 300_000), (" 45 s ", 45_000)],
)  # fmt: skip
def test_durations(text: object, ms: int) -> None:
    # The stream config and the detectors' options read durations the same way.
    assert parse_duration_ms(text) == ms
    assert duration_ms(text, "x") == ms


@pytest.mark.parametrize("bad", ["soon", -1, True, "3 weeks", None, "", "ms", "30s2m", "5mss"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(bad)
    with pytest.raises(ConfigError, match=r"is not a duration|must not be negative"):
        duration_ms(bad, "x")


def test_times() -> None:
    assert parse_time_ms("2026-01-01T08:00:00+08:00") == 1_767_225_600_000
    assert parse_time_ms("2026-01-01T00:00:00Z") == 1_767_225_600_000
    with pytest.raises(ValueError, match="timezone"):
        parse_time_ms("2026-01-01T00:00:00")


def test_site_partitioning() -> None:
    from stream.ingest import subscriptions

    cfg = parse_config({"mqtt": {"sites": ["site-a", "site-b"]}})
    assert cfg.mqtt.sites == ("site-a", "site-b")
    subs = subscriptions(cfg.mqtt.root, cfg.mqtt.sites)
    assert "carewatch/v1/site-a/+/events" in subs
    assert "carewatch/v1/site-b/acks/+" in subs
    assert len(subs) == 8
    assert subscriptions("carewatch/v1") == [
        "carewatch/v1/+/+/events",
        "carewatch/v1/+/+/status",
        "carewatch/v1/+/+/health",
        "carewatch/v1/+/acks/+",
    ]
    with pytest.raises(ConfigProblems, match=r"mqtt\.sites"):
        parse_config({"mqtt": {"sites": ["bad site"]}})


def test_check_lists_schema_detector_and_notifier_problems_together(tmp_path: Path) -> None:
    from stream.config import check_config

    path = tmp_path / "all.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "ingest": {"dedup_window": 1},  # a schema problem
                "detectors": {"teleport": {}, "alarm": {"merge_s": -1}},
                "notifiers": {
                    "hook": {"type": "webhook", "url": "http://"},
                    "robot": {"type": "wecom", "url": "https://x/", "headers": {"X-A\nB": "1"}},
                    "bad": {"type": "pager"},  # its own schema problem: reported once
                },
            }
        )
    )
    problems = check_config(path)
    for expected in (
        "ingest.dedup_window:",
        "detectors.teleport: unknown detector",
        "detectors.alarm.merge_s: -1",
        "notifiers.hook: url 'http://': expected http(s)://host/...",
        "notifiers.robot: headers: 'X-A\\nB' is not a valid HTTP header name",
        "notifiers.bad.type: 'pager'",
    ):
        assert any(p.startswith(expected) for p in problems), f"{expected!r} not in {problems}"
    assert not any(p.startswith("notifiers.bad:") for p in problems)


def test_a_notifier_that_cannot_be_built_stops_the_start(tmp_path: Path) -> None:
    from stream.runtime import StreamService

    config = parse_config(
        {
            "state": {"path": str(tmp_path / "s.sqlite")},
            "notifiers": {"hook": {"type": "webhook", "url": "https:///path"}},
        }
    )
    with pytest.raises(ConfigProblems, match=r"notifiers\.hook: url"):
        StreamService(config)
    assert not (tmp_path / "s.sqlite").exists()  # refused before opening the database


# --- detector options are checked when the config is read ----------------------------------


@pytest.mark.parametrize(
    ("detectors", "path"),
    [
        ({"alarm": {"fall_threshold": "high"}}, "detectors.alarm.fall_threshold"),
        ({"alarm": {"fall_threshold": 1.5}}, "detectors.alarm.fall_threshold"),
        ({"alarm": {"scorer": "x"}}, "detectors.alarm.scorer"),  # Python only, never YAML
        ({"alarm": {"fall": "yes"}}, "detectors.alarm.fall"),
        ({"alarm": {"still_after_s": "soon"}}, "detectors.alarm.still_after_s"),
        ({"alarm": {"still_after_s": 0}}, "detectors.alarm.still_after_s"),
        ({"alarm": {"merge_s": -1}}, "detectors.alarm.merge_s"),
        ({"alarm": {"fall_severity": "loud"}}, "detectors.alarm.fall_severity"),
        ({"inactivity": {"min_history_days": 2.5}}, "detectors.inactivity.min_history_days"),
        ({"inactivity": {"neighbour_weight": "half"}}, "detectors.inactivity.neighbour_weight"),
        ({"inactivity": {"margin": float("inf")}}, "detectors.inactivity.margin"),
        ({"noshow": {"min_days": 2.5}}, "detectors.noshow.min_days"),
        ({"noshow": {"enabled": "no"}}, "detectors.noshow.enabled"),
        (
            {"operations": {"occupancy": {"min_expected": "five"}}},
            "detectors.operations.occupancy.min_expected",
        ),
        (
            {"operations": {"occupancy": {"alert_high": "no"}}},
            "detectors.operations.occupancy.alert_high",
        ),
        (
            {"operations": {"occupancy": {"quiet_hours": 1.5}}},
            "detectors.operations.occupancy.quiet_hours",
        ),
        (
            {"operations": {"occupancy": {"high_sigma": "4"}}},
            "detectors.operations.occupancy.high_sigma",
        ),
        ({"operations": {"occupancy": [1]}}, "detectors.operations.occupancy"),
        ({"operations": {"crowds": {}}}, "detectors.operations.crowds"),
        (
            {"operations": {"devices": {"low_battery": "low"}}},
            "detectors.operations.devices.low_battery",
        ),
        (
            {"operations": {"devices": {"low_battery": 40}}},  # above battery_ok (30)
            "detectors.operations.devices.battery_ok",
        ),
        (
            {"operations": {"devices": {"report_intervals": {"demo-pendant": "often"}}}},
            "detectors.operations.devices.report_intervals.demo-pendant",
        ),
        (
            {"operations": {"gateways": {"offline_grace": True}}},
            "detectors.operations.gateways.offline_grace",
        ),
    ],
)
def test_bad_detector_options_are_config_problems_naming_the_option(
    detectors: dict[str, Any], path: str
) -> None:
    """Read with the config (so --check and the start refuse them), each at its own path."""
    with pytest.raises(ConfigProblems) as info:
        parse_config({"detectors": detectors})
    assert [p for p, _ in info.value.problems] == [path], info.value.problems


def test_check_lists_every_bad_detector_option_once(tmp_path: Path) -> None:
    from stream.config import check_config

    path = tmp_path / "d.yaml"
    path.write_text(
        "detectors:\n"
        "  alarm: {fall_threshold: high, still_after_s: 2m, merge_s: -1}\n"
        "  noshow: {min_days: 2.5, margin: 30m}\n"
        "  operations: {occupancy: {min_expected: five, alert_high: 'no'}}\n"
    )
    problems = check_config(path)
    assert sorted(p.partition(":")[0] for p in problems) == [
        "detectors.alarm.fall_threshold",
        "detectors.alarm.merge_s",
        "detectors.noshow.min_days",
        "detectors.operations.occupancy.alert_high",
        "detectors.operations.occupancy.min_expected",
    ], problems
    assert "detectors.alarm.fall_threshold: 'high' is not a number" in problems[0]


def test_durations_of_the_alarm_accept_units_and_plain_seconds() -> None:
    cfg = parse_config({"detectors": {"alarm": {"still_after_s": "2m", "merge_s": 30}}})
    [alarm] = build_detectors([d for d in cfg.detectors if d.name == "alarm"])
    assert isinstance(alarm, AlarmDetector)
    assert (alarm.still_after_ms, alarm.merge_ms) == (120_000, 30_000)
    assert AlarmDetector(fall=False, still_after_s=90.5).still_after_ms == 90_500


def test_built_detectors_refuse_what_the_config_refuses() -> None:
    """Built from Python (tests, replay, embedders), the same checks apply."""
    high: Any = "high"  # as YAML would give it
    with pytest.raises(ConfigError, match=r"detectors\.alarm\.fall_threshold"):
        AlarmDetector(scorer=lambda values: 0.9, fall_threshold=high)
    with pytest.raises(ConfigError, match=r"detectors\.noshow\.min_days"):
        NoShowDetector(min_days=2.5)
    with pytest.raises(ConfigError, match=r"detectors\.operations\.occupancy\.min_expected"):
        OccupancyDetector(min_expected=high)
    with pytest.raises(ConfigError, match=r"detectors\.operations\.occupancy\.alert_high"):
        operations_detectors(occupancy={"alert_high": "no"})
    with pytest.raises(ConfigError, match=r"detectors\.operations\.devices\.battery_ok"):
        DeviceHealthDetector(low_battery=50, battery_ok=40, report_intervals={})
    with pytest.raises(ConfigError, match=r"detectors\.alarm\.scorer"):
        build_detectors([DetectorConfig("alarm", "alarm", {"scorer": "x"})])


def test_every_detector_option_has_a_declared_check() -> None:
    """An option added to a detector without a check would reach it unchecked."""
    from stream.detectors import alarm, inactivity, noshow, operations

    assert set(inactivity.OPTIONS) == {f.name for f in fields(inactivity.InactivityOptions)}
    assert set(noshow.OPTIONS) == {f.name for f in fields(noshow.NoShowOptions)}
    assert set(alarm.OPTIONS) == set(_keyword_options(AlarmDetector, frozenset({"scorer"})))
    assert set(operations.OCCUPANCY_OPTIONS) == set(_keyword_options(OccupancyDetector))
    assert set(operations.DEVICE_OPTIONS) == set(_keyword_options(DeviceHealthDetector))
    assert set(operations.GATEWAY_OPTIONS) == set(_keyword_options(GatewayDetector))


# --- per-site and per-resident detector settings are checked when the file is read ---------


@pytest.mark.parametrize(
    ("sites", "residents", "path"),
    [
        ({"x": {"inactivity": {"margn": "30m"}}}, {}, "sites.x.inactivity.margn"),
        ({}, {"r1": {"inactivity": {"night": "19-08"}}}, "residents.r1.inactivity.night"),
        ({"*": {"noshow": {"min_days": 2.5}}}, {}, "sites.*.noshow.min_days"),
        ({}, {"r1": {"noshow": {"margin": "later"}}}, "residents.r1.noshow.margin"),
        ({"x": {"inactivity": "off"}}, {}, "sites.x.inactivity"),
        ({"x": {"capacity": "forty"}}, {}, "sites.x.capacity"),
        ({"x": {"capacity": 0}}, {}, "sites.x.capacity"),
        ({"x": {"type": "centre"}}, {}, "sites.x.type"),
        ({"x": {"opening_hours": "8-17"}}, {}, "sites.x.opening_hours"),
        ({"x": {"opening_hours": {"funday": "08:00-12:00"}}}, {}, "sites.x.opening_hours"),
        ({"x": {"opening_days": ["mon", "someday"]}}, {}, "sites.x.opening_days"),
        ({"x": {"holidays": ["2026-13-01"]}}, {}, "sites.x.holidays[0]"),
        ({"x": {"holidays": "2026-10-01"}}, {}, "sites.x.holidays"),
        ({"x": {"devices": {"door-1": {"placement": 3}}}}, {}, "sites.x.devices.door-1.placement"),
        (
            {"x": {"devices": {"c-1": {"report_interval": "often"}}}},
            {},
            "sites.x.devices.c-1.report_interval",
        ),
        ({"x": {"devices": [{"placement": "kitchen"}]}}, {}, "sites.x.devices[0].id"),
        ({"x": {"devices": "door-1"}}, {}, "sites.x.devices"),
        ({}, {"r1": {"lives_alone": "yes"}}, "residents.r1.lives_alone"),
        ({}, {"r1": {"home": 12}}, "residents.r1.home"),
        ({}, {"r1": {"daycare": {"days": ["mon"], "by": "9.30"}}}, "residents.r1.daycare.by"),
        (
            {},
            {"r1": {"daycare": {"days": "weekdays", "by": "09:30"}}},
            "residents.r1.daycare.days",
        ),
        ({}, {"r1": {"daycare": {"days": ["mon"]}}}, "residents.r1.daycare.by"),
        ({}, {"r1": {"daycare": {"by": "09:30", "sites": "c"}}}, "residents.r1.daycare.sites"),
        ({}, {"r1": {"devices": {"p-1": {"resident": 5}}}}, "residents.r1.devices.p-1.resident"),
    ],
)
def test_bad_site_and_resident_settings_are_config_problems(
    sites: dict[str, Any], residents: dict[str, Any], path: str
) -> None:
    """What the detectors read under sites.<id> and residents.<id>, at its own path."""
    with pytest.raises(ConfigProblems) as info:
        parse_config({"sites": sites, "residents": residents})
    assert [p for p, _ in info.value.problems] == [path], info.value.problems


def test_opening_days_accept_all_like_a_daycare_schedule() -> None:
    """``opening_days: all`` is every day, as ``daycare.days: all`` is."""
    from stream.detectors.sitetime import OpeningCalendar, day_of_date

    cfg = parse_config(
        {
            "sites": {"c": {"opening_hours": "08:00-17:00", "opening_days": "all"}},
            "residents": {"r1": {"daycare": {"site": "c", "days": "all", "by": "09:30"}}},
        }
    )
    calendar = OpeningCalendar(cfg.site("c").raw, "c")
    sunday = day_of_date(date(2026, 3, 8))
    assert [calendar.span(sunday + i) for i in range(7)] == [(480, 1020)] * 7
    assert calendar.is_open(sunday, 9 * 60)
    # Another word is still refused, at its path (not read as a list of letters).
    with pytest.raises(ConfigProblems) as info:
        parse_config({"sites": {"c": {"opening_days": "weekdays"}}})
    assert [p for p, _ in info.value.problems] == ["sites.c.opening_days"]
    assert "or 'all'" in info.value.problems[0][1]


def test_check_lists_bad_overrides_and_keeps_good_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(
        "sites:\n"
        "  x: {inactivity: {margn: 30m}}\n"
        "  home-1:\n"
        "    capacity: 4\n"
        "    opening_hours: {mon: '08:00-17:00', sat: '09:00-12:00'}\n"
        "    holidays: ['2026-10-01']\n"
        "    devices: {door-1: front_door, pir-2: {placement: kitchen, report_interval: 10m}}\n"
        "    inactivity: {day_cap: 8h, night: '20:00-07:00'}\n"
        "    noshow: {margin: 30m, enabled: false}\n"
        "residents:\n"
        "  r1: {inactivity: {night: '19-08'}}\n"
        "  r2:\n"
        "    home: home-1\n"
        "    lives_alone: true\n"
        "    daycare: {site: home-1, days: [mon, wed], by: '09:30'}\n"
        "    noshow: {min_days: 2}\n"
        "    some_fact_for_a_plugin: {anything: 1}\n"
    )
    assert main(["--check", str(path)]) == 1
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines()]
    assert lines[0] == f"{path}: 2 problem(s)", err
    problems = lines[1:3]
    assert [p.partition(":")[0] for p in problems] == [
        "sites.x.inactivity.margn",
        "residents.r1.inactivity.night",
    ], err
    assert "unknown option (allowed: " in problems[0]
    # A key no configured detector declares is a warning, listed after the problems.
    assert lines[3] == f"{path}: 1 warning(s), not problems", err
    assert lines[4].startswith("WARNING residents.r2.some_fact_for_a_plugin: unknown key"), err
    assert len(lines) == 5, err


def test_site_option_sections_merge_with_star_key_by_key(tmp_path: Path) -> None:
    """ "*" < site < resident, option by option: a site's own inactivity: keeps the
    "*" margin it does not set (the resident's options are laid over both by the
    detector)."""
    from stream.processor import Processor
    from stream.state import StateStore

    cfg = parse_config(
        {
            "sites": {
                "*": {"inactivity": {"margin": "30m"}, "noshow": {"margin": "1h"}, "capacity": 9},
                "a": {"inactivity": {"day_cap": "8h"}, "capacity": 4},
                "b": {"inactivity": None},  # an empty "inactivity:" line sets nothing
            }
        }
    )
    assert cfg.site("a").raw["inactivity"] == {"margin": "30m", "day_cap": "8h"}
    assert cfg.site("a").raw["noshow"] == {"margin": "1h"}
    assert cfg.site("b").raw["inactivity"] == {"margin": "30m"}
    assert cfg.site("a").raw["capacity"] == 4  # other keys: the site's replaces "*"
    store = StateStore(tmp_path / "s.sqlite")
    try:
        ctx = Processor(cfg, store, ManualClock(0), []).ctx
    finally:
        store.close()
    assert ctx.site_config("a")["inactivity"] == {"margin": "30m", "day_cap": "8h"}


# --- keys nobody reads under a site or a resident are warnings --------------------------------


class DoorState(msgspec.Struct):
    """State of the plugged-in detector below (it never changes)."""

    seen: int = 0


class DoorLeftOpen(Detector[DoorState]):
    """A plugged-in detector reading keys of its own under sites and residents."""

    name: ClassVar[str] = "door_left_open"
    state_type: ClassVar[type[msgspec.Struct]] = DoorState
    site_keys: ClassVar[frozenset[str]] = frozenset({"door_open_limit"})
    resident_keys: ClassVar[frozenset[str]] = frozenset({"wanders"})

    def key(self, event: Event) -> str | None:
        return None

    def initial_state(self, key: str) -> DoorState:
        return DoorState()

    def step(
        self, state: DoorState, event: Event, ctx: DetectorContext
    ) -> tuple[DoorState, list[AlertSignal]]:
        return state, []


class GateLeftOpen(DoorLeftOpen):
    """Made by the factory below, which declares the keys for it."""

    name: ClassVar[str] = "gate_left_open"
    site_keys: ClassVar[frozenset[str]] = frozenset()
    resident_keys: ClassVar[frozenset[str]] = frozenset()


def door_rules() -> list[Detector[Any]]:
    """A factory function declaring the keys it reads on itself."""
    return [GateLeftOpen()]


door_rules.site_keys = frozenset({"gate_ids"})  # type: ignore[attr-defined]


def _review(tmp_path: Path, data: dict[str, Any]) -> tuple[list[str], list[str]]:
    from stream.config import review_config

    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump(data))
    review = review_config(path)
    return review.problems, review.warnings


def test_unknown_site_and_resident_keys_are_warnings_with_a_suggestion(
    tmp_path: Path,
) -> None:
    problems, warnings = _review(
        tmp_path,
        {
            "sites": {
                "*": {"timezne": "UTC"},
                "center-01": {"type": "center", "capcity": 30, "opening_hours": "08:00-17:00"},
            },
            "residents": {"r1": {"lives_alon": True, "home": "h1", "favourite_colour": "blue"}},
        },
    )
    assert problems == []
    paths = {w.partition(":")[0]: w for w in warnings}
    assert set(paths) == {
        "sites.*.timezne",
        "sites.center-01.capcity",
        "residents.r1.lives_alon",
        "residents.r1.favourite_colour",
    }, warnings
    assert paths["sites.center-01.capcity"].endswith("did you mean 'capacity'?")
    assert paths["sites.*.timezne"].endswith("did you mean 'timezone'?")
    assert paths["residents.r1.lives_alon"].endswith("did you mean 'lives_alone'?")
    assert "did you mean" not in paths["residents.r1.favourite_colour"]
    assert "site_keys" in paths["sites.center-01.capcity"]
    assert "resident_keys" in paths["residents.r1.lives_alon"]


def test_keys_a_configured_detector_declares_are_not_warnings(tmp_path: Path) -> None:
    sites = {"c1": {"door_open_limit": "10m", "gate_ids": [1], "door_open_limt": "5m"}}
    residents = {"r1": {"wanders": True, "door_open_limit": "5m"}}
    detectors = {
        "doors": {"class": "tests.stream.test_config:DoorLeftOpen"},
        "gates": {"class": "tests.stream.test_config:door_rules"},
    }
    problems, warnings = _review(
        tmp_path, {"detectors": detectors, "sites": sites, "residents": residents}
    )
    assert problems == []
    # Declared for sites, not for residents; a misspelt declared key is matched too.
    assert [w.partition(":")[0] for w in warnings] == [
        "sites.c1.door_open_limt",
        "residents.r1.door_open_limit",
    ], warnings
    assert warnings[0].endswith("did you mean 'door_open_limit'?")
    # Without the plug-ins configured, their keys are read by nothing.
    _, warnings = _review(tmp_path, {"sites": sites, "residents": residents})
    assert len(warnings) == 5, warnings


def test_check_with_only_warnings_passes_and_marks_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("sites:\n  center-01: {type: center, capcity: 30}\n")
    assert main(["--check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK\n"
    assert err.splitlines() == [
        f"{path}: 1 warning(s), not problems",
        "  WARNING sites.center-01.capcity: unknown key, nothing reads it (a plugged-in "
        "detector declares the keys it reads in site_keys); did you mean 'capacity'?",
    ]
    assert main(["--check", str(SAMPLE)]) == 0
    assert capsys.readouterr().err == ""  # the sample has no unknown keys


async def test_unknown_keys_are_logged_when_the_processor_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stream.runtime import StreamService

    config = parse_config(
        {
            "state": {"path": str(tmp_path / "s.sqlite")},
            "api": {"enabled": False},
            "sites": {"center-01": {"type": "center", "capcity": 30}},
            "residents": {"r1": {"wanders": True}},
        },
        file="stream.yaml",
    )
    with caplog.at_level(logging.WARNING, logger="stream.runtime"):
        service = StreamService(config, detectors=[DoorLeftOpen()])
    await service.close()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 1, logged
    assert logged[0].startswith("stream.yaml: sites.center-01.capcity: unknown key")
    assert logged[0].endswith("did you mean 'capacity'?")
