"""Fault tests: the real `avcc-stream run` against real mosquitto, redis-server and RTSP
servers on loopback, hurt one way after another while a subscriber, the log, /healthz,
/metrics and a stand-in for systemd's notify socket watch from outside.

One daemon run (module fixture) goes through every fault in turn, to keep the suite short
on two shared cores; each test below checks one promise on what was recorded:

1. start: READY=1 once outputs and cameras are started; bad inputs (a corrupt file, a
   truncated one, an audio-only one) each get a clear reason while the others count; odd
   sample rates and channel counts (8 kHz mono, 96 kHz 5.1) are counted with their sound;
2. MQTT broker stopped for a few seconds and restarted on its port: every window arrives;
3. Redis stopped and restarted (append-only file): its streams have no holes;
4. the RTSP server of one camera killed and restarted on its port: that camera counts again
   within 5 s of being readable, the other one never stops;
5. SIGHUP with a changed config (a camera added, one removed, one changed, top_k changed,
   an MQTT setting that needs a restart), then SIGHUP with a broken config (rejected, the
   running config kept);
6. MQTT down again until the spool holds records, SIGKILL, a new daemon: the spool is
   replayed; then SIGTERM: exit 0 within 10 s, STOPPING=1.

The camera with the restarted server carries RTSP credentials in its URL: they must never
appear in the logs, the messages, Redis, /healthz, /metrics or the spool.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
import redis

from avcc_stream.stream.localservices import RedisServer, free_port
from avcc_stream.stream.rtsp_server import RtspServer, encode_test_clip, start_rtsp_server
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint
from tests.stream.daemon_harness import (
    DaemonProcess,
    Inbox,
    NotifySocket,
    gaps,
    get_json,
    get_text,
    persistent_broker,
    spooled_ids,
    wait_until,
    window_ms,
)

pytestmark = [pytest.mark.services, pytest.mark.timeout(400)]

SECRET = "s3cr3t-rtsp-pass"
OUTAGE_S = 4.0  # MQTT / Redis outages
RTSP_OUTAGE_S = 5.0  # long enough for the camera's backoff to reach its cap
RESUME_WITHIN_S = 5.0
LIVE = ("gate", "lobby")  # the two RTSP cameras
LOOPED = ("mono8k", "surround")  # looping files with odd sample rates / channel counts
BROKEN = {
    "corrupt": "not a playable stream (corrupt, truncated or not audio/video): invalid data",
    "truncated": "not a playable stream (corrupt, truncated or not audio/video): invalid data",
    "audioonly": "no video stream (the input has audio): a camera needs video",
}


@dataclass
class Clips:
    mono8k: Path
    surround: Path
    video_only: Path
    corrupt: Path
    truncated: Path
    audioonly: Path


def make_clips(folder: Path) -> Clips:
    import subprocess

    small = (64, 36)
    mono8k = encode_test_clip(folder / "mono8k.mp4", seconds=2, size=small, sample_rate=8000, channels=1)
    surround = encode_test_clip(folder / "surround.mp4", seconds=2, size=small, sample_rate=96_000, channels=6)
    video_only = encode_test_clip(folder / "video.mp4", seconds=2, size=small, audio=False)
    corrupt = folder / "corrupt.mp4"
    # Seeded: now and then os.urandom's bytes probed as a format with a subtitle stream, and the
    # camera failed for "no video stream" instead (a flaky run). FFmpeg rejects these as invalid.
    corrupt.write_bytes(random.Random(20_000).randbytes(20_000))
    whole = encode_test_clip(folder / "whole.mp4", seconds=3, size=small)
    truncated = folder / "truncated.mp4"  # a recording cut off before its index (moov) was written
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    audioonly = folder / "audio.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "3", "-c:a", "aac", str(audioonly)], check=True)
    return Clips(mono8k, surround, video_only, corrupt, truncated, audioonly)


def config_text(*, work: Path, checkpoints: dict[str, Path], clips: Clips, gate_url: str, lobby_url: str,
                mqtt_port: int, redis_port: int, metrics_port: int, version: int) -> str:
    """The run's config; version 2 is the reload (extra added, surround removed, mono8k
    changed, top_k 3 -> 2, an MQTT timeout that needs a restart), 3 is broken."""
    cameras = {
        "gate": f'url: "{gate_url}"',
        "lobby": f'url: "{lobby_url}"',
        "mono8k": f'{{file: "{clips.mono8k}", loop: true}}',
        "surround": f'{{file: "{clips.surround}", loop: true}}',
        "corrupt": f'{{file: "{clips.corrupt}"}}',
        "truncated": f'{{file: "{clips.truncated}"}}',
        "audioonly": f'{{file: "{clips.audioonly}"}}',
    }
    cameras["gate"] = "{" + cameras["gate"] + "}"
    cameras["lobby"] = "{" + cameras["lobby"] + "}"
    top_k, publish_timeout = 3, 2
    if version >= 2:
        del cameras["surround"]
        cameras["extra"] = f'{{file: "{clips.video_only}", loop: true}}'
        cameras["mono8k"] = f'{{file: "{clips.mono8k}", loop: true, watchdog_s: 6}}'
        top_k, publish_timeout = 2, 3
    if version >= 3:
        cameras["bad#cam"] = f'{{file: "{clips.mono8k}", loop: true}}'
    camera_lines = "\n".join(f"  {name}: {value}" for name, value in cameras.items())
    return f"""
model: {{checkpoint: "{checkpoints['av']}", fallback_checkpoint: "{checkpoints['v']}", device: cpu}}
inference: {{max_batch: 8, max_wait_ms: 20, queue_per_camera: 60}}
mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: faults-daemon, connect_timeout_s: 3,
        publish_timeout_s: {publish_timeout}, reconnect_min_s: 0.2, reconnect_max_s: 1}}
redis: {{enabled: true, host: 127.0.0.1, port: {redis_port}, reconnect_min_s: 0.2, reconnect_max_s: 1}}
hotspots: {{top_k: {top_k}}}
alerts: {{levels: {{warn: 0.000000001}}}}
homeassistant: {{enabled: true}}
state_dir: "{work / 'state'}"
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
camera_defaults: {{open_timeout_s: 5, read_timeout_s: 3, watchdog_s: 5}}
logging: {{level: INFO, format: json}}
cameras:
{camera_lines}
"""


@dataclass
class Run:
    """What the scenario saw, for the tests to check."""

    config: Path = Path()
    state: Path = Path()
    inbox: Inbox | None = None
    notify: list[str] = field(default_factory=list)
    watchdog_pings: int = 0
    ready_at: float = 0.0
    logs: list[dict[str, Any]] = field(default_factory=list)  # both daemons, in order
    log_text: str = ""
    redis_counts: dict[str, list[str]] = field(default_factory=dict)
    redis_dump: str = ""
    http_bodies: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # time.time() of each step
    healthz_in_outage: tuple[int, dict[str, Any]] = (0, {})
    metrics_in_outage: str = ""
    metrics_after_reload: str = ""
    spooled_at_kill: list[str] = field(default_factory=list)
    spool_bytes: bytes = b""
    resume: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    shutdown_s: float | None = None

    def counts(self, camera: str) -> list[dict[str, Any]]:
        assert self.inbox is not None
        return self.inbox.payloads(camera, "count")


def _probe_readable(url: str, timeout: float = 15.0) -> float:
    """time.time() at which av.open on `url` first succeeds (the stream is readable again);
    short timeouts, so a probe stuck on a server not serving yet does not report late."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            container = av.open(url, options={"rtsp_transport": "tcp", "timeout": "300000"}, timeout=(0.3, 0.3))
        except av.FFmpegError:
            time.sleep(0.05)
            continue
        readable = time.time()
        container.close()
        return readable
    raise AssertionError(f"{url} did not become readable within {timeout} s")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("faults")
    result = Run(config=work / "avcc.yaml", state=work / "state")
    checkpoints = {"av": make_random_checkpoint(work, "cc-av-lowres", **SMALL_WIDTHS),
                   "v": make_random_checkpoint(work, "cc-v-lowres", **SMALL_WIDTHS)}
    clips = make_clips(work)
    broker = persistent_broker(work)
    store = RedisServer(work, extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    servers: dict[str, RtspServer] = {}
    daemons: list[DaemonProcess] = []
    notify = NotifySocket(work)
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    try:
        broker.start()
        store.start()
        for camera in LIVE:
            servers[camera] = start_rtsp_server({"live": "test"}, width=160, height=90)
        gate_url = servers["gate"].url("live").replace("rtsp://", f"rtsp://viewer:{SECRET}@")

        def write_config(version: int) -> None:
            result.config.write_text(config_text(
                work=work, checkpoints=checkpoints, clips=clips, gate_url=gate_url,
                lobby_url=servers["lobby"].url("live"), mqtt_port=broker.port, redis_port=store.port,
                metrics_port=metrics_port, version=version))

        write_config(1)
        inbox = result.inbox = Inbox(broker.port, "crowd/#", "homeassistant/#", client_id="faults-inbox").start()
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
        daemon = DaemonProcess(result.config, work / "daemon.log", env).start()
        daemons.append(daemon)

        def counting(cameras, at_least: int, timeout: float, what: str) -> None:  # noqa: ANN001
            wait_until(lambda: daemon.alive() and all(len(inbox.payloads(c, "count")) >= at_least for c in cameras),
                       timeout, f"{what}\n{daemon.tail()}", poll=0.1)

        # 1. start
        counting(LIVE + LOOPED, 3, 120, "every good camera counting")
        wait_until(lambda: notify.count("READY=1"), 5, "READY=1")
        result.ready_at = next(at for at, message in notify.messages if "READY=1" in message)
        wait_until(lambda: all(inbox.payloads(c, "status") for c in BROKEN), 30, "a status from each broken input")

        # 2. MQTT outage
        result.marks["mqtt_down"] = time.time()
        broker.stop()
        time.sleep(OUTAGE_S / 2)
        result.healthz_in_outage = get_json(metrics_url + "/healthz")
        result.metrics_in_outage = get_text(metrics_url + "/metrics")
        time.sleep(OUTAGE_S / 2)
        broker.start()
        result.marks["mqtt_up"] = time.time()
        wait_until(lambda: get_json(metrics_url + "/healthz")[1]["outputs"]["mqtt"]["spool_records"] == 0
                   and get_json(metrics_url + "/healthz")[1]["outputs"]["mqtt"]["connected"], 30, "MQTT caught up")

        # 3. Redis outage
        result.marks["redis_down"] = time.time()
        store.stop()
        time.sleep(OUTAGE_S)
        store.start()
        result.marks["redis_up"] = time.time()
        wait_until(lambda: get_json(metrics_url + "/healthz")[1]["outputs"]["redis"]["spool_records"] == 0
                   and get_json(metrics_url + "/healthz")[1]["outputs"]["redis"]["connected"], 30, "Redis caught up")

        # 4. the gate camera's RTSP server dies and comes back on the same port
        gate_counts_before = len(result.counts("gate"))
        result.marks["rtsp_killed"] = time.time()
        servers["gate"].kill()
        time.sleep(RTSP_OUTAGE_S)
        servers["gate"] = servers["gate"].restarted()
        result.resume["listening"] = time.time()
        result.resume["readable"] = _probe_readable(servers["gate"].url("live"))
        killed_ms = result.marks["rtsp_killed"] * 1000

        def first_count_after_outage() -> Any:
            return next((m for m in inbox.messages("crowd/gate/count")
                         if window_ms(m.json()["id"]) - 1000 > killed_ms), None)

        resumed = wait_until(first_count_after_outage, 30, f"gate counting again\n{daemon.tail()}")
        result.resume["first_count"] = resumed.at
        assert len(result.counts("gate")) > gate_counts_before
        counting(("lobby",), len(result.counts("lobby")) + 2, 30, "lobby still counting")

        # 5. reload: a changed config, then a broken one
        write_config(2)
        result.marks["reload"] = time.time()
        daemon.send(signal.SIGHUP)
        wait_until(lambda: daemon.events("config_reloaded"), 30, f"the reload\n{daemon.tail()}")
        counting(("extra",), 3, 60, "the added camera counting")
        result.metrics_after_reload = get_text(metrics_url + "/metrics")
        counting(LIVE + ("mono8k",), len(result.counts("mono8k")) + 2, 30, "cameras after the reload")
        write_config(3)
        result.marks["broken_reload"] = time.time()
        daemon.send(signal.SIGHUP)
        wait_until(lambda: daemon.events("config_reload_rejected"), 30, "the broken config rejected")
        counting(LIVE + ("extra", "mono8k"), len(result.counts("extra")) + 2, 30, "cameras after the rejected reload")
        write_config(2)  # what the next daemon starts with

        # 6. MQTT down until the spool holds records, then SIGKILL and a new daemon
        result.marks["mqtt_down_again"] = time.time()
        broker.stop()
        wait_until(lambda: get_json(metrics_url + "/healthz")[1]["outputs"]["mqtt"]["spool_records"] >= 12, 30,
                   "records in the MQTT spool")
        result.http_bodies.append(get_text(metrics_url + "/metrics"))
        result.http_bodies.append(str(get_json(metrics_url + "/healthz")[1]))
        daemon.kill()
        result.marks["killed"] = time.time()
        spool_file = result.state / "spool" / "mqtt.sqlite3"
        result.spooled_at_kill = spooled_ids(spool_file, "count")
        result.spool_bytes = b"".join(p.read_bytes() for p in (result.state / "spool").iterdir() if p.is_file())
        broker.start()
        daemon = DaemonProcess(result.config, work / "daemon2.log", env).start()
        daemons.append(daemon)
        wait_until(lambda: set(result.spooled_at_kill) <= {p["id"] for c in ("gate", "lobby", "mono8k", "extra")
                                                          for p in inbox.payloads(c, "count")},
                   90, f"the spooled windows replayed by the next daemon\n{daemon.tail()}", poll=0.2)
        counting(("lobby",), len(result.counts("lobby")) + 2, 60, "the new daemon counting")
        result.exit_code, result.shutdown_s = daemon.stop()
        time.sleep(0.5)  # the inbox takes the last messages

        client = redis.Redis(port=store.port, decode_responses=True)
        for camera in LIVE + LOOPED + ("extra",):
            result.redis_counts[camera] = [fields["id"] for _, fields in client.xrange(f"crowd:{camera}:count")]
        dump = []
        for key in client.keys("*"):
            kind = client.type(key)
            dump.append(f"{key} {kind} " + str(client.xrange(key) if kind == "stream" else client.hgetall(key)
                                               if kind == "hash" else ""))
        result.redis_dump = "\n".join(dump)
        client.close()
        result.notify = notify.assignments()
        result.watchdog_pings = notify.count("WATCHDOG=1")
        for each in daemons:
            result.logs += each.records()
            result.log_text += each.log_path.read_text(errors="replace")
        yield result
    finally:
        for each in daemons:
            each.kill()
        if result.inbox is not None:
            result.inbox.stop()
        notify.close()
        for server in servers.values():
            server.stop()
        store.stop()
        broker.stop()


# --------------------------------------------------------------------------------------
# 1. start, bad inputs, odd audio


def test_ready_is_sent_once_outputs_and_cameras_are_started_and_the_watchdog_is_fed(run: Run) -> None:
    assert run.notify[0] == "READY=1" and run.notify[1].startswith("STATUS=counting 7 camera(s)")
    started = next(r for r in run.logs if r.get("event") == "daemon_started")
    assert started["outputs"] == ["mqtt", "redis"]
    # The precision each device counts in is logged (bf16 on a CPU with bf16 instructions).
    from avcc_stream.precision import cpu_has_bf16

    assert started["devices"] == ["cpu"] and started["precision"] == ["bf16" if cpu_has_bf16() else "fp32"]
    assert run.watchdog_pings >= 5  # WATCHDOG_USEC=2 s: a ping a second from the event loop


@pytest.mark.parametrize("camera", sorted(BROKEN))
def test_a_bad_input_gets_a_clear_reason_and_is_retried_while_the_others_count(run: Run, camera: str) -> None:
    statuses = run.inbox.payloads(camera, "status")
    assert statuses[0]["state"] == "offline" and statuses[0]["reason"] == BROKEN[camera]
    retries = [r for r in run.logs if r.get("event") == "camera_reconnecting" and r.get("camera") == camera]
    assert retries and retries[0]["reason"] == BROKEN[camera]
    assert all(len(run.counts(good)) >= 10 for good in LIVE)
    assert not run.counts(camera)
    # retried every couple of seconds, but reported only at first (then once a minute):
    # a camera that stays broken for months must not flood the journal
    attempts = _sample(run.metrics_after_reload, f'avcc_reconnects_total{{component="camera",name="{camera}"}}')
    lines = [r for r in run.logs if r.get("camera") == camera and r.get("timestamp", "") < _iso(run.marks["killed"])
             and r.get("level") != "debug"]
    assert attempts >= 8 and len(lines) <= 9, (attempts, [r["event"] for r in lines])  # 3 retries reported (+1 a minute)


@pytest.mark.parametrize("camera", LOOPED)
def test_odd_sample_rates_and_channel_counts_are_counted_with_their_sound(run: Run, camera: str) -> None:
    opened = next(r for r in run.logs if r.get("event") == "camera_opened" and r.get("camera") == camera)
    assert (opened["audio_rate"], opened["audio_channels"]) == {"mono8k": (8000, 1), "surround": (96000, 6)}[camera]
    counts = run.counts(camera)
    assert len(counts) >= 3 and all(c["audio"] for c in counts)
    assert {c["model"].split(":")[0] for c in counts} == {"cc-av-lowres"}


def test_a_camera_without_audio_falls_back_to_the_vision_only_model(run: Run) -> None:
    counts = run.counts("extra")
    assert counts and not any(c["audio"] for c in counts)
    assert {c["model"].split(":")[0] for c in counts} == {"cc-v-lowres"}


# --------------------------------------------------------------------------------------
# 2-3. output outages


def _ids_before(ids: list[str], moment: float) -> list[str]:
    return [i for i in ids if window_ms(i) < moment * 1000]


@pytest.mark.parametrize("camera", LIVE + LOOPED)
def test_mqtt_and_redis_outages_lose_no_window_and_keep_the_order(run: Run, camera: str) -> None:
    # Until the last outage (which ended in a SIGKILL) both outputs must hold exactly the
    # windows the daemon counted, each in window order; MQTT duplicates (QoS 1, replays)
    # are dropped by id, as a consumer does.
    cutoff = run.marks["mqtt_down_again"]
    mqtt_ids = _ids_before(run.inbox.distinct_ids(camera), cutoff)
    redis_ids = _ids_before(run.redis_counts[camera], cutoff)
    assert mqtt_ids == redis_ids
    assert mqtt_ids == sorted(mqtt_ids, key=window_ms)
    outages = [(run.marks["mqtt_down"], run.marks["mqtt_up"]), (run.marks["redis_down"], run.marks["redis_up"])]
    for down, up in outages:  # windows during each outage were counted and delivered
        assert sum(down * 1000 <= window_ms(i) <= up * 1000 for i in mqtt_ids) >= OUTAGE_S - 1
    if camera != "gate":  # gate's own RTSP outage is a real hole; until the reload there is no other
        assert gaps([i for i in mqtt_ids if run.ready_at + 2 < window_ms(i) / 1000 < run.marks["reload"]]) == []


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_60_s_broker_outage_during_a_running_daemon_loses_no_window(tmp_path: Path) -> None:
    av = make_random_checkpoint(tmp_path, "cc-av-lowres", **SMALL_WIDTHS)
    v = make_random_checkpoint(tmp_path, "cc-v-lowres", **SMALL_WIDTHS)
    clip = encode_test_clip(tmp_path / "loop.mp4", seconds=2, size=(64, 36))
    broker = persistent_broker(tmp_path)
    broker.start()
    config = tmp_path / "avcc.yaml"
    config.write_text(f"""
model: {{checkpoint: "{av}", fallback_checkpoint: "{v}", device: cpu}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, client_id: long-outage}}
state_dir: "{tmp_path / 'state'}"
metrics: {{listen: "127.0.0.1:0"}}
cameras:
  loop: {{file: "{clip}", loop: true}}
""")
    inbox = Inbox(broker.port, "crowd/#", client_id="long-outage-inbox").start()
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        wait_until(lambda: len(inbox.payloads("loop", "count")) >= 3, 120, f"counts\n{daemon.tail()}", poll=0.2)
        down = time.time()
        broker.stop()
        time.sleep(60)
        broker.start()
        up = time.time()
        wait_until(lambda: any(window_ms(i) > up * 1000 + 3000 for i in inbox.distinct_ids("loop")), 120,
                   f"counts after the outage\n{daemon.tail()}", poll=0.2)
        code, _ = daemon.stop()
    finally:
        daemon.kill()
        inbox.stop()
        broker.stop()
    ids = inbox.distinct_ids("loop")
    during = [i for i in ids if down * 1000 <= window_ms(i) <= up * 1000]
    assert code == 0 and len(during) >= 58  # every window of the outage arrived...
    assert ids == sorted(ids, key=window_ms) and gaps(ids) == []  # ...in order, none missing
    replayed = [r for r in DaemonProcess(config, tmp_path / "daemon.log").records() if r.get("event") == "output_caught_up"]
    assert replayed and replayed[0]["outage_s"] >= 59


def test_healthz_and_metrics_show_the_outage_and_the_spool(run: Run) -> None:
    status, body = run.healthz_in_outage
    assert status == 503 and "output mqtt is disconnected" in body["problems"]
    assert body["outputs"]["mqtt"]["spooling"] and body["outputs"]["mqtt"]["spool_records"] > 0
    assert body["outputs"]["redis"]["connected"]
    assert 'avcc_output_connected{output="mqtt"} 0.0' in run.metrics_in_outage
    assert _sample(run.metrics_in_outage, 'avcc_spool_records{output="mqtt"}') > 0
    for output in ("mqtt", "redis"):  # reconnection attempts during each outage, counted
        assert _sample(run.metrics_after_reload, f'avcc_reconnects_total{{component="{output}",name="{output}"}}') >= 1
        assert _sample(run.metrics_after_reload, f'avcc_spool_replayed_records_total{{output="{output}"}}') > 0


# --------------------------------------------------------------------------------------
# 4. a camera's server restarts


def test_a_camera_whose_server_comes_back_counts_again_within_5_s_of_being_readable(run: Run, record_property) -> None:
    after_readable = run.resume["first_count"] - run.resume["readable"]
    after_listening = run.resume["first_count"] - run.resume["listening"]
    record_property("resume_after_readable_s", round(after_readable, 2))
    print(f"RTSP server back: readable {run.resume['readable'] - run.resume['listening']:.2f} s after it listened; "
          f"first count {after_readable:.2f} s after readable ({after_listening:.2f} s after listening)")
    assert after_readable <= RESUME_WITHIN_S
    statuses = [(s["state"], s["reason"]) for s in run.inbox.payloads("gate", "status")
                if run.marks["rtsp_killed"] <= window_ms(s["id"]) / 1000 <= run.resume["first_count"]]
    assert statuses[0] == ("offline", "stream ended (server closed or went away)")
    assert ("offline", "connection refused") in statuses and statuses[-1] == ("online", "streaming")


def test_the_other_camera_never_stopped_while_one_server_was_down(run: Run) -> None:
    window = [i for i in run.inbox.distinct_ids("lobby")
              if run.marks["rtsp_killed"] - 2 <= window_ms(i) / 1000 <= run.resume["first_count"] + 2]
    assert len(window) >= RTSP_OUTAGE_S + 2 and gaps(window) == []
    assert {s["state"] for s in run.inbox.payloads("lobby", "status")
            if window_ms(s["id"]) / 1000 < run.marks["killed"]} == {"online"}


# --------------------------------------------------------------------------------------
# 5. reload


def test_sighup_adds_removes_and_restarts_only_the_changed_cameras(run: Run) -> None:
    reloaded = next(r for r in run.logs if r.get("event") == "config_reloaded")
    assert reloaded["added"] == ["extra"] and reloaded["removed"] == ["surround"]
    assert reloaded["restarted"] == ["mono8k"] and reloaded["applied"] == ["hotspots"]
    assert set(reloaded["unchanged"]) == {"gate", "lobby", "corrupt", "truncated", "audioonly"}
    # the removed camera says so and stops; its metrics series are forgotten
    last = run.inbox.payloads("surround", "status")[-1]
    assert (last["state"], last["reason"]) == ("offline", "removed from the config")
    assert all(window_ms(i) / 1000 < run.marks["reload"] + 2 for i in run.inbox.distinct_ids("surround"))
    assert 'camera="surround"' not in run.metrics_after_reload and 'camera="extra"' in run.metrics_after_reload
    # the unchanged cameras never stopped
    for camera in LIVE:
        around = [i for i in run.inbox.distinct_ids(camera)
                  if run.marks["reload"] - 3 <= window_ms(i) / 1000 <= run.marks["mqtt_down_again"]]
        assert len(around) >= 5 and gaps(around) == []
    connects = [r for r in run.logs if r.get("event") == "camera_connecting" and r.get("camera") in LIVE
                and r["timestamp"] >= _iso(run.marks["reload"]) and r["timestamp"] <= _iso(run.marks["killed"])]
    assert connects == []


def test_a_live_setting_is_applied_and_one_that_needs_a_restart_is_logged(run: Run) -> None:
    tops = [(window_ms(h["id"]) / 1000, len(h["top"])) for h in run.inbox.payloads("lobby", "hotspots")]
    assert {n for at, n in tops if at < run.marks["reload"] - 1} == {3}
    assert {n for at, n in tops if run.marks["reload"] + 3 < at < run.marks["killed"]} == {2}
    needs_restart = [r for r in run.logs if r.get("event") == "config_reload_needs_restart"]
    assert needs_restart and needs_restart[0]["sections"] == ["mqtt"]


def test_alert_state_is_kept_for_unchanged_cameras_across_a_reload(run: Run) -> None:
    for camera in LIVE:
        raised = [a for a in run.inbox.payloads(camera, "alert") if a["level"] == "warn"
                  and window_ms(a["id"]) / 1000 < run.marks["killed"]]
        assert len(raised) == 1, f"{camera}: one raise at start, none after the reload: {raised}"
        assert window_ms(raised[0]["id"]) / 1000 < run.marks["mqtt_down"]


def test_a_broken_config_on_reload_is_rejected_with_its_line_and_the_running_one_kept(run: Run) -> None:
    rejected = next(r for r in run.logs if r.get("event") == "config_reload_rejected")
    assert rejected["level"] == "error" and rejected["running"] == "the previous config is kept"
    assert any(p.startswith(f"{run.config}:") and "invalid camera name 'bad#cam'" in p for p in rejected["problems"])
    assert not run.inbox.payloads("bad#cam", "count")
    kept = [i for i in run.inbox.distinct_ids("extra") if window_ms(i) / 1000 > run.marks["broken_reload"] + 1]
    assert len(kept) >= 2  # the camera of the kept config still counts


def test_systemd_hears_reloading_then_ready_around_each_reload(run: Run) -> None:
    reloads = [i for i, a in enumerate(run.notify) if a == "RELOADING=1"]
    assert len(reloads) == 2
    for i in reloads:
        following = run.notify[i + 1:]
        assert "READY=1" in following and following.index("READY=1") < (following + ["RELOADING=1"]).index("RELOADING=1", 1)
    assert any(a.startswith("STATUS=reload rejected") for a in run.notify)


def test_home_assistant_sensors_follow_the_cameras_and_are_announced_after_each_connection(run: Run) -> None:
    def configs(camera: str) -> list[bytes]:
        return [m.payload for m in run.inbox.messages(f"homeassistant/sensor/faults-daemon/{camera}_people/config")]

    gate = configs("gate")
    assert len(gate) >= 2 and b'"state_topic":"crowd/gate/count"' in gate[0]  # again after the broker restart
    assert configs("extra") and configs("surround")[-1] == b""  # added; removed (empty retained config)


# --------------------------------------------------------------------------------------
# 6. SIGKILL with a spool, then SIGTERM


def test_a_sigkilled_daemons_spool_is_replayed_by_the_next_one_in_order(run: Run) -> None:
    assert len(run.spooled_at_kill) >= 4
    print(f"SIGKILL with {len(run.spooled_at_kill)} count records in the MQTT spool: all replayed by the next daemon")
    for camera in ("gate", "lobby"):
        spooled = [i for i in run.spooled_at_kill if i.startswith(f"{camera}:")]
        delivered = run.inbox.distinct_ids(camera)
        assert spooled and all(i in delivered for i in spooled)
        positions = [delivered.index(i) for i in spooled]
        assert positions == sorted(positions)
    backlog = [r for r in run.logs if r.get("event") == "spool_opened_with_backlog" and r.get("output") == "mqtt"]
    assert backlog and backlog[0]["records"] >= len(run.spooled_at_kill)


def test_sigterm_exits_0_within_10_s_and_says_stopping(run: Run) -> None:
    assert run.exit_code == 0 and run.shutdown_s is not None and run.shutdown_s < 10
    print(f"SIGTERM -> exit 0 in {run.shutdown_s:.2f} s")
    assert "STOPPING=1" in run.notify


# --------------------------------------------------------------------------------------
# security


def test_rtsp_credentials_appear_nowhere(run: Run) -> None:
    assert SECRET not in run.log_text
    assert not [m.topic for m in run.inbox.messages() if SECRET.encode() in m.payload]
    assert SECRET not in run.redis_dump
    assert all(SECRET not in body for body in run.http_bodies + [run.metrics_in_outage, str(run.healthz_in_outage)])
    assert SECRET.encode() not in run.spool_bytes
    assert not [a for a in run.notify if SECRET in a]
    online = next(s for s in run.inbox.payloads("gate", "status") if s["state"] == "online")
    assert online["source"].startswith("rtsp://***@127.0.0.1:")  # redacted, still useful


def _sample(metrics_text: str, series: str) -> float:
    return float(next(line for line in metrics_text.splitlines() if line.startswith(series + " ")).split()[-1])


def _iso(moment: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")
