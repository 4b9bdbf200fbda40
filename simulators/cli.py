"""``carewatch simulate``: run device simulators on their real transports.

Examples::

    carewatch simulate --list                       # profiles and what they can do
    carewatch simulate --scenario scen.yaml --mqtt 127.0.0.1:1883
    carewatch simulate --scenario scen.yaml --time-scale 60 --hold 30

The simulators print where each device can be read (PTY paths for serial and Modbus
RTU devices, MQTT topics for the others), play the scenario's steps, and print one JSON
line per step played (and the scenario's ground truth with ``--truth``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from contextlib import suppress

from device_profiles.errors import CarewatchError
from device_profiles.profiles import ProfileRegistry
from simulators.scenario import BUILDERS, Environment, SimulatorSet, Step, load_scenario


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carewatch simulate", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", help="scenario YAML file to play")
    p.add_argument("--list", action="store_true", help="list device profiles with simulators")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="site MQTT broker host:port")
    p.add_argument("--time-scale", type=float, help="override the scenario's time scale")
    p.add_argument(
        "--hold", type=float, default=0.0, help="keep the devices up this many seconds after"
    )
    p.add_argument("--truth", action="store_true", help="print the ground truth first")
    return p


def _where(sim: object) -> str:
    for attr in ("client_path", "port", "topic"):
        value = getattr(sim, attr, None)
        if isinstance(value, str):
            return value
    host, port = getattr(sim, "host", None), getattr(sim, "port", None)
    return f"mqtt://{host}:{port}" if host else "?"


def _broker(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CarewatchError(f"--mqtt {value!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host or "127.0.0.1", int(port)


def _print_step(at: float, step: Step, error: str | None) -> None:
    line: dict[str, object] = {"at": at, "device": step.device, "action": step.action}
    line.update(step.args)
    if error:
        line["error"] = error
    print(json.dumps(line, default=str), flush=True)


async def _run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    host, port = _broker(args.mqtt)
    env = Environment(mqtt_host=host, mqtt_port=port)
    sims = SimulatorSet(scenario, env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.truth:
        for truth in scenario.expect:
            print(json.dumps({"truth": truth.condition, "subject": truth.subject, "at": truth.at}))
    await sims.start()
    try:
        for dev_id, sim in sims.sims.items():
            print(json.dumps({"device": dev_id, "profile": sim.profile.name, "at": _where(sim)}))
        sys.stdout.flush()
        player = asyncio.create_task(sims.play(time_scale=args.time_scale, on_step=_print_step))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({player, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not player.done():
            player.cancel()
        if args.hold > 0 and not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.hold)
        waiter.cancel()
    finally:
        await sims.stop()
    return 1 if any(err for _, _, err in sims.log) else 0


def main(argv: list[str]) -> int:
    """Entry point of ``carewatch simulate``."""
    args = _parser().parse_args(argv)
    try:
        if args.list:
            for profile in ProfileRegistry.load():
                sim = "yes" if profile.codec in BUILDERS else "no"
                print(f"{profile.name:<32} {profile.kind:<14} {profile.protocol:<14} sim={sim}")
            return 0
        if not args.scenario:
            _parser().print_usage(sys.stderr)
            print("carewatch simulate: give --scenario FILE or --list", file=sys.stderr)
            return 2
        return asyncio.run(_run(args))
    except CarewatchError as exc:
        print(f"carewatch simulate: {exc}", file=sys.stderr)
        return 2
