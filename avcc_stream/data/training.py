"""Samples -> model inputs and targets, with augmentation that keeps them consistent.

`CrowdTrainingDataset` wraps any sequence of `CrowdSample`s (a reader from `open_dataset`,
or a list) and yields what the model and its losses need:

    image         3 x H x W float32  (avcc_stream.preprocess.prepare_image, model input size)
    audio         16000 float32      (prepare_audio; zeros when the sample has no sound)
    has_audio     bool
    density       1 x h x w float32  (model_config.density_size, sums to count)
    patch_counts  grid_h x grid_w float32 (heads per PIR/PCE patch, sums to count)
    count         float32 scalar
    clear         bool               (no degradation applied: the picture shows every head)
    id            str

Ground truth is always built from head points after the geometric augmentation (crop, flip),
at the crop's own resolution, then resized with its sum preserved; so the density sums to
exactly the number of heads inside the crop. Datasets that ship only density maps (real
DISCO) have their map cropped and flipped with the image instead.

Randomness is a pure function of (seed, epoch, sample id, draw): call `set_epoch` each epoch,
and a resumed run sees the same augmentations as a straight one, whatever the number of workers.
An epoch drawn with replacement (count-weighted) may hold one sample several times; the sampler
then asks for `(index, draw)` with draw 1, 2, ... for the repeats, so each repeat gets its own
crop, flip and degradation (draw 0, a plain index, is the first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from avcc_stream.data.datasets import CrowdSample
from avcc_stream.data.degrade import Degradation, random_training_degradation, sample_seed
from avcc_stream.data.density import density_map, patch_counts, resize_density
from avcc_stream.data.seeding import rng_for
from avcc_stream.preprocess import AUDIO_WINDOW_SAMPLES, prepare_audio, prepare_image


DatasetKey = int | tuple[int, int]  # an index, or (index, draw) for a repeat within an epoch


def split_key(key: DatasetKey) -> tuple[int, int]:
    """(index, draw) of a dataset key; a plain index is draw 0."""
    return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)


def draw_parts(sample_id: str, draw: int) -> tuple[str | int, ...]:
    """The seed parts that name one draw of a sample; draw 0 is the sample id alone, so the
    first draw of every sample keeps the augmentation it had before repeats were told apart."""
    return (sample_id,) if draw == 0 else (sample_id, draw)


class TargetShapes(Protocol):
    """The part of `avcc_stream.model.ModelConfig` that the targets depend on."""

    input_size: tuple[int, int]  # (width, height)
    grid: tuple[int, int]  # (grid_h, grid_w)
    density_size: tuple[int, int]  # (h, w)


@dataclass(frozen=True)
class Augmentation:
    """What `augment=True` does. Defaults are mild on purpose: the sound describes the whole
    scene, so a crop that keeps a quarter of the image would teach the model that audio and
    count disagree; crops keep at least `min_crop_scale` of each side (aspect kept)."""

    crop_probability: float = 0.5
    min_crop_scale: float = 0.75  # side length fraction; also the scale jitter (zoom 1..1/s)
    flip_probability: float = 0.5
    degrade_probability: float = 0.5  # one of the paper's corruptions, random strength
    audio_gain_db: float = 6.0  # uniform in +- this, on top of the scene's own gain


@dataclass(frozen=True)
class CropBox:
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


class CrowdTrainingDataset(torch.utils.data.Dataset):
    """A torch Dataset of model-ready dicts; see the module docstring."""

    def __init__(
        self,
        source: Sequence[CrowdSample],
        model_config: TargetShapes,
        *,
        augment: bool,
        degradation: Degradation | None = None,
        seed: int = 0,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.source = source
        self.input_size = tuple(int(v) for v in model_config.input_size)
        self.grid = tuple(int(v) for v in model_config.grid)
        self.density_size = tuple(int(v) for v in model_config.density_size)
        self.augment = augment
        self.degradation = degradation
        self.seed = int(seed)
        self.augmentation = augmentation or Augmentation()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of augmentations (call once per epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: DatasetKey) -> dict[str, Any]:
        index, draw = split_key(key)
        sample = self.source[index]
        rng = rng_for("augment", self.seed, self.epoch, *draw_parts(sample.id, draw))
        image, points, density = sample.image, sample.points, sample.density
        width, height = sample.size
        box, flip = self.geometry(sample.id, width, height, draw)
        if self.augment:
            image = image[box.top : box.bottom, box.left : box.right]
            if points is not None:
                points = crop_points(points, box, width, height)
            else:
                density = density[box.top : box.bottom, box.left : box.right]
            if flip:
                image = image[:, ::-1]
                if points is not None:
                    points = flip_points(points, box.width)
                else:
                    density = density[:, ::-1]
            image = np.ascontiguousarray(image)

        # Degradations change pixels, never the scene: targets are computed in the crop's
        # geometry (box), whatever resolution the degraded image ends up at.
        clear = True
        if self.degradation is not None and not self.degradation.is_identity:
            image = self.degradation.apply(image, sample_seed(self.seed, sample.id))
            clear = False
        if self.augment and rng.uniform() < self.augmentation.degrade_probability:
            image = random_training_degradation(rng).apply(image, int(rng.integers(2**62)))
            clear = False

        return {
            "image": prepare_image(image, self.input_size),
            **self._audio(sample, rng),
            **self._targets(points, density, (box.width, box.height)),
            "clear": clear,
            "id": sample.id,
            "draw": draw,
        }

    # -- pieces ----------------------------------------------------------------------------

    def geometry(self, sample_id: str, width: int, height: int, draw: int = 0) -> tuple[CropBox, bool]:
        """The crop box and flip that draw `draw` of sample `sample_id` gets this epoch (whole
        image, no flip without augmentation). Drawn from its own stream, so it can be asked for alone."""
        whole = CropBox(0, 0, width, height)
        if not self.augment:
            return whole, False
        settings = self.augmentation
        rng = rng_for("augment-geometry", self.seed, self.epoch, *draw_parts(sample_id, draw))
        box = whole
        if rng.uniform() < settings.crop_probability:
            scale = rng.uniform(settings.min_crop_scale, 1.0)
            crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            box = CropBox(left, top, crop_w, crop_h)
        return box, bool(rng.uniform() < settings.flip_probability)

    def _targets(
        self, points: np.ndarray | None, density: np.ndarray | None, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Density at density_size, patch counts and count, for a frame of `size` (w, h)."""
        if points is not None:
            full = density_map(points, size[1], size[0])
            grid_counts = patch_counts(points, size, self.grid)
            count = float(len(points))
        else:
            full = np.asarray(density, dtype=np.float32)
            grid_counts = resize_density(full, self.grid)
            count = float(full.sum(dtype=np.float64))
        return {
            "density": torch.from_numpy(resize_density(full, self.density_size))[None],
            "patch_counts": torch.from_numpy(np.ascontiguousarray(grid_counts, dtype=np.float32)),
            "count": torch.tensor(count, dtype=torch.float32),
        }

    def _audio(self, sample: CrowdSample, rng: np.random.Generator) -> dict[str, Any]:
        if sample.audio is None or sample.sample_rate is None:
            return {"audio": torch.zeros(AUDIO_WINDOW_SAMPLES), "has_audio": False}
        waveform = prepare_audio(sample.audio, sample.sample_rate)
        if self.augment and self.augmentation.audio_gain_db > 0:
            gain_db = rng.uniform(-self.augmentation.audio_gain_db, self.augmentation.audio_gain_db)
            waveform = (waveform * float(10.0 ** (gain_db / 20.0))).clamp_(-1.0, 1.0)
        return {"audio": waveform, "has_audio": True}


def crop_points(points: np.ndarray, box: CropBox, width: int, height: int) -> np.ndarray:
    """Heads inside `box`, shifted into its frame (float64).

    A crop edge that lies on the image border also keeps the points just beyond that border,
    which density_map and patch_counts clip onto it: cropping nothing keeps every head.
    """
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    keep = (
        ((x >= box.left) | (box.left == 0))
        & ((x < box.right) | (box.right == width))
        & ((y >= box.top) | (box.top == 0))
        & ((y < box.bottom) | (box.bottom == height))
    )
    return pts[keep] - np.array([box.left, box.top], dtype=np.float64)


def flip_points(points: np.ndarray, width: int) -> np.ndarray:
    """Mirror (x, y) left-right in an image `width` pixels wide."""
    flipped = np.array(points, dtype=np.float64)
    flipped[:, 0] = width - flipped[:, 0]
    return flipped
