"""Visual feature extraction (paper section 3.2, Fig. 3, Eq. 5): image -> V (B x P x Z).

stem (two 3x3 convs) -> multi-scale branches S1, S2, S3 of residual-structure (RS) blocks with
inter-branch fusion after every stage -> merge at 1/2 of S3's resolution -> two head convs ->
adaptive average pooling to the patch grid. V is post-ReLU, hence non-negative, which keeps the
density map built from it non-negative.

`patch_embedding: pixels` (ours) replaces that merge head by `PixelHead`: the branches meet at
the density map's resolution, a one-channel non-negative map is predicted there, and each
patch's sub-map is unfolded into its Z values (the inverse of the CCM's tiling). With pooled
channels, a sub-map pixel is a channel mean that cannot know where in its patch a person
stands, so Eq. 12 asks for what the network cannot see; with pixels it is CSRNet's per-pixel
density target, which trains a counting CNN from scratch far faster (docs/model.md).
"""

from __future__ import annotations

import torch
from torch import nn

from avcc_stream.model.config import ModelConfig
from avcc_stream.model.fusion import BranchFusion, conv_bn, fusion_schedule


class Bottleneck(nn.Module):
    """ResNet's three-layer unit (1x1, 3x3, 1x1) with expansion 1 and an identity shortcut."""

    def __init__(self, channels: int, *, identity_at_init: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(channels, channels, 1),
            conv_bn(channels, channels, 3),
            conv_bn(channels, channels, 1, relu=False),
        )
        if identity_at_init:  # the last BN's scale at 0: the unit passes its (non-negative) input through
            nn.init.zeros_(self.body[2][1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def residual_structure(channels: int, units: int) -> nn.Sequential:
    """An RS block: `units` bottleneck units (4 in the paper) at constant channels and resolution."""
    return nn.Sequential(*(Bottleneck(channels) for _ in range(units)))


class Stem(nn.Module):
    """Two 3x3 conv-BN-ReLU layers; stride 2 each at full resolution, 1 each in the low-res setting.

    With `unshuffle` > 1 the image is first pixel-unshuffled (each unshuffle x unshuffle block
    becomes 3 * unshuffle**2 channels), so the first conv reads every pixel at the lower size.
    `units` > 0 puts that many bottleneck units between the two convs (`refine`), each starting
    as the identity; without them the state dict is the presets' own.
    """

    def __init__(self, out_channels: int, total_stride: int, unshuffle: int = 1, units: int = 0) -> None:
        super().__init__()
        first, second = {1: (1, 1), 2: (2, 1), 4: (2, 2)}[total_stride]
        self.unshuffle = unshuffle
        self.layers = nn.Sequential(
            conv_bn(3 * unshuffle**2, out_channels, 3, first), conv_bn(out_channels, out_channels, 3, second)
        )
        # Empty (no parameters, passes its input on) when units == 0.
        self.refine = nn.Sequential(*(Bottleneck(out_channels, identity_at_init=True) for _ in range(units)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            image = nn.functional.pixel_unshuffle(image, self.unshuffle)
        return self.layers[1](self.refine(self.layers[0](image)))


class MultiScaleBranches(nn.Module):
    """MSB: S1 (and S2, S3) through `num_stages` RS stages with the fusion schedule in between.

    S2 is made from the stem output and S3 from the fused S2 by a 3x3 stride-2 conv (HRNet's
    transition). Ablations: `use_multi_branch=False` keeps S1 alone (no transitions, no
    fusion); `use_inter_branch_fusion=False` replaces every fusion by the identity.
    """

    def __init__(self, cfg: ModelConfig, audio_dim: int | None) -> None:
        super().__init__()
        channels = cfg.branch_channels
        self.num_branches = 3 if cfg.use_multi_branch else 1
        stem_h, stem_w = cfg.input_size[1] // cfg.trunk_stride, cfg.input_size[0] // cfg.trunk_stride
        tokens = [(stem_h >> b) * (stem_w >> b) for b in range(3)]  # N = h * w of each branch

        self.transitions = nn.ModuleDict()
        self.stages = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for stage in range(cfg.num_stages):
            active = min(self.num_branches, 2 if stage == 0 else 3)
            if stage < 2 and active > stage + 1:
                # New branch created before this stage: S2 from the stem, S3 from fused S2.
                for branch in range(stage + 1, active):
                    self.transitions[str(branch)] = conv_bn(channels[branch - 1], channels[branch], 3, 2)
            self.stages.append(nn.ModuleList(residual_structure(channels[b], cfg.units_per_block) for b in range(active)))
            fusions = nn.ModuleList()
            if cfg.use_inter_branch_fusion and self.num_branches > 1:
                for sources, target in fusion_schedule(stage):
                    fusion_audio = audio_dim if (len(sources) > 1 and cfg.audio_reaches_fusion) else None
                    fusions.append(
                        BranchFusion(
                            sources, target, channels, tokens[target], fusion_audio, cfg.dropout, cfg.fusion_temperature
                        )
                    )
            self.fusions.append(fusions)

    def forward(self, stem: torch.Tensor, audio: torch.Tensor | None) -> list[torch.Tensor]:
        branches = [stem]
        for stage, (blocks, fusions) in enumerate(zip(self.stages, self.fusions)):
            while len(branches) < len(blocks):
                branches.append(self.transitions[str(len(branches))](branches[-1]))
            branches = [block(x) for block, x in zip(blocks, branches)]
            if len(fusions):
                # All fusions of a stage read the same (pre-fusion) branch outputs.
                updated = {fusion.target: fusion(branches, audio) for fusion in fusions}
                branches = [updated.get(b, x) for b, x in enumerate(branches)]
        return branches


class MergeHead(nn.Module):
    """Merge (pool every branch to 1/2 of S3, concatenate, 3x3 conv), two head convs, patch pooling."""

    def __init__(self, cfg: ModelConfig, num_branches: int) -> None:
        super().__init__()
        self.merge_size = (
            cfg.input_size[1] // (cfg.trunk_stride * 8),
            cfg.input_size[0] // (cfg.trunk_stride * 8),
        )
        merged_in = sum(cfg.branch_channels[:num_branches])
        z = cfg.embed_dim
        self.merge = conv_bn(merged_in, cfg.merge_channels, 3)
        self.head = nn.Sequential(conv_bn(cfg.merge_channels, z, 3), conv_bn(z, z, 3))
        self.pool = nn.AdaptiveAvgPool2d(cfg.grid)

    def forward(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """Branches -> V, B x P x Z (patches in row-major order)."""
        h, w = self.merge_size
        pooled = [nn.functional.avg_pool2d(x, (x.shape[2] // h, x.shape[3] // w)) for x in branches]
        features = self.head(self.merge(torch.cat(pooled, dim=1)))
        return self.pool(features).flatten(2).transpose(1, 2)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x C x h x w -> B x C x size: average pooling going down (keeps totals' proportions), bilinear going up."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return nn.functional.adaptive_avg_pool2d(x, size)
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def unfold_patches(density: torch.Tensor, grid: tuple[int, int], submap: tuple[int, int]) -> torch.Tensor:
    """B x 1 x (rows * sub_h) x (cols * sub_w) -> B x P x Z, each patch's sub-map flattened row-major.

    The exact inverse of `ccm.tile_patch_maps`.
    """
    rows, cols = grid
    sub_h, sub_w = submap
    batch = density.shape[0]
    tiles = density.reshape(batch, rows, sub_h, cols, sub_w).permute(0, 1, 3, 2, 4)
    return tiles.reshape(batch, rows * cols, sub_h * sub_w)


class PixelHead(nn.Module):
    """Branches -> V (B x P x Z) through a one-channel map at the density map's resolution.

    Every branch is brought to the density size and concatenated; a 1x1 and a 3x3 conv-BN-ReLU
    and a 1x1 conv with ReLU give the non-negative map, unfolded per patch.
    """

    def __init__(self, cfg: ModelConfig, num_branches: int, width: int = 64) -> None:
        super().__init__()
        self.grid = cfg.grid
        self.submap = cfg.active_submap_size
        self.size = cfg.density_size
        self.width = width
        self.merge = conv_bn(sum(cfg.branch_channels[:num_branches]), width, 1)
        self.head = nn.Sequential(conv_bn(width, width, 3), nn.Conv2d(width, 1, 1), nn.ReLU())

    def merged_features(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """Branches -> B x width x density size: what the one-channel map is predicted from."""
        return self.merge(torch.cat([resize_to(x, self.size) for x in branches], dim=1))

    def patches(self, features: torch.Tensor) -> torch.Tensor:
        """Merged features -> V, B x P x Z."""
        return unfold_patches(self.head(features), self.grid, self.submap)

    def forward(self, branches: list[torch.Tensor]) -> torch.Tensor:
        return self.patches(self.merged_features(branches))


class VisualFeatureExtractor(nn.Module):
    """VFE (Eq. 5): B x 3 x H x W image (and optionally A for the fusions) -> V, B x P x Z."""

    def __init__(self, cfg: ModelConfig, audio_dim: int | None) -> None:
        super().__init__()
        self.stem = Stem(cfg.branch_channels[0], cfg.stem_stride, cfg.input_unshuffle, cfg.stem_units)
        self.branches = MultiScaleBranches(cfg, audio_dim)
        head = PixelHead if cfg.patch_embedding == "pixels" else MergeHead
        self.merge_head = head(cfg, self.branches.num_branches)

    def forward(self, image: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        return self.merge_head(self.branches(self.stem(image), audio))

    def with_patch_features(
        self, image: torch.Tensor, audio: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V and the pixel head's merged features averaged per patch (B x P x width), for the audio fill."""
        if not isinstance(self.merge_head, PixelHead):
            raise ValueError("per-patch visual features need patch_embedding='pixels'")
        features = self.merge_head.merged_features(self.branches(self.stem(image), audio))
        per_patch = nn.functional.adaptive_avg_pool2d(features, self.merge_head.grid).flatten(2).transpose(1, 2)
        return self.merge_head.patches(features), per_patch
