"""A real RTSP server (gst-rtsp-server, H.264 + AAC) on 127.0.0.1 for tests, and its clips.

The server runs under the system python3 (gi is apt-only); `start_rtsp_server` launches it
on a free port. Clips are encoded once per session with a one-second GOP (`-g 25`): a
client's first keyframe is often lost, and a long GOP would delay every first frame.

    def test_x(rtsp_server):            # mounts: av (H.264 + AAC clip), video (no audio),
        url = rtsp_server.url("av")     #         live (endless synthetic H.264 + AAC)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from avcc_stream.stream.rtsp_server import RtspServer, encode_test_clip, start_rtsp_server

CLIP_SECONDS = 20.0


@pytest.fixture(scope="session")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of 320x180 25 fps H.264 with 44.1 kHz stereo AAC."""
    folder = tmp_path_factory.mktemp("clips")
    return encode_test_clip(folder / "av.mp4", seconds=CLIP_SECONDS, sample_rate=44_100)


@pytest.fixture(scope="session")
def video_only_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    return encode_test_clip(folder / "video.mp4", seconds=CLIP_SECONDS, audio=False)


@pytest.fixture
def rtsp_server(av_clip: Path, video_only_clip: Path) -> Iterator[RtspServer]:
    """A fresh server per test (tests may kill or freeze it), stopped afterwards."""
    server = start_rtsp_server({"av": f"file:{av_clip}", "video": f"file:{video_only_clip}", "live": "test"})
    try:
        yield server
    finally:
        server.stop()
