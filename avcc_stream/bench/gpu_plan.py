"""`avcc-stream bench gpu-plan`: how many cameras one GPU serves, and what limits it.

Each stage a window passes through on its way to a count is measured alone, as a capacity
in windows per second, and then the daemon's own inference pool (`stream.infer`, dynamic
batching, AMP) is run flat out and at a paced camera load:

* decode (CPU): one camera's H.264 decode-then-skip cost (and NVDEC's, where available),
  turned into cameras per machine at one window per second;
* preprocess (CPU): `prepare_image` from the camera frame to the model input, and
  `prepare_audio`, per window, turned into windows per second over all cores;
* transfer: host -> device copy of a batch, from pageable and from pinned memory;
* model: the forward pass alone at each batch size (AMP, optionally channels_last and
  torch.compile), inputs already on the device;
* pool: `InferencePool` fed synthetic windows (camera-sized RGB frames and 16 kHz sound)
  from as many cameras as needed to keep it busy: camera-windows per second sustained;
  then paced at one window per second per camera for 80 % of that: latency p50 / p99.

The smallest capacity is the bottleneck, and the plan's answer is the number of cameras at
one window per second that both the pool and the machine's CPU (decode + preprocess) carry.
Without a CUDA device the command says so and exits 0; `--device cpu` runs the same code
as a dry run (its figures are not a GPU plan).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avcc_stream.bench.report import BenchReport, Column, Table, percentile

TARGET_WINDOWS_PER_S = 500.0  # the target for CC-AV at 1024x576 with AMP on one H100-class GPU
TARGET_P99_S = 1.5


@dataclass
class GpuPlanSettings:
    device: str = "cuda"
    preset: str = "cc-av"
    checkpoint: str | None = None  # a checkpoint spec (builtin:NAME or a path); None: random init of `preset`
    overrides: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp16"  # the model stage: fp32 or an autocast dtype (the pool's AMP is float16 on CUDA)
    channels_last: bool = True
    compile: bool = False
    compile_backend: str = "inductor"
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)
    max_batch: int = 32
    max_wait_s: float = 0.02
    workers: int = 4
    queue_per_camera: int = 4
    duration_s: float = 10.0
    frame_size: tuple[int, int] = (1920, 1080)
    decode_seconds: float = 5.0
    cache_dir: Path | None = None
    repeats: int = 5


# --------------------------------------------------------------------------------------
# model set-up


def load_model(settings: GpuPlanSettings) -> Any:
    """A `stream.infer.CountingModel` on the device: the checkpoint, or the preset randomly initialised."""
    from avcc_stream.model import ModelConfig, build_model
    from avcc_stream.stream.infer import CountingModel, load_counting_model

    if settings.checkpoint:
        counting = load_counting_model(settings.checkpoint, settings.device)
        module = counting.module
    else:
        torch.manual_seed(0)
        cfg = ModelConfig.from_preset(settings.preset, **settings.overrides)
        module = build_model(cfg).eval().to(settings.device)
        counting = CountingModel(
            name=f"{cfg.name} (random init)", module=module, input_size=tuple(cfg.input_size),
            grid=tuple(cfg.grid), uses_audio=cfg.uses_audio, audio_samples=cfg.audio_num_samples, device=settings.device,
        )
    counting.module = TunedModule(module, settings.channels_last, settings.compile, settings.compile_backend).eval()
    return counting


class TunedModule(torch.nn.Module):
    """The model with its inputs made channels_last and, optionally, compiled."""

    def __init__(self, module: torch.nn.Module, channels_last: bool, compile: bool, backend: str) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.inner = module.to(memory_format=torch.channels_last) if channels_last else module
        self.run = torch.compile(self.inner, backend=backend, dynamic=False) if compile else self.inner

    def forward(self, images: torch.Tensor, audio: torch.Tensor | None = None) -> Any:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.run(images, audio)


# --------------------------------------------------------------------------------------
# stages


def measure_decode(settings: GpuPlanSettings) -> dict[str, Any]:
    """Share of one core per camera for CPU decode-then-skip and, where possible, NVDEC."""
    from avcc_stream.bench.machine import pyav

    if pyav() is None:  # the model and pool are still worth measuring
        return {"cpu": None, "nvdec": None, "nvdec_status": "not measured: PyAV is not installed"}
    from avcc_stream.bench.clips import cached_clip
    from avcc_stream.bench.decode_bench import decode_video, hardware_decoder, nvdec_failure, summarise

    clip = cached_clip(settings.frame_size, seconds=settings.decode_seconds, cache_dir=settings.cache_dir)
    out: dict[str, Any] = {"cpu": summarise([decode_video(clip, "decode-then-skip", "SLICE")])["core_share"]}
    hwaccel, why_not = hardware_decoder("auto")
    out["nvdec"], out["nvdec_status"] = None, why_not
    if hwaccel is not None:
        try:
            run = decode_video(clip, "decode-then-skip", "SLICE", hwaccel)
            if run["hardware"]:
                out["nvdec"], out["nvdec_status"] = summarise([run])["core_share"], "measured"
            else:
                out["nvdec_status"] = "not available: the decoder fell back to software"
        except Exception as exc:
            out["nvdec_status"] = nvdec_failure(exc)
    return out


def measure_preprocess(frame_size: tuple[int, int], input_size: tuple[int, int]) -> dict[str, float]:
    """CPU seconds per window of prepare_image and of prepare_audio (one second of 48 kHz stereo)."""
    from avcc_stream.bench.decode_bench import CpuClock, prepare_image_cost
    from avcc_stream.preprocess import prepare_audio

    sound = np.random.default_rng(0).standard_normal((2, 48_000)).astype(np.float32) * 0.1
    prepare_audio(sound, 48_000)
    costs = []
    for _ in range(5):
        with CpuClock() as clock:
            prepare_audio(sound, 48_000)
        costs.append(clock.cpu)
    return {"image_s": prepare_image_cost(frame_size, input_size), "audio_s": float(np.median(costs))}


def measure_transfer(device: str, batch: int, input_size: tuple[int, int], repeats: int) -> dict[str, float | None]:
    """Seconds per window to copy a batch of model inputs to the device, pageable and pinned."""
    if not device.startswith("cuda"):
        return {"pageable_s": None, "pinned_s": None}
    width, height = input_size
    host = torch.randn(batch, 3, height, width)
    pinned = host.pin_memory()
    out = {}
    for name, source, non_blocking in (("pageable_s", host, False), ("pinned_s", pinned, True)):
        times = []
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            started = time.perf_counter()
            source.to(device, non_blocking=non_blocking)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        out[name] = float(np.median(times[1:])) / batch
    return out


def measure_model(counting: Any, settings: GpuPlanSettings) -> list[dict[str, Any]]:
    """Forward windows/s at each batch size, inputs already on the device."""
    from avcc_stream.bench.model_worker import forward_fn, time_batch

    width, height = counting.input_size
    rows = []
    device = torch.device(settings.device)
    for batch in settings.batch_sizes:
        images = torch.randn(batch, 3, height, width, device=device)
        audio = 0.1 * torch.randn(batch, counting.audio_samples, device=device) if counting.uses_audio else None
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            timing = time_batch(forward_fn(counting.module, images, audio, device, settings.precision), device, 3, settings.repeats, 30.0)
            rows.append({
                "batch": batch, **timing, "windows_per_s": batch / (timing["latency_ms"] / 1000.0),
                "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            })
        except Exception as exc:  # out of memory at the largest batches is an answer, not a crash
            rows.append({"batch": batch, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------
# the pool


class WindowFactory:
    """Synthetic windows: a few camera-sized random frames and 16 kHz sound, reused."""

    def __init__(self, frame_size: tuple[int, int], audio_samples: int, uses_audio: bool) -> None:
        rng = np.random.default_rng(0)
        width, height = frame_size
        self.frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
        self.audio = (rng.standard_normal(audio_samples) * 0.1).astype(np.float32) if uses_audio else None
        self._count = itertools.count()

    def make(self, camera: str) -> Any:
        from avcc_stream.stream.types import AudioVisualWindow

        now = datetime.now(timezone.utc)
        return AudioVisualWindow(
            camera=camera, window_start=now - timedelta(seconds=1), window_end=now,
            frame=self.frames[next(self._count) % len(self.frames)], audio=self.audio,
            enqueued_monotonic=time.monotonic(),
        )


class ResultTally:
    """Results and drops counted from the pool's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.results: list[tuple[float, float]] = []  # (monotonic time, latency s)
        self.dropped = 0
        self.errors: list[str] = []

    def on_result(self, result: Any) -> None:
        with self._lock:
            self.results.append((time.monotonic(), result.latency_ms / 1000.0))

    def on_drop(self, window: Any) -> None:
        with self._lock:
            self.dropped += 1

    def on_error(self, exc: BaseException, batch: list[Any]) -> None:
        with self._lock:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def between(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [latency for when, latency in self.results if start <= when < end]


def make_pool(counting: Any, settings: GpuPlanSettings, tally: ResultTally) -> Any:
    from avcc_stream.stream.infer import DeviceModels, InferConfig, InferencePool

    config = InferConfig(max_batch=settings.max_batch, max_wait_s=settings.max_wait_s, workers=settings.workers,
                         queue_per_camera=settings.queue_per_camera)
    return InferencePool([DeviceModels(settings.device, counting, None)], config, tally.on_result,
                         on_drop=tally.on_drop, on_error=tally.on_error, amp=True)


WARMUP_TIMEOUT_S = 600.0  # first batches may compile (torch.compile) or pick kernels (cuDNN)


def run_pool_saturated(counting: Any, settings: GpuPlanSettings, factory: WindowFactory) -> dict[str, Any]:
    """Keep the pool's queue full for `duration_s`; camera-windows per second it sustains.

    Counting starts once every worker has finished a batch, so compilation and kernel
    selection on the first batches do not count against the pool.
    """
    tally = ResultTally()
    pool = make_pool(counting, settings, tally)
    high_water = settings.max_batch * settings.workers * 2  # enough queued to fill every worker's next batch
    cameras = itertools.cycle([f"cam{i:03d}" for i in range(max(high_water, 8))])

    def feed_until(done: Callable[[], bool]) -> None:
        while not done():
            if len(pool.queue) >= high_water:
                time.sleep(0.001)
            else:
                pool.submit(factory.make(next(cameras)))

    pool.start()
    try:
        warm_deadline = time.monotonic() + WARMUP_TIMEOUT_S
        feed_until(lambda: len(tally.results) >= settings.workers or time.monotonic() > warm_deadline)
        batches_before = pool.stats.batches
        processed_before = sum(pool.stats.processed.values())
        measure_from = time.monotonic()
        measure_to = measure_from + settings.duration_s
        feed_until(lambda: time.monotonic() >= measure_to)
        batches = pool.stats.batches - batches_before
        processed = sum(pool.stats.processed.values()) - processed_before
    finally:
        pool.stop(timeout=30.0, drain=False)
    counted = len(tally.between(measure_from, measure_to))
    return {
        "windows_per_s": counted / settings.duration_s,
        "mean_batch": processed / batches if batches else None,
        "largest_batch": pool.stats.largest_batch,
        "errors": tally.errors[:3],
    }


def run_pool_paced(counting: Any, settings: GpuPlanSettings, factory: WindowFactory, cameras: int) -> dict[str, Any]:
    """`cameras` cameras at one window per second each (staggered): latency and drops."""
    tally = ResultTally()
    pool = make_pool(counting, settings, tally)
    names = [f"cam{i:04d}" for i in range(cameras)]
    pool.start()
    started = time.monotonic()
    submitted = 0
    try:
        for tick in itertools.count():
            due = started + tick / cameras  # camera i submits at i/cameras past every second
            if due >= started + settings.duration_s:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(factory.make(names[tick % cameras]))
            submitted += 1
    finally:
        pool.stop(timeout=30.0, drain=True)
    latencies = [latency for _, latency in tally.results]
    return {
        "cameras": cameras, "submitted": submitted, "counted": len(latencies), "dropped": tally.dropped,
        "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
        "errors": tally.errors[:3],
    }


# --------------------------------------------------------------------------------------
# the plan


def run_gpu_plan(
    settings: GpuPlanSettings, machine: dict[str, Any], progress: Callable[[str], None] = lambda message: None
) -> BenchReport:
    report = BenchReport("gpu-plan", machine, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()})
    cores = os.cpu_count() or 1
    on_gpu = settings.device.startswith("cuda")
    if not on_gpu:
        report.notes.append("CPU dry run (--device cpu): the same code as on a GPU, but these figures are not a GPU plan.")

    progress("gpu-plan: decode ...")
    decode = measure_decode(settings)
    progress("gpu-plan: loading model ...")
    counting = load_model(settings)
    progress("gpu-plan: preprocess ...")
    prep = measure_preprocess(settings.frame_size, counting.input_size)
    progress("gpu-plan: transfer ...")
    transfer = measure_transfer(settings.device, settings.max_batch, counting.input_size, settings.repeats)
    progress("gpu-plan: model forward ...")
    model_rows = measure_model(counting, settings)
    factory = WindowFactory(settings.frame_size, counting.audio_samples, counting.uses_audio)
    progress("gpu-plan: pool, saturated ...")
    saturated = run_pool_saturated(counting, settings, factory)
    paced_cameras = max(1, math.floor(0.8 * saturated["windows_per_s"]))
    progress(f"gpu-plan: pool, paced at {paced_cameras} cameras ...")
    paced = run_pool_paced(counting, settings, factory, paced_cameras)

    frame = f"{settings.frame_size[0]}x{settings.frame_size[1]}"
    best_model = max((r["windows_per_s"] for r in model_rows if "windows_per_s" in r), default=None)
    cpu_per_window = prep["image_s"] + prep["audio_s"]
    stages = [
        {"stage": f"decode {frame} on CPU (decode-then-skip), {cores} cores",
         "per_window_ms": decode["cpu"] * 1000.0 if decode["cpu"] else None,
         "capacity": cores / decode["cpu"] if decode["cpu"] else None},
        {"stage": f"decode {frame} with NVDEC ({decode['nvdec_status']})",
         "per_window_ms": decode["nvdec"] * 1000.0 if decode["nvdec"] else None,
         "capacity": cores / decode["nvdec"] if decode["nvdec"] else None},
        {"stage": f"preprocess on CPU (prepare_image {frame} -> {counting.input_size[0]}x{counting.input_size[1]} + prepare_audio), {cores} cores",
         "per_window_ms": cpu_per_window * 1000.0, "capacity": cores / cpu_per_window},
        {"stage": f"transfer to {settings.device}, pageable memory (batch {settings.max_batch})",
         "per_window_ms": _ms(transfer["pageable_s"]), "capacity": _inverse(transfer["pageable_s"])},
        {"stage": f"transfer to {settings.device}, pinned memory (batch {settings.max_batch})",
         "per_window_ms": _ms(transfer["pinned_s"]), "capacity": _inverse(transfer["pinned_s"])},
        {"stage": f"model forward ({settings.precision}{', channels_last' if settings.channels_last else ''}"
                  f"{', compiled' if settings.compile else ''}), best batch",
         "per_window_ms": _ms(_inverse(best_model)), "capacity": best_model},
        {"stage": f"inference pool, saturated ({settings.workers} workers, max batch {settings.max_batch}, fp16 AMP)",
         "per_window_ms": _ms(_inverse(saturated["windows_per_s"])), "capacity": saturated["windows_per_s"]},
    ]
    report.tables.append(Table(
        f"{counting.name} on {settings.device}: capacity of each stage (camera-windows per second)",
        [Column("stage", "stage"), Column("per_window_ms", "ms per window", "{:.2f}"), Column("capacity", "windows/s", "{:.1f}")],
        stages,
    ))
    report.tables.append(Table(
        f"model forward alone on {settings.device}",
        [Column("batch", "batch", "{:d}"), Column("latency_ms", "latency (ms)", "{:.1f}"), Column("windows_per_s", "windows/s", "{:.1f}"),
         Column("peak_mem_mib", "peak mem (MiB)", "{:.0f}"), Column("repeats", "runs", "{:d}"), Column("error", "error")],
        model_rows,
    ))
    report.tables.append(Table(
        "inference pool",
        [Column("run", "run"), Column("windows_per_s", "windows/s", "{:.1f}"), Column("mean_batch", "mean batch", "{:.1f}"),
         Column("cameras", "cameras", "{:d}"), Column("dropped", "dropped", "{:d}"),
         Column("latency_p50_s", "p50 latency (s)", "{:.3f}"), Column("latency_p99_s", "p99 latency (s)", "{:.3f}")],
        [{"run": "saturated", **saturated}, {"run": "paced, 1 window/s per camera", **paced}],
    ))
    # Cameras: the pool's sustained rate, and the CPU left for decode + preprocessing.
    decode_share = decode["nvdec"] if decode["nvdec"] else decode["cpu"]
    cpu_cameras = cores / (decode_share + cpu_per_window) if decode_share else None
    candidates = {"inference pool": saturated["windows_per_s"], "CPU (decode + preprocess)": cpu_cameras}
    limit_name, limit = min(((k, v) for k, v in candidates.items() if v is not None), key=lambda kv: kv[1])
    bottleneck = min((s for s in stages if s["capacity"] is not None), key=lambda s: s["capacity"])
    report.data.update({"decode": decode, "preprocess": prep, "transfer": transfer, "saturated": saturated, "paced": paced,
                        "cameras": math.floor(limit), "limited_by": limit_name})
    report.summary.append(
        f"one {settings.device} serves {math.floor(limit)} cameras at one window per second ({counting.name}, "
        f"{counting.input_size[0]}x{counting.input_size[1]}), limited by the {limit_name}; slowest single stage: {bottleneck['stage']}"
    )
    if on_gpu:
        rate_ok = saturated["windows_per_s"] >= TARGET_WINDOWS_PER_S
        p99 = paced["latency_p99_s"]
        report.summary.append(
            f"pool: {saturated['windows_per_s']:.0f} camera-windows/s (target >= {TARGET_WINDOWS_PER_S:.0f}): "
            f"{'met' if rate_ok else 'MISSED'}; p99 latency at {paced['cameras']} cameras {p99 if p99 is None else f'{p99:.2f}'} s "
            f"(target < {TARGET_P99_S} s): {'met' if (p99 is not None and p99 < TARGET_P99_S) else 'MISSED'}"
        )
    report.notes += [
        "pool latency is window hand-over -> result (the window's end is set when it is submitted); the daemon's "
        "end-to-end latency adds the wait for the window to close and publishing (see bench e2e).",
        "the pool is fed synthetic camera-sized RGB frames (no decode); decode is measured separately and shares the CPU "
        "with the pool's preprocessing in a real daemon, hence the CPU camera limit.",
        "transfer is measured for one batch of fp32 images; the pool (stream.infer) copies from pageable memory.",
    ]
    return report


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _inverse(value: float | None) -> float | None:
    return 1.0 / value if value else None
