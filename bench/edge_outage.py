"""bench/edge_outage: the central broker goes away under load, the agent is SIGKILLed.

Runs a site Mosquitto with Zigbee2MQTT door simulators, the edge agent as a child
process and a central Mosquitto with a subscriber. Under steady load it stops the
central broker for ``--outage`` seconds and starts it again. The agent is killed with
SIGKILL once in the middle of the outage, while the events it cannot send pile up in
its disk queue, and restarted ``--restart-after`` seconds later with the broker still
down (``--kill-at after``: five seconds after the broker returns, while the backlog is
being sent; ``--kill-at both``: both kills). Load continues ``--tail`` seconds after
the last of these steps; then the run waits for the backlog to drain, prints a JSON line
of details (when each kill happened relative to the outage, the queue depth it hit) and
ends with the contract line::

    sent=N received=N lost=0 duplicates=D

``sent``: numbered door messages the simulators published; ``received``: distinct
sequence numbers of those events seen on the central broker; ``lost``: messages whose
event never arrived (exit status 1 when not 0); ``duplicates``: deliveries beyond the
first (a batch whose PUBACK the agent had not stored when the broker stopped or the
agent was killed is sent again with the same seq; the processor drops it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _edge import (
    AgentProcess,
    Central,
    agent_config,
    door_sims,
    log,
    queued,
    send_numbered,
)

from carewatch.services import MosquittoService

KILL_AFTER_RETURN_S = 5.0  # --kill-at after: this long after the broker is started again


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="carewatch-edge-outage-"))
    site, central = MosquittoService(), MosquittoService()
    site.start()
    central.start()
    agent = AgentProcess(agent_config(work, central, site, args.devices), work / "agent.log")
    col = Central(central)
    sims = door_sims(site, args.devices)
    sent = 0
    counters = [0] * len(sims)
    reconnect_probe: list[float] = []
    expected: set[tuple[str, int]] = set()
    kills: list[dict[str, Any]] = []
    down_at = up_at = float("nan")  # seconds since the start of the load
    code: int | None = None
    try:
        await col.start()
        agent.start()
        if not await col.wait(col.sources_up, 30):
            log("agent did not come up; see " + str(agent.logfile))
            return 1
        for sim in sims:
            await sim.start()

        phases = schedule(args)
        end = phases[-1][0] + args.tail
        period = 1.0 / args.rate
        t0 = time.monotonic()
        step = 0
        nxt = t0
        probe: asyncio.Task[None] | None = None
        while (now := time.monotonic()) - t0 < end:
            while step < len(phases) and now - t0 >= phases[step][0]:
                what = phases[step][1]
                log(f"t={now - t0:5.1f}s {what} (sent so far {sent})")
                if what == "broker down":
                    down_at = now - t0
                    await asyncio.to_thread(central.stop)
                elif what == "broker up":
                    up_at = now - t0
                    await asyncio.to_thread(central.start)
                    probe = asyncio.create_task(
                        _reconnect_delay(col, len(col.status), t0 + up_at, reconnect_probe)
                    )
                elif what == "agent SIGKILL":
                    depth = await asyncio.to_thread(queued, work / "queue.db")
                    t_kill = time.monotonic() - t0
                    await asyncio.to_thread(agent.kill)
                    kills.append(_kill_record(t_kill, down_at, up_at, depth, sent))
                    log(f"  {kills[-1]['when']}, {depth} events in the disk queue")
                elif what == "agent restart":
                    agent.start()
                    kills[-1]["restart_t_s"] = round(now - t0, 2)
                    kills[-1]["broker_down_at_restart"] = math.isnan(up_at)
                step += 1
            i = sent % len(sims)
            await send_numbered(sims[i], counters[i])
            counters[i] += 1
            sent += 1
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        log(f"producing stopped: sent {sent}; waiting for the backlog")
        expected = {(sims[i].device, n) for i in range(len(sims)) for n in range(counters[i])}
        await col.wait(lambda: {k for _, k in col.numbered()} >= expected, args.drain_timeout)
        if probe is not None:
            await asyncio.wait_for(probe, 60)
    finally:
        for sim in sims:
            await sim.stop()
        code = agent.stop()
        await col.close()
        site.close()
        central.close()
        log(f"agent exit code {code}; log {agent.logfile}")

    numbered = col.numbered()
    keys = {k for _, k in numbered}
    seqs = {e.seq for e, _ in numbered}
    lost = len(expected - keys)
    duplicates = len(numbered) - len(keys)
    seqs_of: dict[tuple[str, int], set[int]] = {}
    for e, k in numbered:
        seqs_of.setdefault(k, set()).add(e.seq)
    details = {
        "kill_at": args.kill_at,
        "outage": {"down_t_s": round(down_at, 2), "up_t_s": round(up_at, 2), "s": args.outage},
        "kills": kills,
        "reconnect_after_broker_start_s": (
            round(reconnect_probe[0], 2) if reconnect_probe else None
        ),
        "rate_msg_s": args.rate,
        "devices": args.devices,
        # A second event for one door message under a new seq: the processor's seq
        # dedup would not drop it (re-sends under the same seq it does drop).
        "duplicates_new_seq": sum(len(v) - 1 for v in seqs_of.values()),
        "sigterm_exit": code,
    }
    print(json.dumps(details))
    print(f"sent={sent} received={len(seqs)} lost={lost} duplicates={duplicates}")
    return 0 if lost == 0 else 1


def schedule(args: argparse.Namespace) -> list[tuple[float, str]]:
    """(seconds after the load starts, step) for the outage and the kill(s), in order."""
    down, up = args.warmup, args.warmup + args.outage
    phases = [(down, "broker down"), (up, "broker up")]
    if args.kill_at in {"during", "both"}:
        kill = down + args.outage / 2  # the queue has grown for half the outage
        phases += [(kill, "agent SIGKILL"), (kill + args.restart_after, "agent restart")]
    if args.kill_at in {"after", "both"}:
        kill = up + KILL_AFTER_RETURN_S
        phases += [(kill, "agent SIGKILL"), (kill + args.restart_after, "agent restart")]
    return sorted(phases)


def _kill_record(t: float, down_at: float, up_at: float, depth: int, sent: int) -> dict[str, Any]:
    """When a kill happened relative to the outage (times in s since the load started)."""
    during = math.isnan(up_at)  # the broker has not been started again yet
    return {
        "t_s": round(t, 2),
        "when": (
            f"{t - down_at:.1f} s into the outage (broker down)"
            if during
            else f"{t - up_at:.1f} s after the broker returned"
        ),
        "since_broker_stop_s": round(t - down_at, 2),
        "since_broker_start_s": None if during else round(t - up_at, 2),
        "queue_depth": depth,
        "sent_before": sent,
    }


async def _reconnect_delay(col: Central, n_before: int, up_at: float, out: list[float]) -> None:
    """Time from the broker's restart to the agent's next live ``online`` on it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = col.online_after(n_before)
        if t is not None:
            out.append(max(0.0, t - up_at))
            return
        await asyncio.sleep(0.05)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/edge_outage", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=10, help="door simulators (default 10)")
    p.add_argument("--rate", type=float, default=100.0, help="messages/s in all (default 100)")
    p.add_argument("--outage", type=float, default=20.0, help="broker down, s (default 20)")
    p.add_argument("--warmup", type=float, default=5.0, help="load before the outage, s")
    p.add_argument(
        "--kill-at",
        choices=["during", "after", "both"],
        default="during",
        help="SIGKILL the agent in the middle of the outage (default), "
        f"{KILL_AFTER_RETURN_S:.0f} s after the broker returns, or both",
    )
    p.add_argument(
        "--restart-after", type=float, default=2.0, help="restart the agent after, s (default 2)"
    )
    p.add_argument("--tail", type=float, default=5.0, help="load after the last step, s")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="max wait at the end, s")
    args = p.parse_args(argv)
    if args.kill_at != "after" and args.outage / 2 + args.restart_after >= args.outage - 1:
        p.error("--outage too short: the agent must be back at least 1 s before the broker")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
