"""Metrics and health over real HTTP, and systemd notifications over a real unix socket."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from avcc_stream.observability import (
    Health,
    Metrics,
    ObservabilityServer,
    keep_alive,
    parse_listen_address,
    sd_notify,
    watchdog_interval_s,
)
from avcc_stream.stream.publish.spooling import SpoolingStats
from avcc_stream.stream.spool import SpoolStats


@dataclass
class FakeSpoolingOutput:
    """What Health reads from a SpoolingPublisher: name, connected, stats."""

    name: str
    connected: bool
    stats: SpoolingStats


def spooling_stats(records: int, dropped: int, oldest_age_s: float) -> SpoolingStats:
    oldest = datetime.now(timezone.utc) - timedelta(seconds=oldest_age_s) if records else None
    return SpoolingStats(
        direct_total=10, spooled_total=records + dropped, replayed_total=4, rejected_total=1,
        lost_total=2, spooling=records > 0,
        spool=SpoolStats(
            records=records, bytes=records * 300, oldest_timestamp=oldest, appended_total=records,
            removed_total=0, dropped_total=dropped, max_records=1000, max_bytes=10**6,
        ),
    )


@pytest.fixture
def server() -> Iterator[ObservabilityServer]:
    with ObservabilityServer(Metrics(), port=0) as running:
        yield running


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def scrape(server: ObservabilityServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body, content_type = get(server.url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_endpoint_serves_what_the_daemon_recorded(server: ObservabilityServer) -> None:
    metrics = server.metrics
    for _ in range(3):
        metrics.windows_processed.labels("gate-1").inc()
    metrics.windows_dropped.labels("gate-1", "inference_behind").inc(2)
    metrics.decode_fps.labels("gate-1").set(25.0)
    metrics.av_skew_seconds.labels("gate-1").set(0.004)
    metrics.inference_seconds.labels("cpu").observe(0.08)
    metrics.window_latency_seconds.labels("gate-1").observe(0.3)
    metrics.batch_size.labels("cpu").observe(3)
    metrics.reconnects.labels("camera", "gate-1").inc()
    metrics.set_alert_level("gate-1", None, "warn")
    metrics.set_alert_level("gate-1", None, "critical")
    metrics.set_alert_level("gate-1", "stage", None)
    metrics.health.set_camera("gate-1", "online")
    metrics.health.set_camera("gate-2", "offline", "connection refused")
    metrics.health.track_output(FakeSpoolingOutput("mqtt", False, spooling_stats(7, 3, 42.0)))

    samples = scrape(server)
    assert samples[("avcc_windows_processed_total", (("camera", "gate-1"),))] == 3
    assert samples[("avcc_windows_dropped_total", (("camera", "gate-1"), ("reason", "inference_behind")))] == 2
    assert samples[("avcc_decode_fps", (("camera", "gate-1"),))] == 25.0
    assert samples[("avcc_av_skew_seconds", (("camera", "gate-1"),))] == 0.004
    assert samples[("avcc_inference_seconds_count", (("device", "cpu"),))] == 1
    assert samples[("avcc_inference_seconds_bucket", (("device", "cpu"), ("le", "0.1")))] == 1
    assert samples[("avcc_window_latency_seconds_sum", (("camera", "gate-1"),))] == 0.3
    assert samples[("avcc_batch_size_sum", (("device", "cpu"),))] == 3
    assert samples[("avcc_reconnects_total", (("component", "camera"), ("name", "gate-1")))] == 1
    alert = lambda level: samples[("avcc_alert_active", (("camera", "gate-1"), ("level", level), ("zone", "")))]  # noqa: E731
    assert alert("critical") == 1 and alert("warn") == 0
    assert samples[("avcc_camera_up", (("camera", "gate-1"),))] == 1
    assert samples[("avcc_camera_up", (("camera", "gate-2"),))] == 0
    assert samples[("avcc_camera_status", (("camera", "gate-2"), ("status", "offline")))] == 1
    mqtt = (("output", "mqtt"),)
    assert samples[("avcc_output_connected", mqtt)] == 0
    assert samples[("avcc_output_spooling", mqtt)] == 1
    assert samples[("avcc_spool_records", mqtt)] == 7
    assert samples[("avcc_spool_bytes", mqtt)] == 2100
    assert samples[("avcc_spool_max_records", mqtt)] == 1000
    assert samples[("avcc_spool_dropped_records_total", mqtt)] == 3
    assert samples[("avcc_spool_replayed_records_total", mqtt)] == 4
    assert samples[("avcc_output_records_lost_total", mqtt)] == 3
    assert 41 <= samples[("avcc_spool_oldest_age_seconds", mqtt)] < 3600
    assert ("avcc_build_info", (("version", __import__("avcc_stream").__version__),)) in samples


def test_forgetting_a_removed_camera_drops_its_series(server: ObservabilityServer) -> None:
    metrics = server.metrics
    for camera in ("gate-1", "gate-2"):
        metrics.windows_processed.labels(camera).inc()
        metrics.windows_dropped.labels(camera, "queue_full").inc()
        metrics.set_alert_level(camera, None, "warn")
        metrics.health.set_camera(camera, "online")
    metrics.forget_camera("gate-2")
    cameras = {dict(labels).get("camera") for _, labels in scrape(server)}
    assert "gate-1" in cameras and "gate-2" not in cameras


def test_healthz_is_200_only_when_loop_cameras_and_outputs_are_all_fine(server: ObservabilityServer) -> None:
    health = server.health
    status, body, content_type = get(server.url + "/healthz")
    assert status == 503 and content_type == "application/json"
    assert "event loop has not started" in json.loads(body)["problems"]

    health.beat()
    health.set_camera("gate-1", "online")
    output = FakeSpoolingOutput("mqtt", True, spooling_stats(0, 0, 0))
    health.track_output(output)
    status, body, _ = get(server.url + "/healthz")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok" and report["problems"] == []
    assert report["cameras"]["gate-1"]["status"] == "online"
    assert report["outputs"]["mqtt"] == {
        "connected": True, "spooling": False, "spool_records": 0, "spool_bytes": 0,
        "spool_oldest": None, "spool_dropped_total": 0, "spool_max_records": 1000,
        "spool_max_bytes": 10**6,
    }

    health.set_camera("gate-2", "offline", "connection refused")
    output.connected = False
    output.stats = spooling_stats(5, 0, 3.0)
    status, body, _ = get(server.url + "/healthz")
    report = json.loads(body)
    assert status == 503 and report["status"] == "degraded"
    assert report["cameras"]["gate-2"] == {
        "status": "offline", "reason": "connection refused", "since": report["cameras"]["gate-2"]["since"],
    }
    assert "camera gate-2 is offline" in report["problems"]
    assert "output mqtt is disconnected" in report["problems"]
    assert report["outputs"]["mqtt"]["spool_records"] == 5

    health.remove_camera("gate-2")
    output.connected = True
    assert get(server.url + "/healthz")[0] == 200


def test_healthz_reports_a_stalled_event_loop() -> None:
    health = Health(loop_stall_after_s=0.0)
    health.beat()
    healthy, report = health.report()
    assert not healthy and report["problems"][0].startswith("event loop stalled")


def test_unknown_paths_and_methods_are_refused(server: ObservabilityServer) -> None:
    assert get(server.url + "/")[0] == 404
    request = urllib.request.Request(server.url + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_server_binds_loopback_by_default_and_serves_ipv6_loopback() -> None:
    metrics = Metrics()
    with ObservabilityServer(metrics, port=0) as ipv4:
        assert ipv4._server.server_address[0] == "127.0.0.1"
        assert get(ipv4.url + "/metrics")[0] == 200
    with ObservabilityServer(metrics, host="::1", port=0) as ipv6:
        assert ipv6.url.startswith("http://[::1]:")
        assert get(ipv6.url + "/metrics")[0] == 200


def test_a_busy_port_is_a_clear_error() -> None:
    with ObservabilityServer(Metrics(), port=0) as first:
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{first.port}"):
            ObservabilityServer(Metrics(), port=first.port)


def test_a_server_that_never_started_closes_at_once_and_frees_its_port() -> None:
    # The daemon binds the port first (a busy port fails fast) and closes it again if the
    # model then fails to load: closing must not wait for a serve loop that never ran.
    server = ObservabilityServer(Metrics(), port=0)
    server.close()
    ObservabilityServer(Metrics(), port=server.port).close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("9100", ("127.0.0.1", 9100)),
     ("[::1]:9464", ("::1", 9464)), ("0.0.0.0:0", ("0.0.0.0", 0))],
)
def test_listen_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("localhost:http", "is not a number"), ("::1:9464", r"\[ADDRESS\]:PORT"), ("1.2.3.4:70000", "0-65535")],
)
def test_bad_listen_addresses_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen_address(text)


# -- systemd notifications -------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A real AF_UNIX datagram socket standing in for systemd's, named in $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield receiver
    finally:
        receiver.close()


def test_sd_notify_sends_one_datagram_with_every_assignment(notify_socket: socket.socket) -> None:
    assert sd_notify("READY=1", "STATUS=counting 2 cameras")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=counting 2 cameras"
    assert sd_notify("STOPPING=1")
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_sd_notify_reloading_carries_the_monotonic_timestamp(notify_socket: socket.socket) -> None:
    assert sd_notify("RELOADING=1")
    lines = notify_socket.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0


def test_sd_notify_reaches_an_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"avcc-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("WATCHDOG=1")
        assert receiver.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_is_a_no_op_outside_systemd_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    with structlog.testing.capture_logs() as logs:
        assert sd_notify("READY=1") is False
    assert logs[0]["event"] == "sd_notify_failed"


def test_watchdog_interval_comes_from_systemd_and_only_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval_s() is None


def test_keep_alive_beats_health_and_feeds_the_watchdog(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # 40 ms: pings every 20 ms
    health = Health()

    async def run_briefly() -> None:
        task = asyncio.create_task(keep_alive(health))
        await asyncio.sleep(0.15)
        task.cancel()

    asyncio.run(run_briefly())
    assert health.report()[1]["event_loop"]["last_beat_age_s"] is not None
    notify_socket.settimeout(0.5)
    pings = []
    try:
        while True:
            pings.append(notify_socket.recv(4096))
    except TimeoutError:
        pass
    assert len(pings) >= 2 and set(pings) == {b"WATCHDOG=1"}
