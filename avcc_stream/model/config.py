"""One configuration object for every network of the model area: presets and ablations are data.

A `ModelConfig` says which architecture to build (the paper's CC network, CSRNet or
AudioCSRNet), at which input size, with which patch grid and embedding size, and which parts of
CC-AV are switched off. Every other shape is derived from these fields, so a low-resolution
model, a vision-only model or one of Table 3's ablations is a different config, never a fork of
the code. `to_dict()` / `from_dict()` round-trip through JSON; checkpoints store that dict.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Architecture = Literal["cc", "csrnet", "audiocsrnet"]
AudioBackbone = Literal["vggish", "vggish-conv"]

# The VGGish convention: one second at 16 kHz is one 96 x 64 log-mel patch.
AUDIO_SAMPLE_RATE = 16_000
AUDIO_SECONDS = 1.0

# Downsampling factor of CSRNet's VGG-16 front end (three 2x2 max-pools).
CSRNET_STRIDE = 8


class ModelConfig(BaseModel):
    """Everything needed to build one network; JSON-safe and immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("cc-av", title="preset this config came from (kept when fields are overridden)")
    architecture: Architecture = Field("cc", title="cc (CC-AV / CC-V), csrnet or audiocsrnet")
    input_size: tuple[int, int] = Field((1024, 576), title="(width, height) of the input image")
    grid: tuple[int, int] = Field((8, 8), title="(rows, columns) of the patch grid, P = rows * columns")

    # --- CC network: visual feature extractor (paper section 3.2) ---
    embed_dim: int = Field(144, title="Z, the per-patch embedding size (also the sub-map pixel count)")
    stem_stride: Literal[1, 2, 4] = Field(
        4, title="total downsampling of the two 3x3 stem convs (4 = stride 2 each; 1 in low-res)"
    )
    input_unshuffle: Literal[1, 2] = Field(
        1,
        title="pixel-unshuffle the image by this factor before the stem (ours): with 2, a 1024x576 input "
        "gives the trunk the feature maps a 512x288 one would, while the stem's first conv reads all "
        "pixels as 12 channels, so people a few pixels tall are not averaged away",
    )
    stem_units: int = Field(
        0,
        ge=0,
        title="bottleneck units between the stem's two convs (ours; 0 in every preset): extra depth at the "
        "highest resolution the network has, where heads a few pixels tall are still more than a speck. "
        "Each unit's last batch norm starts at zero, so a checkpoint without them warm-starts exactly",
    )
    branch_channels: tuple[int, int, int] = Field((32, 64, 128), title="channels of S1, S2, S3")
    units_per_block: int = Field(4, ge=1, title="bottleneck units per residual-structure (RS) block")
    num_stages: int = Field(3, ge=2, title="RS stages; the first has S1, S2, later ones S1, S2, S3")
    merge_channels: int = Field(256, title="channels after merging the branches")
    submap_size: tuple[int, int] | None = Field(
        None, title="(h, w) each patch's Z values are reshaped to; None derives it from Z and the patch aspect"
    )
    fusion_temperature: Literal["sqrt_tokens", "tokens"] = Field(
        "tokens",
        title="inter-branch attention logits divided by N (default) or sqrt(N) (model.md); with sqrt(N) "
        "the C x C softmax saturates to one-hot at initialisation (see docs/model.md)",
    )
    density_scale_init: float = Field(0.01, gt=0.0, title="initial value of the density head's learned scale")
    patch_embedding: Literal["pooled", "pixels"] = Field(
        "pooled",
        title="how V is made: pooled = the head's Z channels average-pooled per patch (model.md); pixels = "
        "a one-channel map at the density map's size, each patch's sub-map unfolded into its Z values "
        "(ours: V's values sit where their density goes; docs/model.md says why)",
    )

    # --- audio feature extractor (paper section 3.1) ---
    audio_backbone: AudioBackbone = Field(
        "vggish-conv",
        title="vggish: full VGGish with its 3 fc layers (~72 M params); vggish-conv: its conv "
        "stack, global average pool and Linear(512 -> 128)",
    )
    audio_channels: tuple[int, int, int, int] = Field(
        (64, 128, 256, 512), title="VGGish conv widths; converted VGGish weights need the default"
    )
    audio_embed_dim: int = Field(128, title="size of the audio CNN's embedding before Linear(-> Z)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, title="dropout after the linear layers (paper section 4)")

    # --- ablations (paper Table 3 and ours); see ABLATIONS below for what replaces each part ---
    use_audio: bool = Field(True, title="False: CC-V, no audio anywhere")
    use_audio_in_fusion: bool = Field(True, title="Linear(A) term in the three-branch fusions")
    use_inter_branch_fusion: bool = Field(True, title="the Eq. 2-4 fusions between branches")
    use_multi_branch: bool = Field(True, title="False: only the S1 branch")
    use_avt: bool = Field(True, title="the audio-visual transformer (PIR, PCE, AV_ATTD)")
    use_pir_branch: bool = Field(True, title="the PIR stream of the AVT")
    use_pce_branch: bool = Field(True, title="the PCE stream of the AVT")
    use_ccm: bool = Field(True, title="the co-attention module (Eq. 11)")
    ccm_values: Literal["visual", "audio_visual"] = Field(
        "visual",
        title="values of the co-attention: V (Eq. 11, model.md) or ReLU(V + A), which lets the sound "
        "add density where the picture shows none (ours; docs/model.md says why)",
    )
    ccm_residual: bool = Field(
        False,
        title="DM_PRE = ReLU(V + gamma * co-attention), gamma from 0, instead of the co-attention alone "
        "(ours; pairs with patch_embedding: pixels, docs/model.md)",
    )
    audio_fill: Literal["off", "add", "blend"] = Field(
        "off",
        title="visibility-gated audio fill (ours; docs/model.md): per patch, a gate read from the patch's "
        "visual features decides how far the sound's own sub-map counts there; add: DM_PRE + gate x "
        "beta x sound; blend: a per-patch weighted mean of DM_PRE and the sound (true = add)",
    )

    @field_validator("audio_fill", mode="before")
    @classmethod
    def _fill_from_bool(cls, value: Any) -> Any:
        # Session 4's first recipe wrote `audio_fill: true` (then a bool); its checkpoints still load.
        return {True: "add", False: "off"}.get(value, value) if isinstance(value, bool) else value

    use_pir_pce_losses: bool = Field(True, title="supervise PIR and PCE (Eq. 8, 10)")

    # --- losses (Eq. 13) ---
    loss_weight_pir: float = Field(1.0, ge=0.0)
    loss_weight_pce: float = Field(1.0, ge=0.0)
    loss_weight_dm: float = Field(1.0, ge=0.0)
    loss_weight_count: float = Field(
        0.0, ge=0.0, title="L1 count term added to Eq. 13 (0 = the paper's loss; shipped CPU runs use it)"
    )
    loss_weight_picture_count: float = Field(
        0.0,
        ge=0.0,
        title="L1 term on the picture's own count (DM_PRE before the audio fill) for frames the training "
        "did not degrade (ours; needs audio_fill): where the picture can see, it must count by itself, "
        "so the fill's gate learns to close on clear frames instead of letting the sound count there",
    )
    loss_weight_sound_count: float = Field(
        0.0,
        ge=0.0,
        title="L1 term on the sound's own count of the whole frame (the audio fill's beta x sub-map over all "
        "patches) for every frame (ours; needs audio_fill: blend, which mixes the sound's and the picture's "
        "estimates of the same density): keeps the sound counting while the picture trains",
    )
    density_loss_scale: float = Field(
        1.0, gt=0.0, title="both maps multiplied by this before Eq. 12 (DISCO code's LOG_PARA is 100)"
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        width, height = self.input_size
        rows, cols = self.grid
        if min(width, height, rows, cols) <= 0:
            raise ValueError(f"input_size {self.input_size} and grid {self.grid} must be positive")
        if width % cols or height % rows:
            raise ValueError(
                f"input_size {self.input_size} (width, height) must split into whole-pixel patches "
                f"on grid {self.grid} (rows, columns)"
            )
        if self.architecture != "cc":
            if width % CSRNET_STRIDE or height % CSRNET_STRIDE:
                raise ValueError(f"{self.architecture} needs input_size divisible by {CSRNET_STRIDE}, got {self.input_size}")
            if self.use_audio != (self.architecture == "audiocsrnet"):
                raise ValueError(f"architecture {self.architecture} requires use_audio={self.architecture == 'audiocsrnet'}")
            return self
        # The merge works at 1/2 of S3, i.e. 1/8 of the stem output.
        merge_stride = self.trunk_stride * 8
        if width % merge_stride or height % merge_stride:
            raise ValueError(
                f"input_size {self.input_size} must be divisible by input_unshuffle * stem_stride * 8 = {merge_stride}"
            )
        if self.use_audio_in_fusion and not self.use_audio:
            raise ValueError("use_audio_in_fusion=True requires use_audio=True (CC-V has no audio)")
        if self.use_avt and not (self.use_pir_branch or self.use_pce_branch):
            raise ValueError("an AVT without both PIR and PCE branches is use_avt=False")
        if self.ccm_values == "audio_visual" and not (self.use_audio and self.use_ccm):
            raise ValueError("ccm_values='audio_visual' needs use_audio=True and use_ccm=True")
        if self.ccm_residual and not self.use_ccm:
            raise ValueError("ccm_residual=True needs use_ccm=True (it is a form of the co-attention)")
        if self.audio_fill != "off" and not (self.use_audio and self.patch_embedding == "pixels"):
            raise ValueError(f"audio_fill={self.audio_fill!r} needs use_audio=True and patch_embedding='pixels'")
        if self.loss_weight_picture_count > 0 and self.audio_fill == "off":
            raise ValueError("loss_weight_picture_count needs audio_fill (add or blend): without it the "
                             "picture's count is the model's count; use loss_weight_count")
        if self.loss_weight_sound_count > 0 and self.audio_fill != "blend":
            raise ValueError("loss_weight_sound_count needs audio_fill: blend (in add mode the sound's "
                             "sub-map is what the picture misses, not a count of the whole frame)")
        if self.use_audio and not (
            self.audio_reaches_fusion or self.use_avt or self.use_ccm or self.audio_fill != "off"
        ):
            raise ValueError("use_audio=True but no part of the network uses the audio; set use_audio=False")
        if self.submap_size is not None and self.submap_size[0] * self.submap_size[1] != self.embed_dim:
            raise ValueError(f"submap_size {self.submap_size} must hold embed_dim={self.embed_dim} values")
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A preset by name (see `PRESETS`), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
        return cls.from_dict({"name": name, **PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys and bad values raise ValueError naming the key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
            )
            raise ValueError(f"invalid model config: {problems}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        return self.model_dump(mode="json")

    # ------------------------------------------------------------------ derived shapes
    @property
    def uses_audio(self) -> bool:
        """Whether forward() needs the B x 16000 waveform."""
        return self.use_audio

    @property
    def trunk_stride(self) -> int:
        """Input pixels per pixel of the stem's output (S1): the unshuffle times the stem's strides."""
        return self.input_unshuffle * self.stem_stride

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def patch_size(self) -> tuple[int, int]:
        """(width, height) of one patch in input pixels."""
        return self.input_size[0] // self.grid[1], self.input_size[1] // self.grid[0]

    @property
    def audio_reaches_fusion(self) -> bool:
        return self.use_audio and self.use_audio_in_fusion and self.use_inter_branch_fusion and self.use_multi_branch

    @property
    def active_submap_size(self) -> tuple[int, int]:
        """(h, w) of the sub-map one patch's Z values are reshaped to (model.md, CCM section)."""
        if self.submap_size is not None:
            return self.submap_size
        return _factor_closest_to_aspect(self.embed_dim, self.patch_size[0] / self.patch_size[1])

    @property
    def density_size(self) -> tuple[int, int]:
        """(h, w) of the returned density map."""
        width, height = self.input_size
        if self.architecture != "cc":
            return height // CSRNET_STRIDE, width // CSRNET_STRIDE
        sub_h, sub_w = self.active_submap_size
        return self.grid[0] * sub_h, self.grid[1] * sub_w

    @property
    def audio_num_samples(self) -> int:
        return int(AUDIO_SAMPLE_RATE * AUDIO_SECONDS)

    @property
    def has_pir(self) -> bool:
        return self.architecture == "cc" and self.use_avt and self.use_pir_branch

    @property
    def has_pce(self) -> bool:
        return self.architecture == "cc" and self.use_avt and self.use_pce_branch


def _factor_closest_to_aspect(count: int, aspect: float) -> tuple[int, int]:
    """(h, w) with h * w == count and w / h as close as possible to `aspect` (144, 16/9 -> 9 x 16)."""
    pairs = [(h, count // h) for h in range(1, count + 1) if count % h == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[1] / hw[0]) - math.log(aspect)))


_FULL_RES = {"input_size": (1024, 576), "grid": (8, 8)}
# Paper section 4: low-resolution input is 128x72 with no stem downsampling, P = 4 x 4.
_LOW_RES = {"input_size": (128, 72), "grid": (4, 4)}
# Ours, for CPU-only machines: the full-resolution stem (stride 4) on a 512x288 input gives the
# trunk the same 128x72 feature maps as the low-res preset (same GFLOPs, measured) while the
# stem sees 16x more pixels, so small, distant people stay visible. P = 4 x 4 keeps the AVT at
# the low-res size (11.7 M parameters, not 22 M), so a CC-AV and CC-V pair fits the 50 MB budget.
_CPU_RES = {"input_size": (512, 288), "grid": (4, 4)}
# Ours: the same trunk fed from a 1024x576 image through a 2x pixel unshuffle. It costs about
# what the 512x288 preset does (only the stem's first conv grows), but the stem reads every
# pixel of a full-resolution frame, where a distant head is 2 pixels wide rather than 1.
_CPU_FULL_INPUT = {"input_size": (1024, 576), "grid": (4, 4), "input_unshuffle": 2}
_VISION_ONLY = {"use_audio": False, "use_audio_in_fusion": False}

PRESETS: dict[str, dict[str, Any]] = {
    "cc-av": {"architecture": "cc", **_FULL_RES, "stem_stride": 4},
    "cc-v": {"architecture": "cc", **_FULL_RES, "stem_stride": 4, **_VISION_ONLY},
    "cc-av-lowres": {"architecture": "cc", **_LOW_RES, "stem_stride": 1},
    "cc-v-lowres": {"architecture": "cc", **_LOW_RES, "stem_stride": 1, **_VISION_ONLY},
    "cc-av-512": {"architecture": "cc", **_CPU_RES, "stem_stride": 4},
    "cc-v-512": {"architecture": "cc", **_CPU_RES, "stem_stride": 4, **_VISION_ONLY},
    "cc-av-1024-cpu": {"architecture": "cc", **_CPU_FULL_INPUT, "stem_stride": 4},
    "cc-v-1024-cpu": {"architecture": "cc", **_CPU_FULL_INPUT, "stem_stride": 4, **_VISION_ONLY},
    "csrnet": {"architecture": "csrnet", **_FULL_RES, "use_audio": False},
    "audiocsrnet": {"architecture": "audiocsrnet", **_FULL_RES},
    "csrnet-lowres": {"architecture": "csrnet", **_LOW_RES, "use_audio": False},
    "audiocsrnet-lowres": {"architecture": "audiocsrnet", **_LOW_RES},
}

# Table 3's seven ablations plus two of ours, as config overrides of a CC-AV preset.
# "replacement" says what stands in for the removed part (also in the code where it happens);
# "paper" is the paper's DISCO MAE / RMSE for it (default CC-AV: 9.24 / 19.81).
ABLATIONS: dict[str, dict[str, Any]] = {
    "no-pir-pce-losses": {
        "overrides": {"use_pir_pce_losses": False},
        "replacement": "PIR and PCE branches stay; Loss_TOTAL = Loss_DM",
        "paper": (16.0, 28.2),
    },
    "no-pir-branch": {
        "overrides": {"use_pir_branch": False},
        "replacement": "AW_AVT = softmax(Linear(PCE)); no PIR output, no PIR loss",
        "paper": (16.7, 27.6),
    },
    "no-pce-branch": {
        "overrides": {"use_pce_branch": False},
        "replacement": "AW_AVT = softmax(Linear(PIR_PRE)); no PCE output, no PCE loss",
        "paper": (15.5, 28.1),
    },
    "no-avt": {
        "overrides": {"use_avt": False},
        "replacement": "AV_ATTD = V; no PIR, PCE, attention outputs; Loss_TOTAL = Loss_DM",
        "paper": (18.9, 39.7),
    },
    "no-ccm": {
        "overrides": {"use_ccm": False},
        "replacement": "DM_PRE = AV_ATTD",
        "paper": (17.3, 31.4),
    },
    "no-audio-in-fusion": {
        "overrides": {"use_audio_in_fusion": False},
        "replacement": "three-branch fusions use Q = K (no Linear(A) term)",
        "paper": (13.9, 25.0),
    },
    "only-s1-branch": {
        "overrides": {"use_multi_branch": False},
        "replacement": "S1 alone through every stage, no fusion; the merge conv sees pooled S1 only",
        "paper": (14.3, 26.8),
    },
    "no-inter-branch-fusion": {
        "overrides": {"use_inter_branch_fusion": False},
        "replacement": "each branch keeps its own features between stages (fusion = identity)",
        "paper": None,
    },
    "vision-only": {
        "overrides": dict(_VISION_ONLY),
        "replacement": "CC-V: A replaced by a learned projection of V's mean in the AVT, K = V^T in the CCM, "
        "no Linear(A) in the fusions",
        "paper": None,
    },
}


def ablation_config(base_preset: str, ablation: str, **overrides: Any) -> ModelConfig:
    """A CC preset with one named ablation of `ABLATIONS` applied."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; available: {', '.join(ABLATIONS)}")
    return ModelConfig.from_preset(base_preset, **ABLATIONS[ablation]["overrides"], **overrides)
