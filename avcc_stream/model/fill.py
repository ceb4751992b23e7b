"""Visibility-gated audio fill (ours, `audio_fill: true`): where the picture cannot see, the sound counts.

The co-attention's softmax weights sum to one and its gamma is a single number, so nothing in
the paper's network (as model.md reads it) can add the sound's density to a dark or occluded
patch while leaving a clear patch to the picture: a CC-AV either leans on the sound everywhere
or barely uses it (docs/results.md, sessions 2 and 3). This term adds, per patch p,

    fill_p = g_p * beta * ReLU(W A + b),    g_p = sigmoid(MLP([F_p, mean_p F_p]))

to DM_PRE: ReLU(W A + b) is one sub-map of density made from the sound alone, the same for
every patch (the sound says how many, not where); g_p in (0, 1) is how far patch p must rely
on it, read from the visual head's features F_p of that patch and of the whole frame (a black
rectangle, darkness and noise are plain in those features, an empty floor is not hidden).
beta starts at 0, like the fusions' gamma, so a fresh or warm-started network is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class AudioFill(nn.Module):
    """(A: B x Z, patch features: B x P x C) -> density to add to DM_PRE, B x P x Z, non-negative."""

    def __init__(self, embed_dim: int, feature_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.sound_map = nn.Linear(embed_dim, embed_dim)
        # Start as ReLU(A), A's own values (what the audio-visual co-attention values add), so a
        # warm-started AFE's counting carries over instead of being scrambled by a random matrix.
        nn.init.eye_(self.sound_map.weight)
        nn.init.zeros_(self.sound_map.bias)
        self.gate = nn.Sequential(nn.Linear(2 * feature_channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.beta = nn.Parameter(torch.zeros(()))

    def visibility_gate(self, patch_features: torch.Tensor) -> torch.Tensor:
        """B x P x C -> B x P in (0, 1): how much of each patch the sound must count."""
        frame = patch_features.mean(dim=1, keepdim=True).expand_as(patch_features)
        return torch.sigmoid(self.gate(torch.cat([patch_features, frame], dim=-1))).squeeze(-1)

    def forward(self, audio: torch.Tensor, patch_features: torch.Tensor) -> torch.Tensor:
        sound = torch.relu(self.sound_map(audio)).unsqueeze(1)  # B x 1 x Z
        return self.visibility_gate(patch_features).unsqueeze(-1) * self.beta * sound
