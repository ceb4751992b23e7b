"""The paper's comparison networks behind the same interface: CSRNet and AudioCSRNet.

CSRNet (Li et al. 2018): VGG-16's first ten 3x3 convs with three 2x2 max-pools (stride 8),
then six dilated (rate 2) 3x3 convs 512-512-512-256-128-64 and a 1x1 conv to one channel.
AudioCSRNet (Hu et al., DISCO): the same, with the audio embedding (VGGish's conv stack on the
log-mel, averaged over time and frequency: 512 values) injected after every back-end conv: the
conv's output is batch-normalised without affine parameters and then scaled and shifted by
(gamma, beta) = Linear(512 -> 2C)(audio), as in the DISCO reference code.

Both return the density map at 1/8 of the input (the map the losses use; model.md trains on
the 1/8 map) through a ReLU so it is non-negative like CC-AV's. ImageNet / AudioSet weights
cannot be downloaded here: convs are Kaiming-initialised to train from scratch, and
`load_vgg16_frontend_weights` / `audio.load_vggish_weights` take local files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avcc_stream.model.audio import LogMelFrontEnd, VGGishFeatures, read_weights_file
from avcc_stream.model.config import ModelConfig
from avcc_stream.model.network import check_inputs
from avcc_stream.model.output import ModelOutput, patch_sums

FRONT_END_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
BACK_END_CHANNELS = (512, 512, 512, 256, 128, 64)


def vgg16_front_end() -> nn.Sequential:
    """conv1_1 .. conv4_3 of VGG-16; indices match torchvision's `vgg16().features[:23]`."""
    layers: list[nn.Module] = []
    channels = 3
    for item in FRONT_END_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _density_output(cfg: ModelConfig, raw: torch.Tensor) -> ModelOutput:
    density = torch.relu(raw)
    total = density.float()  # counts in float32 under any autocast (see network.decode)
    return ModelOutput(density=density, count=total.sum(dim=(1, 2, 3)), patch_counts=patch_sums(total, cfg.grid))


class CSRNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.frontend = vgg16_front_end()
        layers: list[nn.Module] = []
        channels = 512
        for out in BACK_END_CHANNELS:
            layers += [nn.Conv2d(channels, out, 3, padding=2, dilation=2), nn.ReLU(inplace=True)]
            channels = out
        self.backend = nn.Sequential(*layers)
        self.output_layer = nn.Conv2d(channels, 1, 1)
        _init_weights(self)
        nn.init.normal_(self.output_layer.weight, std=0.01)

    def forward(self, images: torch.Tensor, audio: torch.Tensor | None = None) -> ModelOutput:
        check_inputs(self.config, images, audio)
        return _density_output(self.config, self.output_layer(self.backend(self.frontend(images))))


class AudioConditionedConv(nn.Module):
    """Dilated conv -> BatchNorm (no affine) -> x * gamma(a) + beta(a) -> ReLU (DISCO's AudioCSRNet)."""

    def __init__(self, cin: int, cout: int, audio_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=2, dilation=2)
        self.norm = nn.BatchNorm2d(cout, affine=False)
        self.film = nn.Linear(audio_dim, 2 * cout)
        # Start as the identity modulation (gamma = 1, beta = 0): the reference code's raw
        # gamma near 0 would shrink the signal six times over when training from scratch.
        with torch.no_grad():
            self.film.bias[:cout].fill_(1.0)
            self.film.bias[cout:].zero_()

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(audio)[:, :, None, None].chunk(2, dim=1)
        return torch.relu(self.norm(self.conv(x)) * gamma + beta)


class AudioCSRNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.frontend = vgg16_front_end()
        self.log_mel = LogMelFrontEnd()
        self.audio_features = VGGishFeatures(cfg.audio_channels)
        channels = 512
        blocks = []
        for out in BACK_END_CHANNELS:
            blocks.append(AudioConditionedConv(channels, out, self.audio_features.out_channels))
            channels = out
        self.backend = nn.ModuleList(blocks)
        self.output_layer = nn.Conv2d(channels, 1, 1)
        _init_weights(self)
        nn.init.normal_(self.output_layer.weight, std=0.01)

    def forward(self, images: torch.Tensor, audio: torch.Tensor | None = None) -> ModelOutput:
        check_inputs(self.config, images, audio)
        embedding = self.audio_features(self.log_mel(audio)).mean(dim=(2, 3))  # B x 512
        x = self.frontend(images)
        for block in self.backend:
            x = block(x, embedding)
        return _density_output(self.config, self.output_layer(x))


def load_vgg16_frontend_weights(model: CSRNet | AudioCSRNet, path: str | Path) -> None:
    """Load ImageNet VGG-16 conv weights (torchvision's `features.N.*` keys) from a local file."""
    state = read_weights_file(path)
    own = model.frontend.state_dict()
    picked = {}
    for key in own:
        for candidate in (f"features.{key}", key):
            if candidate in state:
                picked[key] = state[candidate]
                break
        else:
            raise ValueError(f"{path}: no tensor features.{key} (VGG-16 conv weights expected)")
        if tuple(picked[key].shape) != tuple(own[key].shape):
            raise ValueError(f"{path}: features.{key} has shape {tuple(picked[key].shape)}, need {tuple(own[key].shape)}")
    model.frontend.load_state_dict(picked)
