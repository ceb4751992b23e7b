"""Each `avcc-stream bench` mode, run for a second or two with tiny settings, so the command cannot rot.

These check that every mode runs end to end and writes its table, JSON and Markdown with
sane fields. They assert nothing about speed: the machines are shared and noisy, and the
figures belong in docs/performance.md, measured with the real settings.
"""

from __future__ import annotations

import pytest

from avcc_stream.cli import main
from tests.bench.conftest import TINY_OVERRIDES, read_results, table


def test_model_mode_times_a_preset_beside_its_audiocsrnet_baseline_with_channels_last_compile_and_a_profile(tmp_path, capsys):
    # Interleaved: both models in one worker process, which keeps this test short; peak memory
    # (measured only for a model alone) is covered by tests/bench/test_model_worker.py.
    out = tmp_path / "results"
    code = main([
        "bench", "model", "--presets", "cc-av-lowres", "--device", "cpu", "--batch-sizes", "1", "--repeats", "2",
        "--memory-format", "channels_last", "--compile", "on", "--compile-backend", "aot_eager", "--interleave",
        "--profile", "cc-av-lowres", "--out", str(out), *TINY_OVERRIDES,
    ])
    assert code == 0
    assert "forward pass on cpu" in capsys.readouterr().out  # the table is printed
    data, markdown = read_results(out, "model")
    rows = {r["preset"]: r for r in table(data, "forward pass")["rows"]}
    assert set(rows) == {"cc-av-lowres", "audiocsrnet-lowres"}  # the baseline is added by itself
    for row in rows.values():
        assert "error" not in row, row
        assert row["resolution"] == "128x72" and row["batch"] == 1 and row["repeats"] == 2
        assert row["memory_format"] == "channels_last" and row["compile"] == "aot_eager"
        assert row["throughput"] > 0 and row["latency_ms"] > 0 and row["first_call_s"] > 0 and row["cpu_ms"] > 0
        assert row["gflops"] > 0 and row["params_m"] > 0 and row.get("peak_mem_mib") is None
    assert rows["audiocsrnet-lowres"]["vs_audiocsrnet"] == pytest.approx(1.0)
    assert rows["cc-av-lowres"]["vs_audiocsrnet"] == pytest.approx(
        rows["cc-av-lowres"]["throughput"] / rows["audiocsrnet-lowres"]["throughput"])
    modules = table(data, "by module (inclusive")["rows"]
    assert {"vfe", "afe"} <= {m["module"] for m in modules} and all(0 < m["share"] <= 1.5 for m in modules)
    assert table(data, "by operator")["rows"][0]["self_ms"] > 0
    assert "x AudioCSRNet" in markdown and "| cc-av-lowres |" in markdown and "interleaved" in markdown


def test_decode_mode_measures_each_video_mode_nvdec_audio_and_image_preparation(tmp_path):
    out = tmp_path / "results"
    code = main(["bench", "decode", "--sizes", "320x180", "--seconds", "2", "--repeats", "1",
                 "--cache-dir", str(tmp_path / "clips"), "--out", str(out)])
    assert code == 0
    data, markdown = read_results(out, "decode")
    video = {r["mode"]: r for r in table(data, "video decode")["rows"] if r["decoder"].startswith("CPU")}
    assert set(video) == {"full", "keyframes", "decode-then-skip"}
    assert video["full"]["frames"] == video["decode-then-skip"]["frames"] == 50  # 2 s at 25 fps
    assert video["full"]["rgb_frames"] == 50 and video["decode-then-skip"]["rgb_frames"] == 2
    assert video["keyframes"]["frames"] == video["keyframes"]["rgb_frames"] == 2  # GOP of one second
    assert all(0 < r["core_share"] < 5 and r["realtime_x"] > 0 for r in video.values())
    assert data["data"]["nvdec"] == "measured" or data["data"]["nvdec"].startswith(("not available", "not requested"))
    audio = table(data, "audio per camera")["rows"]
    assert len(audio) == 2 and all(r["core_share"] > 0 for r in audio)
    images = table(data, "prepare_image")["rows"]
    assert {r["to"] for r in images} == {"1024x576", "128x72"} and all(r["ms"] > 0 for r in images)
    assert any("camera before the model" in line for line in data["summary"])
    assert "decode-then-skip" in markdown


def test_gpu_plan_without_a_gpu_says_it_needs_one_and_exits_0(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU message does not apply (the GPU path is test_gpu_plan_on_cuda)")
    code = main(["bench", "gpu-plan", "--out", str(tmp_path)])
    assert code == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out
    data, _ = read_results(tmp_path, "gpu-plan")
    assert data["data"]["measured"] is False and "not measured" in data["summary"][0]


def test_gpu_plan_dry_run_on_cpu_exercises_stages_pool_and_channels_last(tmp_path):
    # torch.compile is exercised by the model mode's test; compiling again here would double its time.
    code = main([
        "bench", "gpu-plan", "--device", "cpu", "--preset", "cc-av-lowres", *TINY_OVERRIDES,
        "--frame-size", "320x180", "--decode-seconds", "1", "--duration", "1", "--batch-sizes", "2",
        "--max-batch", "2", "--workers", "1", "--repeats", "1", "--channels-last", "on", "--cache-dir", str(tmp_path / "clips"), "--out", str(tmp_path),
    ])
    assert code == 0
    data, _ = read_results(tmp_path, "gpu-plan")
    assert data["data"]["measured"] is True and any("dry run" in n for n in data["notes"])
    stages = table(data, "capacity of each stage")["rows"]
    measured = [s for s in stages if s["capacity"] is not None]
    assert len(measured) >= 4 and all(s["capacity"] > 0 for s in measured)  # decode, preprocess, model, pool
    pool = {r["run"]: r for r in table(data, "inference pool")["rows"]}
    assert pool["saturated"]["windows_per_s"] > 0 and pool["saturated"]["mean_batch"] >= 1
    paced = pool["paced, 1 window/s per camera"]
    assert paced["cameras"] >= 1 and paced["latency_p50_s"] > 0
    assert data["data"]["cameras"] >= 0 and data["data"]["limited_by"]


@pytest.mark.gpu
def test_gpu_plan_on_cuda(tmp_path):
    code = main(["bench", "gpu-plan", "--preset", "cc-av-lowres", "--duration", "2", "--decode-seconds", "2",
                 "--batch-sizes", "1,8", "--max-batch", "8", "--repeats", "2", "--out", str(tmp_path)])
    assert code == 0
    data, _ = read_results(tmp_path, "gpu-plan")
    assert data["data"]["measured"] is True
    transfer = [s for s in table(data, "capacity of each stage")["rows"] if "pinned" in s["stage"]]
    assert transfer and transfer[0]["capacity"] > 0


@pytest.mark.services
def test_e2e_mode_runs_cameras_through_the_daemon_to_mosquitto_and_reports_drops_latency_cpu(tmp_path):
    code = main([
        "bench", "e2e", "--cameras", "1", "--duration", "2", "--grace", "2", "--camera-size", "320x180",
        *TINY_OVERRIDES, "--cache-dir", str(tmp_path / "clips"), "--keep-workdir", str(tmp_path / "work"),
        "--out", str(tmp_path),
    ])
    assert code == 0
    data, markdown = read_results(tmp_path, "e2e")
    (row,) = table(data, "RTSP cameras")["rows"]
    assert "error" not in row, row["error"]
    assert row["cameras"] == 1 and row["delivered"] >= 1 and row["dropped"] >= 0
    assert 0 < row["latency_p50_s"] <= row["latency_p99_s"] < 30
    assert 0 < row["daemon_cores"] < 3 and row["daemon_rss_mib"] > 50 and row["exit_code"] == 0
    assert "largest camera count without a dropped window" in data["summary"][0]
    assert (tmp_path / "work" / "daemon-1.log").is_file() and (tmp_path / "work" / "daemon-1.yaml").is_file()
