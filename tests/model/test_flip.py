"""Horizontal-flip averaging (avcc_stream/model/flip.py): the mirrored pass is mirrored back before
it is averaged, so every spatial reading keeps pointing at the same part of the scene."""

from __future__ import annotations

import pytest
import torch

from avcc_stream.model import ModelConfig, build_model, patch_sums
from avcc_stream.model.flip import flip_averaged
from avcc_stream.model.output import ModelOutput

from .helpers import SMALL_WIDTHS, random_batch

GRID = (2, 4)


def mirror_equivariant(images: torch.Tensor, audio: torch.Tensor | None) -> ModelOutput:
    """A stand-in network whose density is the image's first channel: mirroring the input mirrors
    every output, so flip averaging must give back the plain pass exactly."""
    density = images[:, :1].clamp(min=0)
    patch_counts = patch_sums(density, GRID)
    pir = patch_counts.flatten(1) / patch_counts.flatten(1).sum(dim=1, keepdim=True)
    heard = torch.zeros(images.shape[0]) if audio is None else audio.mean(dim=1)
    return ModelOutput(density=density, count=density.sum(dim=(1, 2, 3)), patch_counts=patch_counts,
                       pir=pir, pce=patch_counts.flatten(1), attention=pir, pir_logits=pir.log(),
                       picture_count=density.sum(dim=(1, 2, 3)), sound_count=heard)


def test_an_equivariant_network_is_left_unchanged():
    images = torch.zeros(2, 3, 8, 16)
    images[0, 0, :, :3] = 1.0  # all of the first image's people on the left edge
    images[1, 0, 5:, 10:] = torch.rand(3, 6) + 0.1
    audio = torch.randn(2, 100)
    plain = mirror_equivariant(images, audio)
    averaged = flip_averaged(mirror_equivariant, images, audio)
    for name in ("density", "count", "patch_counts", "pir", "pce", "attention", "pir_logits", "picture_count",
                 "sound_count"):
        assert torch.allclose(getattr(averaged, name), getattr(plain, name), atol=1e-6), name
    # The left-edge crowd stayed on the left (a missing un-mirroring would split it across both edges).
    assert float(averaged.patch_counts[0, :, -1].sum()) == 0.0


@pytest.mark.parametrize("preset", ["cc-av-512", "cc-v-512"])
def test_a_real_network_counts_a_scene_and_its_mirror_image_the_same(preset):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, **SMALL_WIDTHS)
    model = build_model(cfg).eval()
    images, audio = random_batch(cfg, 2)
    with torch.no_grad():
        plain = model(images, audio)
        mirrored = model(images.flip(-1), audio)
        averaged = flip_averaged(model, images, audio)
        of_mirror = flip_averaged(model, images.flip(-1), audio)
    # The network alone is not mirror-symmetric, which is why averaging can help at all.
    assert not torch.allclose(plain.density, mirrored.density.flip(-1), atol=1e-6)
    assert torch.allclose(averaged.count, (plain.count + mirrored.count) / 2, rtol=1e-5)
    assert torch.allclose(averaged.density, of_mirror.density.flip(-1), rtol=1e-4, atol=1e-7)
    assert torch.allclose(averaged.patch_counts, of_mirror.patch_counts.flip(-1), rtol=1e-4, atol=1e-7)
    assert torch.allclose(averaged.patch_counts.sum(dim=(1, 2)), averaged.count, rtol=1e-4)
    if averaged.pir is not None:
        assert torch.allclose(averaged.pir.sum(dim=1), torch.ones(2), atol=1e-5)
        mirrored_pir = of_mirror.pir.reshape(2, *cfg.grid).flip(-1).reshape(2, -1)
        assert torch.allclose(averaged.pir, mirrored_pir, atol=1e-6)
        assert torch.allclose(averaged.pir_logits.softmax(dim=1), averaged.pir, atol=1e-6)
