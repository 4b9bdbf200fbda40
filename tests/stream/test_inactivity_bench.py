"""The inactivity quality benchmark and the CASAS and van Kasteren converters still run."""

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
