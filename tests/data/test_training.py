"""Training targets: consistent with the augmented image, sum-preserving, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avcc_stream.data.datasets import CrowdSample
from avcc_stream.data.degrade import setting
from avcc_stream.data.density import density_map
from avcc_stream.data.training import Augmentation, CrowdTrainingDataset, crop_points
from avcc_stream.model import ModelConfig, build_model
from avcc_stream.model.losses import crowd_losses
from avcc_stream.preprocess import normalize_image

LOWRES = ModelConfig.from_preset("cc-av-lowres")  # 128x72 input, 4x4 grid, 36x64 density
ALWAYS = Augmentation(crop_probability=1.0, min_crop_scale=0.5, flip_probability=0.5,
                      degrade_probability=0.0, audio_gain_db=6.0)


def crowd_sample(sample_id: str = "s", n: int = 60, width: int = 320, height: int = 180, seed: int = 0,
                 audio: bool = True) -> CrowdSample:
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.uniform([0, 0], [width, height], (n, 2)),
                             [[0.0, 0.0], [width, height], [width - 0.5, 3.0]]]).astype(np.float32)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    sound = (0.1 * rng.standard_normal((2, 48_000))).astype(np.float32) if audio else None
    return CrowdSample(sample_id, image, points, sound, 48_000 if audio else None)


def test_item_has_the_model_shapes_and_types():
    item = CrowdTrainingDataset([crowd_sample()], LOWRES, augment=False)[0]
    assert item["image"].shape == (3, 72, 128) and item["image"].dtype == torch.float32
    assert item["audio"].shape == (16_000,) and item["has_audio"] is True
    assert item["density"].shape == (1, 36, 64)
    assert item["patch_counts"].shape == (4, 4)
    assert item["count"].item() == 63.0
    assert item["density"].sum().item() == pytest.approx(63.0, abs=1e-3)
    assert item["patch_counts"].sum().item() == 63.0
    assert item["id"] == "s"


@pytest.mark.parametrize("preset", ["cc-av", "csrnet-lowres", "audiocsrnet"])
def test_targets_follow_each_presets_sizes(preset: str):
    config = ModelConfig.from_preset(preset)
    item = CrowdTrainingDataset([crowd_sample()], config, augment=False)[0]
    assert tuple(item["image"].shape[1:]) == (config.input_size[1], config.input_size[0])
    assert tuple(item["density"].shape[1:]) == tuple(config.density_size)
    assert tuple(item["patch_counts"].shape) == tuple(config.grid)


def test_augmented_targets_count_exactly_the_heads_inside_the_crop():
    sample = crowd_sample(n=200)
    dataset = CrowdTrainingDataset([sample], LOWRES, augment=True, augmentation=ALWAYS, seed=3)
    crops = set()
    for epoch in range(25):
        dataset.set_epoch(epoch)
        item = dataset[0]
        box, _ = dataset.geometry(sample.id, *sample.size)
        crops.add((box.left, box.top, box.width))
        x, y = sample.points[:, 0], sample.points[:, 1]
        inside = ((x >= box.left) | (box.left == 0)) & ((x < box.right) | (box.right == 320)) & \
                 ((y >= box.top) | (box.top == 0)) & ((y < box.bottom) | (box.bottom == 180))
        assert item["count"].item() == inside.sum()
        assert item["density"].sum().item() == pytest.approx(inside.sum(), abs=1e-3)
        assert item["patch_counts"].sum().item() == inside.sum()
    assert len(crops) > 10  # the crops really vary


def test_density_and_patch_counts_move_with_the_image_under_crop_and_flip():
    # One bright head on black: after any crop/flip, the image's bright spot, the density's
    # peak and the patch holding the head must be at the same relative place.
    image = np.zeros((180, 320, 3), dtype=np.uint8)
    image[38:43, 248:253] = 255
    sample = CrowdSample("one", image, np.array([[250.5, 40.5]], np.float32))
    dataset = CrowdTrainingDataset([sample], LOWRES, augment=True, augmentation=ALWAYS, seed=0)
    flips = set()
    for epoch in range(30):
        dataset.set_epoch(epoch)
        item = dataset[0]
        if item["count"].item() == 0:
            continue  # cropped away
        _, flip = dataset.geometry("one", 320, 180)
        flips.add(flip)
        brightness = item["image"].sum(dim=0)
        iy, ix = np.unravel_index(int(brightness.argmax()), brightness.shape)
        dy, dx = np.unravel_index(int(item["density"][0].argmax()), item["density"].shape[1:])
        # image 72 x 128, density 36 x 64: same relative position within a cell or two
        assert abs((ix + 0.5) / 128 - (dx + 0.5) / 64) < 2.5 / 64
        assert abs((iy + 0.5) / 72 - (dy + 0.5) / 36) < 2.5 / 36
        py, px = np.argwhere(item["patch_counts"].numpy() == 1)[0]
        assert px == int((dx + 0.5) / 64 * 4) and py == int((dy + 0.5) / 36 * 4)
    assert flips == {True, False}


def test_density_only_samples_are_cropped_with_their_map():
    sample = crowd_sample()
    density = density_map(sample.points, 180, 320)
    mapped = CrowdSample("m", sample.image, None, density=density)
    dataset = CrowdTrainingDataset([mapped], LOWRES, augment=True, augmentation=ALWAYS, seed=1)
    for epoch in range(5):
        dataset.set_epoch(epoch)
        item = dataset[0]
        box, _ = dataset.geometry("m", 320, 180)
        expected = density[box.top : box.bottom, box.left : box.right].sum(dtype=np.float64)
        assert item["count"].item() == pytest.approx(expected, rel=1e-5)
        assert item["density"].sum().item() == pytest.approx(expected, rel=1e-4)
        assert item["patch_counts"].sum().item() == pytest.approx(expected, rel=1e-4)


def test_same_seed_and_epoch_give_identical_items_and_epochs_differ():
    samples = [crowd_sample("a"), crowd_sample("b", seed=1)]
    augmentation = Augmentation(degrade_probability=1.0)
    first = CrowdTrainingDataset(samples, LOWRES, augment=True, augmentation=augmentation, seed=5)
    second = CrowdTrainingDataset(samples, LOWRES, augment=True, augmentation=augmentation, seed=5)
    for index in range(2):
        a, b = first[index], second[index]
        for key in ("image", "audio", "density", "patch_counts"):
            assert torch.equal(a[key], b[key])
    first.set_epoch(1)
    assert not torch.equal(first[0]["image"], second[0]["image"])


def test_audio_gain_stays_within_the_configured_range_and_missing_audio_is_zeros():
    sample = crowd_sample()
    plain = CrowdTrainingDataset([sample], LOWRES, augment=False)[0]["audio"]
    dataset = CrowdTrainingDataset([sample], LOWRES, augment=True, augmentation=ALWAYS)
    ratios = []
    for epoch in range(20):
        dataset.set_epoch(epoch)
        ratios.append(20 * np.log10(dataset[0]["audio"].std().item() / plain.std().item()))
    assert max(ratios) <= 6.01 and min(ratios) >= -6.01 and max(ratios) - min(ratios) > 3
    silent = CrowdTrainingDataset([crowd_sample(audio=False)], LOWRES, augment=False)[0]
    assert silent["has_audio"] is False and not silent["audio"].any()


def test_evaluation_degradation_changes_pixels_never_targets():
    sample = crowd_sample()
    regular = CrowdTrainingDataset([sample], LOWRES, augment=False)[0]
    black = CrowdTrainingDataset([sample], LOWRES, augment=False, degradation=setting("occlusion:1"))[0]
    expected_black = normalize_image(np.zeros((72, 128, 3), np.uint8))
    assert torch.allclose(black["image"], expected_black)
    assert torch.equal(black["density"], regular["density"])
    assert black["count"] == regular["count"]
    lowres = CrowdTrainingDataset([sample], ModelConfig.from_preset("cc-av"), augment=False,
                                  degradation=setting("lowres"))[0]
    assert lowres["density"].sum().item() == pytest.approx(63.0, abs=1e-3)


def test_only_frames_left_undegraded_are_marked_clear():
    sample = crowd_sample()
    assert CrowdTrainingDataset([sample], LOWRES, augment=False)[0]["clear"] is True
    assert CrowdTrainingDataset([sample], LOWRES, augment=False, degradation=setting("noise25"))[0]["clear"] is False
    always = Augmentation(degrade_probability=1.0)
    never = Augmentation(degrade_probability=0.0)
    assert CrowdTrainingDataset([sample], LOWRES, augment=True, augmentation=always)[0]["clear"] is False
    assert CrowdTrainingDataset([sample], LOWRES, augment=True, augmentation=never)[0]["clear"] is True


def test_evaluation_degradation_is_the_same_for_every_run_with_the_seed():
    sample = crowd_sample()
    make = lambda seed: CrowdTrainingDataset([sample], LOWRES, augment=False,  # noqa: E731
                                             degradation=setting("lowlight50"), seed=seed)[0]["image"]
    assert torch.equal(make(0), make(0))
    assert not torch.equal(make(0), make(1))


def test_crop_points_keeps_every_head_when_nothing_is_cropped():
    points = np.array([[0.0, 0.0], [320.0, 180.0], [-0.5, 10.0], [100.0, 50.0]])
    from avcc_stream.data.training import CropBox

    assert len(crop_points(points, CropBox(0, 0, 320, 180), 320, 180)) == 4
    assert len(crop_points(points, CropBox(50, 0, 270, 180), 320, 180)) == 2


def test_a_loader_batch_feeds_the_model_and_its_losses():
    samples = [crowd_sample(str(i), n=10 * i, seed=i) for i in range(2)]
    dataset = CrowdTrainingDataset(samples, LOWRES, augment=True, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    model = build_model(LOWRES).eval()
    with torch.no_grad():
        output = model(batch["image"], batch["audio"])
        losses = crowd_losses(output, batch["density"], batch["patch_counts"], LOWRES)
    assert output.density.shape == batch["density"].shape
    assert torch.isfinite(losses["total"])
    assert batch["count"].dtype == torch.float32 and batch["has_audio"].all()
