"""What every network of the model area returns, and the patch geometry shared with ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelOutput:
    """One forward pass. `pir`, `pce`, `attention` are None for baselines and ablations without them."""

    density: torch.Tensor  # B x 1 x h x w, non-negative, sums to count
    count: torch.Tensor  # B
    patch_counts: torch.Tensor  # B x grid_h x grid_w, density summed per patch
    pir: torch.Tensor | None = None  # B x P, probabilities over patches (Eq. 6)
    pce: torch.Tensor | None = None  # B x P, patch-wise count estimate (Eq. 9)
    attention: torch.Tensor | None = None  # B x P, AW_AVT
    pir_logits: torch.Tensor | None = None  # B x P, PIR_PRE (for a numerically stable KL)
    picture_count: torch.Tensor | None = None  # B, DM_PRE's count before the audio fill (audio_fill only)
    sound_count: torch.Tensor | None = None  # B, what the fill counts where it hands a whole frame to the sound (audio_fill only)


def _overlap_matrix(pixels: int, parts: int, like: torch.Tensor) -> torch.Tensor:
    """parts x pixels: the fraction of each pixel [i, i+1) inside each part [j n/k, (j+1) n/k)."""
    edges = torch.arange(parts + 1, dtype=torch.float64) * (pixels / parts)
    starts = torch.arange(pixels, dtype=torch.float64)
    overlap = torch.minimum(starts + 1, edges[1:, None]) - torch.maximum(starts, edges[:-1, None])
    return overlap.clamp(min=0).to(dtype=like.dtype, device=like.device)


def patch_sums(density: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B x 1 x h x w (or B x h x w) map -> B x rows x cols sums per patch, total preserved exactly.

    When the map does not split into whole pixels per patch (9 x 16 into 4 x 4), a pixel on a
    boundary is shared between patches in proportion to its area.
    """
    maps = density.squeeze(1) if density.dim() == 4 else density
    batch, height, width = maps.shape
    rows, cols = grid
    if height % rows == 0 and width % cols == 0:
        return maps.reshape(batch, rows, height // rows, cols, width // cols).sum(dim=(2, 4))
    return _overlap_matrix(height, rows, maps) @ maps @ _overlap_matrix(width, cols, maps).T
