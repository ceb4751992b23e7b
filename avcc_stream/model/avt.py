"""Audio-visual transformer (paper section 3.3, Eq. 6-10): PIR, PCE and the attended modality AV_ATTD.

Inputs are V (B x P x Z) and A (B x Z): the audio embedding for CC-AV, or for CC-V a learned
projection of V's mean, so both variants share this code. Products of Z-vectors are divided by
sqrt(Z) (transformer-style dot-product scaling, our reading) so the linear layers see O(1)
inputs whatever Z is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AVTOutput:
    attended: torch.Tensor  # AV_ATTD, B x P x Z
    pir_logits: torch.Tensor | None  # PIR_PRE, B x P
    pir: torch.Tensor | None  # softmax(PIR_PRE), B x P
    pce: torch.Tensor | None  # B x P
    attention: torch.Tensor | None  # AW_AVT, B x P


class RowwiseLinear(nn.Module):
    """Linear_{Row-wise} of Eq. 9: one shared Linear(P -> 1) applied to every row of a P x P matrix."""

    def __init__(self, num_patches: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_patches, 1)

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.linear(matrix).squeeze(-1)


class AudioVisualTransformer(nn.Module):
    """PIR (Eq. 6), PCE (Eq. 9), AW_AVT = softmax(Linear([PIR_PRE, PCE])), AV_ATTD = AW_AVT (.) V.

    `audio_is_real=False` (CC-V): PIR_PRE uses the PCE-style product (V + A) V^T reduced by its
    own row-wise linear layer instead of V A (paper section 5.2, change 2).
    Ablations: without the PIR branch AW_AVT = softmax(Linear(PCE)); without the PCE branch
    AW_AVT = softmax(Linear(PIR_PRE)).
    """

    def __init__(
        self,
        num_patches: int,
        embed_dim: int,
        use_pir_branch: bool,
        use_pce_branch: bool,
        audio_is_real: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        if not (use_pir_branch or use_pce_branch):
            raise ValueError("the AVT needs at least one of the PIR and PCE branches")
        self.scale = 1.0 / math.sqrt(embed_dim)
        self.audio_is_real = audio_is_real
        p = num_patches
        self.pir_reduce = RowwiseLinear(p) if (use_pir_branch and not audio_is_real) else None
        self.pir_linear = nn.Linear(p, p) if use_pir_branch else None
        self.pce_linear = RowwiseLinear(p) if use_pce_branch else None
        streams = int(use_pir_branch) + int(use_pce_branch)
        # Dropout after the attention-weight linear layer (paper section 4). PIR_PRE and PCE are
        # supervised outputs and are left undropped: zeroing a regression output biases its loss.
        self.weight_linear = nn.Sequential(nn.Linear(streams * p, p), nn.Dropout(dropout))

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> AVTOutput:
        audio_rows = audio.unsqueeze(1)  # B x 1 x Z, broadcast to every patch row
        pir_logits = pir = pce = None
        streams = []
        cross = None
        if self.pce_linear is not None or self.pir_reduce is not None:
            cross = (visual + audio_rows) @ visual.transpose(1, 2) * self.scale  # (V + A) V^T, B x P x P
        if self.pir_linear is not None:
            if self.audio_is_real:
                product = (visual @ audio.unsqueeze(-1)).squeeze(-1) * self.scale  # V A, B x P
            else:
                product = self.pir_reduce(cross)
            pir_logits = self.pir_linear(product)  # PIR_PRE (Eq. 6)
            # float32 even under bf16/fp16 autocast: the PIR is published as each region's share
            # of the crowd, and 16 shares rounded to bf16 sum to 1 only within ~1e-3.
            pir = torch.softmax(pir_logits.float(), dim=-1)
            streams.append(pir_logits)
        if self.pce_linear is not None:
            pce = self.pce_linear(cross)  # Eq. 9
            streams.append(pce)
        attention = torch.softmax(self.weight_linear(torch.cat(streams, dim=-1)), dim=-1)  # AW_AVT
        attended = attention.unsqueeze(-1) * visual  # AV_ATTD: row scaling of V
        return AVTOutput(attended=attended, pir_logits=pir_logits, pir=pir, pce=pce, attention=attention)
