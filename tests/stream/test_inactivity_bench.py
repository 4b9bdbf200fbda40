"""The inactivity quality benchmark and the CASAS converter still run (tiny sizes)."""

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
