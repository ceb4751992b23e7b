"""The model can learn: a short overfit run on two samples cuts the count error by at least 90 %."""

from __future__ import annotations

import torch

from avcc_stream.model import ModelConfig, build_model, patch_sums
from avcc_stream.model.losses import crowd_losses

from .helpers import SMALL_WIDTHS, random_batch


def gaussian_density(cfg: ModelConfig, counts: list[int], seed: int) -> torch.Tensor:
    """Ground truth as data.md builds it: 15x15 Gaussians (sigma 4) at head points, sum-pooled to density_size."""
    generator = torch.Generator().manual_seed(seed)
    width, height = cfg.input_size
    heads = torch.zeros(len(counts), 1, height, width)
    for index, count in enumerate(counts):
        ys = torch.randint(0, height, (count,), generator=generator)
        xs = torch.randint(0, width, (count,), generator=generator)
        heads[index, 0].index_put_((ys, xs), torch.ones(count), accumulate=True)
    offsets = torch.arange(15.0) - 7
    kernel_1d = torch.exp(-(offsets**2) / (2 * 4.0**2))
    kernel = torch.outer(kernel_1d, kernel_1d)
    full = torch.nn.functional.conv2d(heads, (kernel / kernel.sum())[None, None], padding=7)
    full = full * (torch.tensor(counts, dtype=torch.float32) / full.sum(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    factor = (height // cfg.density_size[0], width // cfg.density_size[1])
    return torch.nn.functional.avg_pool2d(full, factor) * (factor[0] * factor[1])


def mean_count_error(model, images, audio, density_gt) -> float:
    model.eval()
    with torch.no_grad():
        counts = model(images, audio).count
    model.train()
    return (counts - density_gt.sum(dim=(1, 2, 3))).abs().mean().item()


def overfit(cfg: ModelConfig, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images, audio = random_batch(cfg, 2, seed=1)
    density_gt = gaussian_density(cfg, [7, 30], seed=2)
    patch_gt = patch_sums(density_gt, cfg.grid)
    before = mean_count_error(model, images, audio, density_gt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        crowd_losses(model(images, audio), density_gt, patch_gt, cfg)["total"].backward()
        optimizer.step()
    return before, mean_count_error(model, images, audio, density_gt)


def test_cc_av_lowres_overfits_two_samples():
    # cc-av-lowres at narrow widths (same structure and shapes), so 300 steps take ~30 s on 2 cores.
    before, after = overfit(ModelConfig.from_preset("cc-av-lowres", **SMALL_WIDTHS), steps=300)
    assert after <= 0.1 * before, (before, after)

