"""The DISCO paper's image degradations, as its reference code applies them, seeded per sample.

Order (as the reference code): brightness, noise, occlusion, resize; all on the image at its
original resolution, before the model's own resize.

- Low illumination, factor R: PIL `ImageEnhance.Brightness` (a blend with black, i.e. every
  pixel becomes floor(f * p)); f = R in the fixed mode, f ~ U(0, R) in the random mode.
- Gaussian noise, level B (0..255 scale): add round(N(0, sigma)) per pixel and channel, clip
  to 0..255; sigma = B in the fixed mode, sigma^2 ~ U(0, B^2) in the random mode.
- Occlusion, rate r: one black rectangle int(H*sqrt r) x int(W*sqrt r) at a uniformly random
  top-left corner (the whole rectangle inside the image); r = 1 blacks out everything.
- Low resolution: resize to (width, height), e.g. 128x72.

The reference code's one `is_random` flag switches brightness and noise together; so does
`random_levels` here. Table 1's low-light columns use the random mode, its noise columns the
fixed one. Each step draws from its own stream seeded by (sample seed, step), so e.g. the
occluded rectangle of a sample is the same whether or not noise was added before it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from avcc_stream.data.seeding import derive_seed

LOW_RESOLUTION = (128, 72)  # (width, height) of the paper's low-resolution setting
LOW_LIGHT_FACTOR = 0.2  # the paper's R

# One independent random stream per step (the values only need to differ).
_BRIGHTNESS, _NOISE, _OCCLUSION = 1, 2, 3


@dataclass(frozen=True)
class Degradation:
    """One corruption setting; `apply(image, seed)` is a pure function of image and seed."""

    name: str = "regular"
    brightness: float | None = None  # R: brightness factor (or its upper bound when random)
    noise: float | None = None  # B: noise standard deviation in 0..255 units (or its bound)
    random_levels: bool = False  # f ~ U(0, R) and sigma^2 ~ U(0, B^2) per sample
    occlusion: float = 0.0  # rate r in [0, 1]: area fraction of the black rectangle
    resolution: tuple[int, int] | None = None  # (width, height) to resize to, last

    def __post_init__(self) -> None:
        if self.brightness is not None and not 0.0 <= self.brightness <= 1.0:
            raise ValueError(f"brightness factor R must be in [0, 1], got {self.brightness}")
        if self.noise is not None and self.noise < 0:
            raise ValueError(f"noise level B must be >= 0, got {self.noise}")
        if not 0.0 <= self.occlusion <= 1.0:
            raise ValueError(f"occlusion rate must be in [0, 1], got {self.occlusion}")
        if self.resolution is not None and min(self.resolution) <= 0:
            raise ValueError(f"resolution must be positive (width, height), got {self.resolution}")

    @property
    def is_identity(self) -> bool:
        return (
            self.brightness is None
            and not self.noise
            and self.occlusion == 0.0
            and self.resolution is None
        )

    def apply(self, image: np.ndarray, seed: int) -> np.ndarray:
        """Degrade an H x W x 3 uint8 RGB image; returns a new uint8 array."""
        return self.apply_with_record(image, seed)[0]

    def apply_with_record(self, image: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Degrade and also return what was drawn (factor, sigma, rectangle) for reports/tests."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
        record: dict[str, Any] = {"setting": self.name}
        out = image
        if self.brightness is not None:
            factor = self.brightness
            if self.random_levels:
                factor = float(np.random.default_rng([seed, _BRIGHTNESS]).uniform(0.0, self.brightness))
            out = adjust_brightness(out, factor)
            record["brightness_factor"] = factor
        if self.noise:
            sigma = self.noise
            noise_rng = np.random.default_rng([seed, _NOISE])
            if self.random_levels:
                sigma = math.sqrt(noise_rng.uniform(0.0, 1.0) * self.noise**2)
            out = add_gaussian_noise(out, sigma, noise_rng)
            record["noise_sigma"] = sigma
        if self.occlusion > 0.0:
            out, box = occlude(out, self.occlusion, np.random.default_rng([seed, _OCCLUSION]))
            record["occlusion_box"] = box
        if self.resolution is not None:
            out = resize(out, self.resolution)
            record["resolution"] = list(self.resolution)
        if out is image:
            out = image.copy()
        return out, record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL's Brightness enhancer: a blend with black, floor(factor * pixel) for factor <= 1."""
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor))


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add round(N(0, sigma)) per pixel and channel (0..255 units), clip to 0..255."""
    noise = np.rint(rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma))
    noisy = image.astype(np.int16) + noise.astype(np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def occlude(
    image: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Black out one int(H*sqrt r) x int(W*sqrt r) rectangle; returns (image, (top, left, h, w))."""
    height, width = image.shape[:2]
    box_h, box_w = int(height * math.sqrt(rate)), int(width * math.sqrt(rate))
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    out = image.copy()
    out[top : top + box_h, left : left + box_w] = 0
    return out, (top, left, box_h, box_w)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to `size` = (width, height), bilinear and antialiased like the model's resize."""
    width, height = size
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def sample_seed(run_seed: int, sample_id: str) -> int:
    """The seed for one sample's degradation: every checkpoint sees the same corrupted image."""
    return derive_seed("degrade", run_seed, sample_id)


# ---------------------------------------------------------------------------------------------
# Named settings: Table 1's columns and the occlusion curve.

TABLE1_SETTINGS = ("regular", "lowres", "noise25", "noise50", "lowlight25", "lowlight50")

_NAMED: dict[str, Degradation] = {
    "regular": Degradation("regular"),
    "lowres": Degradation("lowres", resolution=LOW_RESOLUTION),
    "noise25": Degradation("noise25", noise=25.0),
    "noise50": Degradation("noise50", noise=50.0),
    # The paper: "random brightness reduction followed by Gaussian noise" (reference is_random).
    "lowlight25": Degradation("lowlight25", brightness=LOW_LIGHT_FACTOR, noise=25.0, random_levels=True),
    "lowlight50": Degradation("lowlight50", brightness=LOW_LIGHT_FACTOR, noise=50.0, random_levels=True),
    # The reference code's fixed mode, for comparison: f = R, sigma = B exactly.
    "lowlight25-fixed": Degradation("lowlight25-fixed", brightness=LOW_LIGHT_FACTOR, noise=25.0),
    "lowlight50-fixed": Degradation("lowlight50-fixed", brightness=LOW_LIGHT_FACTOR, noise=50.0),
}

_OCCLUSION_NAME = re.compile(r"^occlusion[:=]?(\d*\.?\d+)$")


def occlusion(rate: float) -> Degradation:
    """The occlusion-curve setting for rate r in [0, 1]."""
    return Degradation(f"occlusion{rate:g}", occlusion=float(rate))


def setting(name: str) -> Degradation:
    """A named setting: one of TABLE1_SETTINGS, 'lowlight25-fixed', 'lowlight50-fixed', or
    'occlusion:R' / 'occlusion=R' / 'occlusionR' with R in [0, 1]."""
    key = name.strip().lower()
    if key in _NAMED:
        return _NAMED[key]
    match = _OCCLUSION_NAME.match(key)
    if match:
        rate = float(match.group(1))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"occlusion rate in {name!r} must be in [0, 1]")
        return occlusion(rate)
    raise ValueError(
        f"unknown degradation setting {name!r}; expected one of {', '.join(_NAMED)} or occlusion:R"
    )


def random_training_degradation(rng: np.random.Generator) -> Degradation:
    """One of the paper's corruptions with random strength, for robustness training.

    Covers what evaluation will throw at the model (dark + noisy, noisy, occluded, tiny), each
    in its random-strength mode so training sees the whole range up to the paper's levels.
    """
    kind = int(rng.integers(0, 4))
    if kind == 0:
        noise = float(rng.choice([25.0, 50.0]))
        return Degradation("train-lowlight", brightness=LOW_LIGHT_FACTOR, noise=noise, random_levels=True)
    if kind == 1:
        return Degradation("train-noise", noise=50.0, random_levels=True)
    if kind == 2:
        return Degradation("train-occlusion", occlusion=float(rng.uniform(0.0, 1.0)))
    return Degradation("train-lowres", resolution=LOW_RESOLUTION)
