"""`avcc-stream probe`: commission cameras before the daemon runs them.

Each camera of a config is opened exactly as the daemon opens it (same source, transport,
timeouts, credentials, microphone pairing) and read for a few seconds, all cameras at once.
Its windows are cut by the daemon's own aligner, so the report says what the daemon would do
with that camera: what the stream carries (codecs, size, frame rate, audio rate and channels),
the frame rate that arrives, how much of each second has sound, and how many windows would be
counted with sound (CC-AV) or without (CC-V). Nothing is published; a model is loaded only
with `--count`, which counts each camera's last window as the daemon would (same routing,
same precision), to see that the model finds people in that view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from avcc_stream.stream.align import WindowAligner
from avcc_stream.stream.daemon import CameraSpec
from avcc_stream.stream.sources import AudioItem, SourceEnded, SourceOpened, SourceQueue, StreamInfo, VideoItem
from avcc_stream.stream.types import CountResult


@dataclass
class ProbeResult:
    camera: str
    source: str  # where it reads from, credentials redacted
    info: StreamInfo | None = None
    error: str | None = None  # why it did not open or stopped; None: streamed for the whole probe
    open_s: float | None = None  # seconds to the first frame
    read_s: float = 0.0  # wall-clock seconds read after the first frame
    frames: int = 0
    first_pts: float | None = None  # the frames' presentation times, seconds
    last_pts: float | None = None
    audio_s: float = 0.0  # seconds of sound decoded
    windows: int = 0
    windows_with_sound: int = 0
    last_window: Any = field(default=None, repr=False)  # the newest AlignedWindow, for --count
    count: CountResult | None = None  # the model's count of last_window (--count)

    @property
    def ok(self) -> bool:
        return self.error is None and self.frames > 0

    @property
    def video_s(self) -> float:
        """Stream time the frames cover, by their timestamps (a connection's first seconds
        arrive in a burst, so wall-clock rates over a short probe read high)."""
        if self.first_pts is None or self.last_pts is None or self.frames < 2:
            return 0.0
        return (self.last_pts - self.first_pts) * self.frames / (self.frames - 1)

    @property
    def fps(self) -> float | None:
        """Frames per second of stream time: what the camera really sends, whatever it declares."""
        return self.frames / self.video_s if self.video_s > 0 else None

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("last_window", "count")}
        out["info"] = None if self.info is None else vars(self.info)
        out["ok"], out["measured_fps"], out["video_s"] = self.ok, self.fps, self.video_s
        if self.count is not None:
            out["count"] = {"count": round(self.count.count, 2), "model": self.count.model, "audio": self.count.audio,
                            "window_end": self.count.window_end.isoformat()}
        return out


async def probe_camera(spec: CameraSpec, seconds: float) -> ProbeResult:
    """Read `spec` for `seconds` after its first frame (giving up after its open timeout)."""
    result = ProbeResult(spec.name, spec.label)
    queue = SourceQueue(asyncio.get_running_loop())
    source = spec.source_factory()
    started = time.monotonic()
    first_frame: float | None = None
    aligner: WindowAligner | None = None
    deadline = started + spec.open_timeout_s + spec.watchdog_s
    source.start(queue)
    try:
        while True:
            now = time.monotonic()
            end = deadline if first_frame is None else min(deadline, first_frame + seconds)
            if now >= end:
                if first_frame is None:
                    result.error = f"no frames within {spec.open_timeout_s + spec.watchdog_s:g} s"
                elif end == deadline < first_frame + seconds:  # the daemon would call it stalled
                    result.error = f"stalled: no frames for {spec.watchdog_s:g} s"
                break
            try:
                item = await asyncio.wait_for(queue.get(), end - now)
            except asyncio.TimeoutError:
                continue
            if isinstance(item, SourceOpened):
                result.info = item.info
                aligner = WindowAligner(spec.name, has_audio=item.info.has_audio, shared_clock=item.info.shared_clock,
                                        wrap_periods_s=item.info.wrap_periods_s, config=spec.align)
            elif isinstance(item, VideoItem):
                if first_frame is None:
                    first_frame = time.monotonic()
                    result.open_s = first_frame - started
                result.frames += 1
                result.first_pts = item.pts if result.first_pts is None else result.first_pts
                result.last_pts = item.pts
                deadline = time.monotonic() + spec.watchdog_s  # the daemon's stall watchdog
                duration = 1.0 / result.info.frame_rate if result.info and result.info.frame_rate else 0.04
                if aligner is not None:
                    tally(result, aligner.push_video(item.pts, item.frame, item.arrival, duration))
            elif isinstance(item, AudioItem):
                result.audio_s += len(item.samples) / item.sample_rate
                if aligner is not None:
                    tally(result, aligner.push_audio(item.pts, item.samples, item.sample_rate, item.arrival))
            elif isinstance(item, SourceEnded):
                if item.error or not result.frames:
                    result.error = item.reason
                break
    finally:
        source.stop()
    if first_frame is not None:
        result.read_s = time.monotonic() - first_frame
    return result


def tally(result: ProbeResult, windows: Sequence[Any]) -> None:
    result.windows += len(windows)
    result.windows_with_sound += sum(1 for w in windows if w.audio is not None)
    if windows:
        result.last_window = windows[-1]


def count_last_windows(results: Sequence[ProbeResult], models: Sequence[Any], amp: bool,
                       flip_average: bool = False) -> None:
    """Count each camera's newest window with the daemon's routing, precision and flip averaging."""
    from avcc_stream.stream.infer import InferConfig, InferencePool

    pool = InferencePool(models, InferConfig(flip_average=flip_average), on_result=lambda _result: None,
                         amp=amp)  # never started
    device_models = models[0]
    for result in results:
        if result.last_window is not None:
            window = result.last_window.materialize()
            [result.count] = pool.count(device_models.route(window), [window])


async def probe_cameras(specs: Sequence[CameraSpec], seconds: float) -> list[ProbeResult]:
    """Every camera at once (a venue's cameras are probed in the time of the slowest)."""
    return list(await asyncio.gather(*(probe_camera(spec, seconds) for spec in specs)))


def describe(result: ProbeResult) -> list[str]:
    """A camera's report: a headline, then what the stream carries and what the daemon would do."""
    if not result.ok:
        return [f"{result.camera}: FAILED  {result.source}", f"  {result.error or 'no frames'}"]
    info = result.info
    assert info is not None
    lines = [f"{result.camera}: ok  {result.source}  (first frame after {result.open_s:.1f} s)"]
    size = f"{info.video_size[0]}x{info.video_size[1]}" if info.video_size else "size unknown"
    declared = f"{info.frame_rate:g} fps declared" if info.frame_rate else "frame rate not declared"
    measured = f"{result.fps:.1f} fps by timestamps" if result.fps else "too few frames to measure"
    lines.append(f"  video  {info.video_codec} {size}, {declared}, {measured}; "
                 f"{result.video_s:.1f} s of stream in {result.read_s:.1f} s")
    if info.has_audio:
        per_second = result.audio_s / result.video_s if result.video_s > 0 else 0.0
        lines.append(f"  audio  {info.audio_codec} {info.audio_rate} Hz, {info.audio_channels} ch; "
                     f"{per_second:.2f} s of sound per second of video")
    else:
        lines.append("  audio  none: every window is counted by the vision-only model (CC-V)")
    if result.windows:
        share = result.windows_with_sound / result.windows
        verdict = ("counted with sound (CC-AV)" if share == 1.0
                   else "counted without sound (CC-V)" if share == 0.0
                   else "some counted without sound (audio gaps or late audio)")
        lines.append(f"  windows {result.windows} cut, {result.windows_with_sound} with sound: {verdict}")
    else:
        lines.append("  windows none cut yet: probe for longer (--seconds)")
    if result.count is not None:
        sound = "with sound" if result.count.audio else "without sound"
        lines.append(f"  count  {result.count.count:.1f} people in the last window, by {result.count.model} ({sound})")
    return lines
