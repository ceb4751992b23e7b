"""The `avcc-stream` command: one entry point, each area registers its own subcommands.

Every area (model, data, train, stream, bench) owns a `cli.py` with `register(subparsers)`;
this module only wires them together, so no area has to know about the others' commands.
Heavy imports (torch, av) happen inside the command handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from avcc_stream import __version__

COMMAND_MODULES = (
    "avcc_stream.model.cli",
    "avcc_stream.data.cli",
    "avcc_stream.train.cli",
    "avcc_stream.stream.cli",
    "avcc_stream.bench.cli",
    "avcc_stream.config.cli",  # check-config
)


class CommandError(Exception):
    """An expected failure that should reach the user as one clear line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avcc-stream",
        description="Audio-visual crowd counting for live cameras with sound (CC-AV / CC-V).",
    )
    parser.add_argument("--version", action="version", version=f"avcc-stream {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command in this process and return its exit status (tests call this)."""
    return _dispatch(build_parser().parse_args(argv))


def entry() -> None:
    """The `avcc-stream` program (console script and `python -m avcc_stream`).

    A command that sets `skip_teardown` (the daemon) has drained, closed its outputs and
    flushed its spools by the time it returns. The interpreter's teardown after that (torch,
    FFmpeg, idle worker threads) saves nothing, usually takes under a second, and was measured
    at 12-17 s in two full test-suite runs on the build machine: long enough to overrun a stop
    budget. So the program flushes its logs and leaves at once.
    """
    args = build_parser().parse_args()
    status = _dispatch(args)
    if getattr(args, "skip_teardown", False):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"avcc-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
