"""`avcc-stream bench decode`: what one camera's decoding costs, as a share of one CPU core.

Share of a core = CPU time of this process (all threads: FFmpeg's decoder threads count)
divided by the seconds of stream decoded, the decoder running as fast as it can. A camera at
25 fps whose decode costs 0.05 of a core leaves room for 20 such cameras on one core.

Video, per resolution (H.264, 25 fps, one-second GOP):
* full: decode every frame and convert every frame to RGB (a naive pipeline);
* keyframes: `skip_frame = "NONKEY"`, only keyframes decoded (and converted);
* decode-then-skip: decode every frame (H.264 frames depend on each other) but convert
  only one frame per second to RGB, which is what the daemon does (stream.sources).
* on a machine whose FFmpeg has CUDA and a GPU: NVDEC through PyAV's hardware acceleration,
  frames downloaded to system memory; "not available" with the reason otherwise.

Audio: AAC 48 kHz stereo decoded and mixed to mono with the daemon's own converter
(`stream.sources.MonoConverter`), then every one-second window resampled to 16 kHz with
`preprocess.prepare_audio`, the function the daemon and training share.

Per window: `preprocess.prepare_image` from the camera's frame to the model's input size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avcc_stream.bench.clips import cached_clip
from avcc_stream.bench.report import BenchReport, Column, Table, median

VIDEO_MODES = ("full", "keyframes", "decode-then-skip")
HWACCEL_CHOICES = ("auto", "none", "cuda")
# The daemon's settings (stream.sources.AVSource): slice threads for video.
DEFAULT_THREAD_TYPE = "SLICE"
CORE_SHARE_TARGET = 0.3  # the whole budget per camera (decode and inference)


@dataclass
class DecodeBenchSettings:
    sizes: tuple[tuple[int, int], ...] = ((1920, 1080), (1280, 720))
    fps: int = 25
    seconds: float = 10.0
    video_modes: tuple[str, ...] = VIDEO_MODES
    thread_type: str = DEFAULT_THREAD_TYPE
    repeats: int = 3
    hwaccel: str = "auto"
    model_sizes: tuple[tuple[int, int], ...] = ((1024, 576), (128, 72))
    cache_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CpuClock:
    """CPU seconds (all threads of this process) and wall seconds since `start()`."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def __enter__(self) -> CpuClock:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cpu += time.process_time() - self._cpu0
        self.wall += time.perf_counter() - self._wall0


def stream_seconds(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return float(container.duration or 0) / 1_000_000


def decode_video(path: Path, mode: str, thread_type: str, hwaccel: Any = None) -> dict[str, Any]:
    """Decode `path`'s video once in `mode`; CPU and wall seconds per stream second."""
    import av

    options = {"hwaccel": hwaccel} if hwaccel is not None else {}
    with av.open(str(path), **options) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        if mode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        seconds = stream_seconds(container, stream)
        frames = converted = 0
        next_rgb = 0.0
        with CpuClock() as clock:
            for frame in container.decode(stream):
                frames += 1
                when = float(frame.time) if frame.time is not None else frames / 25.0
                if mode != "decode-then-skip" or when >= next_rgb:
                    frame.to_ndarray(format="rgb24")
                    converted += 1
                    next_rgb = when + 1.0
        hardware = bool(getattr(stream.codec_context, "is_hwaccel", False))
    return {
        "cpu_s": clock.cpu, "wall_s": clock.wall, "stream_s": seconds, "frames": frames,
        "rgb_frames": converted, "hardware": hardware,
    }


def decode_audio(path: Path) -> dict[str, Any]:
    """Decode the AAC track to mono (the daemon's converter), resample every second to 16 kHz."""
    import av

    from avcc_stream.preprocess import prepare_audio
    from avcc_stream.stream.sources import MonoConverter

    decode_clock, resample_clock = CpuClock(), CpuClock()
    to_mono = MonoConverter()
    pending: list[np.ndarray] = []
    buffered = windows = 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        seconds = stream_seconds(container, stream)
        rate = int(stream.codec_context.sample_rate)
        codec = f"{stream.codec_context.name} {rate} Hz x{stream.codec_context.channels}"
        packets = container.demux(stream)
        while True:
            with decode_clock:
                packet = next(packets, None)
                frames = packet.decode() if packet is not None else []
                for frame in frames:
                    samples, rate = to_mono(frame)
                    pending.append(samples)
                    buffered += samples.size
            if packet is None:
                break
            while buffered >= rate:
                with resample_clock:
                    joined = np.concatenate(pending)
                    window, rest = joined[:rate], joined[rate:]
                    pending, buffered = [rest], rest.size
                    prepare_audio(window, rate)
                windows += 1
    return {
        "codec": codec, "stream_s": seconds, "windows": windows,
        "decode_cpu_s": decode_clock.cpu, "resample_cpu_s": resample_clock.cpu,
    }


def prepare_image_cost(frame_size: tuple[int, int], model_size: tuple[int, int], repeats: int = 10) -> float:
    """CPU seconds of one `prepare_image` from a camera frame to the model's input size (median)."""
    from avcc_stream.preprocess import prepare_image

    width, height = frame_size
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    prepare_image(rgb, model_size)  # first call pays for lazy imports and allocations
    costs = []
    for _ in range(repeats):
        with CpuClock() as clock:
            prepare_image(rgb, model_size)
        costs.append(clock.cpu)
    return float(median(costs))


def hardware_decoder(choice: str) -> tuple[Any, str | None]:
    """(HWAccel settings, None) when NVDEC can be tried here, else (None, why not)."""
    if choice == "none":
        return None, "not requested (--hwaccel none)"
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:
        return None, "not available: this PyAV has no hardware acceleration API"
    available = hwdevices_available()
    if "cuda" not in available:
        return None, f"not available: this FFmpeg supports {', '.join(available) or 'no'} hardware devices, not cuda"
    return HWAccel(device_type="cuda", allow_software_fallback=False), None


def nvdec_failure(exc: BaseException) -> str:
    """Why NVDEC could not be used, in words (FFmpeg reports a missing GPU as EPERM)."""
    import torch

    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
    if not torch.cuda.is_available():
        reason += "; no CUDA device is visible on this machine"
    return f"not available: {reason}"


def summarise(runs: list[dict[str, Any]], key: str = "cpu_s") -> dict[str, Any]:
    """Median over repeats of CPU per stream second, wall speed and counts."""
    shares = [r[key] / r["stream_s"] for r in runs if r["stream_s"] > 0]
    speeds = [r["stream_s"] / r["wall_s"] for r in runs if r.get("wall_s")]
    return {
        "core_share": median(shares),
        "core_share_min": min(shares) if shares else None,
        "core_share_max": max(shares) if shares else None,
        "realtime_x": median(speeds),
        "runs": len(runs),
    }


def run_decode_bench(
    settings: DecodeBenchSettings,
    machine: dict[str, Any],
    progress: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    report = BenchReport("decode", machine, {k: v for k, v in vars(settings).items() if k != "extra"})
    clips = {}
    for size in settings.sizes:
        progress(f"decode: clip {size[0]}x{size[1]} ({settings.seconds:g} s) ...")
        clips[size] = cached_clip(size, fps=settings.fps, seconds=settings.seconds, cache_dir=settings.cache_dir)

    video_rows = []
    for size, path in clips.items():
        for mode in settings.video_modes:
            progress(f"decode: {size[0]}x{size[1]} {mode} ...")
            runs = [decode_video(path, mode, settings.thread_type) for _ in range(settings.repeats)]
            video_rows.append({
                "resolution": f"{size[0]}x{size[1]}", "decoder": f"CPU ({settings.thread_type.lower()} threads)",
                "mode": mode, "frames": runs[0]["frames"], "rgb_frames": runs[0]["rgb_frames"],
                "cameras_per_core": None, **summarise(runs),
            })

    hwaccel, unavailable = hardware_decoder(settings.hwaccel)
    nvdec_status = unavailable
    if hwaccel is not None:
        for size, path in clips.items():
            for mode in ("full", "decode-then-skip"):
                try:
                    runs = [decode_video(path, mode, settings.thread_type, hwaccel) for _ in range(settings.repeats)]
                except Exception as exc:  # no device, no driver, unsupported profile...
                    nvdec_status = nvdec_failure(exc)
                    break
                if not runs[0]["hardware"]:
                    nvdec_status = "not available: the decoder fell back to software"
                    break
                nvdec_status = "measured"
                video_rows.append({
                    "resolution": f"{size[0]}x{size[1]}", "decoder": "NVDEC (PyAV hwaccel cuda)", "mode": mode,
                    "frames": runs[0]["frames"], "rgb_frames": runs[0]["rgb_frames"], **summarise(runs),
                })
            if nvdec_status != "measured":
                break
    for row in video_rows:
        share = row.get("core_share")
        row["cameras_per_core"] = 1.0 / share if share else None
    report.tables.append(Table(
        f"video decode, H.264 {settings.fps} fps, GOP {settings.fps} frames (share of one core per camera)",
        [
            Column("resolution", "video"), Column("decoder", "decoder"), Column("mode", "mode"),
            Column("core_share", "core share", "{:.3f}"), Column("core_share_min", "min", "{:.3f}"),
            Column("core_share_max", "max", "{:.3f}"), Column("cameras_per_core", "cameras/core", "{:.0f}"),
            Column("realtime_x", "x real time", "{:.1f}"), Column("frames", "frames", "{:d}"), Column("rgb_frames", "RGB frames", "{:d}"),
        ],
        video_rows,
    ))
    report.data["nvdec"] = nvdec_status
    report.summary.append(f"NVDEC: {nvdec_status}")

    progress("decode: audio ...")
    audio_path = next(iter(clips.values()))
    audio_runs = [decode_audio(audio_path) for _ in range(settings.repeats)]
    first = audio_runs[0]
    audio_rows = [
        {"step": f"decode {first['codec']} + mix to mono (sources.MonoConverter)", **summarise(audio_runs, "decode_cpu_s")},
        {"step": "resample each 1 s window to 16 kHz mono (preprocess.prepare_audio)", **summarise(audio_runs, "resample_cpu_s")},
    ]
    for row in audio_rows:
        row.pop("realtime_x")
    report.tables.append(Table(
        f"audio per camera ({first['windows']} one-second windows per run)",
        [Column("step", "step"), Column("core_share", "core share", "{:.4f}"), Column("core_share_min", "min", "{:.4f}"),
         Column("core_share_max", "max", "{:.4f}"), Column("runs", "runs", "{:d}")],
        audio_rows,
    ))

    progress("decode: prepare_image ...")
    image_rows = []
    for size in settings.sizes:
        for model_size in settings.model_sizes:
            cost = prepare_image_cost(size, model_size)
            image_rows.append({
                "from": f"{size[0]}x{size[1]}", "to": f"{model_size[0]}x{model_size[1]}",
                "ms": cost * 1000.0, "core_share": cost,  # one window per second
            })
    report.tables.append(Table(
        "per window: camera RGB frame -> model input (preprocess.prepare_image), at one window per second",
        [Column("from", "frame"), Column("to", "model input"), Column("ms", "CPU ms", "{:.1f}"), Column("core_share", "core share", "{:.4f}")],
        image_rows,
    ))

    audio_share = sum(r["core_share"] or 0.0 for r in audio_rows)
    for size in settings.sizes:
        label = f"{size[0]}x{size[1]}"
        video = next((r for r in video_rows if r["resolution"] == label and r["mode"] == "decode-then-skip" and r["decoder"].startswith("CPU")), None)
        image = next((r for r in image_rows if r["from"] == label and r["to"] == "1024x576"), None)
        if video is None or image is None or video["core_share"] is None:
            continue
        total = video["core_share"] + audio_share + image["core_share"]
        report.summary.append(
            f"{label} camera before the model (decode-then-skip + audio + prepare_image to 1024x576): "
            f"{total:.3f} of a core; the issue's whole per-camera budget is {CORE_SHARE_TARGET} "
            f"(leaves {CORE_SHARE_TARGET - total:.3f} for inference)"
        )
    report.notes += [
        f"core share = process CPU time (all threads) / seconds of stream, median of {settings.repeats} runs; "
        "the decoder runs as fast as it can on a file (no network, no real-time pacing).",
        "clips: ffmpeg testsrc2 + 440 Hz sine, libx264 veryfast, GOP = 1 s, AAC 48 kHz stereo; a synthetic "
        "pattern is cheaper to decode than a busy real scene, so these are lower bounds.",
    ]
    return report
