"""The paper's three losses (Eq. 8, 10, 12) and their weighted sum (Eq. 13), as model.md reads them.

- DM (Eq. 12): sum of squared differences between the predicted map and the ground truth
  sum-pooled to the same (1/8) size, averaged over the batch.
- PIR (Eq. 8): (1 / sqrt(P)) KL(PIR_GT || PIR), PIR_GT(j) = patch count / image count
  (uniform when the image is empty), averaged over the batch.
- PCE (Eq. 10): sum over patches of ((PCE_GT - PCE) / max(count, 1))^2, averaged over the batch.
Three count terms of ours are off by default: the model's count, the picture's own count on
undegraded frames, and the sound's own count on every frame (the last two for the audio fill).
Terms a model or ablation does not have are returned as zeros, so logs keep the same columns.
"""

from __future__ import annotations

import math

import torch

from avcc_stream.model.config import ModelConfig
from avcc_stream.model.output import ModelOutput


def density_loss(predicted: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 12 per image, batch mean. Both maps are B x 1 x h x w (or B x h x w) of the same size."""
    if predicted.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"ground-truth density is {tuple(target.shape[-2:])}, the model's map is {tuple(predicted.shape[-2:])}: "
            "sum-pool the ground truth to the model's density_size"
        )
    diff = (predicted.reshape(target.shape[0], -1) - target.reshape(target.shape[0], -1)) * scale
    return diff.pow(2).sum(dim=1).mean()


def count_loss(predicted_count: torch.Tensor, density_gt: torch.Tensor) -> torch.Tensor:
    """L1 between predicted and true counts, batch mean (not in the paper; off by default). Also
    the sound-count term, on the audio fill's own count.

    Eq. 12's per-pixel L2 says little about the total while the map is still mislocalised,
    so a short CPU training run under-counts for many steps; this term pins the total early.
    """
    true_count = density_gt.reshape(density_gt.shape[0], -1).sum(dim=1)
    return (predicted_count.reshape(-1) - true_count).abs().mean()


def picture_count_loss(
    picture_count: torch.Tensor, density_gt: torch.Tensor, clear: torch.Tensor
) -> torch.Tensor:
    """L1 between the picture's own count (before the audio fill) and the true count, over the
    frames marked clear (not degraded), divided by the batch size (not in the paper; off by default).

    With the fill, the network can let the sound count part of every frame (docs/results.md,
    session 7: 25-50 % of the count on clear validation frames), and the sound saturates in dense
    scenes. On a frame the picture can see, this term makes the picture count all of it; degraded
    and blacked-out frames are left to the fill. Divided by the whole batch, so the term's weight
    does not grow when few frames in a batch are clear.
    """
    true_count = density_gt.reshape(density_gt.shape[0], -1).sum(dim=1)
    mask = clear.reshape(-1).to(picture_count.dtype)
    return ((picture_count.reshape(-1) - true_count).abs() * mask).sum() / max(mask.numel(), 1)


def pir_target(patch_counts: torch.Tensor) -> torch.Tensor:
    """B x P ground-truth PIR (Eq. 7); uniform for an empty image."""
    counts = patch_counts.reshape(patch_counts.shape[0], -1).float()
    totals = counts.sum(dim=1, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / counts.shape[1])
    return torch.where(totals > 0, counts / totals.clamp(min=1e-12), uniform)


def pir_loss(pir_logits: torch.Tensor, patch_counts: torch.Tensor) -> torch.Tensor:
    """Eq. 8: (1 / sqrt(P)) sum_i PIR_GT(i) log(PIR_GT(i) / PIR(i)), batch mean."""
    target = pir_target(patch_counts)
    log_pir = torch.log_softmax(pir_logits, dim=-1)
    kl = (torch.xlogy(target, target) - target * log_pir).sum(dim=1)  # 0 log 0 = 0
    return kl.mean() / math.sqrt(target.shape[1])


def pce_loss(pce: torch.Tensor, patch_counts: torch.Tensor) -> torch.Tensor:
    """Eq. 10 with the image count clamped to at least 1 (empty images), batch mean."""
    target = patch_counts.reshape(patch_counts.shape[0], -1).float()
    totals = target.sum(dim=1, keepdim=True).clamp(min=1.0)
    return ((target - pce) / totals).pow(2).sum(dim=1).mean()


def crowd_losses(
    output: ModelOutput,
    density_gt: torch.Tensor,
    patch_counts_gt: torch.Tensor,
    cfg: ModelConfig,
    clear: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """{"dm", "pir", "pce", "count", "picture", "sound", "total"}: each term, and total = weighted sum
    of the active terms (Eq. 13, plus the optional count terms when their weights are > 0).

    `clear` (B bools) marks the frames the training left undegraded; the picture-count term
    needs it and the model's `picture_count` (audio fill), and is zero without them.

    `density_gt` is B x 1 x h x w (or B x h x w) at `cfg.density_size`; `patch_counts_gt` is
    B x grid_h x grid_w. PIR / PCE terms are active when the model has that output and
    `cfg.use_pir_pce_losses` is set (Table 3's first ablation turns them off).
    """
    if tuple(patch_counts_gt.shape[1:]) != tuple(cfg.grid):
        raise ValueError(f"patch_counts_gt must be B x {cfg.grid[0]} x {cfg.grid[1]}, got {tuple(patch_counts_gt.shape)}")
    dm = density_loss(output.density, density_gt, cfg.density_loss_scale)
    zero = dm.new_zeros(())
    supervise = cfg.use_pir_pce_losses
    pir = pir_loss(output.pir_logits, patch_counts_gt) if (supervise and output.pir_logits is not None) else zero
    pce = pce_loss(output.pce, patch_counts_gt) if (supervise and output.pce is not None) else zero
    count = count_loss(output.count, density_gt) if cfg.loss_weight_count > 0 else zero
    picture = (
        picture_count_loss(output.picture_count, density_gt, clear)
        if (cfg.loss_weight_picture_count > 0 and output.picture_count is not None and clear is not None)
        else zero
    )
    # The sound's own count (the fill's beta x S over all patches) on every frame: without it the
    # sound's sub-map learns only where the gate opens (model.md, "Sound-count term").
    sound = (
        count_loss(output.sound_count, density_gt)
        if (cfg.loss_weight_sound_count > 0 and output.sound_count is not None)
        else zero
    )
    total = (
        cfg.loss_weight_dm * dm
        + cfg.loss_weight_pir * pir
        + cfg.loss_weight_pce * pce
        + cfg.loss_weight_count * count
        + cfg.loss_weight_picture_count * picture
        + cfg.loss_weight_sound_count * sound
    )
    return {"dm": dm, "pir": pir, "pce": pce, "count": count, "picture": picture, "sound": sound, "total": total}
