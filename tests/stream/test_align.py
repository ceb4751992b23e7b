"""Alignment on synthetic packet timelines: every case is a list of (kind, pts, arrival) events.

The audio of the synthetic camera is a ramp whose value is the absolute sample number, so a
window's sound can be compared sample for sample with where it must have come from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pytest

from avcc_stream.stream.align import AlignConfig, AlignedWindow, WindowAligner

RATE = 48_000
CHUNK = 1024  # samples per audio chunk, as AAC delivers them
FPS = 25
WALL0 = 1_700_000_000.0  # a whole second: pts 0 arrives exactly on it
RTP_VIDEO_WRAP = 2**32 / 90_000
TS_WRAP = 2**33 / 90_000


@dataclass
class Frame:
    time: float  # the frame's true time (for checks)

    def to_rgb(self) -> np.ndarray:
        return np.full((2, 2, 3), 7, np.uint8)


@dataclass
class Event:
    kind: str  # "a" or "v"
    pts: float  # the timestamp the stream carries
    arrival: float
    true_time: float  # seconds since the start of the scene
    samples: np.ndarray | None = None


def timeline(seconds: float, *, audio: bool = True, video: bool = True, delay: float = 0.0) -> list[Event]:
    """A clean camera: AAC chunks and 25 fps frames, in arrival order."""
    events: list[Event] = []
    if audio:
        for start in range(0, int(seconds * RATE), CHUNK):
            t = start / RATE
            ramp = np.arange(start, start + CHUNK, dtype=np.float32)
            events.append(Event("a", t, WALL0 + t + delay, t, ramp))
    if video:
        for i in range(int(seconds * FPS)):
            t = i / FPS
            events.append(Event("v", t, WALL0 + t + delay, t))
    events.sort(key=lambda e: (e.arrival, e.kind))
    return events


def run(events: list[Event], *, has_audio: bool = True, shared_clock: bool = True,
        wraps: tuple[float, ...] = (), flush: bool = False, **config: object) -> tuple[WindowAligner, list[AlignedWindow]]:
    aligner = WindowAligner("cam", has_audio=has_audio, shared_clock=shared_clock, wrap_periods_s=wraps,
                            config=AlignConfig(**config), monotonic=lambda: 0.0)
    windows: list[AlignedWindow] = []
    for event in events:
        if event.kind == "a":
            windows += aligner.push_audio(event.pts, event.samples, RATE, event.arrival)
        else:
            windows += aligner.push_video(event.pts, Frame(event.true_time), event.arrival)
    if flush:
        windows += aligner.flush()
    return aligner, windows


def wall(seconds: float) -> datetime:
    return datetime.fromtimestamp(WALL0 + seconds, tz=timezone.utc)


def expected_ramp(second: int) -> np.ndarray:
    return np.arange(second * RATE, (second + 1) * RATE, dtype=np.float32)


def assert_clean(windows: list[AlignedWindow], seconds: list[int]) -> None:
    """One window per listed second, paired with its centre frame, with all of its sound."""
    assert [round((w.window_start - wall(0)).total_seconds(), 3) for w in windows] == seconds
    for window, second in zip(windows, seconds):
        assert window.window_end == wall(second + 1)
        assert abs(window.frame.time - (second + 0.5)) <= 0.5 / FPS + 1e-9
        assert window.av_skew_ms <= 1000 / FPS / 2 + 1e-6
        assert window.audio_coverage == 1.0
        np.testing.assert_array_equal(window.audio, expected_ramp(second))


def test_clean_stream_gives_one_window_per_second_with_its_own_sound_and_centre_frame() -> None:
    aligner, windows = run(timeline(5.0))
    assert_clean(windows, [0, 1, 2, 3])  # the fifth second waits for audio past its end
    assert aligner.stats.windows == 4 and aligner.stats.windows_without_audio == 0
    assert aligner.stats.arrival_skew_ms == pytest.approx(0.0, abs=1e-6)


def test_flush_closes_the_last_complete_window_at_the_end_of_a_stream() -> None:
    _, windows = run(timeline(4.9), flush=True)
    assert [w.index for w in windows] == [0, 1, 2, 3]  # second 4 never got to its end
    _, windows = run(timeline(5.2), flush=True)
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]


def test_timestamp_jitter_is_absorbed_and_the_sound_stays_contiguous() -> None:
    rng = random.Random(1)
    events = timeline(5.0)
    for event in events:  # (pushed in their original order: reordering is the next test)
        event.pts += rng.uniform(-0.005, 0.005)  # +-5 ms on every timestamp
        event.arrival += rng.uniform(0.0, 0.03)  # and 0-30 ms of network delay
    _, windows = run(events)
    assert [w.index for w in windows] == [0, 1, 2, 3]
    for window, second in zip(windows, range(4)):
        assert window.audio_coverage == 1.0
        np.testing.assert_array_equal(window.audio, expected_ramp(second))
        assert window.av_skew_ms <= 25.0


def test_reordered_packets_land_where_their_timestamps_say() -> None:
    events = timeline(5.0)
    audio = [i for i, e in enumerate(events) if e.kind == "a"]
    for a, b in zip(audio[10::7], audio[11::7]):  # swap neighbouring audio chunks all along
        events[a], events[b] = events[b], events[a]
    _, windows = run(events)
    assert_clean(windows, [0, 1, 2, 3])


def test_an_audio_gap_is_zero_filled_and_a_long_one_leaves_the_window_without_sound() -> None:
    def in_gap(e: Event) -> bool:
        return e.kind == "a" and (1.2 <= e.pts < 1.5 or 2.0 <= e.pts < 2.8)

    aligner, windows = run([e for e in timeline(5.0) if not in_gap(e)])
    assert [w.index for w in windows] == [0, 1, 2, 3]
    one, two = windows[1], windows[2]
    assert 0.65 < one.audio_coverage < 0.75
    hole = slice(int(0.22 * RATE), int(0.48 * RATE))
    assert np.all(one.audio[hole] == 0)
    assert one.audio[0] == RATE  # the rest is still the right sound
    assert two.audio is None and two.audio_coverage < 0.5  # under min_audio_coverage
    assert aligner.stats.windows_without_audio == 1
    assert aligner.stats.audio_gap_s == pytest.approx(1 - one.audio_coverage)


@pytest.mark.parametrize(
    ("lateness", "wait", "has_sound"),
    [(0.3, 0.5, True), (0.9, 0.2, False)],  # waited for / given up on after max_audio_wait_s
)
def test_late_audio_is_waited_for_a_bounded_time(lateness: float, wait: float, has_sound: bool) -> None:
    events = timeline(5.0)
    for event in events:
        if event.kind == "a" and 2.0 <= event.pts < 3.0:
            event.arrival += lateness  # this second's sound arrives late, all of it
    events.sort(key=lambda e: e.arrival)
    aligner, windows = run(events, max_audio_wait_s=wait)
    assert [w.index for w in windows] == [0, 1, 2, 3]
    assert (windows[2].audio is not None) is has_sound
    assert (aligner.stats.late_audio_chunks > 0) is not has_sound
    if has_sound:
        np.testing.assert_array_equal(windows[2].audio, expected_ramp(2))
    assert windows[3].audio_coverage == 1.0  # the next second is whole again


def test_audio_that_stops_does_not_stop_the_windows() -> None:
    events = [e for e in timeline(6.0) if not (e.kind == "a" and e.pts >= 2.5)]
    aligner, windows = run(events)
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]
    assert [w.audio is not None for w in windows] == [True, True, True, False, False]
    assert aligner.stats.windows_without_audio == 2


def test_a_stream_without_an_audio_track_is_cut_on_video_time_with_no_sound() -> None:
    aligner, windows = run(timeline(5.0, audio=False), has_audio=False)
    assert [w.index for w in windows] == [0, 1, 2, 3]
    assert all(w.audio is None and w.audio_coverage == 0.0 for w in windows)
    assert [w.window_start for w in windows] == [wall(s) for s in range(4)]
    assert aligner.stats.windows_without_audio == 4


def test_an_audio_track_that_never_delivers_falls_back_to_video_time() -> None:
    _, windows = run(timeline(5.0, audio=False), has_audio=True, max_audio_wait_s=0.5)
    assert windows, "windows must come even though the announced audio never arrives"
    assert all(w.audio is None for w in windows)


@pytest.mark.parametrize("new_pts", [1000.0, 0.0, 7.0])  # jump ahead, restart at 0, jump back a bit
def test_a_timestamp_jump_is_rebased_so_windows_continue(new_pts: float) -> None:
    events = timeline(6.0)
    for event in events:
        if event.true_time >= 2.5:
            event.pts = new_pts + (event.pts - 2.5) if new_pts != 7.0 else event.pts - 2.0
    aligner, windows = run(events, max_gap_s=5.0)
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]
    assert [w.window_start for w in windows] == [wall(s) for s in range(5)]
    assert aligner.stats.jumps == 2  # audio and video each
    for window in windows:
        assert window.av_skew_ms <= 40.0  # still paired with a frame from its own second
        assert abs(window.frame.time - (window.index + 0.5)) <= 0.04 + 1e-9
        assert window.audio_coverage > 0.99


def test_timestamp_wrap_around_is_unwrapped_without_a_jump() -> None:
    events = timeline(6.0)
    for event in events:  # the 33-bit MPEG-TS clock (shared by audio and video) wraps at 2.5 s
        event.pts = (TS_WRAP - 2.5 + event.pts) % TS_WRAP
    aligner, windows = run(events, wraps=(RTP_VIDEO_WRAP, TS_WRAP))
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]
    assert [w.window_start for w in windows] == [wall(s) for s in range(5)]
    assert aligner.stats.wraps == 2 and aligner.stats.jumps == 0
    for window in windows:
        assert abs(window.frame.time - (window.index + 0.5)) <= 0.02 + 1e-9
        assert window.audio_coverage == 1.0


def test_a_real_outage_confirmed_by_wall_clock_time_is_a_gap_not_a_jump() -> None:
    events = [e for e in timeline(15.0) if not 3.0 <= e.true_time < 10.0]
    aligner, windows = run(events, max_gap_s=5.0)
    assert [w.index for w in windows] == [0, 1, 2, 10, 11, 12, 13]
    assert [w.window_start for w in windows] == [wall(s) for s in (0, 1, 2, 10, 11, 12, 13)]
    assert aligner.stats.jumps == 0


@pytest.mark.parametrize(("position", "target"), [("start", 0.0), ("center", 0.5), ("end", 1.0)])
def test_frame_position_picks_the_frame_nearest_start_centre_or_end(position: str, target: float) -> None:
    _, windows = run(timeline(5.0), frame_position=position)
    assert len(windows) >= 3
    for window in windows:  # 25 fps: frames at .48 and .52 are the nearest to a centre
        assert window.frame.time == pytest.approx(window.index + target, abs=0.02 + 1e-9)
        assert window.av_skew_ms == pytest.approx(abs(window.frame.time - window.index - target) * 1000)


def test_wall_clock_follows_the_fastest_packet_and_windows_never_overlap() -> None:
    rng = random.Random(2)
    events = timeline(8.0)
    for event in events:
        event.arrival += 0.010 + rng.expovariate(1 / 0.02)  # >= 10 ms of delay, heavy tail
    events.sort(key=lambda e: e.arrival)
    _, windows = run(events, whole_seconds=True)
    assert len(windows) >= 6
    for window in windows:
        # windows start on whole UTC seconds, give or take how much the offset estimate
        # improved after the first packet (it follows the least-delayed packet)
        fraction = window.window_start.timestamp() % 1.0
        assert min(fraction, 1.0 - fraction) < 0.025
    for previous, window in zip(windows, windows[1:]):
        assert window.window_start >= previous.window_end
        assert (window.window_end - window.window_start).total_seconds() == pytest.approx(1.0, abs=0.03)


def test_a_separate_microphone_clock_is_paired_through_wall_clock_time() -> None:
    events = timeline(6.0)
    for event in events:
        if event.kind == "v":
            event.pts += 5000.0  # the camera's clock has nothing to do with the microphone's
    _, windows = run(events, shared_clock=False)
    assert [w.index for w in windows] == [0, 1, 2, 3, 4]
    for window in windows:
        assert abs(window.frame.time - (window.index + 0.5)) <= 0.02 + 1e-9


def test_a_camera_without_frames_keeps_memory_bounded() -> None:
    aligner = WindowAligner("cam", has_audio=True, config=AlignConfig(max_open_windows=4))
    for event in timeline(30.0, video=False):
        aligner.push_audio(event.pts, event.samples, RATE, event.arrival)
        assert aligner.open_windows <= 5
    assert aligner.stats.windows == 0
    assert aligner.stats.windows_dropped_no_frame >= 25


def test_materialize_gives_rgb_and_16_khz_mono_for_the_model() -> None:
    _, windows = run(timeline(3.0))
    window = windows[0].materialize()
    assert window.frame.shape == (2, 2, 3) and window.frame.dtype == np.uint8
    assert window.audio.shape == (16_000,) and window.audio.dtype == np.float32
    assert window.window_end == wall(1) and window.camera == "cam"


def test_a_sample_rate_change_within_a_connection_is_a_clear_error() -> None:
    aligner = WindowAligner("gate1", has_audio=True)
    aligner.push_audio(0.0, np.zeros(1024, np.float32), 48_000, WALL0)
    with pytest.raises(ValueError, match="gate1: audio sample rate changed from 48000 to 44100"):
        aligner.push_audio(0.03, np.zeros(1024, np.float32), 44_100, WALL0 + 0.03)
