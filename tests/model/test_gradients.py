"""No dead branches: after one optimiser step every parameter of every preset and ablation gets a gradient.

The fusions' gamma starts at 0, so on the very first step nothing inside a fusion but gamma
can get a gradient (model.md); the check therefore runs on the second step.
"""

from __future__ import annotations

import pytest
import torch

from avcc_stream.model import ABLATIONS, ModelConfig, ablation_config, build_model, patch_sums
from avcc_stream.model.losses import crowd_losses

from .helpers import SMALL_WIDTHS, random_batch


def parameters_without_gradient(cfg: ModelConfig) -> list[str]:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images, audio = random_batch(cfg, 2)
    density_gt = torch.rand(2, 1, *cfg.density_size) * 0.05
    patch_gt = patch_sums(density_gt, cfg.grid)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        crowd_losses(model(images, audio), density_gt, patch_gt, cfg)["total"].backward()
        if _ == 0:
            optimizer.step()
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is None or not torch.any(parameter.grad != 0)
    ]


@pytest.mark.parametrize("preset", ["cc-av-lowres", "cc-v-lowres", "csrnet-lowres", "audiocsrnet-lowres"])
def test_every_parameter_of_each_lowres_preset_learns(preset):
    assert parameters_without_gradient(ModelConfig.from_preset(preset)) == []


@pytest.mark.parametrize("preset", ["cc-av", "cc-v"])
def test_every_parameter_of_each_fullres_preset_learns(preset):
    assert parameters_without_gradient(ModelConfig.from_preset(preset, **SMALL_WIDTHS)) == []


@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_every_parameter_of_each_ablation_learns(ablation):
    assert parameters_without_gradient(ablation_config("cc-av-lowres", ablation, **SMALL_WIDTHS)) == []


def test_fusion_gamma_starts_at_zero_so_a_fresh_network_is_plain_branches():
    model = build_model(ModelConfig.from_preset("cc-av-lowres", **SMALL_WIDTHS))
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 2 + 3 * 2  # S1 <-> S2 after stage 1, three fusions after stages 2 and 3
    assert all(float(g.detach()) == 0.0 for g in gammas)
