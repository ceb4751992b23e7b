"""`avcc-stream infer` on a tiny generated image / wav / video, and `avcc-stream model-info`."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from avcc_stream.cli import main
from avcc_stream.model.media import read_video_moment

from .helpers import make_random_checkpoint

VIDEO_FPS = 10
VIDEO_SECONDS = 3
AUDIO_RATE = 16_000


def write_video(path, with_audio: bool = True) -> None:
    """3 s of 160x90 H.264 whose frame i is grey level 8 i, with AAC audio whose loudness grows with time."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt = 160, 90, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if with_audio else None
        for index in range(VIDEO_FPS * VIDEO_SECONDS):
            frame = av.VideoFrame.from_ndarray(np.full((90, 160, 3), 8 * index, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        if audio is not None:
            t = np.arange(AUDIO_RATE * VIDEO_SECONDS) / AUDIO_RATE
            samples = ((t / VIDEO_SECONDS) * 0.9 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
            for start in range(0, samples.size, 1024):
                frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(folder / "scene.png")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(44_100) / 44_100)
    wavfile.write(folder / "scene.wav", 44_100, (tone * 32767).astype(np.int16))
    write_video(folder / "clip.mp4")
    write_video(folder / "silent.mp4", with_audio=False)
    return {
        "folder": folder,
        "cc-av": make_random_checkpoint(folder, "cc-av-lowres"),
        "cc-v": make_random_checkpoint(folder, "cc-v-lowres"),
        "csrnet": make_random_checkpoint(folder, "csrnet-lowres"),
    }


def test_infer_image_with_audio_prints_count_and_hotspots_and_writes_the_overlay(media, capsys):
    folder = media["folder"]
    code = main(["infer", "--checkpoint", str(media["cc-av"]), "--image", str(folder / "scene.png"),
                 "--audio", str(folder / "scene.wav")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "people (cc-av-lowres)" in printed
    assert "by PIR" in printed and printed.count("pixels ") == 3
    overlay = folder / "scene.density.png"
    with Image.open(overlay) as image:
        assert image.size == (160, 90)


def test_infer_video_moment_as_json(media, capsys, tmp_path):
    out = tmp_path / "overlay.png"
    code = main(["infer", "--checkpoint", str(media["cc-av"]), "--video", str(media["folder"] / "clip.mp4"),
                 "--at", "1.5", "--overlay", str(out), "--top", "2", "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["count"] >= 0 and len(result["hotspots"]) == 2
    assert result["hotspots"][0]["share"] >= result["hotspots"][1]["share"]
    assert result["source"].endswith("at 1.500 s")
    assert out.is_file()


def test_infer_with_flip_average_counts_the_mean_of_the_frame_and_its_mirror_image(media, capsys, monkeypatch):
    import avcc_stream.model.flip as flip

    folder = media["folder"]
    image = np.asarray(Image.open(folder / "scene.png"))
    Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(folder / "mirror.png")
    passes = []  # the batch size of each flip-averaged call
    real = flip.flip_averaged
    monkeypatch.setattr(flip, "flip_averaged",
                        lambda model, images, audio: passes.append(images.shape[0]) or real(model, images, audio))

    def count(name: str, *extra: str) -> dict:
        assert main(["infer", "--checkpoint", str(media["cc-v"]), "--image", str(folder / name), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    plain, mirrored, averaged = count("scene.png"), count("mirror.png"), count("scene.png", "--flip-average")
    assert passes == [1]  # only the --flip-average call averaged
    assert plain["flip_average"] is False and averaged["flip_average"] is True
    assert averaged["count"] == pytest.approx((plain["count"] + mirrored["count"]) / 2, abs=2e-3)


def test_video_moment_is_the_nearest_frame_and_a_second_of_sound_centred_on_it(media):
    moment = read_video_moment(media["folder"] / "clip.mp4", 1.52)
    assert moment.frame_time == pytest.approx(1.5)
    assert abs(float(moment.rgb.mean()) - 8 * 15) <= 3  # frame 15 is grey level 120 (codec rounding)
    samples = moment.audio.samples[0]
    assert samples.size == AUDIO_RATE
    # Loudness grows linearly with time: a window centred on 1.5 s has a mean envelope of 0.45.
    envelope = np.abs(samples).mean() * np.pi / 2
    assert envelope == pytest.approx(0.9 * 1.5 / VIDEO_SECONDS, abs=0.03)
    near_end = read_video_moment(media["folder"] / "clip.mp4", 2.95)
    assert near_end.audio.samples.shape[1] == AUDIO_RATE  # shifted to stay inside the recording


def test_cc_v_and_baselines_infer_without_audio(media, capsys):
    for checkpoint, ranking in ((media["cc-v"], "by PIR"), (media["csrnet"], "share of the density map")):
        code = main(["infer", "--checkpoint", str(checkpoint), "--video", str(media["folder"] / "silent.mp4"),
                     "--at", "1"])  # fmt: skip
        assert code == 0
        assert ranking in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--image", "{folder}/scene.png"], "no --audio was given"),
        (["--video", "{folder}/silent.mp4", "--at", "1"], "no audio stream"),
        (["--video", "{folder}/clip.mp4"], "needs --at"),
        (["--video", "{folder}/clip.mp4", "--at", "9"], "past the end"),
        (["--image", "{folder}/scene.wav", "--audio", "{folder}/scene.wav"], "cannot read as an image"),
    ],
)
def test_infer_errors_are_one_clear_line(media, capsys, arguments, message):
    argv = ["infer", "--checkpoint", str(media["cc-av"])] + [a.format(folder=media["folder"]) for a in arguments]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_infer_with_a_missing_builtin_checkpoint_names_what_is_available(media, capsys):
    argv = ["infer", "--checkpoint", "builtin:nope", "--image", str(media["folder"] / "scene.png")]
    assert main(argv) == 2
    assert "available:" in capsys.readouterr().err


def test_model_info_prints_parameters_gflops_and_ratios(capsys):
    code = main(["model-info", "--presets", "cc-v-lowres", "csrnet-lowres", "--runs", "1", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "(1 threads)" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"cc-v-lowres", "csrnet-lowres"}
    # csrnet-lowres: 16.26 M parameters, 7.6 GFLOPs at 128x72; ratios to audiocsrnet-lowres (22.80 M).
    assert rows["csrnet-lowres"][2] == "16.26M"
    assert float(rows["csrnet-lowres"][3]) == pytest.approx(7.6, abs=0.1)
    assert float(rows["csrnet-lowres"][6]) == pytest.approx(16.26 / 22.80, abs=0.002)
    assert len(rows["cc-v-lowres"]) == 9  # preset, input, params, GFLOPs, median ms, best ms, three ratios
    assert float(rows["cc-v-lowres"][5]) <= float(rows["cc-v-lowres"][4])


def test_model_info_can_skip_timing(capsys):
    assert main(["model-info", "--presets", "csrnet-lowres", "--no-timing"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[4] == row[5] == row[8] == "-"
    assert main(["model-info", "--presets", "nope"]) == 2
