"""`avcc-stream check-config FILE`: validate a config and show what the daemon would run."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    if "check-config" in subparsers.choices:  # another area already provides it
        return
    parser = subparsers.add_parser(
        "check-config",
        help="validate a config file (errors name file:line:column and the key)",
        description="Validate a YAML config and summarise the cameras and outputs it defines. "
        "Exit status 0: valid; 2: invalid (every problem is listed).",
    )
    parser.add_argument("file", help="the YAML config file")
    parser.add_argument(
        "--print", dest="print_config", action="store_true",
        help="also print the effective config (defaults merged into each camera; secrets masked) as JSON",
    )
    parser.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.config.loader import ConfigError, load_config

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
