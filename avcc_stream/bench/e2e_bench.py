"""`avcc-stream bench e2e`: N synthetic cameras -> the daemon -> a local mosquitto, measured from outside.

For each camera count N, everything a venue would run is started for real on loopback:

* one gst-rtsp-server (`stream.rtsp_server`) serving N mounts of an H.264 + AAC clip
  (served as it is, no re-encoding, at real time);
* a local mosquitto (`stream.localservices.start_mosquitto`);
* the daemon as its own process, `avcc-stream run --config <generated YAML>`, so its CPU
  time and resident memory are its own;
* a subscriber of `<prefix>/+/count` that notes when each count arrives.

Once every camera has delivered its first counts (model loading, connecting and the first
keyframe are start-up, not steady state), the bench measures for `duration_s`:

* windows/s delivered, and dropped windows: each camera's windows end on a one-second
  lattice, so every lattice point in the measured interval without a count (within
  `grace_s` after the interval) is a window the pipeline lost, wherever it lost it;
* latency window end -> MQTT receipt (the payload's `window_end` against the receipt
  time), p50 and p99;
* the daemon's CPU (utime + stime from /proc, in cores and per camera) and RSS (peak of
  1 s samples); the RTSP server's and mosquitto's CPU beside it, and the whole machine's
  busy cores, so load from other work on a shared machine is visible.

The answer is the largest N without a dropped window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from avcc_stream.bench.report import BenchReport, Column, Table, percentile

TOPIC_PREFIX = "bench"
CORE_SHARE_TARGET = 0.3  # the per-camera budget at one window per second
CAMERAS_TARGET = 6  # the target for this 2-core machine
CLIP_MARGIN_S = 30  # clip seconds beyond measurement + grace, for connecting and the first counts


@dataclass
class E2EBenchSettings:
    cameras: tuple[int, ...] = (1, 2, 4, 6, 8)
    duration_s: float = 30.0
    grace_s: float = 5.0
    startup_timeout_s: float = 120.0
    camera_size: tuple[int, int] = (1920, 1080)
    fps: int = 25
    checkpoint: str | None = None  # a checkpoint spec; None: builtin:<preset> if shipped, else random init
    preset: str = "cc-av-lowres"
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    max_batch: int = 8
    max_wait_ms: float = 50.0
    workers: int = 1
    queue_per_camera: int = 4
    torch_threads: int | None = None  # OMP_NUM_THREADS for the daemon (torch's intra-op threads); None: torch's default
    cache_dir: Path | None = None
    keep_workdir: Path | None = None


# --------------------------------------------------------------------------------------
# /proc readings (Linux; the daemon targets systemd hosts)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def process_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of some processes and of the whole machine between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float | None] = {}
        self.seconds: dict[str, float | None] = {}

    def _read(self) -> dict[str, float | None]:
        readings: dict[str, float | None] = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        readings["machine"] = machine_busy_s()
        return readings

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float | None]:
        end = self._read()
        self.seconds = {
            name: (end[name] - begin) if (begin is not None and end.get(name) is not None) else None
            for name, begin in self._start.items()
        }
        return self.seconds


class RssSampler(threading.Thread):
    """Peak of the daemon's RSS, sampled every `period_s`."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.period_s = pid, period_s
        self.peak_mib: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = process_rss_mib(self.pid)
            if rss is not None:
                self.peak_mib = max(self.peak_mib or 0.0, rss)
            self._stop_event.wait(self.period_s)

    def stop(self) -> float | None:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak_mib


# --------------------------------------------------------------------------------------
# the subscriber


class CountInbox:
    """A paho subscriber of `<prefix>/+/count` noting (receipt time, camera, window end, audio)."""

    def __init__(self, port: int, prefix: str = TOPIC_PREFIX) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: list[tuple[float, str, float, bool]] = []
        self.unreadable = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topic = f"{prefix}/+/count"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"avcc-bench-{os.getpid()}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10.0):
            self.close()
            raise RuntimeError(f"could not subscribe to the local mosquitto on port {port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(self._topic, qos=1)
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        try:
            payload = json.loads(message.payload)
            window_end = datetime.fromisoformat(payload["window_end"].replace("Z", "+00:00")).timestamp()
            entry = (now, str(payload["camera"]), window_end, bool(payload.get("audio", True)))
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.unreadable += 1
            return
        with self._lock:
            self.received.append(entry)

    def snapshot(self) -> list[tuple[float, str, float, bool]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --------------------------------------------------------------------------------------
# analysis (pure: tested without any service)


def analyse_counts(
    received: list[tuple[float, str, float, bool]], cameras: list[str], start: float, end: float, grace_s: float
) -> dict[str, Any]:
    """Delivered and dropped windows, and latency, for windows ending in [start, end).

    Each camera's windows end on a one-second lattice anchored at its first received
    window; a lattice point in the interval without a count received by `end + grace_s`
    is a dropped window. Late duplicates (at-least-once delivery) are counted once.
    """
    latencies: list[float] = []
    delivered = dropped = without_sound = 0
    per_camera: dict[str, dict[str, int]] = {}
    for camera in cameras:
        mine = sorted((r for r in received if r[1] == camera), key=lambda r: r[2])
        if not mine:
            expected = int(round(end - start))
            per_camera[camera] = {"delivered": 0, "dropped": expected}
            dropped += expected
            continue
        anchor = mine[0][2]
        seen: dict[int, tuple[float, float, bool]] = {}
        for arrived, _, window_end, audio in mine:
            step = round(window_end - anchor)
            if start <= window_end < end and arrived <= end + grace_s and step not in seen:
                seen[step] = (arrived, window_end, audio)
        first_step = _ceil_step(start - anchor)
        last_step = _ceil_step(end - anchor) - 1
        expected = max(0, last_step - first_step + 1)
        got = sum(1 for step in seen if first_step <= step <= last_step)
        per_camera[camera] = {"delivered": got, "dropped": max(0, expected - got)}
        delivered += got
        dropped += max(0, expected - got)
        without_sound += sum(1 for _, _, audio in seen.values() if not audio)
        latencies += [arrived - window_end for arrived, window_end, _ in seen.values()]
    return {
        "delivered": delivered,
        "dropped": dropped,
        "without_sound": without_sound,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies) if latencies else None,
        "per_camera": per_camera,
    }


def _ceil_step(offset: float) -> int:
    """The first whole lattice step at or after `offset` seconds (lattice jitter of a few ms tolerated)."""
    import math

    return math.ceil(offset - 0.05)


# --------------------------------------------------------------------------------------
# one run


def resolve_checkpoint_path(settings: E2EBenchSettings, workdir: Path) -> tuple[str, str]:
    """(checkpoint spec for the config, how it was chosen)."""
    from avcc_stream.model.checkpoint import CheckpointError, resolve_checkpoint

    if settings.checkpoint:
        return settings.checkpoint, "given"
    if not settings.overrides:
        try:
            resolve_checkpoint(f"builtin:{settings.preset}")
            return f"builtin:{settings.preset}", "shipped"
        except CheckpointError:
            pass
    import torch

    from avcc_stream.model import ModelConfig, build_model
    from avcc_stream.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = workdir / f"{settings.preset}-random.safetensors"
    save_checkpoint(path, build_model(ModelConfig.from_preset(settings.preset, **settings.overrides)).eval(),
                    provenance={"source": "avcc-stream bench e2e: random initialisation (speed only)"})
    return str(path), "random init (no shipped checkpoint; speed is the same, counts are meaningless)"


def daemon_config(
    settings: E2EBenchSettings, checkpoint: str, mqtt_port: int, urls: dict[str, str], workdir: Path, metrics_port: int
) -> dict[str, Any]:
    """The daemon's YAML as data; sections the checkout's config does not know yet are left out."""
    from avcc_stream.config.app import AppConfig

    known = AppConfig.model_fields
    optional: dict[str, Any] = {}
    if "state_dir" in known:  # the outputs' spool lives there: keep it out of the caller's folder
        optional["state_dir"] = str(workdir / "state")
    if "metrics" in known:  # a port of our own (the default one may be taken), scraped for drop counters
        optional["metrics"] = {"enabled": True, "listen": f"127.0.0.1:{metrics_port}"}
    return {
        **optional,
        "model": {"checkpoint": checkpoint, "fallback_checkpoint": None, "device": settings.device, "amp": True},
        "inference": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                      "workers": settings.workers, "queue_per_camera": settings.queue_per_camera},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": f"avcc-bench-daemon-{os.getpid()}",
                 "topic_prefix": TOPIC_PREFIX, "qos": 1},
        "redis": {"enabled": False},
        "hotspots": {"enabled": True},
        "camera_defaults": {"open_timeout_s": 10, "read_timeout_s": 5, "watchdog_s": 10,
                            "reconnect": {"initial_s": 0.5, "max_s": 2}},
        "logging": {"level": "INFO", "format": "json"},
        "cameras": {name: {"url": url} for name, url in urls.items()},
    }


def scrape_drops(url: str | None) -> dict[str, float] | None:
    """The daemon's own drop counters (`avcc_windows_dropped`), summed over cameras, by reason."""
    if url is None:
        return None
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    drops: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "avcc_windows_dropped":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    reason = sample.labels.get("reason", "?")
                    drops[reason] = drops.get(reason, 0.0) + sample.value
    return drops


def _difference(after: dict[str, float] | None, before: dict[str, float] | None) -> dict[str, float] | None:
    if after is None or before is None:
        return None
    return {reason: value - before.get(reason, 0.0) for reason, value in after.items() if value - before.get(reason, 0.0)}


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])[-1500:]
    except OSError:
        return "(no log)"


def run_cameras(
    n: int, settings: E2EBenchSettings, clip: Path, checkpoint: str, mqtt_port: int, workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """One measurement with `n` cameras; raises RuntimeError if the pipeline never started."""
    import yaml

    from avcc_stream.config import ConfigError, load_config
    from avcc_stream.stream.localservices import free_port, stop_process
    from avcc_stream.stream.rtsp_server import start_rtsp_server

    names = [f"cam{i + 1:02d}" for i in range(n)]
    with ExitStack() as stack:
        server = stack.enter_context(start_rtsp_server({name: f"file:{clip}" for name in names},
                                                       width=settings.camera_size[0], height=settings.camera_size[1]))
        config_path = workdir / f"daemon-{n}.yaml"
        metrics_port = free_port()
        config = daemon_config(settings, checkpoint, mqtt_port, {m: server.url(m) for m in names}, workdir, metrics_port)
        config_path.write_text(yaml.safe_dump(config))
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if "metrics" in config else None
        try:
            load_config(config_path)  # a config the daemon would refuse is a bench bug: say so here
        except ConfigError as exc:
            raise RuntimeError(f"generated daemon config is invalid: {exc}") from None
        inbox = CountInbox(mqtt_port)
        stack.callback(inbox.close)
        log_path = workdir / f"daemon-{n}.log"
        env = dict(os.environ)
        if settings.torch_threads:  # torch reads it at start-up for its intra-op thread pool
            env["OMP_NUM_THREADS"] = str(settings.torch_threads)
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "avcc_stream", "run", "--config", str(config_path)],
                                      stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        stack.callback(stop_process, daemon)

        # Start-up: every camera has delivered two counts (the first may come from a partial window).
        deadline = time.monotonic() + settings.startup_timeout_s
        launched = time.monotonic()
        while True:
            counts: dict[str, int] = {}
            for _, camera, _, _ in inbox.snapshot():
                counts[camera] = counts.get(camera, 0) + 1
            if all(counts.get(name, 0) >= 2 for name in names):
                break
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode}: {log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every camera counted within {settings.startup_timeout_s:g} s "
                                   f"(counts so far: {counts}); daemon log: {log_tail(log_path)}")
            time.sleep(0.1)
        startup_s = time.monotonic() - launched
        progress(f"e2e: {n} camera(s) counting after {startup_s:.1f} s; measuring {settings.duration_s:g} s ...")

        meter = CpuMeter({"daemon": daemon.pid, "rtsp_server": server.process.pid, "bench": os.getpid()})
        rss = RssSampler(daemon.pid)
        drops_before = scrape_drops(metrics_url)
        start = time.time()
        meter.start()
        rss.start()
        time.sleep(settings.duration_s)
        cpu = meter.stop()
        peak_rss = rss.stop()
        drops_after = scrape_drops(metrics_url)
        end = start + settings.duration_s
        time.sleep(settings.grace_s)  # windows of the interval still in flight
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited during the measurement ({daemon.returncode}): {log_tail(log_path)}")
        stopped = time.monotonic()
        code = stop_process(daemon)
        stop_s = time.monotonic() - stopped
        result = analyse_counts(inbox.snapshot(), names, start, end, settings.grace_s)
    duration = settings.duration_s
    daemon_cores = cpu["daemon"] / duration if cpu.get("daemon") is not None else None
    return {
        "cameras": n,
        "windows_per_s": result["delivered"] / duration,
        "expected_per_s": float(n),
        **{k: result[k] for k in ("delivered", "dropped", "without_sound", "latency_p50_s", "latency_p99_s", "latency_max_s")},
        "daemon_cores": daemon_cores,
        "core_per_camera": daemon_cores / n if daemon_cores is not None else None,
        "daemon_rss_mib": peak_rss,
        "rtsp_server_cores": cpu["rtsp_server"] / duration if cpu.get("rtsp_server") is not None else None,
        "machine_busy_cores": cpu["machine"] / duration if cpu.get("machine") is not None else None,
        "startup_s": startup_s,
        "shutdown_s": stop_s,
        "exit_code": code,
        "per_camera": result["per_camera"],
        "daemon_drops": _difference(drops_after, drops_before),
        "log": str(log_path),
    }


def run_e2e_bench(
    settings: E2EBenchSettings, machine: dict[str, Any], progress: Callable[[str], None] = lambda message: None
) -> BenchReport:
    from avcc_stream.bench.clips import cached_clip
    from avcc_stream.stream.localservices import start_mosquitto, stop_process

    report = BenchReport("e2e", machine, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()})
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        if settings.keep_workdir is not None:
            workdir = Path(settings.keep_workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="avcc-bench-e2e-")))
        # The RTSP file source plays the clip once per connection, from its start: it must
        # outlast the first counts (seconds after connecting), the measurement and the grace.
        clip_seconds = int(settings.duration_s + settings.grace_s + CLIP_MARGIN_S)
        progress(f"e2e: clip {settings.camera_size[0]}x{settings.camera_size[1]}, {clip_seconds} s ...")
        clip = cached_clip(settings.camera_size, fps=settings.fps, seconds=clip_seconds, cache_dir=settings.cache_dir)
        checkpoint, provenance = resolve_checkpoint_path(settings, workdir)
        report.settings["checkpoint_used"] = f"{checkpoint} ({provenance})"
        broker, mqtt_port = start_mosquitto(workdir)
        stack.callback(stop_process, broker)
        for n in settings.cameras:
            progress(f"e2e: {n} camera(s) ...")
            try:
                rows.append(run_cameras(n, settings, clip, checkpoint, mqtt_port, workdir, progress))
            except RuntimeError as exc:
                rows.append({"cameras": n, "error": str(exc)[:600]})
            if settings.keep_workdir is None:  # the logs vanish with the temporary folder
                rows[-1].pop("log", None)

    report.tables.append(Table(
        f"{len(settings.cameras)} runs: N RTSP cameras ({settings.camera_size[0]}x{settings.camera_size[1]} H.264 "
        f"{settings.fps} fps + AAC) -> daemon ({settings.preset if not settings.checkpoint else settings.checkpoint}, "
        f"{settings.device}, {settings.workers} inference worker(s), "
        f"{settings.torch_threads or 'default'} torch thread(s)) -> mosquitto, {settings.duration_s:g} s each",
        [
            Column("cameras", "cameras", "{:d}"), Column("windows_per_s", "windows/s", "{:.2f}"),
            Column("dropped", "dropped", "{:d}"),
            Column("daemon_drops", "daemon's drop counters", lambda d: ", ".join(f"{k} {v:g}" for k, v in d.items()) or "none"),
            Column("without_sound", "no sound", "{:d}"),
            Column("latency_p50_s", "p50 latency (s)", "{:.3f}"), Column("latency_p99_s", "p99 latency (s)", "{:.3f}"),
            Column("daemon_cores", "daemon cores", "{:.2f}"), Column("core_per_camera", "cores/camera", "{:.3f}"),
            Column("daemon_rss_mib", "daemon RSS (MiB)", "{:.0f}"), Column("rtsp_server_cores", "RTSP server cores", "{:.2f}"),
            Column("machine_busy_cores", "machine busy cores", "{:.2f}"), Column("error", "error"),
        ],
        rows,
    ))
    clean = [r["cameras"] for r in rows if "error" not in r and r["dropped"] == 0]
    largest = max(clean) if clean else None
    report.data["largest_without_drops"] = largest
    report.summary.append(
        f"largest camera count without a dropped window: {largest if largest is not None else 'none'} "
        f"(of {', '.join(map(str, settings.cameras))}; target on the 2-core machine: >= {CAMERAS_TARGET})"
    )
    one = next((r for r in rows if r.get("cameras") == 1 and r.get("core_per_camera") is not None), None)
    if one is not None:
        report.summary.append(
            f"one camera costs the daemon {one['core_per_camera']:.3f} of a core (target < {CORE_SHARE_TARGET} "
            f"at 1024x576; this run's model: {settings.preset if not settings.checkpoint else settings.checkpoint})"
        )
    report.notes += [
        "dropped: one-second windows ending in the measured interval with no count received within "
        f"{settings.grace_s:g} s after it (each camera's windows lie on a 1 s lattice); 'no sound': counted "
        "without audio (CC-V or silence), a sign that audio arrived late or was dropped.",
        "daemon's drop counters: the daemon's own avcc_windows_dropped counters (/metrics) over the interval, by "
        "reason ('-' when this checkout's daemon has no metrics endpoint).",
        "latency: MQTT receipt time - the payload's window_end (same machine clock).",
        "daemon cores: the daemon process's CPU time / measured seconds (all its threads: decode, alignment, "
        "inference, publishing); machine busy cores include the RTSP server, mosquitto, the bench and any other work.",
    ]
    return report
