"""The inactivity quality benchmark and the CASAS, van Kasteren and MIT PlaceLab converters
still run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_quality_benchmark_prints_its_figures() -> None:
    proc = _run(str(BENCH / "inactivity_quality"), "--residents", "3", "--days", "24", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["synthetic"] is True
    assert summary["collapses"] == 3
    assert summary["detected"] + summary["missed_24h"] == 3
    assert summary["false_alarms_per_resident_day"] is not None


def test_casas_recording_through_converter_and_benchmark(tmp_path: Path) -> None:
    # A few days of a CASAS-style log: motion ON/OFF, a front door, a temperature sensor,
    # and two broken lines.
    lines = []
    for day in range(1, 26):
        for hour in range(7, 22):
            for minute in (5, 25, 45):
                stamp = f"2010-11-{day:02d} {hour:02d}:{minute:02d}:00.123456"
                lines.append(f"{stamp}\tM00{minute % 7}\tON\tRelax begin")
                lines.append(f"{stamp[:-7]}.5 M00{minute % 7} OFF")
        lines.append(f"2010-11-{day:02d} 10:00:00 D001 OPEN")
        lines.append(f"2010-11-{day:02d} 10:00:05 D001 CLOSE")
        lines.append(f"2010-11-{day:02d} 10:01:00 T001 21.5")
    lines += ["garbage", "2010-13-45 00:00:00 M001 ON"]
    data = tmp_path / "data"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = _run(
        str(BENCH / "inactivity_casas_to_csv"),
        str(data),
        "--resident",
        "r1",
        "--front-door",
        "D001",
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 lines skipped" in proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[0] == "time,resident,device,kind,value,placement"
    assert "2010-11-01T07:05:00,r1,M005,motion,1," in rows
    assert "2010-11-01T10:00:00,r1,D001,door,1,front_door" in rows
    assert not any(",T001," in r for r in rows)
    csv_file = tmp_path / "casas.csv"
    csv_file.write_text(proc.stdout, encoding="utf-8")
    proc = _run(
        str(BENCH / "inactivity_quality"),
        "--csv",
        str(csv_file),
        "--timezone",
        "America/Los_Angeles",
        "--cuts",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["synthetic"] is False and result["malformed_rows"] == 0
    assert result["simulated_collapses"] == 3
    assert result["missed_24h"] == 0
    # Motion every 20 min from 07:00 to 21:45: a cut is noticed within the minimum limit.
    assert result["ttd_mean_h"] <= 2.0


KASTEREN_HEADER = """Start time: Time sensor started firing\r
End time: Time sensor stopped firing\r
ID: sensor id (see list below)\r
val: value of sensor (always 1)\r
\r
Sensor IDs are: \r
    [ 1]    'Microwave'         \r
    [ 5]    'Hall-Toilet door'  \r
    [ 8]    'Fridge'            \r
    [12]    'Frontdoor'         \r
    [24]    'Hall-Bedroom door' \r
\r
Start time          \tEnd time            \tID\tVal\r
--------------------\t--------------------\t--\t---\r
"""


def test_kasteren_recording_through_converter_and_benchmark(tmp_path: Path) -> None:
    # Three weeks of a van Kasteren-style log (CRLF, as the published file): a firing is a
    # switch held open from start to end; out 09:00-17:00 on weekdays by the front door.
    lines = []
    for day in range(1, 22):
        date = f"{day:02d}-Mar-2008"

        def fire(start: str, end: str, sensor: int, on: str = date) -> None:
            lines.append(f"{on} {start}\t{on} {end}\t{sensor}\t1")

        fire("07:00:00", "07:00:04", 24)
        for minute in range(5, 60, 15):
            fire(f"07:{minute:02d}:00", f"07:{minute:02d}:09", 8)
        fire("08:00:00", "08:45:00", 5)  # a door left open 45 min
        if day % 7 not in (1, 2):
            fire("09:00:00", "09:00:03", 12)
            fire("17:00:00", "17:00:03", 12)
        for hour in range(17, 23):
            fire(f"{hour}:10:00", f"{hour}:10:30", 1)
            fire(f"{hour}:40:00", f"{hour}:40:02", 8)
    lines += ["32-Mar-2008 00:00:00\t32-Mar-2008 00:00:01\t8\t1"]
    lines += ["05-Mar-2008 10:00:05\t05-Mar-2008 10:00:01\t8\t1", "Length: 999"]
    data = tmp_path / "kasterenSenseData.txt"
    data.write_bytes((KASTEREN_HEADER + "\r\n".join(lines) + "\r\n").encode())
    proc = _run(str(BENCH / "inactivity_kasteren_to_csv"), str(data), "--resident", "k1")
    assert proc.returncode == 0, proc.stderr
    assert "2 lines skipped" in proc.stderr  # a 32nd of March, an end before the start
    rows = proc.stdout.splitlines()
    assert rows[0] == "time,resident,device,kind,value,placement"
    assert rows[1:3] == [
        "2008-03-01T07:00:00,k1,hall-bedroom-door,door,1,bedroom",
        "2008-03-01T07:00:04,k1,hall-bedroom-door,door,0,bedroom",
    ]
    # Sorted by time: the toilet door opened at 08:00 closes at 08:45, after the fridge.
    assert rows.index("2008-03-03T08:45:00,k1,hall-toilet-door,door,0,bathroom") > rows.index(
        "2008-03-03T08:00:00,k1,hall-toilet-door,door,1,bathroom"
    )
    assert "2008-03-03T09:00:00,k1,frontdoor,door,1,front_door" in rows
    assert "2008-03-03T17:10:00,k1,microwave,door,1,kitchen" in rows
    assert len(rows) == 1 + 2 * len(lines[:-3])
    moved = _run(str(BENCH / "inactivity_kasteren_to_csv"), str(data), "--placement", "1=fridge")
    assert "2008-03-03T17:10:00,resident,microwave,door,1,fridge" in moved.stdout.splitlines()
    bad = _run(str(BENCH / "inactivity_kasteren_to_csv"), str(data), "--placement", "oven")
    assert bad.returncode == 2 and "expected ID=PLACE" in bad.stderr
    csv_file = tmp_path / "kasteren.csv"
    csv_file.write_text(proc.stdout, encoding="utf-8")
    proc = _run(
        str(BENCH / "inactivity_quality"),
        *("--csv", str(csv_file), "--timezone", "Europe/Amsterdam"),
        *("--cuts", "4", "--learn-days", "14"),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["synthetic"] is False and result["learn_days"] == 14
    assert result["simulated_collapses"] == 4 and result["missed_24h"] == 0
    assert result["alarms_after_learning"] <= result["inactivity_alarms"]


MIT_ROWS = ("51,Kitchen,Door", "74,Kitchen,Refrigerator", "85,Hallway,Door", "100,Bathroom,Sink")
MIT_SENSORS = "".join(f"{row}\r\n" for row in MIT_ROWS)


def _mit_block(activity: str, day: str, span: str, firings: list[tuple[int, str, str]]) -> str:
    """Five CRLF lines: the activity, then sensor ids, objects, activations, deactivations."""
    objects = {51: "Door", 74: "Refrigerator", 85: "Door", 100: "Sink"}
    return "\r\n".join(
        [
            f"{activity},{day},{span}",
            ",".join(str(s) for s, _, _ in firings),
            ",".join(objects[s] for s, _, _ in firings),
            ",".join(on for _, on, _ in firings),
            ",".join(off for _, _, off in firings),
        ]
    )


def test_mit_placelab_subject_through_the_converter(tmp_path: Path) -> None:
    blocks = [
        # the same fridge firing under two overlapping activities: kept once
        _mit_block("Preparing breakfast", "4/30/2003", "6:0:0,6:30:0", [(74, "6:5:7", "6:5:9")]),
        _mit_block("Taking medication", "4/30/2003", "6:4:0,6:10:0", [(74, "6:5:7", "6:5:9")]),
        # a day past the month's end is the next month's first; a door closed after midnight
        _mit_block("Going out", "4/31/2003", "23:50:0,23:59:0", [(85, "23:55:0", "0:20:3")]),
        # a firing just before the activity's start, across midnight: the day before
        _mit_block("Toileting", "5/2/2003", "0:1:0,0:9:0", [(100, "23:59:58", "0:0:4")]),
        # malformed: three ids, two activations
        "Cleaning,5/2/2003,9:0:0,9:30:0\r\n51,74,100\r\nDoor,Refrigerator,Sink\r\n"
        "9:1:0,9:2:0\r\n9:1:5,9:2:5",
        _mit_block("Cleaning", "13/2/2003", "9:0:0,9:30:0", [(51, "9:1:0", "9:1:5")]),
    ]
    subject = tmp_path / "subject2"
    subject.mkdir()
    (subject / "sensors.csv").write_text(MIT_SENSORS, encoding="utf-8", newline="")
    data = "\r\n".join(blocks) + "\r\n"
    (subject / "activities_data.csv").write_text(data, encoding="utf-8", newline="")
    conv = str(BENCH / "inactivity_mit_to_csv")
    proc = _run(conv, str(subject), "--resident", "m2", "--placement", "85=front_door")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "time,resident,device,kind,value,placement",
        "2003-04-30T06:05:07,m2,kitchen-refrigerator-74,door,1,fridge",
        "2003-04-30T06:05:09,m2,kitchen-refrigerator-74,door,0,fridge",
        "2003-05-01T23:55:00,m2,hallway-door-85,door,1,front_door",
        "2003-05-01T23:59:58,m2,bathroom-sink-100,door,1,bathroom",
        "2003-05-02T00:00:04,m2,bathroom-sink-100,door,0,bathroom",
        "2003-05-02T00:20:03,m2,hallway-door-85,door,0,front_door",
    ]
    assert "line 21: activity skipped (3 sensors, 2 activations, 2 deactivations)" in proc.stderr
    assert "line 26: activity skipped ('13/2/2003' is not a date m/d/yyyy)" in proc.stderr
    assert "2 activities skipped" in proc.stderr
    # every activation is inside a labelled activity, which cover a sliver of the day
    assert "0 of 3 activations fall outside them" in proc.stderr
    assert "not a complete sensor log" in proc.stderr
    bad = _run(conv, str(subject), "--placement", "front_door")
    assert bad.returncode == 2 and "expected ID=PLACE" in bad.stderr
