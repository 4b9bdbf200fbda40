"""``carewatch`` command: dispatches to the subcommand's own module.

Each subcommand lives in the package that owns it and exposes ``main(argv) -> int``.
Modules are imported only when their subcommand runs, so ``carewatch agent`` on a
gateway never imports numpy or scikit-learn.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulators.cli", "run device simulators on their real transports"),
    "agent": ("edge_agent.cli", "run or check the edge agent of one gateway"),
    "stream": ("stream.cli", "run or check the central stream processor"),
    "replay": ("stream.replay", "replay an event log through the detectors"),
    "fall": ("stream.fall.cli", "train or evaluate the fall classifier"),
    "demo": ("carewatch.demo", "everything on one machine: simulators to alerts"),
}


def _usage() -> str:
    lines = ["usage: carewatch <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "run 'carewatch <command> --help' for the options of one command"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carewatch`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from carewatch import __version__

        print(f"carewatch {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"carewatch: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"carewatch {name}: needs a module that is not installed ({exc.name}); "
            "install the matching extra, e.g. pip install 'carewatch[all]'",
            file=sys.stderr,
        )
        return 2
    entry: Callable[[list[str]], int] = module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
