"""Alignment: cut a camera's sound into one-second windows and pair each with a frame.

Pure logic on timestamps (no I/O, no threads): the daemon pushes each decoded audio chunk
and video frame with its presentation time (`pts`, seconds) and its wall-clock `arrival`,
and gets back the windows that are complete. `AlignedWindow.materialize()` then does the
pixel and sample work (RGB conversion of the one chosen frame, 16 kHz resampling) and is
meant to run in a worker thread.

How time is handled, step by step:

1. Each stream's timestamps go through a `StreamClock`, which turns them into one continuous
   timeline: it unwraps 32/33-bit counter wrap-around, tolerates small reordering, and
   re-bases timestamp jumps (a camera that resets its clock, a splice) so that the timeline
   continues where wall-clock time says it should. A forward step that wall-clock time
   confirms (the data really stopped for a while) is kept as a real gap.
2. `WallClock` maps the timeline to wall-clock UTC: offset = the smallest (arrival - time)
   seen in the last `clock_window_s`, i.e. the packet that travelled fastest. Timestamps
   restart near 0 on every reconnect, so the daemon makes a new aligner per connection and
   wall-clock times stay continuous. Audio and video of one RTSP session share one clock
   (RTCP); a microphone paired with a camera has its own, and is mapped through wall time.
3. Windows are one second of the audio timeline, from its first sample on. Audio
   samples are placed by timestamp (jitter within `jitter_tolerance_s` is read as
   contiguous); holes are zero-filled and counted, and a window with less than
   `min_audio_coverage` of real sound gets `audio=None` (counted by the vision-only model).
4. Each window takes the frame nearest its centre (or start/end: `frame_position`).
5. A window is complete when its sound is whole (every sample arrived, and the audio has
   passed its end) and a frame at/after its target has been seen. Missing sound is waited
   for at most `max_audio_wait_s` past the window's end (measured on the stream that is
   ahead), and so is a missing frame; then the window is closed with what it has. A stream without an audio track cuts windows on
   video time and every window has `audio=None`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol

import numpy as np

from avcc_stream.stream.types import AudioVisualWindow

FramePosition = Literal["center", "start", "end"]
FRAME_POSITION_FRACTION = {"start": 0.0, "center": 0.5, "end": 1.0}


class Frame(Protocol):
    """What the aligner needs of a frame: nothing but a way to get its pixels, later."""

    def to_rgb(self) -> np.ndarray: ...


@dataclass(frozen=True)
class AlignConfig:
    frame_position: FramePosition = "center"
    max_audio_wait_s: float = 0.5  # late audio: wait this much video time past a window's end
    window_s: float = 1.0
    min_audio_coverage: float = 0.5  # share of a window that must hold real sound
    jitter_tolerance_s: float = 0.02  # audio this close to where the last chunk ended is contiguous
    reorder_grace_s: float = 0.05  # audio time past a window's end before it closes (late chunks)
    max_frame_distance_s: float = 0.5  # no frame closer than this to the target: the window is dropped
    reorder_tolerance_s: float = 1.0  # a backward step up to this is reordering, beyond it a jump
    max_gap_s: float = 5.0  # a forward step beyond this is a jump unless wall-clock time agrees
    clock_window_s: float = 60.0  # horizon of the wall-clock offset estimate
    max_open_windows: int = 10  # memory bound: older open windows are closed by force
    # False: windows follow the stream's own seconds from its first sample (a clip's second k
    # is window k, which is what per-second ground truth needs). True: start windows on whole
    # UTC seconds, as estimated when the first sample arrives.
    whole_seconds: bool = False

    def __post_init__(self) -> None:
        if self.frame_position not in FRAME_POSITION_FRACTION:
            raise ValueError(f"frame_position must be one of {sorted(FRAME_POSITION_FRACTION)}, got {self.frame_position!r}")
        if self.window_s <= 0 or self.max_audio_wait_s < 0:
            raise ValueError("window_s must be > 0 and max_audio_wait_s >= 0")


@dataclass
class AlignStats:
    """What happened to this connection's timeline (logged, and exported as metrics)."""

    windows: int = 0
    windows_without_audio: int = 0  # no usable sound: audio=None
    windows_dropped_no_frame: int = 0  # no frame near the target: nothing to count
    late_audio_chunks: int = 0  # arrived after their window had closed (dropped)
    audio_gap_s: float = 0.0  # zero-filled holes inside emitted windows
    jumps: int = 0
    wraps: int = 0
    av_skew_ms_last: float | None = None  # |frame time - window target| of the last window
    av_skew_ms_max: float = 0.0
    arrival_skew_ms: float | None = None  # video offset - audio offset (how much later video arrives)


@dataclass(frozen=True)
class AlignedWindow:
    """One complete window, before any pixel or sample work."""

    camera: str
    index: int
    stream_start: float  # timeline seconds
    stream_end: float
    window_start: datetime  # wall-clock UTC
    window_end: datetime
    frame: Frame
    frame_time: float
    audio: np.ndarray | None  # mono float32 at `sample_rate`, holes zero-filled; None: no usable audio
    sample_rate: int | None
    audio_coverage: float  # 0..1 share of real samples (0 without an audio track)
    av_skew_ms: float
    completed_monotonic: float

    def materialize(self) -> AudioVisualWindow:
        """Convert the chosen frame to RGB and the sound to 16 kHz (run in a worker thread)."""
        from avcc_stream.preprocess import prepare_audio

        audio = None
        if self.audio is not None and self.sample_rate is not None:
            audio = prepare_audio(self.audio, self.sample_rate).numpy()
        return AudioVisualWindow(
            camera=self.camera,
            window_start=self.window_start,
            window_end=self.window_end,
            frame=self.frame.to_rgb(),
            audio=audio,
            av_skew_ms=self.av_skew_ms,
            enqueued_monotonic=self.completed_monotonic,
        )


class StreamClock:
    """One stream's raw timestamps -> a continuous timeline (wraps unwrapped, jumps re-based)."""

    def __init__(self, config: AlignConfig, wrap_periods_s: tuple[float, ...] = ()) -> None:
        self.config = config
        self.wrap_periods_s = wrap_periods_s
        self._base = 0.0
        self._last_raw: float | None = None
        self._last_arrival = 0.0
        self.end = -math.inf  # timeline time where the latest data ends
        self.wraps = 0
        self.jumps = 0

    def map(self, pts: float, arrival: float, duration: float, wall_estimate: float | None) -> float:
        """Timeline time of data stamped `pts` that arrived at `arrival`.

        `wall_estimate` is the timeline time that wall-clock time suggests for `arrival`
        (None before any estimate exists); it places the stream after a jump.
        """
        if self._last_raw is None:
            return self._advance(pts, arrival, duration)
        step = pts - self._last_raw
        if -self.config.reorder_tolerance_s <= step <= self.config.max_gap_s:
            if step < 0:
                return pts + self._base  # reordered: placed by its own timestamp, state kept
            return self._advance(pts, arrival, duration)
        wrap = self._wrap_period(step)
        if wrap is not None:
            if step < 0:  # the counter wrapped: everything from here is one period later
                self._base += wrap
                self.wraps += 1
                return self._advance(pts, arrival, duration)
            return pts + self._base - wrap  # a late packet from before the wrap
        elapsed = arrival - self._last_arrival
        if step > 0 and abs(step - elapsed) <= max(1.0, 0.25 * step):
            return self._advance(pts, arrival, duration)  # wall-clock time agrees: a real gap
        # A jump: continue where the timeline ended, or later if wall-clock time says so.
        self.jumps += 1
        target = self.end if wall_estimate is None else max(self.end, wall_estimate)
        self._base = target - pts
        return self._advance(pts, arrival, duration)

    def _wrap_period(self, step: float) -> float | None:
        for period in self.wrap_periods_s:
            if abs(abs(step) - period) <= max(1.0, self.config.reorder_tolerance_s):
                return period
        return None

    def _advance(self, pts: float, arrival: float, duration: float) -> float:
        self._last_raw = pts
        self._last_arrival = arrival
        timeline = pts + self._base
        self.end = max(self.end, timeline + duration)
        return timeline


class WallClock:
    """Timeline -> wall-clock: the smallest (arrival - time) over the last `horizon_s`.

    The packet with the least delay tells best when its data was produced; a sliding
    minimum (monotonic deque) follows slow drift between the camera's clock and ours.
    """

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self._samples: deque[tuple[float, float]] = deque()  # (timeline, offset), offsets increasing

    def observe(self, timeline: float, arrival: float) -> None:
        offset = arrival - timeline
        while self._samples and self._samples[-1][1] >= offset:
            self._samples.pop()
        self._samples.append((timeline, offset))
        while self._samples and self._samples[0][0] < timeline - self.horizon_s:
            self._samples.popleft()

    @property
    def offset(self) -> float | None:
        return self._samples[0][1] if self._samples else None

    def to_wall(self, timeline: float) -> float:
        if not self._samples:
            raise RuntimeError("no timestamps observed yet")
        return timeline + self._samples[0][1]


@dataclass
class _OpenWindow:
    index: int
    audio: np.ndarray | None = None
    covered: np.ndarray | None = None
    frame: Any = None
    frame_time: float = 0.0
    frame_distance: float = math.inf


class WindowAligner:
    """Push audio chunks and video frames of one connection; get complete windows back."""

    def __init__(
        self,
        camera: str,
        *,
        has_audio: bool,
        shared_clock: bool = True,
        wrap_periods_s: tuple[float, ...] = (),
        config: AlignConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.has_audio = has_audio
        self.shared_clock = shared_clock
        self.config = config or AlignConfig()
        self.stats = AlignStats()
        self._monotonic = monotonic
        self._audio_clock = StreamClock(self.config, wrap_periods_s)
        self._video_clock = StreamClock(self.config, wrap_periods_s)
        self._audio_wall = WallClock(self.config.clock_window_s)
        self._video_wall = WallClock(self.config.clock_window_s)
        self._origin: float | None = None
        self._rate: int | None = None
        self._samples_per_window = 0
        self._audio_next = 0  # sample index (from origin) where the audio so far ends
        self._audio_time = -math.inf  # master timeline time the audio has reached
        self._video_time = -math.inf
        self._first_video: float | None = None
        self._windows: dict[int, _OpenWindow] = {}
        self._closed_upto = 0  # windows below this index are closed
        self._last_wall_end: float | None = None

    @property
    def open_windows(self) -> int:
        """Windows still waiting for data (bounded by `max_open_windows`)."""
        return len(self._windows)

    # ---------------------------------------------------------------- time mapping

    @property
    def _master_wall(self) -> WallClock:
        """The clock windows are cut on: audio's when there is audio."""
        return self._audio_wall if self.has_audio else self._video_wall

    def _mapping_offset(self, wall: WallClock) -> float | None:
        if self.shared_clock:
            offsets = [o for o in (self._audio_wall.offset, self._video_wall.offset) if o is not None]
            return min(offsets) if offsets else None
        return wall.offset

    def _wall_estimate(self, wall: WallClock, arrival: float) -> float | None:
        offset = self._mapping_offset(wall)
        return None if offset is None else arrival - offset

    def _to_master(self, timeline: float, stream_wall: WallClock) -> float | None:
        """A stream's timeline time on the master timeline (identity for a shared clock)."""
        if self.shared_clock or stream_wall is self._master_wall:
            return timeline
        own, master = stream_wall.offset, self._master_wall.offset
        if own is None or master is None:
            return None
        return timeline + own - master

    def _wall_seconds(self, timeline: float) -> float:
        offset = self._mapping_offset(self._master_wall)
        assert offset is not None
        return timeline + offset

    def _set_origin(self, first: float) -> None:
        origin = first
        if self.config.whole_seconds:
            wall = self._wall_seconds(first)
            origin = first + (math.ceil(wall) - wall)
        self._origin = origin

    def _window_target(self, index: int) -> float:
        assert self._origin is not None
        fraction = FRAME_POSITION_FRACTION[self.config.frame_position]
        return self._origin + (index + fraction) * self.config.window_s

    def _window_end(self, index: int) -> float:
        assert self._origin is not None
        return self._origin + (index + 1) * self.config.window_s

    # ---------------------------------------------------------------- input

    def push_audio(self, pts: float, samples: np.ndarray, sample_rate: int, arrival: float) -> list[AlignedWindow]:
        """Add one decoded audio chunk (mono float32); returns the windows now complete."""
        if not self.has_audio:
            return []
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._rate is None:
            self._rate = int(sample_rate)
            self._samples_per_window = int(round(self._rate * self.config.window_s))
        elif int(sample_rate) != self._rate:
            raise ValueError(
                f"{self.camera}: audio sample rate changed from {self._rate} to {sample_rate} Hz within "
                "one connection (sources deliver one rate per connection)"
            )
        duration = samples.size / self._rate
        timeline = self._audio_clock.map(pts, arrival, duration, self._wall_estimate(self._audio_wall, arrival))
        self._audio_wall.observe(timeline, arrival)
        self._update_clock_stats()
        if self._origin is None:
            self._set_origin(timeline)
        self._place_audio(timeline, samples)
        return self._close_ready()

    def push_video(self, pts: float, frame: Frame, arrival: float, duration: float = 0.04) -> list[AlignedWindow]:
        """Add one decoded video frame; returns the windows now complete."""
        timeline = self._video_clock.map(pts, arrival, duration, self._wall_estimate(self._video_wall, arrival))
        self._video_wall.observe(timeline, arrival)
        self._update_clock_stats()
        master = self._to_master(timeline, self._video_wall)
        if master is None:
            return []  # a separate audio clock with no estimate yet: nothing to pair with
        if self._origin is None:
            if self._first_video is None:
                self._first_video = master
            # Windows are cut on the sound; a stream whose audio track stays silent is cut on
            # video time once the sound is `max_audio_wait_s` later than a whole window.
            waited = master - self._first_video
            if self.has_audio and waited < self.config.window_s + self.config.max_audio_wait_s:
                return []
            self._set_origin(self._first_video)
        self._video_time = max(self._video_time, master)
        self._offer_frame(master, frame)
        return self._close_ready()

    def flush(self) -> list[AlignedWindow]:
        """The input ended: close every window whose end has been reached by either stream."""
        reached = max(self._audio_time, self._video_time)
        out: list[AlignedWindow] = []
        for index in sorted(self._windows):
            if self._window_end(index) <= reached + 1e-9:
                out += self._close(index)
        self._windows.clear()
        return out

    # ---------------------------------------------------------------- placement

    def _place_audio(self, timeline: float, samples: np.ndarray) -> None:
        assert self._origin is not None and self._rate is not None
        spw = self._samples_per_window
        start = int(round((timeline - self._origin) * self._rate))
        if abs(start - self._audio_next) <= self.config.jitter_tolerance_s * self._rate:
            start = self._audio_next  # network/encoder jitter: read as contiguous
        end = start + samples.size
        if end > self._audio_next:
            self._audio_next = end
            self._audio_time = self._origin + end / self._rate
        first_open = self._closed_upto * spw
        if end <= first_open:
            self.stats.late_audio_chunks += 1
            return
        position = max(start, first_open)
        while position < end:
            index = position // spw
            window = self._window(index)
            lo = position - index * spw
            hi = min(end, (index + 1) * spw) - index * spw
            if window.audio is None:
                window.audio = np.zeros(spw, np.float32)
                window.covered = np.zeros(spw, bool)
            window.audio[lo:hi] = samples[position - start : position - start + hi - lo]
            window.covered[lo:hi] = True
            position = (index + 1) * spw

    def _offer_frame(self, time_: float, frame: Frame) -> None:
        assert self._origin is not None
        width = self.config.window_s
        fraction = FRAME_POSITION_FRACTION[self.config.frame_position]
        reach = self.config.max_frame_distance_s
        first = math.floor((time_ - reach - self._origin) / width - fraction)
        last = math.ceil((time_ + reach - self._origin) / width - fraction)
        for index in range(max(first, self._closed_upto), last + 1):
            distance = abs(time_ - self._window_target(index))
            if distance >= reach:
                continue  # a frame exactly between two targets belongs to neither
            window = self._window(index)
            if distance < window.frame_distance:
                window.frame, window.frame_time, window.frame_distance = frame, time_, distance

    def _window(self, index: int) -> _OpenWindow:
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = _OpenWindow(index)
        return window

    # ---------------------------------------------------------------- closing

    def _ready(self, index: int) -> bool:
        end = self._window_end(index)
        wait = self.config.max_audio_wait_s
        if not self.has_audio:
            return self._video_time >= end
        waited = max(self._audio_time, self._video_time) >= end + wait
        video_ready = waited or self._video_time >= self._window_target(index)
        # A hole in the window may still be filled by late audio: wait for it, boundedly.
        window = self._windows[index]
        whole = window.covered is not None and bool(window.covered.all())
        audio_ready = waited or (whole and self._audio_time >= end + self.config.reorder_grace_s)
        return video_ready and audio_ready

    def _close_ready(self) -> list[AlignedWindow]:
        out: list[AlignedWindow] = []
        for index in sorted(self._windows):
            newest = max(self._windows)
            if self._ready(index) or newest - index >= self.config.max_open_windows:
                out += self._close(index)
            else:
                break  # windows close in order
        return out

    def _close(self, index: int) -> list[AlignedWindow]:
        window = self._windows.pop(index)
        self._closed_upto = max(self._closed_upto, index + 1)
        if window.frame is None:
            self.stats.windows_dropped_no_frame += 1
            return []
        audio, coverage = None, 0.0
        if window.audio is not None and window.covered is not None:
            coverage = float(window.covered.mean())
            if coverage >= self.config.min_audio_coverage:
                audio = window.audio
                self.stats.audio_gap_s += (1.0 - coverage) * self.config.window_s
        if audio is None:
            self.stats.windows_without_audio += 1
        start = self._origin + index * self.config.window_s  # type: ignore[operator]
        end = start + self.config.window_s
        wall_start, wall_end = self._wall_seconds(start), self._wall_seconds(end)
        if self._last_wall_end is not None and wall_start < self._last_wall_end:
            # The offset estimate improved (a faster packet): never let windows overlap.
            wall_start = self._last_wall_end
            wall_end = max(wall_end, wall_start + 1e-3)
        self._last_wall_end = wall_end
        skew_ms = window.frame_distance * 1000.0
        self.stats.windows += 1
        self.stats.av_skew_ms_last = skew_ms
        self.stats.av_skew_ms_max = max(self.stats.av_skew_ms_max, skew_ms)
        return [AlignedWindow(
            camera=self.camera,
            index=index,
            stream_start=start,
            stream_end=end,
            window_start=_utc(wall_start),
            window_end=_utc(wall_end),
            frame=window.frame,
            frame_time=window.frame_time,
            audio=audio,
            sample_rate=self._rate if audio is not None else None,
            audio_coverage=coverage,
            av_skew_ms=skew_ms,
            completed_monotonic=self._monotonic(),
        )]

    def _update_clock_stats(self) -> None:
        self.stats.jumps = self._audio_clock.jumps + self._video_clock.jumps
        self.stats.wraps = self._audio_clock.wraps + self._video_clock.wraps
        audio_offset, video_offset = self._audio_wall.offset, self._video_wall.offset
        if self.shared_clock and audio_offset is not None and video_offset is not None:
            self.stats.arrival_skew_ms = (video_offset - audio_offset) * 1000.0


def _utc(seconds: float) -> datetime:
    """Wall-clock seconds -> UTC, on whole milliseconds: the resolution of every timestamp
    and record id downstream, so a window's id and its printed times always agree."""
    ms = round(seconds * 1000)
    return datetime.fromtimestamp(ms // 1000, tz=timezone.utc) + timedelta(milliseconds=ms % 1000)
