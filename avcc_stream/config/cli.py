"""`avcc-stream check-config FILE`: validate a config and show what it would run.

A daemon config (cameras, outputs) and a training config (model, data, optim, train; `extends:`)
are told apart by their top-level keys, so one command checks every YAML file the project has.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    if "check-config" in subparsers.choices:  # another area already provides it
        return
    parser = subparsers.add_parser(
        "check-config",
        help="validate a config file (errors name file:line:column and the key)",
        description="Validate a YAML config and summarise what it defines: a daemon config's cameras and "
        "outputs, or a training config's model, data and schedule (extends: parents and --set items "
        "applied). Exit status 0: valid; 2: invalid (every problem is listed).",
    )
    parser.add_argument("file", help="the YAML config file (daemon or training)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="training configs: override a value as `avcc-stream train --set` does")
    parser.add_argument(
        "--print", dest="print_config", action="store_true",
        help="also print the effective config as JSON (daemon: defaults merged into each camera, secrets "
        "masked; training: extends: and --set applied)",
    )
    parser.set_defaults(func=check_config)


TRAINING_KEYS = frozenset({"extends", "data", "optim", "train"})  # no daemon config has these


def _is_training_config(path: str) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the daemon loader reports it with file:line:column
    return isinstance(data, dict) and not TRAINING_KEYS.isdisjoint(data)


def check_config(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.config.loader import ConfigError, load_config

    if _is_training_config(args.file):
        return check_training_config(args)
    if args.overrides:
        raise CommandError("--set applies to training configs only; a daemon config is checked as written")
    try:
        app = load_config(args.file)
    except ConfigError as exc:
        raise CommandError(f"invalid config ({len(exc.issues)} problem(s)):\n{exc}") from None
    enabled = app.enabled_cameras()
    print(f"{args.file}: valid; {len(enabled)} of {len(app.cameras)} cameras enabled")
    for name, camera in app.cameras.items():
        levels = ", ".join(f"{level}>={threshold:g}" for level, threshold in camera.alerts.levels.items()) or "no levels"
        state = "enabled" if camera.enabled else "disabled"
        print(f"  camera {name} ({state}): {camera.source_label}; audio {camera.audio}"
              f"{'; microphone ' + str(camera.microphone) if camera.microphone is not None else ''}; "
              f"alerts {levels}; {len(camera.zones)} zone(s)")
    outputs = []
    if app.mqtt.enabled:
        outputs.append(f"mqtt {app.mqtt.host}:{app.mqtt.port} (MQTT {app.mqtt.protocol}, QoS {app.mqtt.qos}"
                       f"{', TLS' if app.mqtt.tls.enabled else ''}, topics {app.mqtt.topic_prefix}/<camera>/...)")
    if app.redis.enabled:
        outputs.append(f"redis {app.redis.host}:{app.redis.port}/{app.redis.db} (backend {app.redis.backend})")
    if app.console.enabled:
        outputs.append(f"console {app.console.path or 'stdout'}")
    print(f"  outputs: {'; '.join(outputs) or 'none enabled'}")
    spool = app.spool
    print(f"  state: {app.state_dir} (spool per output: {spool.max_records} records, {spool.max_bytes} bytes, "
          f"oldest dropped past either; synchronous {spool.synchronous})")
    print(f"  metrics: {'http://' + app.metrics.listen + '/metrics and /healthz' if app.metrics.enabled else 'off'}"
          f"{'; Home Assistant discovery under ' + app.homeassistant.discovery_prefix if app.homeassistant.enabled else ''}")
    print(f"  model: {app.model.checkpoint} (fallback {app.model.fallback_checkpoint}) on {', '.join(app.model.devices)}")
    if args.print_config:
        from avcc_stream.security import redact_url

        effective = app.model_dump(mode="json")  # SecretStr fields dump as "**********"
        for camera in effective["cameras"].values():
            if camera.get("url"):
                camera["url"] = redact_url(camera["url"])  # RTSP credentials stay private
        print(json.dumps(effective, indent=2))
    return 0


def check_training_config(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.train.config import ConfigError, load_config

    try:
        cfg = load_config(args.file, args.overrides)
    except ConfigError as exc:
        problems = str(exc).splitlines()
        raise CommandError(f"invalid training config ({len(problems)} problem(s)):\n{exc}") from None
    model, data, optim, train = cfg.model, cfg.data, cfg.optim, cfg.train
    print(f"{args.file}: valid training config")
    overrides = ", ".join(f"{key}={value}" for key, value in model.overrides.items()) or "none"
    print(f"  model: preset {model.preset}; overrides: {overrides}")
    if model.init_from:
        missing = [source for source in model.init_from
                   if not source.startswith("builtin:") and not Path(source).exists()]
        print(f"  starts from: {', '.join(model.init_from)} (a later one wins where both hold a tensor)"
              + (f"; not here yet: {', '.join(missing)}" if missing else ""))
    epoch = f"{data.samples_per_epoch} samples" if data.samples_per_epoch else "the whole split"
    print(f"  data: {data.root} ({'found' if data.root.exists() else 'not here yet'}), "
          f"train on {data.train_split!r}, validate on {data.val_split!r} "
          f"({data.max_val_samples or 'all'} images x {', '.join(data.val_settings)}); an epoch is {epoch}")
    ema = f"; EMA {train.ema_decay}" if train.ema_decay else ""
    print(f"  schedule: {train.epochs} epoch(s), batch {train.batch_size}, lr {optim.lr:g} ({optim.schedule}, "
          f"gamma {optim.gamma:g}, warm-up {optim.warmup_steps} steps), amp {train.amp}{ema}")
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
    return 0
