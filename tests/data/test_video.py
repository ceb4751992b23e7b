"""synth-video: a real H.264 + AAC file whose per-second counts describe what it shows."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from avcc_stream.data.synth.scene import render_background, sample_objects, sample_scene
from avcc_stream.data.synth.video import counts_path, plan_timeline, render_frame, write_video

SIZE = (192, 108)
FPS = 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    document = write_video(path, seconds=6, seed=5, size=SIZE, fps=FPS, audio=True)
    return path, document


def test_file_has_h264_video_and_aac_audio_that_decode(clip):
    path, document = clip
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == SIZE
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == 6 * FPS
    with av.open(str(path)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    assert rate == document["audio_sample_rate"]
    assert samples / rate == pytest.approx(6.0, abs=0.1)


def test_keyframe_every_second(clip):
    path, _ = clip
    with av.open(str(path)) as container:
        keyframes = [packet.pts for packet in container.demux(video=0) if packet.is_keyframe and packet.pts is not None]
        time_base = container.streams.video[0].time_base
    seconds = sorted(float(pts * time_base) for pts in keyframes)
    assert seconds == pytest.approx([0, 1, 2, 3, 4, 5], abs=0.05)


def test_counts_file_matches_the_rendered_scene_and_the_encoded_frames(clip):
    path, document = clip
    saved = json.loads(counts_path(path).read_text())
    assert saved["fps"] == FPS and saved["seconds"] == 6
    assert [entry["second"] for entry in saved["counts"]] == list(range(6))
    # Re-render the middle frame of each second from the same seed: same heads as the file says.
    scene_rng, background_rng, crowd_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(5).spawn(4))
    spec = sample_scene(scene_rng, *SIZE)
    objects = sample_objects(scene_rng, spec)
    background = render_background(spec, background_rng)
    light = spec.lighting.light_map(*SIZE)
    timeline, _ = plan_timeline(crowd_rng, spec, 6.0)
    rendered = {}
    for entry in saved["counts"]:
        frame_index = entry["second"] * FPS + FPS // 2
        image, heads = render_frame(spec, background, light, objects, timeline.at(frame_index / FPS)[0])
        rendered[frame_index] = image
        assert entry["count"] == len(heads) == len(entry["heads"])
        np.testing.assert_allclose(entry["heads"], np.round(heads, 1), atol=0.051)
        assert entry["min"] <= entry["count"] <= entry["max"]
    # ... and those frames are what the video holds (lossy, so compare by PSNR).
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in rendered:
                error = frame.to_ndarray(format="rgb24").astype(np.float64) - rendered[index]
                psnr = 10 * np.log10(255.0**2 / np.mean(error**2))
                assert psnr > 28.0


def test_the_crowd_changes_over_time(clip):
    _, document = clip
    counts = [entry["count"] for entry in document["counts"]]
    assert len(set(counts)) > 1
    means = [entry["mean"] for entry in document["counts"]]
    assert max(means) - min(means) >= 1.0


def test_no_audio_writes_a_video_stream_only(tmp_path: Path):
    path = tmp_path / "silent.mp4"
    document = write_video(path, seconds=1, seed=2, size=(64, 36), fps=5, audio=False)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1
    assert document["audio"] is False and len(document["counts"]) == 1


def test_odd_sizes_are_refused_with_the_reason(tmp_path: Path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "x.mp4", seconds=1, seed=0, size=(65, 36))
