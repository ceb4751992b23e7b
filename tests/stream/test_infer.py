"""The inference pool with real (randomly initialised, narrow) CC-AV and CC-V checkpoints."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from avcc_stream.stream.infer import InferConfig, InferencePool, WindowQueue, load_models
from avcc_stream.stream.types import AudioVisualWindow, CountResult
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return (
        make_random_checkpoint(folder, "cc-av-lowres", **SMALL_WIDTHS),
        make_random_checkpoint(folder, "cc-v-lowres", **SMALL_WIDTHS),
    )


def window(camera: str, second: int, *, audio: bool = True, size: tuple[int, int] = (160, 90)) -> AudioVisualWindow:
    rng = np.random.default_rng(second)
    width, height = size
    return AudioVisualWindow(
        camera=camera,
        window_start=T0 + timedelta(seconds=second),
        window_end=T0 + timedelta(seconds=second + 1),
        frame=rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
        audio=(0.1 * rng.standard_normal(16_000)).astype(np.float32) if audio else None,
        enqueued_monotonic=float(second),
    )


class Collector:
    def __init__(self) -> None:
        self.results: list[CountResult] = []
        self.lock = threading.Lock()

    def __call__(self, result: CountResult) -> None:
        with self.lock:
            self.results.append(result)


def test_results_carry_counts_patch_counts_pir_and_the_model_that_counted(checkpoints: tuple[Path, Path]) -> None:
    av, v = checkpoints
    collected = Collector()
    pool = InferencePool(load_models(str(av), str(v), ["cpu"]), InferConfig(max_batch=4, max_wait_s=0.0), collected)
    pool.submit(window("gate", 0, audio=True, size=(320, 180)))
    pool.submit(window("bar", 0, audio=False))
    pool.start()
    assert pool.stop(timeout=60)
    by_camera = {r.camera: r for r in collected.results}
    assert set(by_camera) == {"gate", "bar"}
    gate, bar = by_camera["gate"], by_camera["bar"]
    assert gate.audio is True and gate.model == f"cc-av-lowres:{av.name}"
    assert bar.audio is False and bar.model == f"cc-v-lowres:{v.name}"  # the vision-only fallback
    for result in (gate, bar):
        assert result.patch_counts.shape == (4, 4)
        assert result.count >= 0
        assert result.patch_counts.sum() == pytest.approx(result.count, rel=1e-4, abs=1e-5)
        assert result.pir is not None and result.pir.shape == (4, 4)
        assert result.pir.sum() == pytest.approx(1.0, abs=1e-5)
        assert result.latency_ms > 0  # window end (2026) to now: positive either way
    assert gate.frame_size == (320, 180) and bar.frame_size == (160, 90)
    assert gate.window_end == T0 + timedelta(seconds=1)


def test_without_a_fallback_the_primary_counts_silence_and_says_audio_false(checkpoints: tuple[Path, Path]) -> None:
    av, _ = checkpoints
    collected = Collector()
    pool = InferencePool(load_models(str(av), None, ["cpu"]), InferConfig(max_wait_s=0.0), collected)
    pool.submit(window("bar", 0, audio=False))
    pool.start()
    assert pool.stop(timeout=60)
    [result] = collected.results
    assert result.audio is False and result.model.startswith("cc-av-lowres")


def test_flip_average_counts_the_mean_of_the_frame_and_its_mirror_image(checkpoints: tuple[Path, Path]) -> None:
    """model.flip_average: each window's count is the mean of the frame's and of the mirrored
    frame's, and its patch counts still sum to it and say which side of the scene holds whom."""
    av, v = checkpoints
    models = load_models(str(av), str(v), ["cpu"])
    plain = window("gate", 0, size=(128, 72))  # the model's input size: no resampling to blur the mirror
    mirror = dataclasses.replace(plain, frame=np.ascontiguousarray(plain.frame[:, ::-1]))

    def counted(flip_average: bool, *windows: AudioVisualWindow) -> list[CountResult]:
        pool = InferencePool(models, InferConfig(max_wait_s=0.0, flip_average=flip_average), lambda _r: None)
        return pool.count(models[0].primary, list(windows))

    plain_result, mirror_result = counted(False, plain, mirror)
    [averaged] = counted(True, plain)
    [averaged_of_mirror] = counted(True, mirror)
    assert averaged.count == pytest.approx((plain_result.count + mirror_result.count) / 2, rel=1e-4)
    assert abs(plain_result.count - mirror_result.count) > 1e-6  # so the average is not the plain count
    assert averaged.patch_counts.sum() == pytest.approx(averaged.count, rel=1e-4)
    np.testing.assert_allclose(averaged.patch_counts, averaged_of_mirror.patch_counts[:, ::-1], rtol=1e-4, atol=1e-6)
    assert averaged.pir is not None and averaged.pir.sum() == pytest.approx(1.0, abs=1e-5)


def test_probe_count_flip_averages_when_the_config_asks(checkpoints: tuple[Path, Path]) -> None:
    """`avcc-stream probe --count` counts a camera's newest window as the daemon would, with
    model.flip_average passed through: the flip-averaged count, not the plain one."""
    from avcc_stream.stream.probe import ProbeResult, count_last_windows

    av, v = checkpoints
    models = load_models(str(av), str(v), ["cpu"])
    newest = window("gate", 3, size=(128, 72))

    class Newest:  # stands in for the aligner's window: the probe only asks it to materialize
        def materialize(self) -> AudioVisualWindow:
            return newest

    def probed(flip_average: bool) -> float:
        result = ProbeResult(camera="gate", source="rtsp://127.0.0.1/gate", last_window=Newest())
        count_last_windows([result], models, amp=False, flip_average=flip_average)
        assert result.count is not None
        return result.count.count

    pool = InferencePool(models, InferConfig(max_wait_s=0.0, flip_average=True), lambda _r: None, amp=False)
    [daemon_count] = pool.count(models[0].primary, [newest])
    assert probed(True) == pytest.approx(daemon_count.count, rel=1e-5)
    assert abs(probed(True) - probed(False)) > 1e-6  # so the option reached the model


def test_overload_drops_the_oldest_windows_per_camera_and_counts_them(checkpoints: tuple[Path, Path]) -> None:
    av, v = checkpoints
    collected = Collector()
    dropped: list[AudioVisualWindow] = []
    pool = InferencePool(
        load_models(str(av), str(v), ["cpu"]), InferConfig(max_batch=8, max_wait_s=0.0, queue_per_camera=3),
        collected, on_drop=dropped.append,
    )
    for second in range(10):  # the workers are not running yet: inference is "behind"
        pool.submit(window("busy", second))
    pool.submit(window("quiet", 0))
    assert len(pool.queue) == 4  # memory bounded: 3 for busy, 1 for quiet
    pool.start()
    assert pool.stop(timeout=60)
    assert pool.dropped == {"busy": 7}
    assert [w.window_end for w in dropped] == [T0 + timedelta(seconds=s + 1) for s in range(7)]  # oldest first
    busy = sorted(r.window_end for r in collected.results if r.camera == "busy")
    assert busy == [T0 + timedelta(seconds=s + 1) for s in (7, 8, 9)]  # the newest survive
    assert pool.stats.processed == {"busy": 3, "quiet": 1}


def test_batches_mix_cameras_fairly_and_never_mix_models() -> None:
    queue = WindowQueue(per_camera=10)
    for second in range(6):
        queue.put(window("a", second))
    for second in range(2):
        queue.put(window("b", second))
        queue.put(window("c", second, audio=False))

    def group(w: AudioVisualWindow) -> bool:
        return w.audio is not None

    first = queue.take_batch(4, 0.0, group)
    assert len(first) == 4 and all(w.audio is not None for w in first)
    assert {w.camera for w in first} == {"a", "b"}  # round-robin, not four of camera a
    second = queue.take_batch(8, 0.0, group)
    assert [w.camera for w in second] == ["c", "c"]  # the oldest waiting window decides the model
    third = queue.take_batch(8, 0.0, group)
    assert [w.camera for w in third] == ["a"] * 4
    queue.close()
    assert queue.take_batch(8, 0.0, group) == []


def test_a_worker_waits_up_to_max_wait_to_fill_a_batch() -> None:
    queue = WindowQueue(per_camera=10)
    queue.put(window("a", 0))
    threading.Timer(0.05, lambda: queue.put(window("b", 0))).start()
    batch = queue.take_batch(2, 30.0, lambda w: True)  # returns as soon as the batch is full
    assert sorted(w.camera for w in batch) == ["a", "b"]


def test_a_fallback_that_uses_audio_is_rejected(checkpoints: tuple[Path, Path]) -> None:
    av, _ = checkpoints
    with pytest.raises(ValueError, match="must be a vision-only model"):
        load_models(str(av), str(av), ["cpu"])


@pytest.mark.gpu
def test_cuda_with_amp_counts_like_the_cpu(checkpoints: tuple[Path, Path]) -> None:
    av, v = checkpoints
    windows = [window("gate", s) for s in range(3)] + [window("bar", s, audio=False) for s in range(3)]
    results = {}
    for device in ("cpu", "cuda"):
        collected = Collector()
        pool = InferencePool(load_models(str(av), str(v), [device]), InferConfig(max_batch=8, max_wait_s=0.0),
                             collected, amp=True)
        for w in windows:
            pool.submit(w)
        pool.start()
        assert pool.stop(timeout=120)
        results[device] = {(r.camera, r.window_end): r for r in collected.results}
    assert results["cpu"].keys() == results["cuda"].keys()
    for key, cpu in results["cpu"].items():
        gpu = results["cuda"][key]
        assert np.isfinite(gpu.count) and gpu.count == pytest.approx(cpu.count, rel=0.05, abs=0.05)
        assert np.allclose(gpu.patch_counts, cpu.patch_counts, rtol=0.05, atol=0.05)


def test_amp_on_a_cpu_with_bf16_instructions_counts_in_bf16(checkpoints: tuple[Path, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """model.amp on a CPU: bf16 autocast where the CPU has bf16 instructions (patched in here, so
    the path runs on any CPU; an emulated bf16 computes the same), float32 where it has not."""
    import torch

    from avcc_stream import precision

    av, v = checkpoints
    windows = [window("gate", s) for s in range(3)] + [window("bar", s, audio=False) for s in range(2)]
    results, dtypes = {}, {}
    for label, amp, has_bf16 in (("fp32", False, True), ("bf16", True, True), ("no-bf16", True, False)):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda has=has_bf16: has)
        models = load_models(str(av), str(v), ["cpu"])
        seen: set[torch.dtype] = set()
        for model in (models[0].primary, models[0].fallback):
            conv = next(m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d))
            conv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        collected = Collector()
        pool = InferencePool(models, InferConfig(max_batch=8, max_wait_s=0.0), collected, amp=amp)
        for w in windows:
            pool.submit(w)
        pool.start()
        assert pool.stop(timeout=120)
        results[label] = {(r.camera, r.window_end): r for r in collected.results}
        dtypes[label] = seen
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}, "no-bf16": {torch.float32}}
    assert results["bf16"].keys() == results["fp32"].keys() and len(results["fp32"]) == 5
    for key, exact in results["fp32"].items():
        half = results["bf16"][key]
        assert isinstance(half.count, float) and np.isfinite(half.count)
        assert half.count == pytest.approx(exact.count, rel=0.05, abs=0.05)
        assert half.patch_counts.dtype == np.float32
        assert results["no-bf16"][key].count == pytest.approx(exact.count, rel=1e-5, abs=1e-6)
