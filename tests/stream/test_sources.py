"""Sources against a real RTSP server (gst-rtsp-server: H.264 + AAC, H.265 + G.711) and real files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avcc_stream.stream.rtsp_server import RtspServer, encode_test_clip, start_rtsp_server
from avcc_stream.stream.sources import (
    AudioItem,
    AVSource,
    SourceEnded,
    SourceItem,
    SourceOpened,
    SourceQueue,
    VideoItem,
)
from tests.rtsp import av_clip, rtsp_server, video_only_clip  # noqa: F401 (fixtures)
from tests.services import free_port

pytestmark = pytest.mark.services


async def collect(source: AVSource, *, seconds: float, until_ended: bool = False, maxsize: int = 512,
                  on_video: int | None = None, action=None) -> tuple[list[SourceItem], SourceQueue]:
    """Run `source` for `seconds` (or until it ends) and return everything it handed over."""
    queue = SourceQueue(asyncio.get_running_loop(), maxsize)
    items: list[SourceItem] = []
    source.start(queue)
    deadline = time.monotonic() + seconds
    videos = 0
    try:
        while time.monotonic() < deadline:
            try:
                item = await asyncio.wait_for(queue.get(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            items.append(item)
            if isinstance(item, VideoItem):
                videos += 1
                if action is not None and videos == on_video:
                    action()
            if isinstance(item, SourceEnded):
                break
    finally:
        source.stop()
        assert source.join(10), "the worker thread must end after stop()"
    if until_ended:
        assert isinstance(items[-1], SourceEnded), f"no SourceEnded within {seconds} s: {items[-3:]}"
    return items, queue


def split(items: list[SourceItem]) -> tuple[list[SourceOpened], list[VideoItem], list[AudioItem], list[SourceEnded]]:
    return (
        [i for i in items if isinstance(i, SourceOpened)],
        [i for i in items if isinstance(i, VideoItem)],
        [i for i in items if isinstance(i, AudioItem)],
        [i for i in items if isinstance(i, SourceEnded)],
    )


def test_rtsp_with_audio_delivers_frames_and_mono_float_sound_on_one_clock(rtsp_server: RtspServer) -> None:
    items, queue = asyncio.run(collect(AVSource(rtsp_server.url("av"), open_timeout_s=5, read_timeout_s=3), seconds=4.0))
    opened, video, audio, ended = split(items)
    assert len(opened) == 1 and items[0] is opened[0]
    info = opened[0].info
    assert (info.has_video, info.has_audio, info.video_codec, info.audio_codec) == (True, True, "h264", "aac")
    assert (info.video_size, info.audio_rate, info.audio_channels) == ((320, 180), 44_100, 2)
    assert info.shared_clock and info.wrap_periods_s
    assert not ended and queue.dropped == 0
    assert len(video) >= 25 and len(audio) >= 40  # >= 1 s of each within 4 s (open takes ~1 s)
    assert all(a.samples.dtype == np.float32 and a.samples.ndim == 1 and a.sample_rate == 44_100 for a in audio)
    assert max(float(np.abs(a.samples).max()) for a in audio) > 0.01  # the 440 Hz tone, not silence
    assert np.all(np.diff([v.pts for v in video]) > 0)
    # audio is contiguous on its own timestamps: each chunk starts where the previous one ended
    ends = [a.pts + a.samples.size / a.sample_rate for a in audio]
    assert max(abs(nxt.pts - end) for nxt, end in zip(audio[1:], ends)) < 0.002
    # one clock: the sound covers the time span of the frames
    assert audio[0].pts <= video[0].pts + 0.05 and ends[-1] >= video[-1].pts - 0.5
    rgb = video[-1].frame.to_rgb()
    assert rgb.shape == (180, 320, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("audio_codec", ["pcm_mulaw", "pcm_alaw"])
def test_an_ip_camera_with_h265_and_g711_sound_delivers_frames_and_8_khz_mono_sound(tmp_path: Path, audio_codec: str) -> None:
    """What many IP cameras send: H.265 video, G.711 sound (8 kHz mono, static RTP payload type)."""
    clip = encode_test_clip(tmp_path / "camera.mov", seconds=6, video_codec="hevc", audio_codec=audio_codec,
                            sample_rate=8_000, channels=1)
    with start_rtsp_server({"camera": f"file:{clip}"}) as server:
        items, queue = asyncio.run(collect(AVSource(server.url("camera"), open_timeout_s=5, read_timeout_s=3), seconds=4.0))
    opened, video, audio, ended = split(items)
    info = opened[0].info
    assert (info.video_codec, info.audio_codec, info.audio_rate, info.audio_channels) == ("hevc", audio_codec, 8_000, 1)
    assert info.video_size == (320, 180) and info.shared_clock
    assert not ended and queue.dropped == 0 and len(video) >= 25
    assert video[-1].frame.to_rgb().shape == (180, 320, 3)
    assert all(a.sample_rate == 8_000 and a.samples.dtype == np.float32 for a in audio)
    assert max(float(np.abs(a.samples).max()) for a in audio) > 0.01  # the tone, scaled to [-1, 1]
    ends = [a.pts + a.samples.size / a.sample_rate for a in audio]
    assert max(abs(nxt.pts - end) for nxt, end in zip(audio[1:], ends)) < 0.002  # contiguous
    assert audio[0].pts <= video[0].pts + 0.05 and ends[-1] >= video[-1].pts - 0.5  # one clock


def test_a_stream_without_audio_says_so_and_sends_only_frames(rtsp_server: RtspServer) -> None:
    items, _ = asyncio.run(collect(AVSource(rtsp_server.url("video")), seconds=2.5))
    opened, video, audio, _ = split(items)
    assert opened[0].info.has_audio is False and opened[0].info.audio_codec is None
    assert video and not audio


def test_the_endless_live_test_source_streams_h264_and_aac(rtsp_server: RtspServer) -> None:
    items, _ = asyncio.run(collect(AVSource(rtsp_server.url("live")), seconds=3.0))
    opened, video, audio, _ = split(items)
    assert opened[0].info.audio_codec == "aac" and opened[0].info.audio_rate == 48_000
    assert video and audio


def test_a_server_that_dies_ends_the_stream_as_a_disconnect(rtsp_server: RtspServer) -> None:
    def kill() -> None:
        os.kill(rtsp_server.process.pid, signal.SIGKILL)

    items, _ = asyncio.run(collect(AVSource(rtsp_server.url("av")), seconds=20.0, until_ended=True, on_video=5, action=kill))
    ended = items[-1]
    assert isinstance(ended, SourceEnded) and ended.error and "stream ended" in ended.reason


def test_a_frozen_server_times_out(rtsp_server: RtspServer) -> None:
    def freeze() -> None:
        os.kill(rtsp_server.process.pid, signal.SIGSTOP)

    try:
        items, _ = asyncio.run(collect(AVSource(rtsp_server.url("av"), read_timeout_s=1.0), seconds=30.0,
                                       until_ended=True, on_video=5, action=freeze))
    finally:
        os.kill(rtsp_server.process.pid, signal.SIGCONT)
    assert items[-1].reason == "timed out"


@pytest.mark.parametrize(("open_takes_s", "reason"), [
    (1.0, "timed out"),  # cut off by the 1 s open timeout while probing: a slow server
    (0.0, "not a playable stream (corrupt, truncated or not audio/video): invalid data"),  # at once: corrupt
])
def test_invalid_data_at_the_open_timeout_is_reported_as_a_timeout(monkeypatch, open_takes_s: float, reason: str) -> None:
    import av

    def open_that_fails(*args, **kwargs):  # FFmpeg's answer when the timeout interrupts its probe
        time.sleep(open_takes_s)
        raise av.error.InvalidDataError(0, "Invalid data found when processing input")

    monkeypatch.setattr(av, "open", open_that_fails)
    items, _ = asyncio.run(collect(AVSource("rtsp://127.0.0.1:1/slow", open_timeout_s=1.0), seconds=10.0, until_ended=True))
    assert items[-1].reason == reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (lambda server: f"rtsp://127.0.0.1:{free_port()}/nothing", "connection refused"),
        (lambda server: server.url("no-such-mount"), "not found (404)"),
        (lambda server: "/nonexistent/clip.mp4", "no such file"),
    ],
)
def test_a_dead_url_ends_at_once_with_a_reason_for_the_status(rtsp_server: RtspServer, url, reason: str) -> None:
    items, _ = asyncio.run(collect(AVSource(url(rtsp_server), open_timeout_s=3), seconds=15.0, until_ended=True))
    assert items == [SourceEnded(reason)]


def test_rtsp_credentials_never_reach_the_stream_info(rtsp_server: RtspServer) -> None:
    url = rtsp_server.url("av").replace("rtsp://", "rtsp://viewer:hunter2@")
    items, _ = asyncio.run(collect(AVSource(url), seconds=2.0))
    opened = [i for i in items if isinstance(i, SourceOpened)]
    assert opened and "hunter2" not in repr(opened[0].info) and "***@" in opened[0].info.url


def test_a_looping_file_plays_at_real_time_with_timestamps_that_keep_increasing(tmp_path: Path) -> None:
    clip = encode_test_clip(tmp_path / "short.mp4", seconds=1.0, size=(64, 36))
    items, _ = asyncio.run(collect(AVSource(str(clip), loop=True), seconds=3.5))
    _, video, audio, ended = split(items)
    assert not ended
    pts = [v.pts for v in video]
    assert np.all(np.diff(pts) > 0)
    assert pts[-1] > 2.0  # played the 1 s clip at least three times
    # real time: the timestamps advance like the wall clock, not as fast as decoding allows
    span_pts = pts[-1] - pts[0]
    span_wall = video[-1].arrival - video[0].arrival
    assert span_pts == pytest.approx(span_wall, abs=0.3)
    audio_pts = [a.pts for a in audio]
    assert np.all(np.diff(audio_pts) > 0) and audio_pts[-1] > 2.0


def test_a_file_that_does_not_loop_ends_cleanly(tmp_path: Path) -> None:
    clip = encode_test_clip(tmp_path / "short.mp4", seconds=1.0, size=(64, 36))
    items, _ = asyncio.run(collect(AVSource(str(clip), realtime=False), seconds=10.0, until_ended=True))
    assert items[-1] == SourceEnded("end of file", error=False)


@pytest.mark.parametrize(
    ("suffix", "codec_args", "rate", "channels"),
    [
        ("mov", ["-c:a", "pcm_s16le"], 8_000, 1),  # packed integer PCM, mono, 8 kHz
        ("mkv", ["-c:a", "libopus"], 48_000, 6),  # 5.1 Opus
        ("mkv", ["-c:a", "libmp3lame"], 22_050, 2),  # MP3 (s16p planar), 22.05 kHz
        ("mp4", ["-c:a", "aac"], 96_000, 1),
    ],
)
def test_any_sample_format_rate_and_layout_becomes_mono_float(tmp_path: Path, suffix: str, codec_args: list[str], rate: int, channels: int) -> None:
    clip = tmp_path / f"clip.{suffix}"
    subprocess.run([
        "ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25",
        "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate={rate}", "-t", "2",
        "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", *codec_args, "-ac", str(channels), "-ar", str(rate), str(clip),
    ], check=True)
    items, _ = asyncio.run(collect(AVSource(str(clip), realtime=False), seconds=20.0, until_ended=True))
    opened, _, audio, _ = split(items)
    assert opened[0].info.audio_rate == rate and opened[0].info.audio_channels == channels
    samples = np.concatenate([a.samples for a in audio])
    assert samples.dtype == np.float32 and {a.sample_rate for a in audio} == {rate}
    assert samples.size == pytest.approx(2 * rate, rel=0.05)
    assert 0.05 < float(np.abs(samples).max()) <= 1.0  # scaled to [-1, 1], not int16 range


def test_a_full_queue_drops_media_and_counts_it_but_always_delivers_the_end(tmp_path: Path) -> None:
    clip = encode_test_clip(tmp_path / "short.mp4", seconds=2.0, size=(64, 36))

    async def never_read() -> tuple[SourceQueue, list[SourceItem]]:
        queue = SourceQueue(asyncio.get_running_loop(), maxsize=8)
        source = AVSource(str(clip), realtime=False)
        source.start(queue)
        await asyncio.to_thread(source.join, 30)  # nobody reads while the source runs
        items = [await queue.get() for _ in range(queue.qsize())]
        return queue, items

    queue, items = asyncio.run(never_read())
    assert queue.dropped > 0
    assert isinstance(items[0], SourceOpened) and items[-1] == SourceEnded("end of file", error=False)


# --------------------------------------------------------------------------------------
# microphone: a userspace PulseAudio with a null sink stands in for the hardware

PAIRED_CHILD = r"""
import asyncio, json, sys, time
import numpy as np
from avcc_stream.stream.align import WindowAligner
from avcc_stream.stream.sources import (AVSource, AudioItem, MicrophoneSource, PairedSource, SourceOpened,
                                        SourceQueue, VideoItem)

async def main(url, seconds):
    queue = SourceQueue(asyncio.get_running_loop())
    source = PairedSource(AVSource(url), MicrophoneSource("pulse", sample_rate=16000))
    source.start(queue)
    items, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            items.append(await asyncio.wait_for(queue.get(), 0.5))
        except asyncio.TimeoutError:
            pass
    source.stop()
    joined = source.video.join(5) and source.audio.join(5)
    opened = [i.info for i in items if isinstance(i, SourceOpened)]
    audio = [i for i in items if isinstance(i, AudioItem)]
    video = [i for i in items if isinstance(i, VideoItem)]
    aligner = WindowAligner("cam", has_audio=True, shared_clock=opened[0].shared_clock)
    windows = []
    for item in items:
        if isinstance(item, AudioItem):
            windows += aligner.push_audio(item.pts, item.samples, item.sample_rate, item.arrival)
        elif isinstance(item, VideoItem):
            windows += aligner.push_video(item.pts, item.frame, item.arrival)
    last_second = np.concatenate([a.samples for a in audio])[-16000:]
    print(json.dumps({
        "opened": len(opened), "has_audio": opened[0].has_audio, "shared_clock": opened[0].shared_clock,
        "audio_codec": opened[0].audio_codec, "video": len(video), "rates": sorted({a.sample_rate for a in audio}),
        "peak_hz": float(np.argmax(np.abs(np.fft.rfft(last_second)))), "rms": float(np.sqrt(np.mean(last_second ** 2))),
        "pts_gap": max(abs(b.pts - a.pts - a.samples.size / a.sample_rate) for a, b in zip(audio, audio[1:])),
        "windows": len(windows), "with_audio": sum(w.audio is not None for w in windows),
        "skew_ms": max(w.av_skew_ms for w in windows), "joined": joined,
    }))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


@pytest.fixture
def pulse_microphone(tmp_path: Path):
    """A PulseAudio server of our own whose default source hears what `play(tone)` plays."""
    for binary in ("pulseaudio", "pacat"):
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} is missing: run `make setup` (apt pulseaudio pulseaudio-utils libasound2-plugins)")
    socket_path = tmp_path / "pulse-native"
    env = dict(os.environ, HOME=str(tmp_path), PULSE_RUNTIME_PATH=str(tmp_path / "run"),
               PULSE_STATE_PATH=str(tmp_path / "state"), PULSE_SERVER=f"unix:{socket_path}")
    server = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
         "-L", f"module-native-protocol-unix socket={socket_path} auth-anonymous=1",
         "-L", "module-null-sink sink_name=mic rate=16000 channels=1", "-L", "module-always-sink"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    players: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "set-default-source", "mic.monitor"], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PulseAudio did not start"
            time.sleep(0.1)

        def play(samples: np.ndarray) -> None:
            raw = tmp_path / "play.raw"
            samples.astype("<f4").tofile(raw)
            players.append(subprocess.Popen(["pacat", "-p", "--device=mic", "--rate=16000", "--channels=1",
                                             "--format=float32le", str(raw)], env=env))

        yield env, play
    finally:
        for process in [*players, server]:
            process.terminate()
            process.wait(5)


def test_a_microphone_supplies_the_sound_of_a_video_only_camera(rtsp_server: RtspServer, pulse_microphone) -> None:
    env, play = pulse_microphone
    t = np.arange(16_000 * 15) / 16_000
    play(0.5 * np.sin(2 * np.pi * 440 * t))
    result = subprocess.run([sys.executable, "-c", PAIRED_CHILD, rtsp_server.url("video"), "5"], env=env,
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["opened"] == 1 and summary["has_audio"] and summary["shared_clock"] is False
    assert summary["audio_codec"] == "pcm" and summary["rates"] == [16_000] and summary["video"] >= 25
    assert summary["peak_hz"] == pytest.approx(440, abs=2) and summary["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert summary["pts_gap"] < 1e-6  # a gap-free sample clock
    # paired through wall-clock time: every window has the microphone's sound and a nearby frame
    assert summary["windows"] >= 2 and summary["with_audio"] == summary["windows"]
    # Microphone and camera share only wall-clock arrival times, so a loaded machine adds
    # scheduling delay (106 ms seen in CI-like runs); a pairing error is a whole second or more.
    assert summary["skew_ms"] <= 250 and summary["joined"]
