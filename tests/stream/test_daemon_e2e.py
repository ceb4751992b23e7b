"""End to end, all real: RTSP server (H.264 + AAC) -> `avcc-stream run` -> mosquitto + redis-server.

One daemon run (module fixture) serves every test here, to keep the suite short on two
shared cores: three cameras, `gate` (a clip with sound), `bar` (a clip without an audio
track) and `dead` (a URL where nothing listens); a paho subscriber on `crowd/#` records every
message; after both live cameras have published a few windows the daemon gets SIGTERM.

The checkpoints are narrow and randomly initialised (fast on two cores), so this test checks
the pipeline, not the model: tests/stream/test_demo.py runs the shipped model end to end, and
tests/model/test_shipped_models.py checks what it counts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion

from avcc_stream.stream.rtsp_server import start_rtsp_server
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint
from tests.rtsp import av_clip, video_only_clip  # noqa: F401 (fixtures)
from tests.services import Mosquitto, RedisServer, free_port

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
WINDOWS_WANTED = 6  # per live camera before SIGTERM
COUNT_FIELDS = {"id", "camera", "ts", "window_start", "window_end", "count", "count_int", "model", "audio", "latency_ms"}


@dataclass
class Message:
    received: float  # time.time()
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict:
        return json.loads(self.payload)


@dataclass
class Run:
    messages: list[Message] = field(default_factory=list)
    retained: list[Message] = field(default_factory=list)  # what a subscriber gets after the run
    exit_code: int | None = None
    shutdown_s: float | None = None
    sigterm_at: float = 0.0
    log_lines: list[str] = field(default_factory=list)
    redis_counts: dict[str, list] = field(default_factory=dict)
    redis_hotspots: dict[str, list] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)

    def of(self, camera: str, kind: str) -> list[dict]:
        return [m.json() for m in self.messages if m.topic == f"crowd/{camera}/{kind}"]


def _count_messages(run: Run, camera: str) -> int:
    return sum(1 for m in list(run.messages) if m.topic == f"crowd/{camera}/count")


@pytest.fixture(scope="module")
def daemon_run(tmp_path_factory: pytest.TempPathFactory, av_clip: Path, video_only_clip: Path) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("e2e")
    run = Run()
    run.checkpoints = {
        "av": make_random_checkpoint(work, "cc-av-lowres", **SMALL_WIDTHS),
        "v": make_random_checkpoint(work, "cc-v-lowres", **SMALL_WIDTHS),
    }
    broker, store = Mosquitto(work), RedisServer(work)
    broker.start()
    store.start()
    server = start_rtsp_server({"gate": f"file:{av_clip}", "bar": f"file:{video_only_clip}"})
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-subscriber")
    subscriber.on_message = lambda client, userdata, msg: run.messages.append(
        Message(time.time(), msg.topic, msg.payload, bool(msg.retain)))
    daemon = None
    try:
        subscriber.connect("127.0.0.1", broker.port)
        subscriber.subscribe("crowd/#", qos=1)
        subscriber.loop_start()
        config = work / "avcc.yaml"
        config.write_text(f"""
model: {{checkpoint: "{run.checkpoints['av']}", fallback_checkpoint: "{run.checkpoints['v']}", device: cpu}}
inference: {{max_batch: 4, max_wait_ms: 20}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, client_id: e2e-daemon}}
redis: {{enabled: true, host: 127.0.0.1, port: {store.port}, key_prefix: crowd}}
camera_defaults:
  open_timeout_s: 5
  read_timeout_s: 3
  reconnect: {{initial_s: 0.5, max_s: 2}}
logging: {{level: INFO, format: json}}
state_dir: "{work / 'state'}"
metrics: {{listen: "127.0.0.1:0"}}
cameras:
  gate: {{url: "{server.url('gate')}"}}
  bar: {{url: "{server.url('bar')}"}}
  dead: {{url: "rtsp://127.0.0.1:{free_port()}/nothing"}}
""")
        log_path = work / "daemon.log"
        with open(log_path, "w") as log_file:
            daemon = subprocess.Popen([sys.executable, "-m", "avcc_stream", "run", "--config", str(config)],
                                      cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and daemon.poll() is None:
                if min(_count_messages(run, "gate"), _count_messages(run, "bar")) >= WINDOWS_WANTED:
                    break
                time.sleep(0.2)
            run.sigterm_at = time.time()
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            try:
                run.exit_code = daemon.wait(timeout=20)
            finally:
                run.shutdown_s = time.monotonic() - started
        time.sleep(0.5)  # let the subscriber take the last messages
        late = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-late-subscriber")
        late.on_message = lambda client, userdata, msg: run.retained.append(
            Message(time.time(), msg.topic, msg.payload, bool(msg.retain)))
        late.connect("127.0.0.1", broker.port)
        late.subscribe("crowd/#", qos=1)
        late.loop_start()
        time.sleep(1.0)
        late.loop_stop()
        late.disconnect()
        run.log_lines = log_path.read_text().splitlines()
        client = redis.Redis(port=store.port, decode_responses=True)
        for camera in ("gate", "bar"):
            run.redis_counts[camera] = client.xrange(f"crowd:{camera}:count")
            run.redis_hotspots[camera] = client.xrange(f"crowd:{camera}:hotspots")
        client.close()
        yield run
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        subscriber.loop_stop()
        subscriber.disconnect()
        server.stop()
        store.stop()
        broker.stop()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_daemon_ran_until_sigterm(daemon_run: Run) -> None:
    tail = "\n".join(daemon_run.log_lines[-20:])
    assert daemon_run.exit_code is not None, tail
    for camera in ("gate", "bar"):
        assert len(daemon_run.of(camera, "count")) >= WINDOWS_WANTED, f"{camera} published too little:\n{tail}"


@pytest.mark.parametrize("camera", ["gate", "bar"])
def test_each_live_camera_publishes_one_count_per_second_with_increasing_windows(daemon_run: Run, camera: str) -> None:
    counts = daemon_run.of(camera, "count")
    ends = [_time(c["window_end"]) for c in counts]
    assert all(b > a for a, b in zip(ends, ends[1:])), "window times must increase"
    steps = [(b - a).total_seconds() for a, b in zip(ends, ends[1:])]
    assert all(0.95 <= s <= 1.05 for s in steps), f"one window per second expected, steps {steps}"
    for count in counts:
        assert set(count) == COUNT_FIELDS
        assert count["camera"] == camera and count["ts"] == count["window_end"]
        assert (_time(count["window_end"]) - _time(count["window_start"])).total_seconds() == pytest.approx(1.0, abs=0.01)
        assert isinstance(count["count"], float) and count["count"] >= 0
        assert count["count_int"] == round(count["count"])
        assert count["latency_ms"] > 0
        assert count["id"] == f"{camera}:count:{round(_time(count['window_end']).timestamp() * 1000)}"


def test_the_camera_with_sound_is_counted_audio_visually(daemon_run: Run) -> None:
    counts = daemon_run.of("gate", "count")
    assert all(c["audio"] is True for c in counts)
    assert {c["model"] for c in counts} == {f"cc-av-lowres:{daemon_run.checkpoints['av'].name}"}


def test_the_camera_without_audio_falls_back_to_the_vision_only_model_and_says_so_once(daemon_run: Run) -> None:
    counts = daemon_run.of("bar", "count")
    assert all(c["audio"] is False for c in counts)
    assert {c["model"] for c in counts} == {f"cc-v-lowres:{daemon_run.checkpoints['v'].name}"}
    said = [line for line in daemon_run.log_lines if "camera_without_audio_using_vision_only_model" in line]
    assert len(said) == 1 and json.loads(said[0])["camera"] == "bar"


def test_hotspot_shares_sum_to_one_with_boxes_inside_the_frame(daemon_run: Run) -> None:
    hotspots = daemon_run.of("gate", "hotspots")
    assert len(hotspots) >= WINDOWS_WANTED - 1
    for message in hotspots:
        assert message["grid"] == [4, 4] and message["frame_size"] == [320, 180]
        total = sum(sum(row) for row in message["share"])
        assert total == pytest.approx(1.0, abs=1e-3) or (total == 0 and message["count"] == 0)
        assert 0 < len(message["top"]) <= 3
        for patch in message["top"]:
            x0, y0, x1, y1 = patch["box"]
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 180


def test_a_dead_url_is_offline_and_retried_while_the_others_publish(daemon_run: Run) -> None:
    statuses = [s for s in daemon_run.of("dead", "status") if s["reason"] != "daemon stopped"]
    assert len(statuses) >= 2
    assert {s["state"] for s in statuses} == {"offline"} and {s["reason"] for s in statuses} == {"connection refused"}
    attempts = [s["attempt"] for s in statuses]
    assert attempts == sorted(attempts) and attempts[-1] >= 3, "the dead camera must keep retrying"
    assert all(0 < s["retry_in_s"] <= 2.0 for s in statuses)  # capped backoff
    for camera in ("gate", "bar"):
        online = [s for s in daemon_run.of(camera, "status") if s["state"] == "online"]
        assert online and online[0]["reason"] == "streaming"
        assert online[0]["audio"] is (camera == "gate")


def test_a_new_subscriber_learns_each_cameras_status_and_the_availability_from_retained_messages(daemon_run: Run) -> None:
    retained = {m.topic: m for m in daemon_run.retained}
    for camera in ("gate", "bar", "dead"):
        message = retained[f"crowd/{camera}/status"]
        assert message.retain and message.json()["state"] == "offline"
    assert retained["crowd/daemon/e2e-daemon/availability"].payload == b"offline"
    assert not any(topic.endswith(("/count", "/hotspots")) for topic in retained)  # counts are not retained


def test_redis_holds_the_same_series_as_mqtt(daemon_run: Run) -> None:
    for camera in ("gate", "bar"):
        mqtt_ids = [c["id"] for c in daemon_run.of(camera, "count")]
        redis_entries = daemon_run.redis_counts[camera]
        redis_ids = [fields["id"] for _, fields in redis_entries]
        assert redis_ids == mqtt_ids
        for (entry_id, fields), message in zip(redis_entries, daemon_run.of(camera, "count")):
            assert set(fields) == COUNT_FIELDS  # every field: nothing half-written
            assert float(fields["count"]) == pytest.approx(message["count"])
            assert entry_id.startswith(f"{round(_time(message['window_end']).timestamp() * 1000)}-")
        hotspot_ids = [fields["id"].replace(":hotspots:", ":count:") for _, fields in daemon_run.redis_hotspots[camera]]
        assert hotspot_ids == mqtt_ids


def test_sigterm_drains_and_exits_0_within_10_s_with_nothing_half_written(daemon_run: Run) -> None:
    assert daemon_run.exit_code == 0
    stopped = [json.loads(line) for line in daemon_run.log_lines if '"daemon_stopped"' in line]
    assert stopped and stopped[0]["inference_drained"] is True
    drained_s = _time(stopped[0]["timestamp"]).timestamp() - daemon_run.sigterm_at
    # Says which part was slow: the drain (the daemon's) or what came after it (the process's exit).
    timing = f"SIGTERM -> daemon_stopped logged in {drained_s:.2f} s -> exit {daemon_run.exit_code} in {daemon_run.shutdown_s:.2f} s"
    assert daemon_run.shutdown_s is not None and daemon_run.shutdown_s < 10.0, timing
    print(timing)
    for message in daemon_run.messages:  # every message is whole JSON (availability is plain text)
        if not message.topic.endswith("/availability"):
            message.json()
    for camera in ("gate", "bar", "dead"):
        last = daemon_run.of(camera, "status")[-1]
        assert (last["state"], last["reason"]) == ("offline", "daemon stopped")
    availability = [m for m in daemon_run.messages if m.topic == "crowd/daemon/e2e-daemon/availability"]
    assert availability[-1].payload == b"offline"


def test_every_log_line_is_json_naming_its_camera(daemon_run: Run) -> None:
    records = [json.loads(line) for line in daemon_run.log_lines if line.strip()]
    assert records and all("camera" in r and "event" in r for r in records)
    reconnects = [r for r in records if r["event"] == "camera_reconnecting"]
    assert reconnects and {r["camera"] for r in reconnects} >= {"dead"}


def test_latency_from_window_end_to_mqtt_receipt(daemon_run: Run, record_property) -> None:
    latencies = sorted(
        (m.received - _time(m.json()["window_end"]).timestamp()) * 1000
        for m in daemon_run.messages if m.topic.endswith("/count") and m.received < daemon_run.sigterm_at
    )
    assert latencies and all(value > 0 for value in latencies)
    record_property("latency_ms_p50", latencies[len(latencies) // 2])
    record_property("latency_ms_max", latencies[-1])
    print(f"window end -> MQTT receipt: p50 {latencies[len(latencies) // 2]:.0f} ms, max {latencies[-1]:.0f} ms, n={len(latencies)}")
