"""The daemon in-process with real sources: watchdog, reconnect, file cameras, status records.

Records go through the real JSON-lines publisher into a file the test reads back. The
live camera is gst-rtsp-server's endless synthetic H.264 + AAC source; freezing the server
(SIGSTOP) makes the stream stall without closing the connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest

from avcc_stream.observability import Metrics
from avcc_stream.stream.align import AlignConfig
from avcc_stream.stream.daemon import CameraSpec, Daemon, ReconnectPolicy
from avcc_stream.stream.infer import InferConfig, load_models
from avcc_stream.stream.publish.console import ConsolePublisher
from avcc_stream.stream.rtsp_server import encode_test_clip, start_rtsp_server
from avcc_stream.stream.sources import build_source
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

pytestmark = pytest.mark.services


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def test_watchdog_marks_a_frozen_camera_stalled_and_reconnects_while_file_cameras_run(tmp_path: Path) -> None:
    models = load_models(
        str(make_random_checkpoint(tmp_path, "cc-av-lowres", **SMALL_WIDTHS)),
        str(make_random_checkpoint(tmp_path, "cc-v-lowres", **SMALL_WIDTHS)), ["cpu"],
    )
    once = encode_test_clip(tmp_path / "once.mp4", seconds=2.5, size=(64, 36))
    looped = encode_test_clip(tmp_path / "loop.mp4", seconds=1.0, size=(64, 36))
    out = tmp_path / "records.jsonl"
    fast = ReconnectPolicy(initial_s=0.3, max_s=1.0, jitter=0.0)

    def camera(name: str, watchdog_s: float = 5.0, retry_after_end: bool = True, **source) -> CameraSpec:
        return CameraSpec(name=name, source_factory=partial(build_source, **source), label=name,
                          watchdog_s=watchdog_s, open_timeout_s=2.0, reconnect=fast, align=AlignConfig(),
                          retry_after_end=retry_after_end)

    def of(camera_name: str, kind: str) -> list[dict]:
        return [r for r in read_records(out) if r["camera"] == camera_name and r["kind"] == kind]

    with start_rtsp_server({"live": "test"}, width=160, height=90) as server:
        specs = [
            # read timeout (5 s) longer than the watchdog (1.5 s): the watchdog must notice first
            camera("live", watchdog_s=1.5, url=server.url("live"), open_timeout_s=2.0, read_timeout_s=5.0),
            camera("once", file=once, retry_after_end=False),
            camera("looped", file=looped, loop=True),
        ]
        metrics = Metrics()
        daemon = Daemon(specs, models, [ConsolePublisher(out)], infer=InferConfig(max_wait_s=0.0), metrics=metrics)

        async def scenario() -> None:
            task = asyncio.create_task(daemon.run())
            try:
                await wait_for(lambda: len(of("live", "count")) >= 2, 60, "the live camera's first counts")
                os.kill(server.process.pid, signal.SIGSTOP)
                try:
                    await wait_for(lambda: any(s["state"] == "stalled" for s in of("live", "status")), 30, "stalled")
                    await asyncio.sleep(1.0)  # a reconnect attempt or two against the frozen server
                finally:
                    os.kill(server.process.pid, signal.SIGCONT)
                stalled_at = len(of("live", "count"))
                await wait_for(lambda: len(of("live", "count")) >= stalled_at + 2, 60, "counts after the thaw")
                await wait_for(lambda: len(of("looped", "count")) >= 3, 30, "three windows of a looped 1 s clip")
                await daemon.stop_camera("looped")  # as a config reload would: the others go on
                for _ in range(2):  # windows it had cut may still be counted; then nothing more
                    looped_at, live_at = len(of("looped", "count")), len(of("live", "count"))
                    await wait_for(lambda: len(of("live", "count")) >= live_at + 2, 30, "live counts after removing looped")
                assert len(of("looped", "count")) == looped_at
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 15)

        asyncio.run(scenario())

    live = of("live", "status")
    states = [s["state"] for s in live]
    stalled = next(s for s in live if s["state"] == "stalled")
    assert stalled["reason"] == "no frames for 1.5 s" and stalled["attempt"] >= 1 and stalled["retry_in_s"] > 0
    first_stall = states.index("stalled")  # (a first connect may fail on a busy machine and be retried)
    assert "online" in states[:first_stall] and "online" in states[first_stall:], f"not online before and after: {states}"
    assert states[-1] == "offline" and live[-1]["reason"] == "daemon stopped"

    # the file that ends is counted to its end and not retried
    once_status = [(s["state"], s["reason"]) for s in of("once", "status")]
    assert once_status[-2:] == [("offline", "end of file"), ("offline", "daemon stopped")]
    assert len(of("once", "count")) == 2  # 2.5 s of sound: two whole windows

    # the looping file keeps counting past its own length, with increasing windows
    ends = [r["window_end"] for r in of("looped", "count")]
    assert len(ends) >= 3 and ends == sorted(set(ends))

    # and the operator's metrics saw the same
    sample = metrics.registry.get_sample_value
    assert sample("avcc_windows_processed_total", {"camera": "live"}) == len(of("live", "count"))
    assert sample("avcc_reconnects_total", {"component": "camera", "name": "live"}) >= 1
    assert metrics.health.cameras()["once"]["status"] == "offline"
    assert "looped" not in metrics.health.cameras()  # forgotten when it was removed


def test_an_ip_camera_with_h265_and_g711_sound_is_counted_audio_visually_once_a_second(tmp_path: Path) -> None:
    av_checkpoint = make_random_checkpoint(tmp_path, "cc-av-lowres", **SMALL_WIDTHS)
    models = load_models(str(av_checkpoint), str(make_random_checkpoint(tmp_path, "cc-v-lowres", **SMALL_WIDTHS)), ["cpu"])
    clip = encode_test_clip(tmp_path / "camera.mov", seconds=8, video_codec="hevc", audio_codec="pcm_mulaw",
                            sample_rate=8_000, channels=1)
    out = tmp_path / "records.jsonl"
    with start_rtsp_server({"camera": f"file:{clip}"}) as server:
        spec = CameraSpec(name="ipcam", source_factory=partial(build_source, url=server.url("camera")), label="ipcam",
                          watchdog_s=5.0, open_timeout_s=5.0, reconnect=ReconnectPolicy(), align=AlignConfig())
        daemon = Daemon([spec], models, [ConsolePublisher(out)], infer=InferConfig(max_wait_s=0.0))

        async def scenario() -> None:
            task = asyncio.create_task(daemon.run())
            try:
                await wait_for(lambda: sum(r["kind"] == "count" for r in read_records(out)) >= 3, 60, "three counts")
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 15)

        asyncio.run(scenario())
    counts = [r for r in read_records(out) if r["kind"] == "count"]
    assert len(counts) >= 3 and all(c["audio"] is True for c in counts)
    assert {c["model"] for c in counts} == {f"cc-av-lowres:{av_checkpoint.name}"}
    ends = [datetime.fromisoformat(c["window_end"]).timestamp() for c in counts]  # 3.11 reads the "Z"
    assert all(0.95 <= b - a <= 1.05 for a, b in zip(ends, ends[1:])), ends


def test_check_config_says_ok_or_names_file_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from avcc_stream.cli import main

    good = tmp_path / "good.yaml"
    good.write_text("cameras:\n  gate: {url: rtsp://127.0.0.1:8554/gate}\n")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"{good}: valid; 1 of 1 cameras enabled")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  gate:\n    url: rtsp://127.0.0.1:8554/gate\n    watchdog_s: soon\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "cameras.gate.watchdog_s" in err


def test_run_refuses_a_config_without_cameras_or_without_a_usable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from avcc_stream.cli import main

    empty = tmp_path / "empty.yaml"
    empty.write_text("cameras: {}\n")
    assert main(["run", "--config", str(empty)]) == 2
    assert "no camera is enabled" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"model: {{checkpoint: {tmp_path / 'nope.safetensors'}, device: cpu}}\n"
                       "mqtt: {enabled: false}\nmetrics: {listen: \"127.0.0.1:0\"}\n"
                       "cameras:\n  gate: {url: rtsp://127.0.0.1:1/gate}\n")
    assert main(["run", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "nope.safetensors: no such checkpoint file" in err
