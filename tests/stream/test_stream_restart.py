"""The stream processor killed with SIGKILL mid-run: every press notified exactly once per
recipient, escalations (timers) intact across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stream.restart_scenario import run_scenario, summary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(240)
async def test_sigkill_during_scripted_run(mosquitto: Any, tmp_path: Path) -> None:
    result = await run_scenario(
        mosquitto.host, mosquitto.port, tmp_path, presses=12, kills=3, speed=60.0
    )
    info = summary(result)
    assert result.kills == 3, info
    assert result.lost == 0, info
    assert result.duplicates == 0, info
    assert result.notified == 12, info
    assert result.escalated == 12, info
    assert result.escalation_duplicates == 0, info
    assert result.details["unexpected"] == [], info
    assert result.open_alerts == 12, info  # unacknowledged alerts stay open
    assert result.pending_outbox == 0, info
    assert result.details["sigterm_exit"] == 0, info
