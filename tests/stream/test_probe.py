"""`avcc-stream probe` against a real RTSP server (H.264 + AAC), a file without sound and a
dead URL: what each camera sends, and what the daemon would count it with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcc_stream.cli import main
from avcc_stream.stream.localservices import free_port
from avcc_stream.stream.rtsp_server import encode_test_clip, start_rtsp_server
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

pytestmark = pytest.mark.services


def test_probe_reports_each_camera_and_fails_for_a_dead_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    silent = encode_test_clip(tmp_path / "silent.mp4", seconds=3, size=(160, 90), audio=False)
    config = tmp_path / "venue.yaml"
    av = make_random_checkpoint(tmp_path, "cc-av-lowres", **SMALL_WIDTHS)
    v = make_random_checkpoint(tmp_path, "cc-v-lowres", **SMALL_WIDTHS)
    with start_rtsp_server({"live": "test"}, width=160, height=90) as server:
        config.write_text(f"""
model: {{checkpoint: "{av}", fallback_checkpoint: "{v}", device: cpu}}
cameras:
  gate: {{url: "{server.url('live')}"}}
  bar: {{file: "{silent}", loop: true}}
  dead: {{url: "rtsp://127.0.0.1:{free_port()}/nothing", open_timeout_s: 2, watchdog_s: 2}}
  spare: {{file: "{silent}", enabled: false}}
""")
        code = main(["probe", "--config", str(config), "--seconds", "3"])
        out = capsys.readouterr().out
        assert main(["probe", "--config", str(config), "--camera", "gate", "--camera", "bar", "--seconds", "2.5",
                     "--count", "--json"]) == 0
        as_json = {r["camera"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == 1, out  # the dead camera
    reports = {block.split(":", 1)[0]: block for block in out.strip().split("\n") if not block.startswith("  ")}
    assert set(reports) == {"gate", "bar", "dead"}  # the disabled camera is not probed
    assert "gate: ok  rtsp://127.0.0.1:" in out and f"bar: ok  {silent}" in out
    assert "dead: FAILED  rtsp://127.0.0.1:" in out and "connection refused" in out
    gate = out.split("gate: ok", 1)[1].split("\nbar", 1)[0].split("\ndead", 1)[0]
    assert "video  h264 160x90, 25 fps declared, 25.0 fps by timestamps" in gate
    assert "audio  aac 48000 Hz" in gate
    assert "with sound: counted with sound (CC-AV)" in gate
    bar = out.split("bar: ok", 1)[1].split("\ngate", 1)[0].split("\ndead", 1)[0]
    assert "audio  none: every window is counted by the vision-only model (CC-V)" in bar
    assert "0 with sound: counted without sound (CC-V)" in bar

    assert set(as_json) == {"gate", "bar"}
    gate_json, bar_json = as_json["gate"], as_json["bar"]
    assert gate_json["ok"] is True and gate_json["error"] is None and "  count  " not in out  # no --count there
    assert gate_json["info"]["has_audio"] and gate_json["info"]["audio_codec"] == "aac"
    assert gate_json["windows"] >= 1 and gate_json["windows_with_sound"] == gate_json["windows"]
    assert gate_json["measured_fps"] == pytest.approx(25, rel=0.05) and gate_json["audio_s"] > 1.0
    # --count: the last window of each, routed as the daemon routes it (sound -> CC-AV, none -> CC-V).
    assert gate_json["count"]["model"] == f"cc-av-lowres:{av.name}" and gate_json["count"]["audio"] is True
    assert bar_json["count"]["model"] == f"cc-v-lowres:{v.name}" and bar_json["count"]["audio"] is False
    assert gate_json["count"]["count"] >= 0 and bar_json["count"]["count"] >= 0


def test_probe_names_an_unknown_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "venue.yaml"
    config.write_text('cameras:\n  gate: {url: "rtsp://127.0.0.1:9/x"}\n')
    assert main(["probe", "--config", str(config), "--camera", "gaet"]) == 2
    assert "no enabled camera 'gaet'; enabled: gate" in capsys.readouterr().err


def test_a_camera_that_goes_quiet_during_the_probe_fails_it(tmp_path: Path) -> None:
    """The server is frozen (SIGSTOP) a second into the probe: the connection stays open but
    nothing arrives, which the daemon would call stalled; the probe must not report it ok."""
    import asyncio
    import os
    import signal
    import threading

    from avcc_stream.config import load_config
    from avcc_stream.stream.daemon import camera_spec
    from avcc_stream.stream.probe import probe_cameras

    config = tmp_path / "venue.yaml"
    with start_rtsp_server({"live": "test"}, width=160, height=90) as server:
        config.write_text(f'cameras:\n  gate: {{url: "{server.url("live")}", watchdog_s: 2, read_timeout_s: 30}}\n')
        app = load_config(str(config))
        freezer = threading.Timer(3.0, os.kill, (server.process.pid, signal.SIGSTOP))
        freezer.start()
        try:
            [result] = asyncio.run(probe_cameras([camera_spec("gate", app.enabled_cameras()["gate"])], seconds=10))
        finally:
            freezer.cancel()
            os.kill(server.process.pid, signal.SIGCONT)
    assert result.frames > 0 and not result.ok
    assert result.error == "stalled: no frames for 2 s"
