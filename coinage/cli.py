"""The `coinage` command: one entry point, one subcommand per capability.

Each part owns its subcommands in a `cli.py` that exposes `register(subparsers)`; this module
only gathers them. `main(argv)` takes an argv list so tests run commands in-process.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engine.errors import CoinageError

# (module, issue) for each part; a part whose module is missing is reported, not hidden.
PARTS = ["engine.cli", "engine.search_cli", "web.snapshot_cli", "world.cli", "indexer.cli", "trainer.cli", "web.cli",
         "bench.cli", "web.merch_cli"]

# Subcommands whose capability is not built yet: name -> (what is missing, tracking issue).
PENDING: dict[str, tuple[str, str]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coinage", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    registered: set[str] = set()
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        registered |= set(module.register(sub))
    for command, (what, issue) in PENDING.items():
        if command not in registered:
            p = sub.add_parser(command, help=f"(not built yet: {issue})", add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_pending(command, what, issue))
    return parser


def _pending(command: str, what: str, issue: str):
    def run(_args) -> int:
        print(f"coinage {command}: not available yet — missing capability: {what} ({issue}).", file=sys.stderr)
        return 2

    run.pending = True  # marks the stub, so tests (and `coinage --help` readers) can tell it from a real command
    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "forward_args", False):  # only forwarding commands take arguments they don't declare
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CoinageError as e:
        print(f"error: {e}", file=sys.stderr)  # every user error, store and world errors included
        return 1


if __name__ == "__main__":
    sys.exit(main())
