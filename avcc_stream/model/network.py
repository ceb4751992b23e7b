"""CrowdCounter: CC-AV / CC-V (Fig. 2) built from one ModelConfig, and `build_model` for every architecture.

AFE (audio -> A) and VFE (image [+ A] -> V) feed the AVT (PIR, PCE, AV_ATTD), whose output goes
through the CCM to DM_PRE; each patch's Z values are reshaped to a sub-map and the sub-maps tile
the density map, whose sum is the count.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from avcc_stream.model.audio import AudioFeatureExtractor
from avcc_stream.model.avt import AudioVisualTransformer
from avcc_stream.model.ccm import CoAttention, tile_patch_maps
from avcc_stream.model.config import ModelConfig
from avcc_stream.model.fill import AudioFill
from avcc_stream.model.output import ModelOutput
from avcc_stream.model.visual import VisualFeatureExtractor


def check_inputs(cfg: ModelConfig, images: torch.Tensor, audio: torch.Tensor | None) -> None:
    """Clear errors for inputs of the wrong shape, or a missing waveform when the model needs one."""
    width, height = cfg.input_size
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, height, width):
        raise ValueError(
            f"model {cfg.name} expects images of shape B x 3 x {height} x {width}, got {tuple(images.shape)}"
        )
    if cfg.uses_audio:
        if audio is None:
            raise ValueError(f"model {cfg.name} needs audio (B x {cfg.audio_num_samples}); use a CC-V model without it")
        if tuple(audio.shape) != (images.shape[0], cfg.audio_num_samples):
            raise ValueError(
                f"model {cfg.name} expects audio of shape {images.shape[0]} x {cfg.audio_num_samples} "
                f"(16 kHz mono, prepare_audio), got {tuple(audio.shape)}"
            )


class Encoded(NamedTuple):
    """What `CrowdCounter.encode` hands to `decode`."""

    visual: torch.Tensor  # V, B x P x Z
    embedding: torch.Tensor | None  # A, B x Z (None for CC-V)
    patch_features: torch.Tensor | None = None  # B x P x C, only for the audio fill


class CrowdCounter(nn.Module):
    """The paper's network; which parts exist is decided by the config's flags (see config.ABLATIONS)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.architecture != "cc":
            raise ValueError(f"CrowdCounter builds architecture 'cc', not {cfg.architecture!r}; use build_model")
        self.config = cfg
        z = cfg.embed_dim
        self.afe = (
            AudioFeatureExtractor(z, cfg.audio_backbone, cfg.audio_channels, cfg.audio_embed_dim, cfg.dropout)
            if cfg.use_audio
            else None
        )
        self.vfe = VisualFeatureExtractor(cfg, audio_dim=z if cfg.audio_reaches_fusion else None)
        # CC-V: A is replaced by a learned projection of V's mean wherever the AVT uses it.
        self.visual_summary = (
            nn.Sequential(nn.Linear(z, z), nn.Dropout(cfg.dropout)) if (cfg.use_avt and not cfg.use_audio) else None
        )
        self.avt = (
            AudioVisualTransformer(
                cfg.num_patches, z, cfg.use_pir_branch, cfg.use_pce_branch, cfg.use_audio, cfg.dropout
            )
            if cfg.use_avt
            else None
        )
        self.ccm = (
            CoAttention(z, audio_values=cfg.ccm_values == "audio_visual", residual=cfg.ccm_residual)
            if cfg.use_ccm
            else None
        )
        self.audio_fill = (
            AudioFill(z, self.vfe.merge_head.width, cfg.audio_fill) if cfg.audio_fill != "off" else None
        )
        # Density head: one learned positive scale. V stays O(1) for the attention products,
        # while a density pixel holds O(0.01) people; exp() keeps the map non-negative.
        self.density_log_scale = nn.Parameter(torch.tensor(math.log(cfg.density_scale_init)))

    def encode(self, images: torch.Tensor, audio: torch.Tensor | None = None) -> Encoded:
        """Images (and waveforms) -> V (B x P x Z), A (B x Z, None for CC-V) and, for the audio
        fill, the visual features per patch."""
        check_inputs(self.config, images, audio)
        embedding = self.afe(audio) if self.afe is not None else None  # Eq. 1
        fusion_audio = embedding if self.config.audio_reaches_fusion else None
        if self.audio_fill is not None:
            visual, patch_features = self.vfe.with_patch_features(images, fusion_audio)
            return Encoded(visual, embedding, patch_features)
        return Encoded(self.vfe(images, fusion_audio), embedding)  # Eq. 5

    def decode(
        self, visual: torch.Tensor, embedding: torch.Tensor | None, patch_features: torch.Tensor | None = None
    ) -> ModelOutput:
        """V and A (and the patch features, for the audio fill) -> density map, count, patch counts
        and the AVT's outputs."""
        cfg = self.config
        pir_logits = pir = pce = attention = None
        if self.avt is not None:
            avt_audio = embedding if embedding is not None else self.visual_summary(visual.mean(dim=1))
            avt = self.avt(visual, avt_audio)  # Eq. 6-10
            attended, pir_logits, pir, pce, attention = avt.attended, avt.pir_logits, avt.pir, avt.pce, avt.attention
        else:
            attended = visual  # without the AVT, AV_ATTD = V
        if self.ccm is not None:
            dm_pre = self.ccm(attended, visual, embedding)  # Eq. 11 as model.md reads it
        else:
            dm_pre = attended  # without the CCM, DM_PRE = AV_ATTD
        scale = self.density_log_scale.exp()
        picture_count = sound_count = None
        if self.audio_fill is not None:
            if embedding is None or patch_features is None:
                raise ValueError("the audio fill needs A and the patch features (use encode)")
            # What the picture counts by itself, for the loss that keeps it counting (losses.py).
            picture_count = dm_pre.float().sum(dim=(1, 2)) * scale
            sound_count = self.audio_fill.sound_count(embedding, dm_pre.shape[1]) * scale
            dm_pre = self.audio_fill(dm_pre, embedding, patch_features)
        dm_pre = dm_pre * scale
        density = tile_patch_maps(dm_pre, cfg.grid, cfg.active_submap_size)
        return ModelOutput(
            density=density,
            # Summed in float32: under bf16 autocast a count of 200-odd would otherwise round to 1.
            count=density.float().sum(dim=(1, 2, 3)),
            patch_counts=dm_pre.float().sum(dim=-1).view(-1, *cfg.grid),
            pir=pir,
            pce=pce,
            attention=attention,
            pir_logits=pir_logits,
            picture_count=picture_count,
            sound_count=sound_count,
        )

    def forward(self, images: torch.Tensor, audio: torch.Tensor | None = None) -> ModelOutput:
        return self.decode(*self.encode(images, audio))


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network a config describes: CrowdCounter, CSRNet or AudioCSRNet, all returning ModelOutput."""
    if cfg.architecture == "cc":
        return CrowdCounter(cfg)
    from avcc_stream.model.baselines import AudioCSRNet, CSRNet

    return {"csrnet": CSRNet, "audiocsrnet": AudioCSRNet}[cfg.architecture](cfg)
