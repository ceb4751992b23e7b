"""`avcc-stream` subcommands of the stream area: run, check-config, demo."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the top-level parser."""
    run = subparsers.add_parser(
        "run", help="run the counting daemon (cameras in, counts/hotspots/alerts out to MQTT and Redis)",
        description="Run the daemon until SIGTERM/SIGINT (then it drains in-flight windows and exits 0).",
    )
    run.add_argument("--config", required=True, metavar="FILE", help="YAML config (see configs/example.yaml)")
    run.set_defaults(func=_run)

    check = subparsers.add_parser("check-config", help="validate a config file and exit (2 on errors)")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_check_config)

    demo = subparsers.add_parser(
        "demo", help="the whole product on this machine: synthetic camera -> daemon -> MQTT + Redis",
        description="Generate a synthetic crowd clip with sound, serve it over a local RTSP server, start "
                    "local mosquitto and redis-server, run the daemon with the shipped checkpoint, print what a "
                    "subscriber of crowd/+/count receives, then stop everything it started.",
    )
    demo.add_argument("--seconds", type=float, default=30.0, help="how long to show messages (default 30)")
    demo.add_argument("--workdir", default=None, help="keep the demo's files here (default: a temporary folder)")
    demo.set_defaults(func=_demo)


def _load(path: str) -> Any:
    from avcc_stream.cli import CommandError
    from avcc_stream.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CommandError(f"invalid config:\n{exc}") from None


def _check_config(args: argparse.Namespace) -> int:
    app = _load(args.file)
    cameras = app.enabled_cameras()
    print(f"OK: {args.file} ({len(cameras)} camera(s) enabled: {', '.join(cameras) or 'none'})")
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from avcc_stream.cli import CommandError
    from avcc_stream.model.checkpoint import CheckpointError
    from avcc_stream.stream.daemon import configure_logging, daemon_from_config, run_daemon
    from avcc_stream.stream.publish import PublishError, publishers_from_config

    app = _load(args.config)
    if not app.enabled_cameras():
        raise CommandError(f"{args.config}: no camera is enabled: add one under cameras:")
    configure_logging(app.logging.level, app.logging.format)
    try:
        daemon = daemon_from_config(app, publishers_from_config(app))
    except (CheckpointError, ValueError, RuntimeError) as exc:
        raise CommandError(f"cannot load the model: {exc}") from None
    try:
        asyncio.run(run_daemon(daemon))
    except PublishError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _demo(args: argparse.Namespace) -> int:
    from avcc_stream.stream.demo import run_demo

    return run_demo(seconds=args.seconds, workdir=args.workdir)
