"""The one place where raw pixels and raw sound become model inputs.

Training (from jpg + wav), offline inference and the live daemon all call these functions,
so a model sees exactly the same kind of input whichever way the data arrived. The log-mel
features themselves are computed inside the model (`avcc_stream.model.audio`), on the
model's device, from the 16 kHz mono waveform returned by `prepare_audio`.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF
from PIL import Image

# ImageNet statistics: the paper's backbones (and CSRNet) are trained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUDIO_SAMPLE_RATE = 16_000
AUDIO_WINDOW_SECONDS = 1.0
AUDIO_WINDOW_SAMPLES = int(AUDIO_SAMPLE_RATE * AUDIO_WINDOW_SECONDS)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H x W x 3 uint8 RGB image to `size` = (width, height), antialiased."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    width, height = size
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    # np.array (not asarray): PIL hands out a read-only buffer, which torch warns about.
    return np.array(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def normalize_image(rgb: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 3 x H x W float32, ImageNet-normalised."""
    array = np.ascontiguousarray(rgb)
    if not array.flags.writeable:  # decoded/PIL buffers can be read-only; torch warns on those
        array = array.copy()
    tensor = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def prepare_image(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """An RGB frame of any size -> the model's 3 x H x W input at `size` = (width, height)."""
    return normalize_image(resize_rgb(rgb, size))


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(n,) or (channels, n) samples -> (n,) float32, the mean of the channels."""
    array = np.asarray(samples)
    if array.ndim not in (1, 2):
        raise ValueError(f"expected (n,) or (channels, n) audio samples, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        # Integer PCM: scale to [-1, 1) by the type's full range. Before the channel mean, which
        # turns integers into float64 and would hide that they need scaling.
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    mono = array.mean(axis=0) if array.ndim == 2 else array
    return mono.astype(np.float32, copy=False)


def prepare_audio(
    samples: np.ndarray,
    sample_rate: int,
    *,
    num_samples: int = AUDIO_WINDOW_SAMPLES,
) -> torch.Tensor:
    """Any-rate, any-channel audio -> `num_samples` of 16 kHz mono float32 in [-1, 1].

    `samples` is (n,) or (channels, n) (PyAV's planar layout), float in [-1, 1] or integer
    PCM. Short input is zero-padded at the end and long input trimmed, so one second of
    sound always gives one 96 x 64 log-mel patch.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    waveform = torch.from_numpy(np.ascontiguousarray(to_mono(samples)))
    if sample_rate != AUDIO_SAMPLE_RATE:
        waveform = AF.resample(waveform, sample_rate, AUDIO_SAMPLE_RATE)
    if waveform.numel() < num_samples:
        waveform = torch.nn.functional.pad(waveform, (0, num_samples - waveform.numel()))
    return waveform[:num_samples].contiguous()
