"""The synthetic generator: reproducible, readable back by the loaders, sound that follows the crowd."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from avcc_stream.data.datasets import DiscoDataset, PlainDataset, open_dataset
from avcc_stream.data.synth.audio import (
    ambient_sound, crowd_sound, expected_talkers, rms, sample_audio_scene, scene_audio,
)
from avcc_stream.data.synth.people import (
    HEAD_RADII_SHARE,
    draw_scene,
    head_heights_from_points,
    head_points,
    sample_crowd,
)
from avcc_stream.data.synth.raster import Canvas
from avcc_stream.data.synth.sample import generate_sample
from avcc_stream.data.synth.scene import PERSON_HEIGHT_M, Camera, render_background, sample_scene
from avcc_stream.data.synth.writer import assign_splits, sample_seed, write_dataset

SMALL = (192, 108)


def test_a_sample_is_a_pure_function_of_its_seed():
    first, again, other = generate_sample(11, SMALL), generate_sample(11, SMALL), generate_sample(12, SMALL)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.points, again.points)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.params == again.params
    assert not np.array_equal(first.image, other.image)


def test_sample_fields_are_well_formed_and_params_are_json():
    for seed in range(6):
        sample = generate_sample(seed, SMALL)
        assert sample.image.shape == (108, 192, 3) and sample.image.dtype == np.uint8
        assert sample.points.dtype == np.float32 and sample.points.shape[1] == 2
        assert np.all((sample.points >= 0) & (sample.points < [192, 108]))
        assert sample.audio.dtype == np.float32 and sample.audio.shape == (sample.params["audio"]["channels"],
                                                                           sample.sample_rate)
        assert np.abs(sample.audio).max() <= 1.0
        json.dumps(sample.params)
        assert sample.params["count"] == len(sample.points) <= sample.params["people_placed"]


def test_people_shrink_with_distance_on_the_ground_plane():
    rng = np.random.default_rng(3)
    spec = sample_scene(rng, 640, 360)
    crowd = sample_crowd(rng, spec, 200)
    heads = head_points(crowd, spec)
    feet = spec.camera.row_of_depth(crowd.depth)
    pixel_height = PERSON_HEIGHT_M * crowd.scale * spec.camera.pixels_per_metre(crowd.depth)
    # nearer people stand lower in the frame and are taller in pixels
    near = crowd.depth < np.median(crowd.depth)
    assert feet[near].mean() > feet[~near].mean()
    assert np.median(pixel_height[near]) > 1.3 * np.median(pixel_height[~near])
    assert np.all(heads[:, 1] < feet)  # heads above feet


def test_head_heights_recovered_from_points_and_camera_match_the_drawn_heads():
    """scripts/errors_by_scene.py reads head sizes off a written sample (points and the camera in
    its meta; no per-person depth): they must match what the generator drew, over every kind of
    camera, for adults (children are shorter than the 1.7 m the estimate assumes)."""
    ratios = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        spec = sample_scene(rng, 1024, 576)
        crowd = sample_crowd(rng, spec, 150)
        drawn = 2 * HEAD_RADII_SHARE[1] * PERSON_HEIGHT_M * crowd.scale * spec.camera.pixels_per_metre(crowd.depth)
        estimated = head_heights_from_points(spec.camera, head_points(crowd, spec))
        adult = crowd.scale > 0.85
        ratios.append(estimated[adult] / drawn[adult])
    ratios = np.concatenate(ratios)
    assert len(ratios) > 1000
    assert np.median(np.abs(ratios - 1)) < 0.08
    assert np.quantile(np.abs(ratios - 1), 0.9) < 0.2


def test_a_written_samples_camera_reads_back_from_its_params():
    spec = sample_scene(np.random.default_rng(7), 1024, 576)
    written = json.loads(json.dumps(spec.params()))["camera"]  # as meta/<id>.json holds it
    camera = Camera.from_params(written, (1024, 576))
    original = spec.camera
    assert (camera.width, camera.height) == (original.width, original.height)
    assert np.allclose([camera.horizon, camera.focal, camera.elevation, camera.center_x],
                       [original.horizon, original.focal, original.elevation, original.center_x], atol=0.01)
    points = head_points(sample_crowd(np.random.default_rng(8), spec, 50), spec)
    assert np.allclose(head_heights_from_points(camera, points), head_heights_from_points(original, points), rtol=1e-3)


def test_error_analysis_script_reads_a_written_dataset_and_an_evaluate_report(tmp_path):
    """scripts/errors_by_scene.py end to end: a written dataset, a report in evaluate's shape with known
    errors; its MAE and its per-attribute image counts must come out of those."""
    root = tmp_path / "syn"
    write_dataset(root, count=6, seed=3, size=SMALL, splits=(0, 1, 0))
    ids = (root / "splits" / "val.txt").read_text().split()
    true = {i: float(len(json.loads((root / "points" / f"{i}.json").read_text()))) for i in ids}
    errors = dict(zip(ids, (4.0, -2.0, 0.0, 6.0, -1.0, 1.0)))
    report = {"table": {"model": {}}, "true_counts": true,
              "predictions": {"model": {"regular": {i: true[i] + errors[i] for i in ids}}}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    script = Path(__file__).resolve().parents[2] / "scripts" / "errors_by_scene.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "report.json"), "--dataset", str(root),
                             "--visible-px", "0,1000000"], capture_output=True, text=True, check=True)
    out = result.stdout
    assert "model, 6 images, regular MAE 2.33" in out
    # k=0 leaves every head in (each annotated head shows a pixel); k=huge leaves every head out, and
    # the error becomes the prediction itself: mean of (true + error) over the images.
    assert "k=0: 0 heads (0.0%)" in out
    all_out = np.mean([true[i] + errors[i] for i in ids])
    assert f"k=1000000: {sum(true.values()):.0f} heads (100.0%)" in out
    assert f"MAE {all_out:.2f}" in out.split("k=1000000:")[1]
    for attribute in ("camera height", "ground palette", "crowd layout", "scene objects"):
        block = out.split(f"by {attribute}:")[1].split("\nby ")[0].split("\nagainst")[0]
        counts = [int(line.split(":")[1].split(",")[0]) for line in block.strip().splitlines()[1:]]
        assert sum(counts) == 6, (attribute, block)


def test_a_sample_knows_how_much_of_each_annotated_head_shows():
    sample = generate_sample(21, (1024, 576))
    assert sample.count > 20
    assert sample.head_visible_pixels.shape == (sample.count,)
    assert sample.head_visible_pixels.min() >= 1  # the rule: at least a pixel (and 35 % of the head)
    assert sample.head_visible_pixels.max() > 10 * sample.head_visible_pixels.min()  # near and far heads


def test_hidden_heads_are_not_annotated_and_visible_ones_are():
    rng = np.random.default_rng(5)
    spec = sample_scene(rng, 320, 180)
    crowd = sample_crowd(rng, spec, 400)
    canvas = Canvas(render_background(spec, rng))
    heads, annotated, _ = draw_scene(canvas, spec, [], crowd)
    in_frame = (heads[:, 0] >= 0) & (heads[:, 0] < 320) & (heads[:, 1] >= 0) & (heads[:, 1] < 180)
    assert annotated.sum() < in_frame.sum()  # 400 people: some heads hide others
    assert np.all(in_frame[annotated])
    # every annotated head still owns the pixel at its centre or a good part of its area
    labels = canvas.labels
    for index in np.flatnonzero(annotated):
        x, y = heads[index]
        window = labels[max(int(y) - 3, 0) : int(y) + 4, max(int(x) - 3, 0) : int(x) + 4]
        assert np.any(window == 2 * index)


def test_counts_cover_empty_to_several_hundred():
    counts = [generate_sample(seed, (128, 72)).params["people_placed"] for seed in range(25)]
    assert min(counts) == 0 and max(counts) >= 200


def test_written_dataset_reads_back_through_both_layouts(tmp_path: Path):
    summary = write_dataset(tmp_path / "syn", count=8, seed=4, size=SMALL, splits=(0.5, 0.25, 0.25))
    root = tmp_path / "syn"
    assert summary["split_sizes"] == {"train": 4, "val": 2, "test": 2}
    total = 0
    for split in ("train", "val", "test"):
        disco = open_dataset(root, split)
        plain = open_dataset(root, split, layout="plain")
        assert isinstance(disco, DiscoDataset) and isinstance(plain, PlainDataset)
        assert disco.ids == sorted(plain.ids)
        for sample_id in disco.ids:
            meta = json.loads((root / "meta" / f"{sample_id}.json").read_text())
            from_disco, from_plain = disco.load(sample_id), plain.load(sample_id)
            assert from_disco.count == from_plain.count == meta["count"]
            assert meta["seed"] == sample_seed(4, meta["index"]) and meta["split"] == split
            assert {"scene", "crowd", "objects", "audio", "camera_effects"} <= set(meta)
            density = scipy.io.loadmat(root / "density" / split / f"{sample_id}.mat")["map"]
            assert density.shape == (108, 192)
            assert density.sum() == pytest.approx(meta["count"], abs=1e-3)
            assert from_disco.audio.shape[1] == from_disco.sample_rate  # one second
            assert from_disco.image.shape == (108, 192, 3)
            total += meta["count"]
    assert total == summary["people_per_image"]["total"]


def test_dataset_does_not_depend_on_the_number_of_workers(tmp_path: Path):
    write_dataset(tmp_path / "one", count=4, seed=9, size=(96, 54), workers=1)
    write_dataset(tmp_path / "two", count=4, seed=9, size=(96, 54), workers=2)
    for folder in ("imgs", "auds", "points", "splits"):
        for path in sorted((tmp_path / "one" / folder).iterdir()):
            assert path.read_bytes() == (tmp_path / "two" / folder / path.name).read_bytes()


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        write_dataset(tmp_path, count=1, seed=0, size=(64, 36))


def test_splits_partition_the_samples_by_fraction():
    names = assign_splits(100, (0.7, 0.15, 0.15), seed=1)
    assert (names.count("train"), names.count("val"), names.count("test")) == (70, 15, 15)
    assert names == assign_splits(100, (0.7, 0.15, 0.15), seed=1)
    assert names != assign_splits(100, (0.7, 0.15, 0.15), seed=2)


# -- sound ----------------------------------------------------------------------------------


def _quiet_scene(seed: int):
    scene = sample_audio_scene(np.random.default_rng(seed), indoor=True)
    return replace(scene, applause_db=None, channels=1)


def _syllabic_modulation_db(x: np.ndarray) -> float:
    """Spread (dB) of the 10 ms frame energies: high for a few talkers, low for a murmur."""
    frames = x.mean(axis=0)[:16_000].reshape(100, 160)
    return float(np.std(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-6)))


def test_crowd_loudness_grows_with_the_count_sub_linearly_and_saturates():
    people = [4, 16, 64, 256, 1024]
    level_db = {n: [] for n in people}
    for seed in range(10):
        scene = _quiet_scene(seed)
        for n in people:
            level_db[n].append(20 * np.log10(rms(crowd_sound(n, n // 4, scene, np.random.default_rng(seed + 100)))))
    mean = {n: np.mean(level_db[n]) for n in people}
    assert all(mean[a] < mean[b] for a, b in zip(people, people[1:]))  # louder with more people
    # sub-linear: 4x the people is far less than 4x the amplitude (12 dB) ...
    assert mean[64] - mean[16] < 10.0
    # ... and saturating: the last 4x adds less than the first
    assert mean[1024] - mean[256] < mean[16] - mean[4]
    scene = _quiet_scene(0)
    assert expected_talkers(10_000, scene) <= scene.talk_share * scene.talk_saturation


def test_crowd_texture_turns_from_separate_voices_into_a_murmur():
    few, many = [], []
    for seed in range(8):
        scene = _quiet_scene(seed)
        few.append(_syllabic_modulation_db(crowd_sound(6, 0, scene, np.random.default_rng(seed))))
        many.append(_syllabic_modulation_db(crowd_sound(300, 0, scene, np.random.default_rng(seed))))
    assert np.mean(many) < 0.5 * np.mean(few)


def test_ambient_sound_does_not_depend_on_the_crowd():
    scene = replace(sample_audio_scene(np.random.default_rng(2), indoor=False),
                    ambient=[{"kind": "traffic", "level_db": -30.0, "seed": 5}])
    np.testing.assert_array_equal(ambient_sound(scene, 1.0), ambient_sound(scene, 1.0))
    assert rms(ambient_sound(scene, 1.0)) == pytest.approx(10 ** (-30 / 20), rel=0.01)


def test_microphone_gain_and_ambient_make_loudness_alone_ambiguous():
    # The same crowd through two microphones differs in level more than 10 vs 40 people do.
    scene = _quiet_scene(4)
    loud_mic = replace(scene, mic_gain_db=8.0, agc_target_db=None, ambient=[])
    quiet_mic = replace(scene, mic_gain_db=-8.0, agc_target_db=None, ambient=[])
    small_loud = rms(scene_audio(10, 2, loud_mic, np.random.default_rng(0)))
    big_quiet = rms(scene_audio(40, 8, quiet_mic, np.random.default_rng(0)))
    assert small_loud > big_quiet


def test_native_rates_and_channels_vary_across_scenes():
    scenes = [sample_audio_scene(np.random.default_rng(seed), indoor=bool(seed % 2)) for seed in range(80)]
    assert {s.sample_rate for s in scenes} >= {48_000, 44_100, 16_000}
    assert {s.channels for s in scenes} == {1, 2}
    assert len({tuple(a["kind"] for a in s.ambient) for s in scenes}) > 10
