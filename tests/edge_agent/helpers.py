"""Helpers for the edge agent's integration tests: configs, a central collector, runners."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import yaml

from device_profiles.events import Event, decode_batch
from device_profiles.profiles import ProfileRegistry
from edge_agent.agent import Agent
from edge_agent.config import load_config
from simulators.zigbee import Zigbee2MqttSimulator

REPO = Path(__file__).resolve().parents[2]


def write_config(
    tmp_path: Path,
    *,
    central: Any,
    root: str,
    devices: list[dict[str, Any]] | None = None,
    site_broker: Any | None = None,
    name: str = "agent.yaml",
    **sections: Any,
) -> Path:
    """An agent config for tests: trusted clock, fast heartbeat, queue in tmp_path."""
    doc: dict[str, Any] = {
        "site": "site-1",
        "gateway": "gw-1",
        "broker": {"url": f"mqtt://{central.host}:{central.port}", "topic_root": root},
        "queue": {"path": str(tmp_path / "queue.db"), "linger": "20ms"},
        "health": {"heartbeat_interval": 1},
        "clock": {"trust": "always"},
        "log_level": "DEBUG",
        "devices": devices or [],
    }
    if site_broker is not None:
        # A persistent session per test: tests share the session broker.
        doc["site_brokers"] = {
            "local": {
                "url": f"mqtt://{site_broker.host}:{site_broker.port}",
                "client_id": f"agent-{uuid.uuid4().hex[:10]}",
            }
        }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def door_config(prefix: str) -> dict[str, object]:
    """The numbered Zigbee2MQTT door (``door-1``) that the fault tests drive."""
    return {
        "id": "door-1",
        "profile": "aqara-mccgq11lm",
        "mqtt": {"address": "hall", "base_topic": f"{prefix}/z2m"},
    }


async def produce(sim: Zigbee2MqttSimulator, n: int) -> None:
    """Publish state message number ``n`` (0 <= n < 25856)."""
    sim.state["battery"], sim.state["linkquality"] = divmod(n, 256)
    await sim.report()


def number(e: Event) -> int | None:
    """The number :func:`produce` put into a door event (None for other events)."""
    if e.reading != "contact" or e.device != "door-1":
        return None
    b, lq = e.values.get("battery"), e.values.get("linkquality")
    assert isinstance(b, int) and isinstance(lq, int)
    return b * 256 + lq


def numbers(col: Collector) -> set[int]:
    """Every door number the collector has seen."""
    return {n for e in col.events if (n := number(e)) is not None}


def door_agent_config(
    tmp_path: Path, central: Any, site_broker: Any, prefix: str, **sections: Any
) -> tuple[Any, str, Path]:
    """(central, topic root, config path) of an agent reading the numbered door."""
    root = f"{prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=central,
        site_broker=site_broker,
        root=root,
        devices=[door_config(prefix)],
        **sections,
    )
    return central, root, cfg


class Collector:
    """A processor stand-in on the central broker: collects events, status and health.

    It keeps a persistent session and reconnects by itself, so it survives broker
    restarts; ``received`` counts every delivery, ``seqs`` the distinct ones.
    """

    def __init__(
        self, broker: Any, root: str, username: str | None = None, password: str | None = None
    ) -> None:
        self.broker = broker
        self.root = root
        self.auth = (username, password)
        self.events: list[Event] = []
        self.status: list[str] = []
        self.health: list[dict[str, Any]] = []
        #: The seqs of each events message, in arrival order (one entry per batch).
        self.batches: list[tuple[int, ...]] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._id = f"collector-{uuid.uuid4().hex[:8]}"
        self.changed = asyncio.Event()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=self._id,
                    clean_session=False,
                    username=self.auth[0],
                    password=self.auth[1],
                ) as client:
                    await client.subscribe(f"{self.root}/#", qos=1)
                    self.connected.set()
                    async for msg in client.messages:
                        topic = str(msg.topic)
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        if topic.endswith("/events"):
                            batch = decode_batch(payload)
                            self.events.extend(batch)
                            self.batches.append(tuple(e.seq for e in batch))
                        elif topic.endswith("/status"):
                            self.status.append(payload.decode())
                        elif topic.endswith("/health"):
                            self.health.append(msgspec.json.decode(payload))
                        self.changed.set()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def sources_up(self) -> bool:
        """The last heartbeat shows every source running."""
        if not self.health:
            return False
        return all(s["state"] == "running" for s in self.health[-1]["sources"].values())

    @property
    def seqs(self) -> set[int]:
        """Distinct sequence numbers received."""
        return {e.seq for e in self.events}

    def first_arrivals(self) -> list[Event]:
        """Events in the order they first arrived (duplicates removed)."""
        seen: set[int] = set()
        out = []
        for e in self.events:
            if e.seq not in seen:
                seen.add(e.seq)
                out.append(e)
        return out

    async def wait_for(
        self, predicate: Callable[[Collector], bool], limit_s: float = 30.0, what: str = ""
    ) -> None:
        """Wait until ``predicate(self)`` holds (fails the test after ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what or predicate}: {len(self.seqs)} seqs, "
                    f"status {self.status[-3:]}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))


@contextlib.asynccontextmanager
async def running_agent(config_path: Path, **agent_kwargs: Any) -> AsyncIterator[Agent]:
    """The agent in this process (stopped cleanly at the end).

    ``agent_kwargs`` go to :class:`Agent` (e.g. ``clock_factory`` for a fake clock).
    """
    agent = Agent(load_config(config_path), **agent_kwargs)
    task = asyncio.create_task(agent.run())
    ready = asyncio.ensure_future(agent.ready.wait())
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    # data flows once every source is subscribed / open
    for _ in range(200):
        if agent.all_sources_up() or task.done():
            break
        await asyncio.sleep(0.05)
    try:
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 30)


class AgentProcess:
    """``python -m carewatch agent --config FILE`` as a child process."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the agent (logs appended to ``log_path``)."""
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carewatch", "agent", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def log(self) -> str:
        """What the agent logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def paused(broker: Any) -> Iterator[None]:
    """SIGSTOP ``broker`` for the block: its connections stay open, but it reads nothing,
    so a client's PUBLISH waits in the socket and no PUBACK comes back (SIGCONT after)."""
    pid = broker.pid
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def unread_by(broker: Any) -> int:
    """Bytes that clients sent to ``broker`` and it has not read yet (Linux).

    The receive queues of the broker's established connections in ``/proc/net/tcp``:
    while the broker is :func:`paused`, this grows exactly when a client publishes.
    """
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.partition(":")[2], 16) == broker.port:
            total += int(queues.partition(":")[2], 16)
    return total


def z2m_door(
    broker: Any, prefix: str, device: str = "door-1", friendly_name: str = "hall"
) -> Zigbee2MqttSimulator:
    """A simulated Aqara door magnet publishing under ``{prefix}/z2m`` on ``broker``."""
    return Zigbee2MqttSimulator(
        ProfileRegistry.load().get("aqara-mccgq11lm"),
        device,
        friendly_name=friendly_name,
        base_topic=f"{prefix}/z2m",
        host=broker.host,
        port=broker.port,
    )
