"""A scripted SOS scenario against a stream processor that gets killed with SIGKILL.

Used by ``tests/stream/test_stream_restart.py`` (small) and ``bench/stream_restart``
(larger). One run:

1. a real broker (given), a loopback webhook receiver (tier 1 "desk", tier 2 "boss"),
   and ``python -m carewatch stream --config ...`` as a subprocess on a fast clock
   (``speed`` times wall-clock time, anchored so it stays monotonic across restarts);
2. a simulated gateway publishes ``presses`` SOS presses, one per resident, as Event
   batches with increasing sequence numbers, and now and then publishes an earlier
   batch again (a redelivery after a lost PUBACK);
3. meanwhile the processor is killed with SIGKILL ``kills`` times at random moments and
   restarted after a random pause;
4. every press must end up notified to the desk exactly once and, unacknowledged,
   escalated to the boss exactly once (timers that fell due while the processor was
   dead fire after the restart).

Counted per (resident, recipient): ``notified`` residents whose desk got the press;
``duplicates`` notifications that are a second *effect* (another alert, another
escalation: a different idempotency key for the same thing); ``lost`` expected
notifications that never came; ``replays`` deliveries that repeated an idempotency key
already received (a resend after a crash between delivery and bookkeeping, which a
receiver drops by that key: not a duplicate effect, reported for honesty).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from device_profiles.events import Event, encode_batch
from device_profiles.topics import events_topic
from tests.stream.helpers import desk_boss_config
from tests.stream.receiver import Receiver

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ScenarioResult:
    """What the receiver saw, judged against what the scenario expected."""

    expected: int
    notified: int
    duplicates: int
    lost: int
    replays: int
    escalated: int
    escalation_duplicates: int
    kills: int
    open_alerts: int
    pending_outbox: int
    seed: int
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The contract line of ``bench/stream_restart``."""
        return (
            f"expected={self.expected} notified={self.notified} "
            f"duplicates={self.duplicates} lost={self.lost}"
        )


def write_config(
    workdir: Path, broker_host: str, broker_port: int, prefix: str, hook: str, speed: float
) -> Path:
    """The processor's config for the scenario."""
    epoch = datetime.now(UTC).isoformat()
    doc = desk_boss_config(
        mqtt={
            "url": f"mqtt://{broker_host}:{broker_port}",
            "client_id": f"cw-restart-{prefix}",
            "root": f"{prefix}/carewatch/v1",
            "reconnect_max": "1s",
        },
        state_path=workdir / "stream.sqlite",
        hook=hook,
        reminder=0,
        clock={"kind": "fast", "speed": speed, "epoch": epoch},
        delivery={"backoff_initial": "200ms", "backoff_max": "2s", "max_attempts": 1000},
        logging={"level": "info"},
    )
    path = workdir / "stream.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


class Processor:
    """The stream processor as a child process."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carewatch", "stream", "--config", str(self.config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.starts += 1

    async def wait_connected(self, within_s: float = 60.0) -> None:
        """Until the processor logged its broker connection (its first start creates the
        persistent session: only from then on does the broker keep its messages)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.log_path.exists() and b"persistent session" in self.log_path.read_bytes():
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"processor exited with {self.proc.returncode}")
            await asyncio.sleep(0.05)
        raise TimeoutError("the processor did not connect to the broker")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


def press(seq: int, resident: str) -> Event:
    now = int(time.time() * 1000)
    return Event(
        gateway="gw-1",
        seq=seq,
        time=now,
        received=now,
        site="site-a",
        device=f"pendant-{resident}",
        kind="pendant",
        reading="press",
        values={"button": "sos"},
        resident=resident,
        urgent=True,
    )


def judge(receiver: Receiver, residents: list[str]) -> dict[str, Any]:
    """Count notifications per (resident, recipient, event) by idempotency key."""
    keys: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    raw = 0
    for r in receiver.received:
        body = r.json
        who = body["alert"]["subject"]
        keys[(who, r.path.strip("/"), body["event"])].add(r.headers["Idempotency-Key"])
        raw += 1
    distinct = sum(len(v) for v in keys.values())
    notified = sum(1 for res in residents if keys.get((res, "desk", "raised")))
    escalated = sum(1 for res in residents if keys.get((res, "boss", "escalated")))
    dup = sum(max(0, len(keys.get((res, "desk", "raised"), set())) - 1) for res in residents)
    esc_dup = sum(max(0, len(keys.get((res, "boss", "escalated"), set())) - 1) for res in residents)
    unexpected = sorted(
        f"{who}/{path}/{event}"
        for (who, path, event) in keys
        if (path, event) not in (("desk", "raised"), ("boss", "escalated"))
    )
    return {
        "notified": notified,
        "escalated": escalated,
        "duplicates": dup,
        "escalation_duplicates": esc_dup,
        "replays": raw - distinct,
        "unexpected": unexpected,
    }


async def run_scenario(
    broker_host: str,
    broker_port: int,
    workdir: Path,
    *,
    presses: int = 20,
    kills: int = 3,
    speed: float = 60.0,
    seed: int | None = None,
    wait_s: float = 120.0,
    say: Callable[[str], None] = lambda _: None,
) -> ScenarioResult:
    """Run the scenario (see the module docstring) and judge it."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rnd = random.Random(seed)
    prefix = f"r{seed:x}"
    receiver = await Receiver().start()
    config = write_config(workdir, broker_host, broker_port, prefix, receiver.url, speed)
    processor = Processor(config, workdir / "stream.log")
    residents = [f"res-{i:04d}" for i in range(1, presses + 1)]
    say(f"seed={seed} presses={presses} kills={kills} speed={speed}")
    # When to kill: after these press indexes (random, distinct)
    # After which press to kill; after the last one, the kill falls in the phase where
    # escalation timers fire and notifications go out.
    kill_after = sorted(rnd.sample(range(1, presses + 1), min(kills, presses)))
    killed = 0
    try:
        processor.start()
        await processor.wait_connected()
        root = f"{prefix}/carewatch/v1"
        topic = events_topic("site-a", "gw-1", root)
        sent: list[bytes] = []
        async with aiomqtt.Client(broker_host, broker_port, identifier=f"gw-{prefix}") as gw:
            for i, resident in enumerate(residents, start=1):
                payload = encode_batch([press(i, resident)])
                sent.append(payload)
                await gw.publish(topic, payload, qos=1)
                if rnd.random() < 0.3:  # a redelivery of an earlier batch
                    await gw.publish(topic, rnd.choice(sent), qos=1)
                await asyncio.sleep(rnd.uniform(0.02, 0.3))
                if i in kill_after:
                    # a random moment: right away, or while the press is being handled
                    # (or, after the last press, while escalations are due)
                    pause = rnd.uniform(0.0, 0.4) if i < presses else rnd.uniform(0.5, 3.0)
                    await asyncio.sleep(pause)
                    processor.kill()
                    killed += 1
                    say(f"killed the processor after press {i} ({killed}/{len(kill_after)})")
                    await asyncio.sleep(rnd.uniform(0.0, 1.0))
                    processor.start()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            verdict = judge(receiver, residents)
            if verdict["notified"] == presses and verdict["escalated"] == presses:
                break
            await asyncio.sleep(0.2)
        # Let late resends (if any) arrive before judging.
        await asyncio.sleep(1.0)
        code = processor.terminate()
        verdict = judge(receiver, residents)
        open_alerts, pending = _stored_state(workdir / "stream.sqlite")
        if code != 0:
            say(f"processor exited with {code} on SIGTERM")
    finally:
        if processor.proc is not None and processor.proc.poll() is None:
            processor.proc.kill()
            processor.proc.wait()
        await receiver.stop()
    return ScenarioResult(
        expected=presses,
        notified=verdict["notified"],
        duplicates=verdict["duplicates"],
        lost=presses - verdict["notified"],
        replays=verdict["replays"],
        escalated=verdict["escalated"],
        escalation_duplicates=verdict["escalation_duplicates"],
        kills=killed,
        open_alerts=open_alerts,
        pending_outbox=pending,
        seed=seed,
        details={"unexpected": verdict["unexpected"], "sigterm_exit": code},
    )


def _stored_state(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (open_alerts,) = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE state != 'resolved'"
        ).fetchone()
        (pending,) = db.execute("SELECT COUNT(*) FROM outbox WHERE status='pending'").fetchone()
    return int(open_alerts), int(pending)


def summary(result: ScenarioResult) -> str:
    """A human-readable line before the contract line."""
    return json.dumps(
        {
            "seed": result.seed,
            "kills": result.kills,
            "escalated": result.escalated,
            "escalation_duplicates": result.escalation_duplicates,
            "replays_dropped_by_key": result.replays,
            "open_alerts": result.open_alerts,
            "pending_outbox": result.pending_outbox,
            **result.details,
        }
    )
