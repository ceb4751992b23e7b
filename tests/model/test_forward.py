"""Forward-pass behaviour: non-negative density that sums to the count, audio handling."""

from __future__ import annotations

import pytest
import torch

from avcc_stream.model import ModelConfig, build_model, patch_sums
from avcc_stream.model.losses import crowd_losses

from .helpers import random_batch


@pytest.mark.parametrize("preset", ["cc-av-lowres", "cc-v-lowres", "csrnet-lowres", "audiocsrnet-lowres"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_density_is_non_negative_and_sums_to_count_and_patch_counts(preset, mode):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset)
    model = build_model(cfg).train(mode == "train")
    with torch.no_grad():
        out = model(*random_batch(cfg, 3))
    assert (out.density >= 0).all()
    assert out.count.sum() > 0
    torch.testing.assert_close(out.density.sum(dim=(1, 2, 3)), out.count)
    torch.testing.assert_close(out.patch_counts.sum(dim=(1, 2)), out.count)
    torch.testing.assert_close(out.patch_counts, patch_sums(out.density, cfg.grid))
    if out.pir is not None:
        torch.testing.assert_close(out.pir.sum(dim=1), torch.ones(3))
        torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(3))


def test_region_shares_sum_to_one_under_bf16_autocast():
    # The daemon runs bf16 autocast on CPUs with bf16 instructions (emulated, but exact, elsewhere).
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("cc-av-lowres")
    model = build_model(cfg).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*random_batch(cfg, 3))
    assert out.pir.dtype == torch.float32
    torch.testing.assert_close(out.pir.sum(dim=1), torch.ones(3), rtol=0, atol=1e-5)


def test_patch_sums_shares_boundary_pixels_and_preserves_the_total():
    density = torch.arange(9 * 16, dtype=torch.float32).view(1, 1, 9, 16)
    sums = patch_sums(density, (4, 4))
    torch.testing.assert_close(sums.sum(), density.sum())
    # Row 2 of the map straddles patch rows 0 and 1 (boundary at 2.25): a quarter of it goes to row 0.
    expected_first = density[0, 0, :2, :4].sum() + 0.25 * density[0, 0, 2, :4].sum()
    torch.testing.assert_close(sums[0, 0, 0], expected_first)


def test_cc_v_runs_with_audio_none():
    cfg = ModelConfig.from_preset("cc-v-lowres")
    model = build_model(cfg).eval()
    images, _ = random_batch(cfg, 2)
    with torch.no_grad():
        out = model(images, None)
    assert torch.isfinite(out.count).all()
    assert model.afe is None


def test_cc_av_output_changes_when_the_audio_changes():
    # At initialisation the fusions' gamma is 0 and the CCM's softmax is nearly uniform, so
    # audio moves the output by ~1e-7 only; after three optimiser steps it must matter clearly.
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("cc-av-lowres")
    model = build_model(cfg).train()
    images, audio = random_batch(cfg, 2)
    density_gt = torch.rand(2, 1, *cfg.density_size) * 0.05
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        crowd_losses(model(images, audio), density_gt, patch_sums(density_gt, cfg.grid), cfg)["total"].backward()
        optimizer.step()
    model.eval()
    tone = 0.5 * torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000).repeat(2, 1)
    with torch.no_grad():
        first = model(images, audio)
        second = model(images, tone)
    relative_change = (first.density - second.density).abs().sum() / first.density.abs().sum()
    assert relative_change > 1e-3
    assert (first.pir - second.pir).abs().max() > 1e-4


@pytest.mark.parametrize("preset", ["cc-av-lowres", "audiocsrnet-lowres"])
def test_audio_models_refuse_missing_or_misshaped_audio(preset):
    cfg = ModelConfig.from_preset(preset)
    model = build_model(cfg).eval()
    images, audio = random_batch(cfg, 2)
    with pytest.raises(ValueError, match="needs audio"):
        model(images, None)
    with pytest.raises(ValueError, match="2 x 16000"):
        model(images, audio[:, :8000])


def test_wrong_image_size_names_the_expected_size():
    cfg = ModelConfig.from_preset("cc-v-lowres")
    with pytest.raises(ValueError, match="3 x 72 x 128"):
        build_model(cfg)(torch.zeros(1, 3, 64, 64))


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["cc-av-lowres", "audiocsrnet-lowres"])
def test_forward_on_cuda_with_autocast_matches_cpu(preset):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset)
    model = build_model(cfg).eval()
    images, audio = random_batch(cfg, 2)
    with torch.no_grad():
        expected = model(images, audio).count
        model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = model(images.cuda(), audio.cuda()).count.float().cpu()
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(("ccm_values", "sound_can_count"), [("visual", False), ("audio_visual", True)])
def test_only_audio_visual_ccm_values_let_the_sound_change_the_count_of_a_featureless_frame(ccm_values, sound_can_count):
    """A black frame gives every patch the same V. With Eq. 11's values (V) each output row is a
    convex mix of identical rows, so no audio embedding can change the count; ReLU(V + A) can."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("cc-av-lowres", ccm_values=ccm_values)
    model = build_model(cfg).eval()
    visual = torch.rand(1, cfg.embed_dim).expand(2, cfg.num_patches, cfg.embed_dim).contiguous()
    quiet, loud = torch.zeros(1, cfg.embed_dim), torch.full((1, cfg.embed_dim), 3.0)
    with torch.no_grad():
        counts = model.decode(visual, torch.cat([quiet, loud])).count
    if sound_can_count:
        assert counts[1] > counts[0] * 1.5
    else:
        torch.testing.assert_close(counts[0], counts[1])


def test_audio_visual_ccm_values_need_audio():
    with pytest.raises(ValueError, match="ccm_values='audio_visual' needs use_audio=True"):
        ModelConfig.from_preset("cc-v-lowres", ccm_values="audio_visual")
