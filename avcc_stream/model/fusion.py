"""Inter-branch fusion {S} -> T (paper section 3.2.1, Eq. 2-4), read as channel attention.

model.md's reading of `softmax(C'_S C_S^T) C_T`: bring every source to the target's
resolution and channel count and sum them into K (C x N, N = h * w); three-branch fusions add
Linear(A) (Z -> N) to every channel row, Q = K + Linear(A); AW = softmax(Q K^T / sqrt(N))
(C x C); output = C_T + gamma * AW C_T with gamma learnable and initialised to 0, so a fresh
network starts as plain parallel branches.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SourceAdapter(nn.Module):
    """Brings branch `source` to the resolution and channels of branch `target` (each branch halves the size).

    Going down: 3x3 stride-2 convs, one per halving (HRNet's choice). Going up: 1x1 conv, then
    bilinear upsampling; the conv runs at the low resolution because a 1x1 conv and bilinear
    upsampling commute, which saves FLOPs for the same function.
    """

    def __init__(self, source: int, target: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.scale = 2 ** (source - target)
        if source < target:
            steps = target - source
            layers = [conv_bn(channels[source], channels[source], 3, 2) for _ in range(steps - 1)]
            layers.append(conv_bn(channels[source], channels[target], 3, 2, relu=False))
            self.layers = nn.Sequential(*layers)
        else:
            self.layers = conv_bn(channels[source], channels[target], 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        if self.scale > 1:
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return x


class BranchFusion(nn.Module):
    """{S} -> T channel attention of Eq. 2 (one source) and Eq. 3-4 (two sources, optionally with audio)."""

    def __init__(
        self,
        sources: tuple[int, ...],
        target: int,
        channels: tuple[int, ...],
        tokens: int,
        audio_dim: int | None,
        dropout: float,
        temperature: str = "sqrt_tokens",
    ) -> None:
        super().__init__()
        self.sources = sources
        self.target = target
        self.adapters = nn.ModuleList(SourceAdapter(s, target, channels) for s in sources)
        # Q = K + Linear(A): one value per spatial position, added to every channel row (Eq. 3-4).
        self.audio_projection = (
            nn.Sequential(nn.Linear(audio_dim, tokens), nn.Dropout(dropout)) if audio_dim is not None else None
        )
        self.scale = 1.0 / (math.sqrt(tokens) if temperature == "sqrt_tokens" else tokens)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, branches: list[torch.Tensor], audio: torch.Tensor | None) -> torch.Tensor:
        target = branches[self.target]
        keys = sum(adapter(branches[s]) for s, adapter in zip(self.sources, self.adapters)).flatten(2)  # B x C x N
        queries = keys
        if self.audio_projection is not None:
            if audio is None:
                raise ValueError("this fusion mixes in audio but no audio embedding was given")
            queries = keys + self.audio_projection(audio).unsqueeze(1)
        weights = torch.softmax(queries @ keys.transpose(1, 2) * self.scale, dim=-1)  # AW: B x C x C
        attended = (weights @ target.flatten(2)).view_as(target)  # AW * C_T
        return target + self.gamma * attended


def fusion_schedule(stage: int) -> list[tuple[tuple[int, ...], int]]:
    """(sources, target) pairs after RS stage `stage` (0-based), model.md's schedule.

    After the first stage S1 <-> S2 (Eq. 2); after each later stage {S1,S2}->S3 (Eq. 3),
    {S2,S3}->S1 and {S1,S3}->S2 (Eq. 4).
    """
    if stage == 0:
        return [((0,), 1), ((1,), 0)]
    return [((0, 1), 2), ((1, 2), 0), ((0, 2), 1)]
