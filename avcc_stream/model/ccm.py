"""Cross-modality co-attention (paper section 3.4, Eq. 11) and the density map (section 3.5).

Eq. 11 taken literally is degenerate: A_EXTD repeats A in every column, so every row of
AV_ATTD A_EXTD is constant and the softmax uniform. model.md reads it as
    DM_PRE = softmax(AV_ATTD K / sqrt(Z)) V,   K = (V + A)^T   (K = V^T for CC-V),
so each patch's output is a convex combination of the patches' V rows, non-negative like V.

With those values the sound can only re-weight V: it has no way to add density to a patch
whose picture shows nothing (a black or occluded frame), so CC-AV cannot count from sound
where it matters most (measured: docs/model.md). `audio_values=True` uses ReLU(V + A) as the
values, still non-negative, so A can add to every patch's sub-map.

`residual=True` (ours) returns ReLU(V + gamma * co-attention), gamma learnable from 0 (as the
fusions' gamma): a fresh network's map is V itself, and the co-attention learns a correction.
Without it every patch's map is a mix of all patches' V rows, which with per-pixel V
(`patch_embedding: pixels`) scrambles where the density goes and stalls training (docs/model.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CoAttention(nn.Module):
    """DM_PRE (B x P x Z) from AV_ATTD, V and optionally A."""

    def __init__(self, embed_dim: int, audio_values: bool = False, residual: bool = False) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(embed_dim)
        self.audio_values = audio_values
        self.gamma = nn.Parameter(torch.zeros(())) if residual else None

    def forward(self, attended: torch.Tensor, visual: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        keys = visual if audio is None else visual + audio.unsqueeze(1)  # K^T: B x P x Z
        weights = torch.softmax(attended @ keys.transpose(1, 2) * self.scale, dim=-1)  # B x P x P
        values = torch.relu(keys) if (self.audio_values and audio is not None) else visual
        attended_values = weights @ values
        if self.gamma is None:
            return attended_values
        # gamma may turn negative; the clamp keeps the density map non-negative whatever it learns.
        return torch.relu(visual + self.gamma * attended_values)


def tile_patch_maps(per_patch: torch.Tensor, grid: tuple[int, int], submap: tuple[int, int]) -> torch.Tensor:
    """B x P x Z -> B x 1 x (rows * sub_h) x (cols * sub_w): each patch's Z values as its sub-map, in place."""
    rows, cols = grid
    sub_h, sub_w = submap
    batch = per_patch.shape[0]
    tiles = per_patch.reshape(batch, rows, cols, sub_h, sub_w).permute(0, 1, 3, 2, 4)
    return tiles.reshape(batch, 1, rows * sub_h, cols * sub_w)
