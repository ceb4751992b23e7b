"""What an operator watches: Prometheus metrics, a health check, and systemd notifications.

* `Metrics`: every metric in one registry of its own (nothing leaks into, or comes from,
  prometheus_client's global registry), with names in base units.
* `Health`: camera and output states plus an event-loop heartbeat; `report()` gives the
  `/healthz` answer. Output connection and spool depth are read from the publishers at
  scrape time, so they are never stale.
* `ObservabilityServer`: a small threaded HTTP server for `/metrics` and `/healthz`,
  loopback by default (the metrics name cameras and venues: not for the open network).
* `sd_notify`: READY/WATCHDOG/STATUS/RELOADING/STOPPING to systemd over $NOTIFY_SOCKET,
  with a plain datagram socket (no libsystemd); a no-op outside systemd.
* `keep_alive`: a coroutine that proves the event loop runs: it beats the health
  heartbeat and, under `WatchdogSec=`, sends WATCHDOG=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from socketserver import ThreadingMixIn
from typing import Any, Literal, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from avcc_stream import __version__

log = structlog.get_logger(__name__)

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 9464
CameraStatus = Literal["starting", "online", "stalled", "offline"]
CAMERA_STATUSES: tuple[str, ...] = ("starting", "online", "stalled", "offline")

INFERENCE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class WatchedOutput(Protocol):
    """What Health reads from a publisher: `connected`, and `stats` when it spools."""

    name: str

    @property
    def connected(self) -> bool: ...


# -- health ----------------------------------------------------------------------------------


class Health:
    """Camera and output states for `/healthz`; thread-safe (the loop writes, HTTP reads).

    Healthy means: the event loop beat within `loop_stall_after_s`, every camera is
    `online`, and every output is connected. Anything else answers 503 with the details.
    """

    def __init__(self, loop_stall_after_s: float = 30.0) -> None:
        self.loop_stall_after_s = loop_stall_after_s
        self._lock = threading.Lock()
        self._cameras: dict[str, dict[str, Any]] = {}
        self._outputs: dict[str, WatchedOutput] = {}
        self._last_beat: float | None = None

    def beat(self) -> None:
        """Called from the event loop (see `keep_alive`): the loop is turning."""
        self._last_beat = time.monotonic()

    def set_camera(self, camera: str, status: CameraStatus, reason: str | None = None) -> None:
        if status not in CAMERA_STATUSES:
            raise ValueError(f"camera status must be one of {CAMERA_STATUSES}, got {status!r}")
        with self._lock:
            previous = self._cameras.get(camera)
            if previous and previous["status"] == status and previous["reason"] == reason:
                return
            since = previous["since"] if previous and previous["status"] == status else _now_iso()
            self._cameras[camera] = {"status": status, "reason": reason, "since": since}

    def remove_camera(self, camera: str) -> None:
        with self._lock:
            self._cameras.pop(camera, None)

    def track_output(self, output: WatchedOutput) -> None:
        """Watch a publisher (by its `name`): connected state and, if it spools, its backlog."""
        with self._lock:
            self._outputs[output.name] = output

    def untrack_output(self, name: str) -> None:
        with self._lock:
            self._outputs.pop(name, None)

    def cameras(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(state) for name, state in self._cameras.items()}

    def outputs(self) -> dict[str, WatchedOutput]:
        with self._lock:
            return dict(self._outputs)

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON-ready body) for `/healthz`."""
        problems: list[str] = []
        beat_age = None if self._last_beat is None else time.monotonic() - self._last_beat
        if beat_age is None:
            problems.append("event loop has not started")
        elif beat_age > self.loop_stall_after_s:
            problems.append(f"event loop stalled for {beat_age:.0f} s")

        cameras = self.cameras()
        for name, state in cameras.items():
            if state["status"] != "online":
                problems.append(f"camera {name} is {state['status']}")

        outputs: dict[str, dict[str, Any]] = {}
        for name, output in self.outputs().items():
            outputs[name] = describe_output(output)
            if not outputs[name]["connected"]:
                problems.append(f"output {name} is disconnected")

        healthy = not problems
        body = {
            "status": "ok" if healthy else "degraded",
            "problems": problems,
            "cameras": cameras,
            "outputs": outputs,
            "event_loop": {"last_beat_age_s": None if beat_age is None else round(beat_age, 3)},
            "version": __version__,
        }
        return healthy, body


def describe_output(output: WatchedOutput) -> dict[str, Any]:
    """An output's state for /healthz: connected, and its spool when it has one."""
    described: dict[str, Any] = {"connected": _safe_connected(output)}
    stats = getattr(output, "stats", None)
    spool = getattr(stats, "spool", None)
    if spool is not None:
        described.update(
            spooling=bool(stats.spooling),
            spool_records=spool.records,
            spool_bytes=spool.bytes,
            spool_oldest=spool.oldest_timestamp.isoformat() if spool.oldest_timestamp else None,
            spool_dropped_total=spool.dropped_total,
            spool_max_records=spool.max_records,
            spool_max_bytes=spool.max_bytes,
        )
    return described


def _safe_connected(output: WatchedOutput) -> bool:
    try:
        return bool(output.connected)
    except Exception:  # noqa: BLE001 - a broken output is a disconnected one, not a 500
        return False


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- metrics ---------------------------------------------------------------------------------


class Metrics:
    """The daemon's Prometheus metrics, in `self.registry` (one per process, or per test).

    The daemon updates the counters, gauges and histograms below as things happen; camera
    up/down, output connection and spool figures are collected from `health` at scrape time.
    """

    def __init__(self, health: Health | None = None, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.health = health or Health()
        r = self.registry
        self.windows_processed = Counter(
            "avcc_windows_processed", "Windows counted, per camera", ["camera"], registry=r
        )
        self.windows_dropped = Counter(
            "avcc_windows_dropped",
            "Windows dropped before counting, per camera and reason "
            "(e.g. queue_full, inference_behind, no_frame)",
            ["camera", "reason"], registry=r,
        )
        self.decode_fps = Gauge(
            "avcc_decode_fps", "Video frames decoded per second, per camera", ["camera"], registry=r
        )
        self.av_skew_seconds = Gauge(
            "avcc_av_skew_seconds",
            "Last measured distance between the chosen frame and its audio window's centre",
            ["camera"], registry=r,
        )
        self.inference_seconds = Histogram(
            "avcc_inference_seconds", "Model time per batch", ["device"],
            buckets=INFERENCE_BUCKETS_S, registry=r,
        )
        self.window_latency_seconds = Histogram(
            "avcc_window_latency_seconds", "Window end to count ready, per camera", ["camera"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.batch_size = Histogram(
            "avcc_batch_size", "Windows per inference batch", ["device"],
            buckets=BATCH_SIZE_BUCKETS, registry=r,
        )
        self.reconnects = Counter(
            "avcc_reconnects", "Reconnection attempts, per component (camera, mqtt, redis) and name",
            ["component", "name"], registry=r,
        )
        self.alert_active = Gauge(
            "avcc_alert_active",
            "1 for the alert level a camera (or zone; zone=\"\" for the whole scene) is in, else 0",
            ["camera", "zone", "level"], registry=r,
        )
        self.build_info = Info("avcc_build", "avcc-stream version", registry=r)
        self.build_info.info({"version": __version__})
        self.registry.register(_HealthCollector(self.health))
        self._alert_levels: dict[tuple[str, str], set[str]] = {}
        self._alert_lock = threading.Lock()

    def set_alert_level(self, camera: str, zone: str | None, level: str | None) -> None:
        """The alert state of a camera (zone None: whole scene); level None: no alert."""
        key = (camera, zone or "")
        with self._alert_lock:
            known = self._alert_levels.setdefault(key, set())
            if level is not None:
                known.add(level)
            for each in known:
                self.alert_active.labels(camera, key[1], each).set(1 if each == level else 0)

    def forget_camera(self, camera: str) -> None:
        """Drop a removed camera's series (after a reload), so dashboards do not show ghosts."""
        for metric in (
            self.windows_processed, self.windows_dropped, self.decode_fps, self.av_skew_seconds,
            self.window_latency_seconds, self.alert_active,
        ):
            metric.remove_by_labels({"camera": camera})
        with self._alert_lock:
            for key in [key for key in self._alert_levels if key[0] == camera]:
                del self._alert_levels[key]
        self.health.remove_camera(camera)


class _HealthCollector(Collector):
    """Camera states, output connection and spool figures, read when Prometheus scrapes."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def describe(self) -> Iterable[Any]:
        return []  # families vary with the watched cameras and outputs; collected live

    def collect(self) -> Iterator[Any]:
        camera_state = GaugeMetricFamily(
            "avcc_camera_status", "1 for the state each camera is in, else 0", labels=["camera", "status"]
        )
        camera_up = GaugeMetricFamily("avcc_camera_up", "1 while a camera delivers windows", labels=["camera"])
        for camera, state in self.health.cameras().items():
            camera_up.add_metric([camera], 1.0 if state["status"] == "online" else 0.0)
            for status in CAMERA_STATUSES:
                camera_state.add_metric([camera, status], 1.0 if state["status"] == status else 0.0)

        families = {
            "connected": GaugeMetricFamily(
                "avcc_output_connected", "1 while the output accepts records", labels=["output"]),
            "spooling": GaugeMetricFamily(
                "avcc_output_spooling", "1 while records queue in the spool", labels=["output"]),
            "records": GaugeMetricFamily(
                "avcc_spool_records", "Records waiting in the spool", labels=["output"]),
            "bytes": GaugeMetricFamily(
                "avcc_spool_bytes", "Encoded bytes waiting in the spool", labels=["output"]),
            "max_records": GaugeMetricFamily(
                "avcc_spool_max_records", "Spool bound (records); past it the oldest are dropped",
                labels=["output"]),
            "max_bytes": GaugeMetricFamily(
                "avcc_spool_max_bytes", "Spool bound (bytes); past it the oldest are dropped",
                labels=["output"]),
            "oldest_age": GaugeMetricFamily(
                "avcc_spool_oldest_age_seconds", "Age of the oldest spooled record (0: empty)",
                labels=["output"]),
            "dropped": CounterMetricFamily(
                "avcc_spool_dropped_records", "Records dropped by the spool bound", labels=["output"]),
            "replayed": CounterMetricFamily(
                "avcc_spool_replayed_records", "Spooled records delivered after an outage",
                labels=["output"]),
            "lost": CounterMetricFamily(
                "avcc_output_records_lost",
                "Records lost: the spool could not store them, or the output refused them for good",
                labels=["output"]),
        }
        now = datetime.now(timezone.utc)
        for name, output in self.health.outputs().items():
            families["connected"].add_metric([name], 1.0 if _safe_connected(output) else 0.0)
            stats = getattr(output, "stats", None)
            spool = getattr(stats, "spool", None)
            if spool is None:
                continue
            oldest = spool.oldest_timestamp
            age = max(0.0, (now - oldest).total_seconds()) if oldest and oldest.tzinfo else 0.0
            families["spooling"].add_metric([name], 1.0 if stats.spooling else 0.0)
            families["records"].add_metric([name], spool.records)
            families["bytes"].add_metric([name], spool.bytes)
            families["max_records"].add_metric([name], spool.max_records)
            families["max_bytes"].add_metric([name], spool.max_bytes)
            families["oldest_age"].add_metric([name], age)
            families["dropped"].add_metric([name], spool.dropped_total)
            families["replayed"].add_metric([name], stats.replayed_total)
            families["lost"].add_metric([name], stats.lost_total + stats.rejected_total)
        yield camera_up
        yield camera_state
        yield from families.values()


# -- HTTP ------------------------------------------------------------------------------------


def parse_listen_address(address: str) -> tuple[str, int]:
    """`127.0.0.1:9464`, `[::1]:9464` or `9464` (loopback) -> (host, port)."""
    text = address.strip()
    host = DEFAULT_LISTEN_HOST
    port_text = text
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid listen address {address!r}: expected [IPv6]:PORT")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"invalid listen address {address!r}: write IPv6 as [ADDRESS]:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"invalid listen address {address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535 or not host:
        raise ValueError(f"invalid listen address {address!r}: expected HOST:PORT with port 0-65535")
    return host, port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per scrape would drown the daemon's own logs


class ObservabilityServer:
    """Serves `/metrics` (Prometheus text format) and `/healthz` (JSON; 200 or 503) from a
    daemon thread. `port=0` picks a free port (see `.port`)."""

    def __init__(
        self,
        metrics: Metrics,
        host: str = DEFAULT_LISTEN_HOST,
        port: int = DEFAULT_LISTEN_PORT,
    ) -> None:
        self.metrics = metrics
        self.health = metrics.health
        self._metrics_app = make_wsgi_app(metrics.registry)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (_ThreadingWSGIServer,), {"address_family": family})
        try:
            self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name="observability-http", daemon=True,
        )

    def start(self) -> ObservabilityServer:
        self._thread.start()
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("metrics_listening_beyond_loopback", host=self.host, port=self.port)
        else:
            log.info("metrics_listening", host=self.host, port=self.port)
        return self

    def close(self) -> None:
        """Stop serving and release the port (also for a server never started)."""
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever, which only a started server runs
            self._thread.join(timeout=5)
        self._server.server_close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", {"error": "GET only"})
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            healthy, body = self.health.report()
            return _respond(start_response, "200 OK" if healthy else "503 Service Unavailable", body)
        return _respond(start_response, "404 Not Found", {"error": "try /metrics or /healthz"})

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scraper never holds up /healthz."""

    daemon_threads = True


def _respond(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, indent=2).encode("utf-8") + b"\n"
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
         ("Cache-Control", "no-store")],
    )
    return [data]


# -- systemd ---------------------------------------------------------------------------------


def sd_notify(*assignments: str) -> bool:
    """Send `READY=1`, `WATCHDOG=1`, `STATUS=...`, `RELOADING=1`, `STOPPING=1` (one or more)
    to systemd. Returns True when sent, False when not under systemd (no $NOTIFY_SOCKET) or
    when sending failed (logged; never raised: a notification must not stop the daemon).

    Under `Type=notify`, RELOADING=1 must be followed by READY=1 once the reload is done.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or not assignments:
        return False
    if target.startswith("@"):
        address = "\0" + target[1:]  # abstract namespace
    elif target.startswith("/"):
        address = target
    else:
        log.warning("sd_notify_unsupported_socket", socket=target)
        return False
    lines = list(assignments)
    if "RELOADING=1" in lines and not any(line.startswith("MONOTONIC_USEC=") for line in lines):
        # systemd >= 253 wants the reload's start time with it; older ones ignore it.
        lines.append(f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
    message = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a full receive queue must not stall the event loop
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("sd_notify_failed", socket=target, error=str(exc))
        return False
    return True


def watchdog_interval_s() -> float | None:
    """systemd's `WatchdogSec=` for this process, in seconds; None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


async def keep_alive(health: Health, interval_s: float = 1.0) -> None:
    """Run as a task for the daemon's lifetime: beats `health` and feeds systemd's watchdog
    (WATCHDOG=1 at half its interval). Both stop if the event loop stops turning, which is
    the point: /healthz then says stalled and systemd restarts the service."""
    watchdog = watchdog_interval_s()
    period = min(interval_s, watchdog / 2) if watchdog else interval_s
    while True:
        health.beat()
        if watchdog:
            sd_notify("WATCHDOG=1")
        await asyncio.sleep(period)
