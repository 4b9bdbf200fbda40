"""``carewatch replay``: CSV in, alerts out as JSON lines, with a simulated clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from device_profiles.events import Event
from stream.context import ConfigContext
from stream.detectors.base import AlertSignal, Detector, DetectorContext, Severity
from stream.replay import OfflineRunner, main, run_offline

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from inactivity_sim import generate  # type: ignore[import-not-found]  # noqa: E402

HEADER = "time,resident,device,kind,value,placement\n"


def replay(
    tmp_path: Path, csv_text: str, *args: str, config: str | None = None, capsys: Any
) -> tuple[int, list[dict[str, Any]], str]:
    events = tmp_path / "events.csv"
    events.write_text(csv_text, encoding="utf-8")
    argv = ["--events", str(events), *args]
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_text(config, encoding="utf-8")
        argv += ["--config", str(path)]
    code = main(argv)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def test_silence_after_the_last_event_is_judged_until(tmp_path: Path, capsys: Any) -> None:
    csv_text = HEADER + (
        "2024-03-05T09:40:00,r1,pir-1,motion,1,kitchen\n"
        "2024-03-05T09:45:00,r1,door-1,door,1,front_door\n"
        "2024-03-05T09:46:00,r1,door-1,door,0,front_door\n"
        "2024-03-05T10:10:00,r1,pir-1,motion,1,kitchen\n"
    )
    config = "site: home-7\ntimezone: Asia/Shanghai\n"
    code, lines, _ = replay(tmp_path, csv_text, config=config, capsys=capsys)
    assert code == 0 and lines == []  # the clock stops at the last event by default
    code, lines, _ = replay(
        tmp_path, csv_text, "--until", "2024-03-05T20:00", config=config, capsys=capsys
    )
    assert code == 0
    [alert] = lines
    assert alert["time"] == "2024-03-05T16:10:00+08:00"  # 10:10 + the 6 h default by day
    assert alert["kind"] == "inactivity" and alert["resident"] == "r1"
    assert alert["severity"] == "high" and alert["site"] == "home-7"
    assert alert["reason"].startswith("no door or motion activity at home since 10:10 (6 h)")


def test_malformed_rows_are_named_counted_and_skipped(tmp_path: Path, capsys: Any) -> None:
    csv_text = HEADER + (
        "2024-03-05T09:00:00Z,r1,pir-1,motion,1,kitchen\n"
        "yesterday,r1,pir-1,motion,1,kitchen\n"
        "2024-03-05T09:10:00Z,r1,door-1,door,maybe,front_door\n"
        "2024-03-05T09:20:00Z,r1,pir-1,teleport,1,kitchen\n"
        "2024-03-05T09:30:00Z,r1,,motion,1,kitchen\n"
        "2024-03-05T09:40:00Z,r1,pir-1,motion,1,kitchen,extra\n"
        "2024-03-05T09:50:00Z,r1,button-1,button,,\n"
    )
    code, lines, err = replay(tmp_path, csv_text, capsys=capsys)
    assert code == 0
    assert "line 3, column 'time'" in err
    assert "line 4, column 'value'" in err
    assert "line 5, column 'kind'" in err
    assert "line 6, column 'device'" in err
    assert "line 7, column '7'" in err
    assert "5 malformed rows skipped" in err
    # The good rows still ran: the SOS press is an emergency at once.
    assert [(a["kind"], a["severity"]) for a in lines] == [("emergency", "critical")]
    assert lines[0]["time"] == "2024-03-05T09:50:00+00:00"


def test_bad_header_and_config_exit_2(tmp_path: Path, capsys: Any) -> None:
    code, _, err = replay(tmp_path, "when,who\n1,2\n", capsys=capsys)
    assert code == 2 and "header must name" in err
    code, _, err = replay(tmp_path, HEADER, config="sites: [1, 2]\n", capsys=capsys)
    assert code == 2 and "sites" in err
    code, _, err = replay(tmp_path, HEADER, "--until", "soon", capsys=capsys)
    assert code == 2 and "--until" in err


def test_a_csv_that_is_not_utf8_exits_2(tmp_path: Path, capsys: Any) -> None:
    events = tmp_path / "events.csv"
    events.write_bytes(HEADER.encode() + "2024-03-05T08:00,müller,m1,motion,1,\n".encode("latin-1"))
    assert main(["--events", str(events)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("carewatch replay: ")
    assert str(events) in err and "not UTF-8" in err


@pytest.mark.parametrize(
    ("detectors", "where"),
    [
        ("{alarm: {fall_severity: loud}}", "detectors.alarm"),
        ("{alarm: {no_such_option: 1}}", "detectors.alarm"),
        ("{inactivity: {quantile: 2}}", "detectors.inactivity"),
        ("{operations: {occupancy: {no_such_option: 1}}}", "detectors.operations"),
        ("{operations: {occupancy: {hysteresis: 2}}}", "detectors.operations.occupancy"),
        ("{operations: {crowds: {}}}", "detectors.operations"),
    ],
)
def test_bad_detector_options_name_the_file_and_key(
    tmp_path: Path, capsys: Any, detectors: str, where: str
) -> None:
    config = f"detectors: {detectors}\n"
    code, _, err = replay(tmp_path, HEADER, config=config, capsys=capsys)
    assert code == 2
    assert err.startswith(f"carewatch replay: {tmp_path / 'config.yaml'}:{where}")


def test_noshow_and_crowding_from_a_log(tmp_path: Path, capsys: Any) -> None:
    rows = [HEADER]
    # Three weeks of Monday check-ins at 09:00, then a Monday without.
    for week in range(3):
        rows.append(f"2026-01-{5 + 7 * week:02d}T09:00:00,m1,face-1,checkin,,\n")
    rows.append("2026-01-26T08:30:00,,counter-1,footfall,12/0,entrance\n")
    rows.append("2026-01-26T12:00:00,,counter-1,footfall,0/12,entrance\n")
    config = (
        "site: {id: center-1, timezone: Asia/Shanghai, capacity: 10,\n"
        "       opening_hours: '08:00-17:00', opening_days: [mon, tue, wed, thu, fri]}\n"
        "residents: {m1: {lives_alone: true}}\n"
    )
    code, lines, err = replay(tmp_path, "".join(rows), "--clears", config=config, capsys=capsys)
    assert code == 0, err
    got = [(a["time"], a["kind"], a["action"]) for a in lines]
    assert ("2026-01-26T08:30:00+08:00", "crowding", "raise") in got
    assert ("2026-01-26T09:45:00+08:00", "noshow", "raise") in got
    assert ("2026-01-26T12:00:00+08:00", "crowding", "clear") in got
    noshow = next(a for a in lines if a["kind"] == "noshow")
    assert noshow["severity"] == "high" and noshow["resident"] == "m1"
    crowding = next(a for a in lines if a["kind"] == "crowding")
    assert crowding["audience"] == "operations"


def test_generated_history_collapse_detected_few_false_alarms(tmp_path: Path, capsys: Any) -> None:
    """Six weeks of one synthetic resident with a daytime collapse on the last day."""
    history = generate("r7", seed=7007, days=42, collapse_day=41)
    assert history.collapse is not None and history.habits is not None
    path = tmp_path / "history.csv"
    history.write_csv(str(path))
    until = "2024-04-16T12:00:00+08:00"  # a day after the end of the history
    code = main(["--events", str(path), "--until", until, "--config", _tz_config(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    alerts = [json.loads(line) for line in captured.out.splitlines()]
    inactivity = [a for a in alerts if a["kind"] == "inactivity"]
    from datetime import datetime

    times = [datetime.fromisoformat(a["time"]).timestamp() * 1000 for a in inactivity]
    false = [t for t in times if t < history.collapse]
    detected = [t for t in times if t >= history.collapse]
    assert len(false) <= 4  # 41 days: the target rate (0.05/day) allows 2
    assert detected and detected[0] - history.collapse <= 6 * 3_600_000


def _tz_config(tmp_path: Path) -> str:
    path = tmp_path / "tz.yaml"
    path.write_text("timezone: Asia/Shanghai\n", encoding="utf-8")
    return str(path)


def test_command_line_entry_point(tmp_path: Path) -> None:
    events = tmp_path / "e.csv"
    events.write_text(HEADER + "2024-03-05T09:00:00Z,r1,b-1,button,,\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "carewatch.cli", "replay", "--events", str(events)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    assert json.loads(line)["kind"] == "emergency"


# --- the offline runner -----------------------------------------------------------------
class Timer(msgspec.Struct):
    due: int = 0
    fired: list[int] = msgspec.field(default_factory=list)


class TimerDetector(Detector[Timer]):
    """Each event sets a timer ``values.after`` ms later; the timer raises when it fires."""

    name: ClassVar[str] = "timer"
    state_type: ClassVar[type[msgspec.Struct]] = Timer

    def key(self, event: Event) -> str | None:
        return event.device

    def initial_state(self, key: str) -> Timer:
        return Timer()

    def step(
        self, state: Timer, event: Event, ctx: DetectorContext
    ) -> tuple[Timer, list[AlertSignal]]:
        after = event.values.get("after")
        assert isinstance(after, int)
        state.due = event.time + after
        return state, []

    def deadline(self, state: Timer) -> int | None:
        return state.due or None

    def tick(self, state: Timer, now: int, ctx: DetectorContext) -> tuple[Timer, list[AlertSignal]]:
        state.fired.append(now)
        state.due = 0
        return state, [AlertSignal("timer", "x", "s", now, Severity.INFO, "fired")]


def _ev(device: str, t: int, after: int) -> Event:
    return Event(
        gateway="g",
        seq=t,
        time=1_700_000_000_000 + t,
        received=1_700_000_000_000 + t,
        site="s",
        device=device,
        kind="k",
        reading="r",
        values={"after": after},
    )


def test_runner_ticks_in_deadline_order_at_their_own_time() -> None:
    events = [_ev("a", 0, 500), _ev("b", 100, 200), _ev("c", 1000, 10), _ev("a", 2000, 5)]
    alerts = list(run_offline(events, [TimerDetector()], ConfigContext(), until=1_700_000_005_000))
    assert [a.time - 1_700_000_000_000 for a in alerts] == [300, 500, 1010, 2005]


def test_runner_event_at_the_deadline_comes_first() -> None:
    runner = OfflineRunner([TimerDetector()], ConfigContext())
    assert runner.feed(_ev("a", 0, 100)) == []
    # The event at the deadline resets the timer before it fires.
    assert runner.feed(_ev("a", 100, 100)) == []
    assert [a.time for a in runner.advance(1_700_000_000_200)] == [1_700_000_000_200]
    assert runner.next_deadline() is None


def test_runner_survives_a_failing_detector() -> None:
    class Broken(TimerDetector):
        def step(
            self, state: Timer, event: Event, ctx: DetectorContext
        ) -> tuple[Timer, list[AlertSignal]]:
            raise RuntimeError("bug")

    runner = OfflineRunner([Broken(), TimerDetector()], ConfigContext())
    runner.feed(_ev("a", 0, 10))
    assert runner.errors == 1
    assert len(runner.advance(1_700_000_001_000)) == 1


@pytest.mark.parametrize("value", ["1", "0"])
def test_gateway_rows_become_status_events(tmp_path: Path, capsys: Any, value: str) -> None:
    csv_text = HEADER + (
        "2024-03-05T09:00:00Z,r1,pir-1,motion,1,kitchen\n"
        f"2024-03-05T09:30:00Z,,replay-gw,gateway,{value},\n"
        "2024-03-05T18:00:00Z,,other,tamper,0,\n"
    )
    code, lines, _ = replay(tmp_path, csv_text, capsys=capsys)
    assert code == 0
    kinds = sorted(a["kind"] for a in lines)
    # Offline: the gateway alert, and no inactivity alarm (the resident is unknown).
    assert kinds == (["inactivity"] if value == "1" else ["gateway_offline"])


def test_until_before_the_last_event_stops_the_replay_there(tmp_path: Path, capsys: Any) -> None:
    csv_text = HEADER + (
        "2024-03-05T10:10:00,r1,pir-1,motion,1,kitchen\n2024-03-05T22:00:00,r1,button-1,button,1,\n"
    )
    config = "site: home-7\ntimezone: Asia/Shanghai\n"
    code, lines, _ = replay(tmp_path, csv_text, config=config, capsys=capsys)
    # The silence from 10:10 is judged on the way (16:10), then the press at 22:00.
    assert code == 0 and [a["kind"] for a in lines] == ["inactivity", "emergency"]
    code, lines, _ = replay(
        tmp_path, csv_text, "--until", "2024-03-05T20:00", config=config, capsys=capsys
    )
    # Judged up to 20:00 only: the silence, not the press after it.
    assert code == 0 and [a["kind"] for a in lines] == ["inactivity"]


# --- what is printed: new alerts, severity upgrades, clears ---------------------------------
def _sig(
    minute: int, severity: Severity, action: str = "raise", subject: str = "r1"
) -> AlertSignal:
    return AlertSignal(
        "emergency",
        "r1",
        "s",
        1_700_000_000_000 + minute * 60_000,
        severity,
        f"{severity} at minute {minute}",
        action="clear" if action == "clear" else "raise",
        resident="r1",
    )


UPGRADE_CASES = [
    ("a repeat at the same severity is not printed", [(0, "high"), (1, "high")], [(0, None)]),
    (
        "a higher severity is printed as an update",
        [(0, "high"), (2, "critical")],
        [(0, None), (2, "severity")],
    ),
    (
        "a lower severity after a higher one is not",
        [(0, "high"), (2, "critical"), (3, "high"), (4, "critical")],
        [(0, None), (2, "severity")],
    ),
    (
        "after a clear, a raise is a new alert",
        [(0, "critical"), (1, "clear"), (2, "warning"), (3, "high")],
        [(0, None), (2, None), (3, "severity")],
    ),
]


@pytest.mark.parametrize(
    ("signals", "expected"), [c[1:] for c in UPGRADE_CASES], ids=[c[0] for c in UPGRADE_CASES]
)
def test_replay_prints_severity_upgrades(
    signals: list[tuple[int, str]], expected: list[tuple[int, str | None]]
) -> None:
    from datetime import UTC, datetime

    from stream.detectors.sitetime import LocalTime
    from stream.replay import AlertLines

    printer = AlertLines(LocalTime(UTC))
    alerts = [
        _sig(m, Severity.HIGH, "clear") if s == "clear" else _sig(m, Severity(s))
        for m, s in signals
    ]
    lines = [json.loads(line) for line in printer.lines(alerts)]
    base = 1_700_000_000_000
    got = [
        (
            round((datetime.fromisoformat(line["time"]).timestamp() * 1000 - base) / 60_000),
            line["update"],
        )
        for line in lines
    ]
    assert got == expected
    for line in lines:  # the contract fields are all there, updates included
        assert {"time", "kind", "action", "resident", "severity", "reason"} <= set(line)
        assert line["action"] == "raise"


class Escalating(TimerDetector):
    """Raises a fall (HIGH) on an event and makes it CRITICAL when its timer fires."""

    def step(
        self, state: Timer, event: Event, ctx: DetectorContext
    ) -> tuple[Timer, list[AlertSignal]]:
        state.due = event.time + 120_000
        return state, [self._signal(event.time, Severity.HIGH, "fall detected")]

    def tick(self, state: Timer, now: int, ctx: DetectorContext) -> tuple[Timer, list[AlertSignal]]:
        state.due = 0
        return state, [self._signal(now, Severity.CRITICAL, "fall, and no movement after it")]

    @staticmethod
    def _signal(t: int, severity: Severity, reason: str) -> AlertSignal:
        return AlertSignal("emergency", "r1", "replay", t, severity, reason, resident="r1")


def test_replay_command_prints_the_upgrade_line(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stream.replay

    monkeypatch.setattr(stream.replay, "default_detectors", lambda options: [Escalating()])
    csv_text = HEADER + "2024-03-05T09:00:00Z,r1,pendant-1,pendant,3,\n"
    code, lines, _ = replay(tmp_path, csv_text, "--until", "2024-03-05T10:00Z", capsys=capsys)
    assert code == 0
    assert [(a["time"], a["severity"], a["update"], a["reason"]) for a in lines] == [
        ("2024-03-05T09:00:00+00:00", "high", None, "fall detected"),
        ("2024-03-05T09:02:00+00:00", "critical", "severity", "fall, and no movement after it"),
    ]
    assert all(a["kind"] == "emergency" and a["resident"] == "r1" for a in lines)


@pytest.mark.parametrize(
    ("detectors", "where"),
    [
        ("{alarm: {scorer: x}}", "detectors.alarm.scorer"),
        ("{alarm: {fall_threshold: high}}", "detectors.alarm.fall_threshold"),
        ("{noshow: {min_days: 2.5}}", "detectors.noshow.min_days"),
    ],
)
def test_replay_refuses_the_options_the_stream_config_refuses(
    tmp_path: Path, capsys: Any, detectors: str, where: str
) -> None:
    config = f"detectors: {detectors}\n"
    code, _, err = replay(tmp_path, HEADER, config=config, capsys=capsys)
    assert code == 2, err
    assert err.startswith(f"carewatch replay: {tmp_path / 'config.yaml'}:{where}: "), err


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ("residents: {r1: {inactivity: {night: '19-08'}}}\n", "residents.r1.inactivity.night"),
        ("sites: {replay: {inactivity: {margn: 30m}}}\n", "sites.replay.inactivity.margn"),
        ("site: {id: c-1, capacity: forty}\n", "sites.c-1.capacity"),
        ("sites: {'*': {noshow: {min_days: 2.5}}}\n", "sites.*.noshow.min_days"),
    ],
)
def test_replay_refuses_the_site_and_resident_settings_the_stream_config_refuses(
    tmp_path: Path, capsys: Any, config: str, where: str
) -> None:
    code, _, err = replay(tmp_path, HEADER, config=config, capsys=capsys)
    assert code == 2, err
    assert err.startswith(f"carewatch replay: {tmp_path / 'config.yaml'}:{where}: "), err


def test_replay_warns_about_keys_nothing_reads_and_runs_on(tmp_path: Path, capsys: Any) -> None:
    config = (
        "site: {id: c-1, type: center, capcity: 30}\n"
        "sites: {c-2: {opening_hour: '08:00-17:00'}}\n"
        "residents: {r1: {lives_alon: true, home: c-1}}\n"
    )
    rows = HEADER + "2024-03-04T08:00:00,r1,d1,door,1,kitchen\n"
    code, _, err = replay(tmp_path, rows, config=config, capsys=capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    prefix = f"carewatch replay: {tmp_path / 'config.yaml'}: WARNING "
    assert all(line.startswith(prefix) for line in warnings), warnings
    said = {line[len(prefix) :].split(":")[0]: line for line in warnings}
    assert set(said) == {"site.capcity", "sites.c-2.opening_hour", "residents.r1.lives_alon"}
    assert said["site.capcity"].endswith("did you mean 'capacity'?")
    assert said["residents.r1.lives_alon"].endswith("did you mean 'lives_alone'?")


def test_replay_context_gives_star_settings_to_sites_not_listed() -> None:
    """Like the live processor: a daycare.site elsewhere gets sites."*" too."""
    from stream.replay import ReplayConfig

    config = ReplayConfig.from_mapping(
        {"site": "home-1", "sites": {"*": {"capacity": 3, "timezone": "Asia/Shanghai"}}}
    )
    ctx = config.context()
    assert ctx.site_config("home-1")["capacity"] == 3
    assert ctx.site_config("center-9")["capacity"] == 3
    assert str(ctx.timezone("center-9")) == "Asia/Shanghai"


def test_star_site_and_resident_options_are_laid_over_each_other(
    tmp_path: Path, capsys: Any
) -> None:
    """ "*" < site < resident, option by option: the site's own inactivity: section
    (a night limit) keeps the day limit of "*"; a resident's own day limit wins."""
    csv_text = HEADER + (
        "2024-03-05T10:10:00,r1,pir-1,motion,1,kitchen\n"
        "2024-03-05T10:10:00,r2,pir-2,motion,1,kitchen\n"
    )
    config = (
        "site: home-7\n"
        "sites:\n"
        "  '*': {timezone: Asia/Shanghai, inactivity: {default_day_limit: 2h}}\n"
        "  home-7: {inactivity: {default_night_limit: 10h}}\n"
        "residents: {r1: {inactivity: {default_day_limit: 3h}}}\n"
    )
    code, lines, err = replay(
        tmp_path, csv_text, "--until", "2024-03-05T20:00", config=config, capsys=capsys
    )
    assert code == 0, err
    got = sorted((a["resident"], a["time"]) for a in lines if a["kind"] == "inactivity")
    assert got == [
        ("r1", "2024-03-05T13:10:00+08:00"),  # the resident's 3 h
        ("r2", "2024-03-05T12:10:00+08:00"),  # the 2 h of "*", not the 6 h default
    ]
