"""Detector timers wait while ingest is down or catching up with the broker's backlog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.clock import ManualClock
from stream.config import parse_config
from stream.runtime import CATCHUP_MAX_S, CATCHUP_QUIET_S, StreamService
from tests.stream.helpers import T0


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StreamService]:
    config = parse_config(
        {
            "mqtt": {"url": "mqtt://127.0.0.1:9"},
            "state": {"path": str(tmp_path / "s.sqlite"), "synchronous": "normal"},
            "api": {"enabled": False},
            "detectors": {"alarm": {"fall": False}},
        }
    )
    svc = StreamService(config, clock=ManualClock(T0))
    yield svc
    svc.store.close()


def test_timers_wait_for_the_link_and_the_backlog(
    service: StreamService, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr("stream.runtime.time.monotonic", clock)
    assert not service.detectors_live()  # never connected: silence means nothing
    service._mqtt_state(True)
    assert not service.detectors_live()  # just connected: the backlog comes first
    # Queued messages keep arriving: still catching up.
    for _ in range(3):
        clock.now += CATCHUP_QUIET_S / 2
        service._last_message = clock.now
        assert not service.detectors_live()
    clock.now += CATCHUP_QUIET_S
    assert service.detectors_live()  # a quiet second: caught up
    clock.now += 1
    service._last_message = clock.now
    assert service.detectors_live()  # live traffic afterwards does not pause timers
    service._mqtt_state(False)
    assert not service.detectors_live()  # the central broker is gone: hold timers


def test_a_steady_load_does_not_hold_timers_forever(
    service: StreamService, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr("stream.runtime.time.monotonic", clock)
    service._mqtt_state(True)
    while clock.now < 1000.0 + CATCHUP_MAX_S:
        clock.now += 0.1
        service._last_message = clock.now
    assert service.detectors_live()
