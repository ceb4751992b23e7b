"""A density-map overlay: the predicted map, upsampled to the frame and blended over it."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def density_overlay(rgb: np.ndarray, density: torch.Tensor, opacity: float = 0.6) -> Image.Image:
    """H x W x 3 uint8 frame + h x w density (any leading singleton dims) -> RGB PIL image.

    The colour scale runs from 0 to the map's maximum, and the colour's opacity follows the
    density, so empty areas show the frame unchanged.
    """
    from matplotlib import colormaps

    height, width = rgb.shape[:2]
    density_map = density.detach().float().cpu().reshape(1, 1, *density.shape[-2:])
    upsampled = torch.nn.functional.interpolate(density_map, size=(height, width), mode="bilinear", align_corners=False)
    values = upsampled[0, 0].clamp(min=0).numpy()
    peak = float(values.max())
    normalised = values / peak if peak > 0 else values
    colours = colormaps["inferno"](normalised)[..., :3]
    alpha = (opacity * np.sqrt(normalised))[..., None]
    blended = (1 - alpha) * (rgb.astype(np.float32) / 255.0) + alpha * colours
    return Image.fromarray((blended.clip(0, 1) * 255).round().astype(np.uint8))
