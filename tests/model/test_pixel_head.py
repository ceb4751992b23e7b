"""`patch_embedding: pixels` and `ccm_residual`: V's values sit where their density goes, and a
fresh residual co-attention hands V through unchanged (docs/model.md, "Per-pixel V")."""

from __future__ import annotations

import pytest
import torch

from avcc_stream.model import ModelConfig, build_model, patch_sums
from avcc_stream.model.ccm import tile_patch_maps
from avcc_stream.model.visual import unfold_patches

from .helpers import SMALL_WIDTHS, random_batch
from .test_gradients import parameters_without_gradient
from .test_overfit import overfit

PIXELS = {"patch_embedding": "pixels", "ccm_residual": True}


@pytest.mark.parametrize(("grid", "submap"), [((4, 4), (9, 16)), ((8, 8), (9, 16)), ((2, 3), (5, 7))])
def test_unfold_patches_is_the_inverse_of_tiling(grid, submap):
    density = torch.rand(2, 1, grid[0] * submap[0], grid[1] * submap[1])
    per_patch = unfold_patches(density, grid, submap)
    assert per_patch.shape == (2, grid[0] * grid[1], submap[0] * submap[1])
    assert torch.equal(tile_patch_maps(per_patch, grid, submap), density)
    # Patch 1 (row 0, column 1) holds the second block of the top row.
    assert torch.equal(per_patch[:, 1], density[:, 0, : submap[0], submap[1] : 2 * submap[1]].flatten(1))


@pytest.mark.parametrize("preset", ["cc-av-512", "cc-v-512", "cc-av-lowres", "cc-av"])
def test_pixel_head_map_is_the_density_map_where_no_attention_mixes_patches(preset):
    """Without AVT and CCM the density map is the head's one-channel map, pixel for pixel, times the scale."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, patch_embedding="pixels", use_avt=False, use_ccm=False, **SMALL_WIDTHS)
    model = build_model(cfg).eval()
    maps = []
    model.vfe.merge_head.head.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        out = model(*random_batch(cfg, 2))
    assert maps[0].shape == (2, 1, *cfg.density_size)
    torch.testing.assert_close(out.density, maps[0] * model.density_log_scale.exp())


@pytest.mark.parametrize("preset", ["cc-av-512", "cc-v-512"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fresh_residual_co_attention_passes_v_through(preset, mode):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, **PIXELS, **SMALL_WIDTHS)
    model = build_model(cfg).train(mode == "train")
    assert model.ccm.gamma.detach().item() == 0.0
    maps = []
    model.vfe.merge_head.head.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        out = model(*random_batch(cfg, 3))
    torch.testing.assert_close(out.density, maps[0] * model.density_log_scale.exp())
    assert (out.density >= 0).all()
    torch.testing.assert_close(out.patch_counts, patch_sums(out.density, cfg.grid))
    torch.testing.assert_close(out.density.sum(dim=(1, 2, 3)), out.count)


def test_residual_audio_visual_co_attention_lets_the_sound_count_a_featureless_frame_once_gamma_grows():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("cc-av-512", **PIXELS, ccm_values="audio_visual", **SMALL_WIDTHS)
    model = build_model(cfg).eval()
    visual = torch.zeros(2, cfg.num_patches, cfg.embed_dim)  # a black frame after the head's ReLU
    quiet, loud = torch.zeros(1, cfg.embed_dim), torch.full((1, cfg.embed_dim), 3.0)
    with torch.no_grad():
        assert model.decode(visual, torch.cat([quiet, loud])).count.abs().sum() == 0  # gamma = 0: V alone
        model.ccm.gamma.fill_(1.0)
        counts = model.decode(visual, torch.cat([quiet, loud])).count
    assert counts[0] == 0 and counts[1] > 1.0


@pytest.mark.parametrize("preset", ["cc-av-512", "cc-v-512"])
def test_every_parameter_of_the_pixel_variant_learns(preset):
    assert parameters_without_gradient(ModelConfig.from_preset(preset, **PIXELS, **SMALL_WIDTHS)) == []


def test_pixel_variant_overfits_two_samples():
    before, after = overfit(ModelConfig.from_preset("cc-av-lowres", **PIXELS, **SMALL_WIDTHS), steps=300)
    assert after <= 0.1 * before, (before, after)


def test_residual_co_attention_needs_the_co_attention():
    with pytest.raises(ValueError, match="ccm_residual=True needs use_ccm=True"):
        ModelConfig.from_preset("cc-av-512", ccm_residual=True, use_ccm=False)
