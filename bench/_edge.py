"""Shared parts of the edge agent benchmarks (bench/edge_outage, bench/edge_footprint).

Real Mosquitto brokers (the test harness's :class:`MosquittoService`), the agent as a
child process (``python -m carewatch agent --config ...``), Zigbee2MQTT door simulators
on the site broker, and a subscriber on the central broker standing in for the
processor. Messages are numbered through the door state (battery * 256 + linkquality),
so a lost message is a missing number whatever duplicates arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from device_profiles.events import Event, decode_batch  # noqa: E402
from device_profiles.profiles import ProfileRegistry  # noqa: E402
from simulators.zigbee import Zigbee2MqttSimulator  # noqa: E402
from tests.harness.services import MosquittoService  # noqa: E402

PROFILE = "aqara-mccgq11lm"
MAX_NUMBER = 101 * 256  # battery 0..100, linkquality 0..255


import logging  # noqa: E402

logging.getLogger("mqtt").setLevel(logging.CRITICAL)  # paho noise on broker stops


def log(msg: str) -> None:
    """Progress on stderr; the figures go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def agent_config(
    workdir: Path,
    central: MosquittoService,
    site: MosquittoService,
    devices: int,
    *,
    extra_devices: Sequence[Mapping[str, Any]] = (),
    **queue: Any,
) -> Path:
    """An agent config with ``devices`` door sensors named door-000..., then
    ``extra_devices`` (device entries as in the agent config, e.g. pendants)."""
    doc: dict[str, Any] = {
        "site": "bench-site",
        "gateway": "gw-bench",
        "log_level": "INFO",
        "broker": {"url": f"mqtt://{central.host}:{central.port}", "keepalive": 10},
        "queue": {"path": str(workdir / "queue.db"), **queue},
        "health": {"heartbeat_interval": "5s"},
        "clock": {"trust": "always"},
        "site_brokers": {
            "local": {
                "url": f"mqtt://{site.host}:{site.port}",
                "client_id": f"bench-agent-{uuid.uuid4().hex[:6]}",
            }
        },
        "devices": [
            {"id": f"door-{i:03d}", "profile": PROFILE, "mqtt": {"address": f"door{i:03d}"}}
            for i in range(devices)
        ]
        + [dict(d) for d in extra_devices],
    }
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


class AgentProcess:
    """The agent as a child process, its log in the work directory."""

    def __init__(self, config: Path, logfile: Path) -> None:
        self.config = config
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start ``python -m carewatch agent --config FILE``."""
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "carewatch", "agent", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def pid(self) -> int:
        """Process id of the running agent."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, no clean-up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class Central:
    """Subscriber on the central broker: events, status; survives broker restarts."""

    def __init__(self, broker: MosquittoService) -> None:
        self.broker = broker
        self.events: list[Event] = []
        # (time.monotonic(), payload, retained): a retained copy is what the broker hands
        # a new subscription (after every broker restart, the previous run's ``online``),
        # not something the agent just published.
        self.status: list[tuple[float, str, bool]] = []
        self.health: list[dict[str, Any]] = []
        self._numbered: list[tuple[Event, tuple[str, int]]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each numbered arrival
        self.connected = asyncio.Event()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._id = f"bench-central-{uuid.uuid4().hex[:6]}"

    async def start(self) -> None:
        """Connect and subscribe (returns once subscribed)."""
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 15)

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
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
                    max_queued_incoming_messages=0,
                ) as client:
                    await client.subscribe("carewatch/v1/#", qos=1)
                    self.connected.set()
                    async for msg in client.messages:
                        topic = str(msg.topic)
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        if topic.endswith("/events"):
                            batch = decode_batch(payload)
                            self.events.extend(batch)
                            self._number(batch)
                        elif topic.endswith("/status"):
                            self.status.append((time.monotonic(), payload.decode(), msg.retain))
                        elif topic.endswith("/health"):
                            self.health.append(json.loads(payload))
                        self.changed.set()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)

    async def wait(self, predicate: Callable[[], bool], limit_s: float) -> bool:
        """Wait until ``predicate()`` holds; False after ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
        return True

    def online_after(self, index: int) -> float | None:
        """Arrival time of the first live (not retained) ``online`` in ``status[index:]``.

        While this subscriber is away its persistent session queues what the agent
        publishes, delivered later with the retain flag clear, so a late reconnect of the
        subscriber makes the time an upper bound, never a stale retained copy.
        """
        for t, payload, retained in self.status[index:]:
            if payload == "online" and not retained:
                return t
        return None

    def sources_up(self) -> bool:
        """The agent's last heartbeat shows every source open and reading."""
        if not self.health:
            return False
        return all(s["state"] == "running" for s in self.health[-1]["sources"].values())

    def _number(self, events: list[Event]) -> None:
        for e in events:
            if e.reading not in ("contact", "occupancy"):
                continue
            b, lq = e.values.get("battery"), e.values.get("linkquality")
            if isinstance(b, int) and isinstance(lq, int):
                self._numbered.append((e, (e.device, b * 256 + lq)))
                self.arrivals.append(time.monotonic())

    def numbered(self) -> list[tuple[Event, tuple[str, int]]]:
        """(event, (device, number)) of every numbered door/motion event received."""
        return self._numbered

    @property
    def n_numbered(self) -> int:
        """How many numbered events arrived (duplicates included)."""
        return len(self._numbered)


def queued(db: Path) -> int:
    """Events waiting in the agent's queue file (a read-only look while it runs)."""
    return queue_state(db)[1]


def queue_state(db: Path) -> tuple[int, int]:
    """(next sequence number, events waiting) from the agent's queue file, read-only.

    The next sequence number advances with every committed event, so its growth is the
    rate at which the agent takes events in, whatever it has sent.
    """
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        depth = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return (int(row[0]) if row else 1), int(depth)
    finally:
        con.close()


def door_sims(site: MosquittoService, n: int, qos: int = 1) -> list[Zigbee2MqttSimulator]:
    """``n`` door simulators on the site broker, matching :func:`agent_config`."""
    profile = ProfileRegistry.load().get(PROFILE)
    return [
        Zigbee2MqttSimulator(
            profile,
            f"door-{i:03d}",
            friendly_name=f"door{i:03d}",
            host=site.host,
            port=site.port,
            qos=qos,
        )
        for i in range(n)
    ]


async def send_numbered(sim: Zigbee2MqttSimulator, number: int) -> None:
    """Publish door state message ``number``."""
    sim.state["battery"], sim.state["linkquality"] = divmod(number % MAX_NUMBER, 256)
    await sim.report()
