"""``carewatch demo``: the whole chain on one machine, played fast."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from carewatch.demo import _parser, run


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_demo_raises_the_expected_emergencies(tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["--workdir", str(tmp_path), "--time-scale", "4", "--linger", "6", "--json"]
    )
    out = io.StringIO()
    await run(args, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    summary = lines[-1]["summary"]
    # Every simulated device reached the central broker through the agent.
    assert set(summary["per_device"]) == {
        "counter-hall",
        "door-wang",
        "motion-wang",
        "face-gate",
        "pendant-wang",
        "pendant-li",
    }, summary
    events = [line["event"] for line in lines if "event" in line]
    presses = [e for e in events if e["reading"] == "press"]
    assert [(p["device"], p["resident"]) for p in presses] == [("pendant-wang", "wang")]
    counts = [e["values"] for e in events if e["reading"] == "counts"]
    assert sum(c["in"] for c in counts) == 12 and sum(c["out"] for c in counts) == 3
    alerts = [line["alert"] for line in lines if "alert" in line]
    emergencies = {a["subject"] for a in alerts if a["condition"] == "emergency"}
    assert {"wang", "li"} <= emergencies, alerts
    assert not [m for m in summary["missing"] if m.startswith("emergency")], summary
    assert (tmp_path / "agent.yaml").is_file() and (tmp_path / "stream.log").is_file()
