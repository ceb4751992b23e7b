"""Reading the inputs of `avcc-stream infer`: an image, an audio file, or one moment of a video (PyAV).

Each function returns raw pixels / samples; `avcc_stream.preprocess` turns them into model
inputs, exactly as for training and the live daemon. Errors name the file and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MediaError(Exception):
    """A file that cannot be read as the expected image, audio or video."""


@dataclass(frozen=True)
class AudioClip:
    samples: np.ndarray  # (channels, n) float32 in [-1, 1]
    sample_rate: int


@dataclass(frozen=True)
class VideoMoment:
    rgb: np.ndarray  # H x W x 3 uint8, the frame nearest the requested time
    frame_time: float  # seconds
    audio: AudioClip | None  # one second centred on the frame, None without an audio stream


def read_image(path: str | Path) -> np.ndarray:
    """Any image PIL reads -> H x W x 3 uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy
    except (OSError, UnidentifiedImageError) as exc:
        raise MediaError(f"{path}: cannot read as an image: {exc}") from None


def _decode_audio(container, stream, start: float, end: float) -> AudioClip:
    """Samples of `stream` with timestamps in [start, end), as (channels, n) float32."""
    import av

    resampler = av.AudioResampler(format="fltp")  # planar float: to_ndarray() gives (channels, n)
    if start > 0:
        container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True)
    pieces, first_time = [], None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        frame_start = float(frame.pts * frame.time_base)
        if frame_start >= end:
            break
        for converted in resampler.resample(frame):
            array = converted.to_ndarray()
            if first_time is None:
                first_time = frame_start
            pieces.append(array)
    if not pieces:
        return AudioClip(np.zeros((stream.channels or 1, 0), np.float32), stream.rate)
    samples = np.concatenate(pieces, axis=1).astype(np.float32)
    offset = max(0, int(round((start - first_time) * stream.rate)))
    length = int(round((end - start) * stream.rate))
    return AudioClip(samples[:, offset : offset + length], stream.rate)


def read_audio(path: str | Path, seconds: float = 1.0) -> AudioClip:
    """The first `seconds` of any audio file PyAV decodes (wav, flac, mp3, ...)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: no audio stream")
            return _decode_audio(container, container.streams.audio[0], 0.0, seconds)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode audio: {exc}") from None


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base is microseconds
    return None


def read_video_moment(path: str | Path, at: float, audio_seconds: float = 1.0) -> VideoMoment:
    """The frame nearest `at` seconds and `audio_seconds` of sound centred on it.

    Near the start or end of the file the window is shifted to stay inside the recording,
    so it still holds a full second of real sound when the file has one.
    """
    import av

    if at < 0:
        raise MediaError(f"{path}: --at must be >= 0 seconds, got {at}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            video = container.streams.video[0]
            duration = _stream_duration(container, video)
            if duration is not None and at > duration:
                raise MediaError(f"{path}: --at {at} s is past the end of the video ({duration:.2f} s)")
            container.seek(int(max(0.0, at - 2.0) / video.time_base), stream=video, backward=True)
            best, best_time = None, None
            for frame in container.decode(video):
                if frame.pts is None:
                    continue
                time = float(frame.pts * frame.time_base)
                if best is None or abs(time - at) < abs(best_time - at):
                    best, best_time = frame.to_ndarray(format="rgb24"), time
                if time > at:
                    break
            if best is None:
                raise MediaError(f"{path}: no decodable video frame near {at} s")
        audio = None
        with av.open(str(path)) as container:
            if container.streams.audio:
                stream = container.streams.audio[0]
                total = _stream_duration(container, stream)
                start = best_time - audio_seconds / 2
                if total is not None:
                    start = min(start, total - audio_seconds)
                start = max(0.0, start)
                audio = _decode_audio(container, stream, start, start + audio_seconds)
        return VideoMoment(rgb=best, frame_time=best_time, audio=audio)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode video: {exc}") from None
