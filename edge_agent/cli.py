"""``carewatch agent``: run or check the edge agent of one gateway.

::

    carewatch agent --config /etc/carewatch/agent.yaml   # run it
    carewatch agent --check  /etc/carewatch/agent.yaml   # list every problem, exit 1 if any
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from device_profiles.errors import CarewatchError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="carewatch agent",
        description="Edge agent of one gateway: read devices, queue on disk, publish centrally.",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="FILE", help="run the agent with this config file")
    group.add_argument("--check", metavar="FILE", help="check a config file and list problems")
    p.add_argument("--log-level", help="override log_level of the config (DEBUG, INFO, ...)")
    return p


def check(path: str) -> int:
    """Print every problem of a config file; 0 when there is none."""
    from edge_agent.config import check_config

    problems = check_config(path)
    if not problems:
        print(f"{path}: OK")
        return 0
    for problem in problems:
        print(f"{path}: {problem}")
    print(f"{len(problems)} problem(s)", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    """Entry point of ``carewatch agent``."""
    args = _parser().parse_args(argv)
    if args.check:
        return check(args.check)
    from edge_agent.config import load_config

    try:
        config = load_config(args.config)
    except CarewatchError as exc:
        print(f"carewatch agent: {exc}", file=sys.stderr)
        return 2
    level = (args.log_level or config.log_level).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # paho logs every reconnect attempt at warning through aiomqtt: ours say it once.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    return asyncio.run(_run(config))


async def _run(config: object) -> int:
    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig

    assert isinstance(config, AgentConfig)
    try:
        agent = Agent(config)
    except CarewatchError as exc:
        print(f"carewatch agent: {exc}", file=sys.stderr)
        return 2
    agent.install_signal_handlers()
    try:
        await agent.run()
    except CarewatchError as exc:
        logging.getLogger("edge_agent").error("agent: %s", exc)
        return 2
    return 0
