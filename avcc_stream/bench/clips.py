"""Test clips for the benchmarks, encoded once with ffmpeg and kept in a cache folder.

H.264 (libx264, one-second GOP, `-g fps`) of ffmpeg's testsrc2 pattern with a 440 Hz tone in
AAC, the same recipe as the RTSP test server's clips (`stream.rtsp_server.encode_test_clip`).
A synthetic pattern compresses better than a real scene, so decode figures from it are a
lower bound for busy real footage at the same resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

from avcc_stream.stream.rtsp_server import encode_test_clip


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "avcc-stream" / "bench"


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080), with an error that says what was expected."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected a size like 1920x1080, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"size {text!r}: width and height must be positive and even (H.264 4:2:0)")
    return width, height


def cached_clip(
    size: tuple[int, int],
    *,
    fps: int = 25,
    seconds: float = 10.0,
    sample_rate: int = 48_000,
    channels: int = 2,
    cache_dir: Path | None = None,
) -> Path:
    """The clip for these settings, encoded now if the cache does not hold it yet."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    path = folder / f"testsrc2-{width}x{height}-{fps}fps-g{fps}-{seconds:g}s-aac{sample_rate}x{channels}.mp4"
    if path.is_file() and path.stat().st_size > 0:
        return path
    # Encode under a temporary name and rename, so an interrupted run never leaves a
    # truncated clip that later runs would trust.
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.mp4")
    try:
        encode_test_clip(partial, seconds=seconds, size=size, fps=fps, sample_rate=sample_rate, channels=channels)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
