"""Horizontal-flip averaging: count a frame and its mirror image and average the two readings.

A crowd counted in a mirror holds the same people, so the two passes see one scene twice with
different errors (the network is not exactly mirror-symmetric). Averaging them is the usual
test-time augmentation of crowd counting; it costs a second forward pass per frame, which is why
the daemon and `avcc-stream evaluate` do it only when asked. The two passes run as one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from avcc_stream.model.output import ModelOutput


def _mean(plain: torch.Tensor | None, mirrored: torch.Tensor | None) -> torch.Tensor | None:
    return None if plain is None or mirrored is None else (plain + mirrored) / 2


def _unmirror_patches(values: torch.Tensor | None, grid: tuple[int, int]) -> torch.Tensor | None:
    """B x P per-patch values of the mirrored frame, put back in the plain frame's patch order."""
    if values is None:
        return None
    batch = values.shape[0]
    return values.reshape(batch, *grid).flip(-1).reshape(batch, -1)


def flip_averaged(forward: Callable[[torch.Tensor, torch.Tensor | None], ModelOutput],
                  images: torch.Tensor, audio: torch.Tensor | None) -> ModelOutput:
    """`forward(images, audio)` averaged with the pass over the mirrored images.

    Every spatial output (density, patch counts, PIR, PCE, attention) of the mirrored pass is
    mirrored back before averaging, so a patch keeps meaning the same part of the scene. The audio
    is the same for both passes (a mirror does not change what is heard).
    """
    batch = images.shape[0]
    both = forward(torch.cat([images, images.flip(-1)]),
                   None if audio is None else torch.cat([audio, audio]))
    grid = tuple(both.patch_counts.shape[-2:])

    def halves(values: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (None, None) if values is None else (values[:batch], values[batch:])

    def maps(values: torch.Tensor) -> torch.Tensor:  # ... x h x w, mirrored along the last axis
        plain, mirrored = halves(values)
        return (plain + mirrored.flip(-1)) / 2

    def patches(values: torch.Tensor | None) -> torch.Tensor | None:  # B x P, row-major over the grid
        plain, mirrored = halves(values)
        return _mean(plain, _unmirror_patches(mirrored, grid))

    def scalars(values: torch.Tensor | None) -> torch.Tensor | None:
        return _mean(*halves(values))

    pir = patches(both.pir)
    return replace(
        both,
        density=maps(both.density),
        count=scalars(both.count),
        patch_counts=maps(both.patch_counts),
        pir=pir,
        pce=patches(both.pce),
        attention=patches(both.attention),
        # logits whose softmax is the averaged PIR (a mean of the two logit vectors would not be)
        pir_logits=None if pir is None or both.pir_logits is None else pir.log(),
        picture_count=scalars(both.picture_count),
        sound_count=scalars(both.sound_count),
    )
