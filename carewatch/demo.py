"""``carewatch demo``: the whole chain on one machine, from simulated devices to alerts.

What runs (all as plain processes, no Docker, no root):

1. a Mosquitto broker on a free loopback port (the site broker and the central broker
   at once: the two topic trees do not overlap), and InfluxDB when ``influxd`` is
   installed (telemetry; skipped otherwise);
2. the simulators of a scenario (default: ``simulators/scenarios/demo.yaml``) on their
   real transports: a PTY for the RF pendant receiver, Modbus RTU over a PTY for the
   people counter, MQTT for Zigbee2MQTT, the face terminal and ChirpStack;
3. ``carewatch agent`` reading those devices, queueing on disk and publishing Event
   batches, and ``carewatch stream`` detecting and raising alerts;
4. this command, subscribed to the central broker, prints every normalized Event and
   every alert, and at the end compares the alerts with the scenario's ground truth.

Everything lives in a work directory (``--workdir``, default a new temporary one) with
the generated configs and the logs, so a newcomer can read what ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiomqtt
import yaml

from carewatch.services import InfluxDBService, MosquittoService, ServiceError, free_port
from device_profiles.errors import CarewatchError, EventError
from device_profiles.events import Event, decode_batch
from simulators.scenario import Environment, Scenario, SimulatorSet, load_scenario

DEMO_SCENARIO = Path(__file__).resolve().parents[1] / "simulators" / "scenarios" / "demo.yaml"
ROOT = "carewatch/v1"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carewatch demo", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", type=Path, default=DEMO_SCENARIO, help="scenario YAML")
    p.add_argument("--workdir", type=Path, help="keep configs, queues and logs here")
    p.add_argument("--linger", type=float, default=8.0, help="seconds to wait after the last step")
    p.add_argument("--time-scale", type=float, help="play the scenario this much faster")
    p.add_argument("--no-influx", action="store_true", help="do not start InfluxDB")
    p.add_argument("--quiet-events", action="store_true", help="print alerts only")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    return p


# -- configs ---------------------------------------------------------------------------------


def agent_config(
    scenario: Scenario, sims: SimulatorSet, broker: MosquittoService, workdir: Path
) -> dict[str, Any]:
    """The edge agent's config for the scenario's devices, wherever the simulators put them."""
    devices: list[dict[str, Any]] = []
    for spec in scenario.devices:
        sim: Any = sims.sims[spec.id]
        entry: dict[str, Any] = {"id": spec.id, "profile": spec.profile.name}
        if spec.resident:
            entry["resident"] = spec.resident
        codec = spec.profile.codec
        if codec == "pendant_frame":
            entry["serial"] = {"port": sim.port, "address": sim.address}
        elif codec == "modbus_counter":
            settings = sim.client_settings
            entry["modbus"] = {
                "port": sim.client_path,
                "unit_id": settings.unit_id,
                "baudrate": settings.baudrate,
                "parity": "N",  # a PTY carries no parity
                "poll_interval_s": 2,
                "timeout_s": 0.5,
            }
        elif codec == "zigbee2mqtt":
            entry["mqtt"] = {"address": sim.friendly_name}
        elif codec == "face_terminal":
            entry["mqtt"] = {"address": spec.id}
        elif codec == "chirpstack_pendant":
            entry["mqtt"] = {"address": sim.dev_eui}
        devices.append(entry)
    return {
        "site": scenario.site,
        "gateway": "demo-gw",
        "log_level": "WARNING",
        "broker": {"url": broker.url},
        "queue": {"path": str(workdir / "agent-queue.db"), "linger": "20ms"},
        "health": {"heartbeat_interval": "5s"},
        "clock": {"trust": "always"},
        "site_brokers": {"local": {"url": broker.url}},
        "devices": devices,
    }


def stream_config(
    scenario: Scenario, broker: MosquittoService, influx: InfluxDBService | None, workdir: Path
) -> dict[str, Any]:
    """The stream processor's config: every detector, alerts to the log and the alert topic."""
    doc: dict[str, Any] = {
        "mqtt": {"url": broker.url, "client_id": "carewatch-demo-stream"},
        "state": {"path": str(workdir / "stream.sqlite")},
        "api": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        "notifiers": {"console": {"type": "log"}},
        "recipients": {"duty-desk": {"notifiers": ["console"]}},
        "policies": {"default": {"tiers": [{"recipients": ["duty-desk"]}]}},
        "sites": {scenario.site: {"timezone": "Asia/Shanghai", "quiet_hours": False}},
        "logging": {"level": "warning"},
    }
    if influx is not None:
        doc["telemetry"] = {"enabled": True, "url": influx.url, "database": "carewatch"}
    return doc


# -- the run ---------------------------------------------------------------------------------


class Printer:
    """Prints events and alerts, as text or JSON lines."""

    def __init__(self, out: TextIO, *, as_json: bool, events: bool):
        self.out = out
        self.as_json = as_json
        self.events = events
        self.t0 = time.monotonic()

    def _stamp(self) -> str:
        return f"{time.monotonic() - self.t0:6.1f}s"

    def event(self, event: Event) -> None:
        if not self.events:
            return
        if self.as_json:
            print(json.dumps({"event": _short_event(event)}), file=self.out, flush=True)
            return
        if event.reading == "counts" and not (event.values.get("in") or event.values.get("out")):
            return  # the counter is polled: only polls that saw people are worth a line
        values = {k: v for k, v in event.values.items() if not isinstance(v, list)}
        who = f" resident={event.resident}" if event.resident else ""
        print(
            f"{self._stamp()}  event  #{event.seq:<4} {event.device:<14} {event.reading:<10}"
            f"{who} {json.dumps(values, ensure_ascii=False)}",
            file=self.out,
            flush=True,
        )

    def alert(self, alert: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"alert": alert}, ensure_ascii=False), file=self.out, flush=True)
            return
        print(
            f"{self._stamp()}  ALERT  {alert.get('state', '?'):<12} {alert.get('severity', '?'):<8}"
            f" {alert.get('condition', '?')} {alert.get('subject', '')}: {alert.get('reason', '')}",
            file=self.out,
            flush=True,
        )

    def note(self, text: str) -> None:
        if not self.as_json:
            print(f"{self._stamp()}  {text}", file=self.out, flush=True)


def _short_event(event: Event) -> dict[str, Any]:
    values = {
        k: (f"[{len(v)} samples]" if isinstance(v, list) else v) for k, v in event.values.items()
    }
    return {
        "gateway": event.gateway,
        "seq": event.seq,
        "time": datetime.fromtimestamp(event.time / 1000, UTC).isoformat(),
        "site": event.site,
        "device": event.device,
        "kind": event.kind,
        "reading": event.reading,
        "resident": event.resident,
        "values": values,
    }


async def _watch(
    broker: MosquittoService,
    printer: Printer,
    seen: dict[int, Event],
    alerts: dict[str, dict[str, Any]],
    online: asyncio.Event,
) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="carewatch-demo-watch") as c:
        await c.subscribe(f"{ROOT}/+/+/events", qos=1)
        await c.subscribe(f"{ROOT}/+/+/status", qos=1)
        await c.subscribe(f"{ROOT}/+/alerts/+", qos=1)
        async for message in c.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic.endswith("/status"):
                if payload.startswith(b"online") or b'"online"' in payload:
                    online.set()
            elif topic.endswith("/events"):
                try:
                    events = decode_batch(payload)
                except EventError as exc:
                    printer.note(f"malformed batch on {topic}: {exc}")
                    continue
                for event in events:
                    if event.seq not in seen:  # redeliveries carry the same seq
                        seen[event.seq] = event
                        printer.event(event)
            elif payload:
                try:
                    body = json.loads(payload)
                except ValueError:
                    continue
                alert = body.get("alert") if isinstance(body, dict) else None
                if isinstance(alert, dict):
                    key = str(alert.get("id", topic))
                    if alerts.get(key, {}).get("state") != alert.get("state"):
                        printer.alert(alert)
                    alerts[key] = alert


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Run ``python -m carewatch ARGS`` in its own session, output appended to ``log``."""
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "carewatch", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _stream_connected(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return bool(json.load(answer).get("mqtt_connected"))
    except (OSError, ValueError):
        return False


async def _ready(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> bool:
    """Poll ``check`` (in a thread: it may block) until true, ``proc`` exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.2)
    return False


def _matches(expect_condition: str, expect_subject: str, alert: dict[str, Any]) -> bool:
    details = alert.get("details") or {}
    conditions = {str(alert.get("condition", "")), str(details.get("trigger", ""))}
    subjects = {str(alert.get(k)) for k in ("subject", "resident", "device") if alert.get(k)}
    return expect_condition in conditions and expect_subject in subjects


async def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns 0 when every expected alert was raised.

    The last line printed is a JSON ``summary``: events seen per device, alerts, and the
    expected alerts (the scenario's ground truth) that were not raised.
    """
    scenario = load_scenario(args.scenario)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="carewatch-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    printer = Printer(out, as_json=args.json, events=not args.quiet_events)
    printer.note(f"work directory: {workdir} (configs, queue, logs)")
    broker = MosquittoService()
    influx: InfluxDBService | None = None
    agent = stream = None
    sims: SimulatorSet | None = None
    seen: dict[int, Event] = {}
    alerts: dict[str, dict[str, Any]] = {}
    watcher: asyncio.Task[None] | None = None
    try:
        broker.start()
        printer.note(f"broker: {broker.url}")
        if not args.no_influx and shutil.which("influxd"):
            influx = InfluxDBService()
            influx.start()
            influx.create_database("carewatch")
            printer.note(f"InfluxDB: {influx.url} (database carewatch)")
        env = Environment(broker.host, broker.port, serial_dir=str(workdir / "dev"))
        sims = SimulatorSet(scenario, env)
        await sims.start()
        (workdir / "agent.yaml").write_text(
            yaml.safe_dump(agent_config(scenario, sims, broker, workdir), sort_keys=False)
        )
        (workdir / "stream.yaml").write_text(
            yaml.safe_dump(stream_config(scenario, broker, influx, workdir), sort_keys=False)
        )
        online = asyncio.Event()
        watcher = asyncio.create_task(_watch(broker, printer, seen, alerts, online))
        api_port = int(yaml.safe_load((workdir / "stream.yaml").read_text())["api"]["port"])
        stream = spawn(["stream", "--config", str(workdir / "stream.yaml")], workdir / "stream.log")
        # The stream first: its persistent session must exist before the agent publishes.
        if not await _ready(lambda: _stream_connected(api_port), stream):
            printer.note(f"the stream processor did not start: see {workdir / 'stream.log'}")
            return 1
        agent = spawn(["agent", "--config", str(workdir / "agent.yaml")], workdir / "agent.log")
        if not await _ready(online.is_set, agent):
            printer.note(f"the agent did not come online: see {workdir / 'agent.log'}")
            return 1
        # The agent announces itself once connected centrally; its site-broker
        # subscriptions and serial ports open alongside: give them a moment.
        await asyncio.sleep(1.0)
        printer.note(f"playing scenario {scenario.name!r} ({scenario.duration:.0f} s)")
        await sims.play(time_scale=args.time_scale)
        await asyncio.sleep(args.linger)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        stop_process(agent)
        stop_process(stream)
        if sims is not None:
            await sims.stop()
        if influx is not None:
            influx.close()
        broker.close()

    errors = [(at, step.device, step.action, err) for at, step, err in sims.log if err]
    for at, device, action, err in errors:
        printer.note(f"step at {at:.0f}s {device}.{action} failed: {err}")
    per_device = Counter(e.device for e in seen.values())
    missing = [
        e
        for e in scenario.expect
        if not any(_matches(e.condition, e.subject, a) for a in alerts.values())
    ]
    summary = {
        "events": len(seen),
        "per_device": dict(sorted(per_device.items())),
        "alerts": len(alerts),
        "expected": len(scenario.expect),
        "missing": [f"{e.condition}:{e.subject}" for e in missing],
        "workdir": str(workdir),
    }
    print(json.dumps({"summary": summary}, ensure_ascii=False), file=out, flush=True)
    return 0 if not missing else 1


def main(argv: list[str]) -> int:
    """Entry point of ``carewatch demo``."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except ServiceError as exc:
        print(f"carewatch demo: {exc}", file=sys.stderr)
        return 2
    except CarewatchError as exc:
        print(f"carewatch demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
