"""The three losses: zero at the ground truth, and hand-computed values on a tiny example."""

from __future__ import annotations

import math

import pytest
import torch

from avcc_stream.model import ModelConfig, ModelOutput, patch_sums
from avcc_stream.model.losses import crowd_losses, density_loss, pce_loss, pir_loss, pir_target

# A 2 x 2 grid, 4 x 4 density map: patch counts [[2, 0], [1, 1]], image count 4.
PATCH_COUNTS = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])
CFG = ModelConfig.from_preset("cc-av-lowres", input_size=(64, 64), grid=(2, 2), embed_dim=4, stem_stride=1)


def density_with(patch_counts: torch.Tensor) -> torch.Tensor:
    """4 x 4 map whose 2 x 2 patches hold the given counts, spread evenly."""
    return (patch_counts / 4).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).unsqueeze(1)


def output(density, pir_logits=None, pce=None) -> ModelOutput:
    pir = torch.softmax(pir_logits, dim=-1) if pir_logits is not None else None
    return ModelOutput(
        density=density, count=density.sum(dim=(1, 2, 3)), patch_counts=patch_sums(density, (2, 2)),
        pir=pir, pce=pce, attention=None, pir_logits=pir_logits,
    )  # fmt: skip


def test_the_tiny_example_config_has_a_4x4_density_map():
    assert CFG.density_size == (4, 4)


def test_every_loss_is_zero_at_the_ground_truth():
    gt_density = density_with(PATCH_COUNTS)
    target = pir_target(PATCH_COUNTS)
    out = output(gt_density, pir_logits=torch.log(target.clamp(min=1e-30)), pce=PATCH_COUNTS.flatten(1))
    losses = crowd_losses(out, gt_density, PATCH_COUNTS, CFG)
    for name in ("dm", "pir", "pce", "total"):
        assert losses[name].item() == pytest.approx(0.0, abs=1e-12), name


def test_hand_computed_values():
    gt_density = density_with(PATCH_COUNTS)
    # DM: predict 0.25 everywhere. GT pixels: 0.5 (4 px), 0 (4 px), 0.25 (8 px)
    # -> 4 * 0.25^2 + 4 * 0.25^2 + 0 = 0.5
    assert density_loss(torch.full((1, 1, 4, 4), 0.25), gt_density).item() == pytest.approx(0.5)
    # PIR: uniform prediction vs GT [0.5, 0, 0.25, 0.25]
    # KL = 0.5 ln(0.5 / 0.25) + 0 + 0.25 ln 1 + 0.25 ln 1 = 0.5 ln 2, scaled by 1/sqrt(4).
    assert pir_loss(torch.zeros(1, 4), PATCH_COUNTS).item() == pytest.approx(0.25 * math.log(2))
    # PCE: predict [1, 1, 1, 1] vs GT [2, 0, 1, 1], count 4: ((1)^2 + (-1)^2 + 0 + 0) / 16 = 0.125
    assert pce_loss(torch.ones(1, 4), PATCH_COUNTS).item() == pytest.approx(0.125)
    out = output(torch.full((1, 1, 4, 4), 0.25), pir_logits=torch.zeros(1, 4), pce=torch.ones(1, 4))
    losses = crowd_losses(out, gt_density, PATCH_COUNTS, CFG)
    assert losses["total"].item() == pytest.approx(0.5 + 0.25 * math.log(2) + 0.125)


def test_empty_image_uses_a_uniform_pir_target_and_count_one_for_pce():
    empty = torch.zeros(1, 2, 2)
    torch.testing.assert_close(pir_target(empty), torch.full((1, 4), 0.25))
    assert pir_loss(torch.zeros(1, 4), empty).item() == pytest.approx(0.0, abs=1e-7)
    assert pce_loss(torch.full((1, 4), 0.5), empty).item() == pytest.approx(4 * 0.25)


def test_weights_and_the_no_pir_pce_losses_ablation():
    gt_density = density_with(PATCH_COUNTS)
    out = output(torch.full((1, 1, 4, 4), 0.25), pir_logits=torch.zeros(1, 4), pce=torch.ones(1, 4))
    weighted = crowd_losses(out, gt_density, PATCH_COUNTS, ModelConfig.from_dict({**CFG.to_dict(), "loss_weight_dm": 2.0}))
    assert weighted["total"].item() == pytest.approx(2 * 0.5 + 0.25 * math.log(2) + 0.125)
    ablated_cfg = ModelConfig.from_dict({**CFG.to_dict(), "use_pir_pce_losses": False})
    ablated = crowd_losses(out, gt_density, PATCH_COUNTS, ablated_cfg)
    assert ablated["total"].item() == pytest.approx(0.5)
    assert ablated["pir"].item() == ablated["pce"].item() == 0.0


def test_baseline_outputs_have_only_the_density_loss():
    gt_density = density_with(PATCH_COUNTS)
    losses = crowd_losses(output(torch.full((1, 1, 4, 4), 0.25)), gt_density, PATCH_COUNTS, CFG)
    assert losses["total"].item() == pytest.approx(0.5)


def test_a_ground_truth_map_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="density_size"):
        crowd_losses(output(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 8, 8), PATCH_COUNTS, CFG)


def test_count_loss_is_zero_at_the_truth_and_l1_otherwise() -> None:
    from avcc_stream.model.losses import count_loss

    density = torch.zeros(2, 1, 2, 2)
    density[0, 0, 0, 0] = 3.0
    density[1, 0, 1, 1] = 1.0
    assert count_loss(torch.tensor([3.0, 1.0]), density).item() == 0.0
    # |5 - 3| = 2 and |0 - 1| = 1: mean 1.5
    assert count_loss(torch.tensor([5.0, 0.0]), density).item() == pytest.approx(1.5)


def test_count_term_enters_the_total_only_when_weighted() -> None:
    cfg = ModelConfig.from_preset("csrnet-lowres")
    h, w = cfg.density_size
    density_gt = torch.zeros(1, 1, h, w)
    density_gt[0, 0, 0, 0] = 2.0
    predicted = torch.zeros(1, 1, h, w)
    out = ModelOutput(density=predicted, count=predicted.sum(dim=(1, 2, 3)), patch_counts=patch_sums(predicted, cfg.grid))
    patches = torch.zeros(1, *cfg.grid)
    plain = crowd_losses(out, density_gt, patches, cfg)
    weighted = crowd_losses(out, density_gt, patches, cfg.model_copy(update={"loss_weight_count": 0.5}))
    assert plain["count"].item() == 0.0
    assert weighted["count"].item() == pytest.approx(2.0)
    assert weighted["total"].item() == pytest.approx(plain["total"].item() + 1.0)


def test_picture_count_loss_counts_only_clear_frames_over_the_whole_batch() -> None:
    from avcc_stream.model.losses import picture_count_loss

    density = torch.zeros(3, 1, 2, 2)
    density[:, 0, 0, 0] = torch.tensor([4.0, 10.0, 2.0])
    picture = torch.tensor([1.0, 0.0, 2.0])  # errors 3, 10 and 0
    clear = torch.tensor([True, False, True])
    # Frame 2 is degraded: its miss of 10 is the fill's to cover. (3 + 0) / 3 frames.
    assert picture_count_loss(picture, density, clear).item() == pytest.approx(1.0)
    assert picture_count_loss(picture, density, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_picture_count_term_enters_the_total_only_when_weighted_and_given_the_clear_frames() -> None:
    cfg = ModelConfig.from_preset(
        "cc-av-512", patch_embedding="pixels", ccm_residual=True, audio_fill="blend", loss_weight_picture_count=0.5
    )
    h, w = cfg.density_size
    density_gt = torch.zeros(1, 1, h, w)
    density_gt[0, 0, 0, 0] = 6.0
    predicted = density_gt.clone()
    out = ModelOutput(
        density=predicted, count=predicted.sum(dim=(1, 2, 3)), patch_counts=patch_sums(predicted, cfg.grid),
        picture_count=torch.tensor([2.0]),  # the picture saw 2 of 6, the sound filled in the rest
    )  # fmt: skip
    patches = patch_sums(density_gt, cfg.grid)
    clear = crowd_losses(out, density_gt, patches, cfg, torch.tensor([True]))
    degraded = crowd_losses(out, density_gt, patches, cfg, torch.tensor([False]))
    unweighted = crowd_losses(out, density_gt, patches, cfg.model_copy(update={"loss_weight_picture_count": 0.0}),
                              torch.tensor([True]))  # fmt: skip
    assert clear["picture"].item() == pytest.approx(4.0)
    assert clear["total"].item() == pytest.approx(degraded["total"].item() + 2.0)
    assert degraded["picture"].item() == 0.0 and unweighted["picture"].item() == 0.0
    assert crowd_losses(out, density_gt, patches, cfg)["picture"].item() == 0.0  # no clear flags: no term


def test_picture_count_weight_without_the_audio_fill_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="loss_weight_picture_count needs audio_fill"):
        ModelConfig.from_preset("cc-av-512", loss_weight_picture_count=1.0)


def test_sound_count_term_is_the_l1_of_the_sounds_own_count_on_every_frame() -> None:
    cfg = ModelConfig.from_preset(
        "cc-av-512", patch_embedding="pixels", ccm_residual=True, audio_fill="blend", loss_weight_sound_count=0.25
    )
    h, w = cfg.density_size
    density_gt = torch.zeros(2, 1, h, w)
    density_gt[:, 0, 0, 0] = torch.tensor([6.0, 1.0])
    predicted = density_gt.clone()
    out = ModelOutput(
        density=predicted, count=predicted.sum(dim=(1, 2, 3)), patch_counts=patch_sums(predicted, cfg.grid),
        sound_count=torch.tensor([2.0, 4.0]),  # errors 4 and 3, whatever the picture shows
    )  # fmt: skip
    patches = patch_sums(density_gt, cfg.grid)
    weighted = crowd_losses(out, density_gt, patches, cfg, torch.tensor([True, False]))
    unweighted = crowd_losses(out, density_gt, patches, cfg.model_copy(update={"loss_weight_sound_count": 0.0}))
    assert weighted["sound"].item() == pytest.approx(3.5)
    assert weighted["total"].item() == pytest.approx(unweighted["total"].item() + 0.25 * 3.5)
    assert unweighted["sound"].item() == 0.0


@pytest.mark.parametrize("fill", ["off", "add"])
def test_sound_count_weight_without_the_blend_fill_is_a_config_error(fill: str) -> None:
    with pytest.raises(ValueError, match="loss_weight_sound_count needs audio_fill: blend"):
        ModelConfig.from_preset(
            "cc-av-512", patch_embedding="pixels", ccm_residual=True, audio_fill=fill, loss_weight_sound_count=1.0
        )
