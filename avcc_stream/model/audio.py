"""Audio feature extraction (paper section 3.1, Eq. 1): waveform -> VGGish log-mel -> embedding A.

The log-mel is computed inside the model, on the model's device, so training, offline inference
and the live daemon all turn the same 16 kHz waveform (`avcc_stream.preprocess.prepare_audio`)
into the same features. Pretrained AudioSet weights cannot be downloaded here: the backbone
trains from scratch by default, and `load_vggish_weights` reads converted VGGish weights from a
local file when one is available.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio
from torch import nn

from avcc_stream.model.config import AUDIO_SAMPLE_RATE

# The VGGish / AudioSet log-mel convention (models/research/audioset/vggish/vggish_params.py).
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_SIZE = 512  # next power of two above the window
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s: one example
VGGISH_FLAT_FEATURES = 512 * 6 * 4  # conv output (512 x 6 x 4) of one 96 x 64 patch


def hz_to_mel_htk(hertz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hertz / 700.0)


def vggish_mel_matrix(
    num_spectrogram_bins: int = FFT_SIZE // 2 + 1,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    num_mel_bands: int = MEL_BANDS,
    low_hz: float = MEL_LOW_HZ,
    high_hz: float = MEL_HIGH_HZ,
) -> torch.Tensor:
    """(bins x bands) mel weights exactly as VGGish builds them.

    torchaudio's `melscale_fbanks(mel_scale="htk")` draws its triangles in Hz; VGGish draws
    them in mel and zeroes the DC bin, which differs by up to a few per cent per weight, so
    the matrix is built here (float64, like VGGish's numpy) and used as a buffer.
    """
    bins_mel = hz_to_mel_htk(torch.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins, dtype=torch.float64))
    edges = torch.linspace(
        float(hz_to_mel_htk(torch.tensor(low_hz, dtype=torch.float64))),
        float(hz_to_mel_htk(torch.tensor(high_hz, dtype=torch.float64))),
        num_mel_bands + 2,
        dtype=torch.float64,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0, :] = 0.0  # VGGish drops the DC bin
    return weights


class LogMelFrontEnd(nn.Module):
    """B x 16000 waveform (16 kHz mono) -> B x 1 x 96 x 64 log-mel (frames x bands), VGGish style.

    VGGish frames 400 samples at hop 160 and zero-pads each frame at its end to 512 for the FFT.
    torch.stft instead centres a 400-sample window inside each 512-sample frame; padding the
    signal by 56 samples on both sides makes its windowed samples the same as VGGish's (the
    in-frame shift only changes the phase, not the magnitude) and gives the same 98 frames.
    The spectrogram is computed in float64 (a few hundred kFLOPs): in float32 the FFT's
    round-off, spread over quiet bands next to loud ones, moves log(mel + 0.01) by up to 5e-4.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pad = (FFT_SIZE - WINDOW_SAMPLES) // 2
        # Buffers are not persistent: they are constants of the convention, not learned weights.
        self.register_buffer("window", torch.hann_window(WINDOW_SAMPLES, periodic=True, dtype=torch.float64), persistent=False)
        self.register_buffer("mel_matrix", vggish_mel_matrix().double(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected a B x samples waveform, got shape {tuple(waveform.shape)}")
        minimum = (PATCH_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
        if waveform.shape[1] < minimum:
            raise ValueError(f"need at least {minimum} samples (0.975 s at 16 kHz), got {waveform.shape[1]}")
        # Autocast (AMP training) must not push the float64 front end to float16.
        with torch.autocast(waveform.device.type, enabled=False):
            log_mel = self._log_mel(waveform.double())
        # Same precision as the caller's waveform (float32 from prepare_audio; half for a half model).
        return log_mel.to(waveform.dtype if waveform.is_floating_point() else torch.float32)

    def _log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        magnitude = torchaudio.functional.spectrogram(
            waveform,
            pad=self.pad,
            window=self.window.double(),
            n_fft=FFT_SIZE,
            hop_length=HOP_SAMPLES,
            win_length=WINDOW_SAMPLES,
            power=1.0,  # magnitude
            normalized=False,
            center=False,
        )  # B x 257 x frames
        mel = magnitude.transpose(1, 2)[:, :PATCH_FRAMES] @ self.mel_matrix.double()  # B x 96 x 64
        return torch.log(mel + LOG_OFFSET).unsqueeze(1)


class VGGishFeatures(nn.Module):
    """VGGish's conv stack; module indices match the common PyTorch ports (`features.N.*`)."""

    def __init__(self, channels: tuple[int, int, int, int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.out_channels = c4

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

        pool = lambda: nn.MaxPool2d(2, 2)  # noqa: E731 - four identical pools
        self.features = nn.Sequential(
            *conv(1, c1), pool(),
            *conv(c1, c2), pool(),
            *conv(c2, c3), *conv(c3, c3), pool(),
            *conv(c3, c4), *conv(c4, c4), pool(),
        )  # fmt: skip

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """B x 1 x 96 x 64 -> B x C x 6 x 4."""
        return self.features(log_mel)


class AudioFeatureExtractor(nn.Module):
    """AFE (Eq. 1): waveform -> log-mel -> VGGish-shaped CNN -> 128-d embedding -> Linear -> A (B x Z)."""

    def __init__(
        self,
        embed_dim: int,
        backbone: str = "vggish-conv",
        channels: tuple[int, int, int, int] = (64, 128, 256, 512),
        audio_embed_dim: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.front_end = LogMelFrontEnd()
        self.backbone = VGGishFeatures(channels)
        self.backbone_kind = backbone
        width = self.backbone.out_channels
        if backbone == "vggish":
            # VGGish's own head: flatten the 512 x 6 x 4 map in TF's (H, W, C) order, 3 fc layers.
            self.embeddings = nn.Sequential(
                nn.Linear(width * 6 * 4, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, audio_embed_dim), nn.ReLU(inplace=True),
            )  # fmt: skip
        elif backbone == "vggish-conv":
            # Lighter head: global average pool, one linear layer (~66 k instead of ~68 M params).
            self.embeddings = nn.Sequential(nn.Linear(width, audio_embed_dim), nn.ReLU(inplace=True))
        else:
            raise ValueError(f"unknown audio backbone {backbone!r}")
        self.projection = nn.Sequential(nn.Linear(audio_embed_dim, embed_dim), nn.Dropout(dropout))

    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """B x samples -> B x 128, the backbone's embedding."""
        features = self.backbone(self.front_end(waveform))
        if self.backbone_kind == "vggish":
            flat = features.permute(0, 2, 3, 1).flatten(1)
        else:
            flat = features.mean(dim=(2, 3))
        return self.embeddings(flat)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.projection(self.embed(waveform))


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a plain PyTorch state dict loaded without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_vggish_weights(extractor: AudioFeatureExtractor | VGGishFeatures, path: str | Path) -> list[str]:
    """Load converted VGGish weights (`features.*`, and `embeddings.*` for the full head) from a local file.

    Accepts the key layout of the common PyTorch VGGish ports, with or without a prefix such as
    `vggish.`; the PCA post-processing parameters are ignored. Returns the loaded module names.
    Raises ValueError naming the file and the first mismatching tensor.
    """
    state = read_weights_file(path)
    backbone = extractor.backbone if isinstance(extractor, AudioFeatureExtractor) else extractor
    targets: dict[str, torch.Tensor] = {f"features.{k}": v for k, v in backbone.features.state_dict().items()}
    if isinstance(extractor, AudioFeatureExtractor) and extractor.backbone_kind == "vggish":
        targets.update({f"embeddings.{k}": v for k, v in extractor.embeddings.state_dict().items()})
    found: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for target in targets:
            if key == target or key.endswith("." + target):
                found[target] = value
    missing = sorted(set(targets) - set(found))
    if missing:
        raise ValueError(f"{path}: not VGGish weights for this backbone, missing {', '.join(missing[:4])}")
    for key, value in found.items():
        if tuple(value.shape) != tuple(targets[key].shape):
            raise ValueError(
                f"{path}: tensor {key} has shape {tuple(value.shape)}, the backbone needs {tuple(targets[key].shape)}"
            )
    with torch.no_grad():
        for key, value in found.items():
            module_name, _, tensor_name = key.partition(".")
            owner = backbone.features if module_name == "features" else extractor.embeddings
            owner.state_dict()[tensor_name].copy_(value)
    return sorted(found)

