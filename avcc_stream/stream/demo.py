"""`avcc-stream demo`: the whole product on one machine, nothing external needed.

1. a synthetic crowd clip with sound (`avcc-stream synth-video`, cached between runs),
2. served over a local RTSP server (gst-rtsp-server) as a camera with H.264 + AAC,
3. local mosquitto and redis-server on free loopback ports,
4. the daemon (`avcc-stream run --config configs/demo.yaml`) with the shipped checkpoints,
5. ~30 s of what a subscriber of `crowd/+/count` receives, printed as it arrives,
6. then everything it started is stopped (also on Ctrl-C or an error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# start_mosquitto/start_redis/stop_process are also imported from here by the benchmarks.
from avcc_stream.stream.localservices import free_port, start_mosquitto, start_redis, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avcc-stream" / "demo"
CLIP_SIZE = "480x270"
CLIP_SEED = 7
CAMERA = "plaza"


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------------------
# clip and checkpoints


def make_clip(seconds: int) -> tuple[Path, Path]:
    """The demo camera's clip (cached) and its per-second ground-truth file."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    clip = CACHE_DIR / f"crowd-{CLIP_SIZE}-{seconds}s-seed{CLIP_SEED}.mp4"
    counts = Path(f"{clip}.counts.json")
    if not (clip.exists() and counts.exists()):
        say(f"generating a {seconds} s synthetic crowd clip with sound (once; cached in {CACHE_DIR}) ...")
        subprocess.run([sys.executable, "-m", "avcc_stream", "synth-video", "--out", str(clip),
                        "--seconds", str(seconds), "--seed", str(CLIP_SEED), "--size", CLIP_SIZE], check=True)
    return clip, counts


def shipped_checkpoints() -> tuple[str, str]:
    """The shipped CC-AV and CC-V; a checkout without them is an error, never a run with
    untrained weights."""
    from avcc_stream.cli import CommandError
    from avcc_stream.config.model import SHIPPED_AUDIO_VISUAL, SHIPPED_VISION_ONLY
    from avcc_stream.model.checkpoint import CheckpointError, resolve_checkpoint

    try:
        for name in (SHIPPED_AUDIO_VISUAL, SHIPPED_VISION_ONLY):
            resolve_checkpoint(name)
    except CheckpointError as exc:
        raise CommandError(f"the demo needs the shipped checkpoints: {exc}") from None
    return SHIPPED_AUDIO_VISUAL, SHIPPED_VISION_ONLY


# --------------------------------------------------------------------------------------
# the subscriber


class Subscriber:
    """Prints what a subscriber of `crowd/+/count` (and the camera's status/alerts) receives."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.counts = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="avcc-demo-subscriber")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("crowd/+/count", 1), ("crowd/+/status", 1), ("crowd/+/alert", 1)])
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            text = message.payload.decode("utf-8", "replace")
            if message.topic.endswith("/count"):
                self.counts += 1
            say(f"{message.topic:<20} {text}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _daemon_errors(log_path: Path) -> list[str]:
    lines = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if record.get("level") in ("error", "critical"):
            lines.append(line)
    return lines


def _health_summary(listen: str) -> str:
    """One line from the running daemon's /healthz."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=3) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    except (OSError, ValueError) as exc:
        return f"unavailable ({exc})"
    cameras = ", ".join(f"{name} {state['status']}" for name, state in body["cameras"].items())
    outputs = ", ".join(f"{name} {'connected' if state['connected'] else 'disconnected'}"
                        for name, state in body["outputs"].items())
    return f"{body['status']}: cameras {cameras}; outputs {outputs}"


# --------------------------------------------------------------------------------------
# the demo


def run_demo(seconds: float = 30.0, workdir: str | None = None) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.stream.rtsp_server import start_rtsp_server

    if not DEMO_CONFIG.is_file():
        raise CommandError(f"{DEMO_CONFIG} not found: run the demo from a checkout of the repository")
    with ExitStack() as stack:
        if workdir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="avcc-demo-")))
        else:
            folder = Path(workdir)
            folder.mkdir(parents=True, exist_ok=True)
        say("avcc-stream demo: synthetic camera with sound -> RTSP -> daemon -> MQTT + Redis\n")
        checkpoint, fallback = shipped_checkpoints()
        clip, truth_file = make_clip(int(seconds) + 20)  # the RTSP file source plays once per connection

        server = stack.enter_context(start_rtsp_server({CAMERA: f"file:{clip}"}))
        broker, mqtt_port = start_mosquitto(folder)
        stack.callback(stop_process, broker)
        store, redis_port = start_redis(folder)
        stack.callback(stop_process, store)
        say(f"RTSP camera   {server.url(CAMERA)}  ({clip.name})")
        say(f"MQTT broker   127.0.0.1:{mqtt_port}   Redis 127.0.0.1:{redis_port}")
        say(f"model         {checkpoint}  (fallback without sound: {fallback})")

        subscriber = Subscriber(mqtt_port)
        stack.callback(subscriber.close)
        metrics = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, AVCC_DEMO_CHECKPOINT=checkpoint, AVCC_DEMO_FALLBACK=fallback,
                   AVCC_DEMO_MQTT_PORT=str(mqtt_port), AVCC_DEMO_REDIS_PORT=str(redis_port),
                   AVCC_DEMO_RTSP_URL=server.url(CAMERA), AVCC_DEMO_STATE_DIR=str(folder / "state"),
                   AVCC_DEMO_METRICS_LISTEN=metrics)
        log_path = folder / "daemon.log"
        command = [sys.executable, "-m", "avcc_stream", "run", "--config", str(DEMO_CONFIG)]
        say(f"daemon        {' '.join(command[1:])}   (JSON logs: {log_path})")
        say(f"metrics       http://{metrics}/metrics   health: http://{metrics}/healthz")
        say(f"\n--- what `mosquitto_sub -t 'crowd/+/count'` receives, for {seconds:g} s "
            "(plus the camera's status and alerts) ---")
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        stack.callback(stop_process, daemon)

        # `seconds` of messages from the first count on: the daemon's start (loading the model,
        # connecting) takes seconds of its own, more on a busy machine; a cold start gets 60 s.
        patience = time.monotonic() + 60.0
        first_count_at: float | None = None
        try:
            while daemon.poll() is None:
                now = time.monotonic()
                if first_count_at is None and subscriber.counts > 0:
                    first_count_at = now
                if now >= (patience if first_count_at is None else first_count_at + seconds):
                    break
                time.sleep(0.2)
        except KeyboardInterrupt:
            say("\ninterrupted")
        health = _health_summary(metrics)
        started = time.monotonic()
        code = stop_process(daemon)
        stopped_in = time.monotonic() - started
        time.sleep(0.3)
        say(f"--- daemon stopped (SIGTERM -> exit {code} in {stopped_in:.1f} s) ---\n")
        say(f"/healthz      {health}")

        import redis

        client = redis.Redis(port=redis_port, decode_responses=True)
        key = f"crowd:{CAMERA}:count"
        kind = client.type(key)
        if kind == "stream":
            entries = client.xrange(key)
            last = entries[-1][1] if entries else None
            say(f"Redis         {key}: a Redis Stream of {len(entries)} entries"
                + (f", the last: count {last['count']} at {last['ts']}" if last else ""))
        else:
            say(f"Redis         {key}: {kind} (RedisTimeSeries), {client.execute_command('TS.INFO', key)[1]} samples")
        client.close()
        say(f"ground truth  per-second counts of the clip: {truth_file}")
        errors = _daemon_errors(log_path)
        if subscriber.counts == 0 or code != 0:
            say("the daemon did not publish counts; its last log lines:")
            for line in log_path.read_text(errors="replace").splitlines()[-15:]:
                say("  " + line)
            return 1
        if errors:
            say(f"{len(errors)} error line(s) in the daemon log, e.g.: {errors[0][:300]}")
        say(f"\n{subscriber.counts} count messages received. Everything the demo started is stopped.")
        return 0
