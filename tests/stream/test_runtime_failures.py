"""The running processor under failures: transient database errors are waited out, a
loop that really fails stops the processor with an error and a non-zero exit."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from device_profiles.events import encode_batch
from device_profiles.topics import events_topic
from stream.clock import ManualClock
from stream.config import StreamConfig, parse_config
from stream.runtime import StreamService, TaskFailed
from tests.harness.wait import async_wait_for
from tests.stream.helpers import T0, ev


class Lines:
    """A LineWriter that keeps what it is given (or fails like a bug would)."""

    def __init__(self, bug: bool = False) -> None:
        self.lines: list[str] = []
        self.bug = bug

    async def write(self, lines: Sequence[str]) -> None:
        if self.bug:
            raise RuntimeError("writer bug")
        self.lines += lines

    async def close(self) -> None:
        pass


def config_for(tmp_path: Path) -> StreamConfig:
    return parse_config(
        {
            "mqtt": {"url": "mqtt://127.0.0.1:9", "reconnect_max": "1s"},  # nothing there
            "state": {"path": str(tmp_path / "s.sqlite"), "synchronous": "normal"},
            "api": {"enabled": False},
            "telemetry": {"enabled": True, "flush_interval": "50ms"},
            "detectors": {"alarm": {"fall": False}},
            "sites": {"site-a": {"timezone": "UTC", "quiet_hours": False}},
        }
    )


def spool_one_event(service: StreamService) -> None:
    topic = events_topic("site-a", "gw-1")
    assert service.processor.handle_message(topic, encode_batch([ev(1, "heartbeat")])).accepted


async def test_a_failing_loop_stops_the_processor_with_an_error(tmp_path: Path) -> None:
    service = StreamService(config_for(tmp_path), clock=ManualClock(T0), writer=Lines(bug=True))
    spool_one_event(service)
    with pytest.raises(TaskFailed, match="telemetry: RuntimeError: writer bug"):
        await asyncio.wait_for(service.run(), 30)


async def test_a_locked_database_is_waited_out(tmp_path: Path) -> None:
    writer = Lines()
    service = StreamService(config_for(tmp_path), clock=ManualClock(T0), writer=writer)
    spool_one_event(service)
    service.store.db.execute("PRAGMA busy_timeout=20")
    # Another process (a backup, an operator's sqlite3 shell) holds the write lock.
    other = sqlite3.connect(service.store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    task = asyncio.ensure_future(service.run())
    try:

        def retried(loop: str) -> bool:
            return service.metrics.value("carewatch_stream_loop_errors_total", loop=loop) >= 2

        await async_wait_for(lambda: retried("telemetry") and retried("timers"))
        assert not task.done() and writer.lines == []
        other.execute("ROLLBACK")
        await async_wait_for(lambda: len(writer.lines) == 1, message="spool written")
        assert not task.done()
    finally:
        other.close()
        service.request_stop()
    await asyncio.wait_for(task, 20)  # a clean stop: no TaskFailed


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_exits_non_zero_when_the_processor_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logging: None
) -> None:
    from stream.cli import main

    async def failing(config: Any) -> None:
        raise TaskFailed("timers: RuntimeError: bug")

    monkeypatch.setattr("stream.runtime.serve", failing)
    cfg = tmp_path / "stream.yaml"
    cfg.write_text(f"state: {{path: {tmp_path / 's.sqlite'}}}\napi: {{enabled: false}}\n")
    assert main(["--config", str(cfg)]) == 3


@pytest.mark.integration
async def test_a_locked_database_while_messages_arrive_is_counted_shown_and_waited_out(
    tmp_path: Path, mosquitto: Any, topic_prefix: str
) -> None:
    import aiohttp
    import aiomqtt

    root = f"{topic_prefix}/carewatch/v1"
    config = parse_config(
        {
            "mqtt": {"url": mosquitto.url, "client_id": f"cw-{topic_prefix}", "root": root},
            "state": {"path": str(tmp_path / "s.sqlite"), "synchronous": "normal"},
            "api": {"enabled": True, "port": 0},
            "telemetry": {"enabled": False},
            "detectors": {"alarm": {"fall": False}},
            "sites": {"site-a": {"timezone": "UTC", "quiet_hours": False}},
        }
    )
    service = StreamService(config, clock=ManualClock(T0))
    service.store.db.execute("PRAGMA busy_timeout=20")
    task = asyncio.ensure_future(service.run())
    other = sqlite3.connect(service.store.path, isolation_level=None)
    try:
        await async_wait_for(service.link.connected.is_set, message="processor connected")
        base = f"http://127.0.0.1:{service.api.port}"  # type: ignore[union-attr]
        other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(
                events_topic("site-a", "gw-1", root=root),
                encode_batch([ev(1, "heartbeat")]),
                qos=1,
            )

        def failures() -> float:
            return service.metrics.value("carewatch_stream_loop_errors_total", loop="mqtt")

        await async_wait_for(lambda: failures() >= 2, message="mqtt loop retried")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/health") as resp:
            health = await resp.json()
        assert health["status"] == "degraded"
        failing = health["failing_loops"]["mqtt"]
        assert failing["failures"] >= 2
        assert "locked" in failing["last_error"]
        assert not task.done()
        assert service.link.handled == 0

        other.execute("ROLLBACK")
        # The broker redelivers the unacknowledged message after the reconnect.
        await async_wait_for(lambda: service.link.handled == 1, message="message handled")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/health") as resp:
            health = await resp.json()
        assert health["failing_loops"] == {}
        assert service.metrics.value("carewatch_stream_loop_failing_seconds", loop="mqtt") == 0
    finally:
        other.close()
        service.request_stop()
    await asyncio.wait_for(task, 20)  # a clean stop: no TaskFailed
