"""`avcc-stream` subcommands of the stream area: run, probe and demo (check-config is the config area's)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the top-level parser."""
    run = subparsers.add_parser(
        "run", help="run the counting daemon (cameras in, counts/hotspots/alerts out to MQTT and Redis)",
        description="Run the daemon until SIGTERM/SIGINT (then it drains in-flight windows and exits 0). "
                    "SIGHUP re-reads the config; an invalid one is rejected and the running one kept.",
    )
    run.add_argument("--config", required=True, metavar="FILE", help="YAML config (see configs/example.yaml)")
    run.set_defaults(func=_run, skip_teardown=True)

    # check-config is avcc_stream/config/cli.py's.

    probe = subparsers.add_parser(
        "probe", help="open the configured cameras as the daemon would and report what they send",
        description="Open every enabled camera of a config exactly as `run` does, read each for a few seconds "
                    "(all at once), and report what it carries (codecs, size, frame rate, audio rate and "
                    "channels), the frame rate and share of sound that arrive, and how many windows the daemon "
                    "would count with sound (CC-AV) or without (CC-V). Publishes nothing; loads the model only "
                    "with --count. Exit status 0: every camera streamed; 1: at least one did not; 2: the config "
                    "or --camera is invalid.",
    )
    probe.add_argument("--config", required=True, metavar="FILE", help="YAML config (see configs/example.yaml)")
    probe.add_argument("--camera", action="append", default=None, metavar="NAME",
                       help="probe only this camera (repeatable; default: every enabled camera)")
    probe.add_argument("--seconds", type=float, default=5.0,
                       help="how long to read each camera after its first frame (default 5)")
    probe.add_argument("--count", action="store_true",
                       help="also count each camera's last window with the config's model, as the daemon would")
    probe.add_argument("--json", action="store_true", help="print one JSON object per camera instead of the report")
    probe.set_defaults(func=_probe)

    demo = subparsers.add_parser(
        "demo", help="the whole product on this machine: synthetic camera -> daemon -> MQTT + Redis",
        description="Generate a synthetic crowd clip with sound, serve it over a local RTSP server, start "
                    "local mosquitto and redis-server, run the daemon with the shipped checkpoint, print what a "
                    "subscriber of crowd/+/count receives, then stop everything it started.",
    )
    demo.add_argument("--seconds", type=float, default=30.0, help="how long to show messages, from the first count on (default 30)")
    demo.add_argument("--workdir", default=None, help="keep the demo's files here (default: a temporary folder)")
    demo.set_defaults(func=_demo)


def _load(path: str) -> Any:
    from avcc_stream.cli import CommandError
    from avcc_stream.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CommandError(f"invalid config:\n{exc}") from None


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from avcc_stream.cli import CommandError
    from avcc_stream.model.checkpoint import CheckpointError
    from avcc_stream.stream.daemon import configure_logging
    from avcc_stream.stream.publish import PublishError
    from avcc_stream.stream.service import Service
    from avcc_stream.stream.spool import SpoolError

    app = _load(args.config)
    if not app.enabled_cameras():
        raise CommandError(f"{args.config}: no camera is enabled: add one under cameras:")
    configure_logging(app.logging.level, app.logging.format)
    try:
        service = Service.from_config(args.config, app)
    except (CheckpointError, ValueError, RuntimeError) as exc:
        raise CommandError(f"cannot load the model: {exc}") from None
    except OSError as exc:  # the metrics address is taken or not ours
        raise CommandError(f"{exc.strerror or exc} (metrics.listen in {args.config}; "
                           "or metrics.enabled: false)") from None
    try:
        asyncio.run(service.run())
    except (PublishError, SpoolError) as exc:
        raise CommandError(str(exc)) from None
    return 0


def _probe(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from avcc_stream.cli import CommandError
    from avcc_stream.model.checkpoint import CheckpointError
    from avcc_stream.stream.daemon import camera_spec
    from avcc_stream.stream.infer import load_models
    from avcc_stream.stream.probe import count_last_windows, describe, probe_cameras

    if args.seconds <= 0:
        raise CommandError("--seconds must be > 0")
    app = _load(args.config)
    cameras = app.enabled_cameras()
    wanted = args.camera or list(cameras)
    unknown = [name for name in wanted if name not in cameras]
    if unknown:
        raise CommandError(f"{args.config}: no enabled camera {', '.join(map(repr, unknown))}; "
                           f"enabled: {', '.join(cameras) or 'none'}")
    if not wanted:
        raise CommandError(f"{args.config}: no camera is enabled: add one under cameras:")
    models = None
    if args.count:  # before the cameras: a model that cannot load is a config error, not a camera's
        try:
            models = load_models(app.model.checkpoint, app.model.fallback_checkpoint, app.model.devices)
        except (CheckpointError, ValueError, RuntimeError) as exc:
            raise CommandError(f"cannot load the model: {exc}") from None
    results = asyncio.run(probe_cameras([camera_spec(name, cameras[name]) for name in wanted], args.seconds))
    if models is not None:
        count_last_windows(results, models, app.model.amp, app.model.flip_average)
    for result in results:
        if args.json:
            print(json.dumps(result.as_dict(), default=str))
        else:
            print("\n".join(describe(result)))
    return 0 if all(result.ok for result in results) else 1


def _demo(args: argparse.Namespace) -> int:
    from avcc_stream.stream.demo import run_demo

    return run_demo(seconds=args.seconds, workdir=args.workdir)
