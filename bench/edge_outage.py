"""bench/edge_outage: the central broker goes away under load, the agent is SIGKILLed.

Runs a site Mosquitto with Zigbee2MQTT door simulators, the edge agent as a child
process and a central Mosquitto with a subscriber. Under steady load it stops the
central broker for ``--outage`` seconds, starts it again, then kills the agent with
SIGKILL once and restarts it, keeps producing for a while, waits for the backlog to
drain and prints figures, ending with the contract line::

    sent=N received=N lost=0 duplicates=D

``sent``: numbered door messages the simulators published; ``received``: distinct
sequence numbers of those events seen on the central broker; ``lost``: messages whose
event never arrived; ``duplicates``: deliveries beyond the first (re-sent after the
kill with the same seq, or a site message delivered again whose commit the kill
interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from _edge import (
    AgentProcess,
    Central,
    MosquittoService,
    agent_config,
    door_sims,
    log,
    send_numbered,
)


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
    try:
        await col.start()
        agent.start()
        if not await col.wait(col.sources_up, 30):
            log("agent did not come up; see " + str(agent.logfile))
            return 1
        for sim in sims:
            await sim.start()

        period = 1.0 / args.rate
        t0 = time.monotonic()
        phases = [
            (args.warmup, "broker down"),
            (args.warmup + args.outage, "broker up"),
            (args.warmup + args.outage + 5, "agent SIGKILL"),
            (args.warmup + args.outage + 7, "agent restart"),
        ]
        end = args.warmup + args.outage + 7 + args.tail
        step = 0
        nxt = t0
        probe: asyncio.Task[None] | None = None
        while (now := time.monotonic()) - t0 < end:
            while step < len(phases) and now - t0 >= phases[step][0]:
                what = phases[step][1]
                log(f"t={now - t0:5.1f}s {what} (sent so far {sent})")
                if what == "broker down":
                    await asyncio.to_thread(central.stop)
                elif what == "broker up":
                    up_at = time.monotonic()
                    await asyncio.to_thread(central.start)
                    probe = asyncio.create_task(
                        _reconnect_delay(col, len(col.status), up_at, reconnect_probe)
                    )
                elif what == "agent SIGKILL":
                    await asyncio.to_thread(agent.kill)
                elif what == "agent restart":
                    agent.start()
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
    if reconnect_probe:
        print(f"reconnect_after_broker_start_s={reconnect_probe[0]:.2f}")
    print(f"outage_s={args.outage} rate_msg_s={args.rate} devices={args.devices}")
    print(f"sent={sent} received={len(seqs)} lost={lost} duplicates={duplicates}")
    return 0 if lost == 0 else 1


async def _reconnect_delay(col: Central, n_before: int, up_at: float, out: list[float]) -> None:
    """Time from the broker's restart to the agent's next ``online`` on it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for t, payload in col.status[n_before:]:
            if payload == "online":
                out.append(max(0.0, t - up_at))
                return
        await asyncio.sleep(0.05)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/edge_outage", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=10, help="door simulators (default 10)")
    p.add_argument("--rate", type=float, default=100.0, help="messages/s in all (default 100)")
    p.add_argument("--outage", type=float, default=20.0, help="broker down, s (default 20)")
    p.add_argument("--warmup", type=float, default=5.0, help="load before the outage, s")
    p.add_argument("--tail", type=float, default=5.0, help="load after the restart, s")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="max wait at the end, s")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
