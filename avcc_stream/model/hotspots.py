"""PIR hotspots: which patches of the scene hold the people, in the original image's pixels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avcc_stream.model.config import ModelConfig
from avcc_stream.model.output import ModelOutput


@dataclass(frozen=True)
class Hotspot:
    row: int
    col: int
    share: float  # fraction of the image's people in this patch (PIR, or patch count / count)
    count: float  # people in this patch from the density map
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image's pixels
    source: str  # "pir" or "density"


def top_hotspots(
    output: ModelOutput, cfg: ModelConfig, image_size: tuple[int, int], top: int = 3, index: int = 0
) -> list[Hotspot]:
    """The `top` patches of batch item `index` ranked by PIR (by density share for models without PIR).

    `image_size` = (width, height) of the original frame, so boxes are in its pixels.
    """
    rows, cols = cfg.grid
    counts = output.patch_counts[index].reshape(-1).float()
    if output.pir is not None:
        shares, source = output.pir[index].float(), "pir"
    else:
        shares, source = counts / counts.sum().clamp(min=1e-12), "density"
    width, height = image_size
    ranked = torch.argsort(shares, descending=True)[: max(0, top)]
    spots = []
    for patch in ranked.tolist():
        row, col = divmod(patch, cols)
        box = (
            round(col * width / cols),
            round(row * height / rows),
            round((col + 1) * width / cols),
            round((row + 1) * height / rows),
        )
        spots.append(Hotspot(row, col, float(shares[patch]), float(counts[patch]), box, source))
    return spots
