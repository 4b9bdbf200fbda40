"""``carewatch stream``: run or check the central stream processor.

::

    carewatch stream --config /etc/carewatch/stream.yaml     # run until SIGTERM
    carewatch stream --check /etc/carewatch/stream.yaml      # list every problem, exit 1

``--check`` also lists warnings, each line marked ``WARNING``: keys under a site or a
resident that nothing reads (a typo, or a plugged-in detector that does not declare
them). They do not change the exit code; the processor logs them when it starts.

Exit codes: 0 fine (stopped by SIGTERM/SIGINT), 1 the config has problems, 2 bad usage
or the processor could not start (the message says why), 3 the running processor failed
(a loop hit a bug, or the state database kept failing): systemd restarts it and the
unit shows the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from stream.config import ConfigProblems, load_config, review_config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (``logging.format: json``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho/aiomqtt log every packet at debug; keep them at warning unless asked
    if level != "debug":
        logging.getLogger("mqtt").setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    """Entry point of ``carewatch stream``."""
    parser = argparse.ArgumentParser(
        prog="carewatch stream",
        description="Central stream processor: ingest, detectors, alerts, notifications.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="FILE", help="run with this config")
    group.add_argument("--check", metavar="FILE", help="validate a config and list problems")
    args = parser.parse_args(argv)

    if args.check:
        review = review_config(args.check)
        if review.problems:
            print(f"{args.check}: {len(review.problems)} problem(s)", file=sys.stderr)
            for problem in review.problems:
                print(f"  {problem}", file=sys.stderr)
        if review.warnings:
            print(
                f"{args.check}: {len(review.warnings)} warning(s), not problems",
                file=sys.stderr,
            )
            for warning in review.warnings:
                print(f"  WARNING {warning}", file=sys.stderr)
        if review.problems:
            return 1
        print(f"{args.check}: OK")
        return 0

    try:
        config = load_config(args.config)
    except ConfigProblems as exc:
        print(str(exc), file=sys.stderr)
        return 1
    setup_logging(config.logging.level, config.logging.format)
    from stream.runtime import TaskFailed, serve

    try:
        asyncio.run(serve(config))
    except ConfigProblems as exc:  # detectors failing to build
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except TaskFailed as exc:  # logged with its traceback when it happened
        print(f"carewatch stream: failed: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # a start-up failure: say what, not a traceback
        logging.getLogger("carewatch.stream").exception("cannot run: %s", exc)
        return 2
    return 0
