"""Visibility-gated audio fill (ours, `audio_fill: add | blend`): where the picture cannot see, the sound counts.

The co-attention's softmax weights sum to one and its gamma is a single number, so nothing in
the paper's network (as model.md reads it) can hand a dark or occluded patch to the sound while
leaving a clear patch to the picture: a CC-AV either leans on the sound everywhere or barely
uses it (docs/results.md, sessions 2 and 3). Per patch p, with

    S   = ReLU(W A + b)                           one sub-map of density from the sound alone,
                                                  the same for every patch (it says how many,
                                                  not where); W starts as the identity
    g_p = sigmoid(MLP([F_p, mean over p of F_p]))  how far patch p must rely on the sound, read
                                                  from the visual head's features of the patch
                                                  and of the whole frame (a black rectangle,
                                                  darkness and noise show there; an empty
                                                  floor is not hidden)

`add`:   DM_PRE_p + g_p * beta * S               (the sound adds what the picture misses)
`blend`: ReLU((1 - w_p) * DM_PRE_p + w_p * S),  w_p = g_p * beta
                                                  (a per-patch weighted mean of the two
                                                  estimates while w_p is in [0, 1]: all sound on
                                                  a black patch, and on a clear one whatever mix
                                                  counts best)

beta starts at 0, like the fusions' gamma, so a fresh or warm-started network is unchanged.
beta is not clamped to [0, 1]: a clamp has no gradient outside, and a first step below 0 would
switch the sound off for good; the ReLU keeps the map non-negative whatever beta learns.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

FillMode = Literal["add", "blend"]


class AudioFill(nn.Module):
    """(DM_PRE: B x P x Z, A: B x Z, patch features: B x P x C) -> DM_PRE with the sound's share, non-negative."""

    def __init__(self, embed_dim: int, feature_channels: int, mode: FillMode = "add", hidden: int = 32) -> None:
        super().__init__()
        self.mode = mode
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

    def sound(self, audio: torch.Tensor) -> torch.Tensor:
        """A (B x Z) -> S (B x 1 x Z), the sound's sub-map for every patch."""
        return torch.relu(self.sound_map(audio)).unsqueeze(1)

    def sound_count(self, audio: torch.Tensor, patches: int) -> torch.Tensor:
        """A (B x Z) -> B: the sound's own count of the whole frame, beta x S summed over all P
        patches (in density units before the head's scale): what the fill counts on a frame whose
        gate is open everywhere and whose picture shows nothing (DM_PRE = 0). beta is in it
        because the network learns the two together (session 10's model: beta 0.14, S about six
        times the count), so only their product is the sound's estimate."""
        return self.beta * self.sound(audio).sum(dim=(1, 2)) * patches

    def forward(self, dm_pre: torch.Tensor, audio: torch.Tensor, patch_features: torch.Tensor) -> torch.Tensor:
        gate = self.visibility_gate(patch_features).unsqueeze(-1)  # B x P x 1
        if self.mode == "add":
            return dm_pre + gate * self.beta * self.sound(audio)
        weight = gate * self.beta
        return torch.relu((1 - weight) * dm_pre + weight * self.sound(audio))
