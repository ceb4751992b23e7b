"""Every tensor shape of model.md's table, at both resolutions, for batch sizes 1 and 3."""

from __future__ import annotations

import pytest
import torch

from avcc_stream.model import ModelConfig, build_model

from .helpers import random_batch

# stage -> (C, H, W) or (P, Z) etc., without the batch dimension.
EXPECTED = {
    "cc-av": {
        "log_mel": (1, 96, 64),
        "A": (144,),
        "stem": (32, 144, 256),
        "S1": (32, 144, 256),
        "S2": (64, 72, 128),
        "S3": (128, 36, 64),
        "merge": (256, 18, 32),
        "head": (144, 18, 32),
        "V": (64, 144),
        "pir": (64,),
        "pce": (64,),
        "attention": (64,),
        "density": (1, 72, 128),
        "patch_counts": (8, 8),
    },
    "cc-av-lowres": {
        "log_mel": (1, 96, 64),
        "A": (144,),
        "stem": (32, 72, 128),
        "S1": (32, 72, 128),
        "S2": (64, 36, 64),
        "S3": (128, 18, 32),
        "merge": (256, 9, 16),
        "head": (144, 9, 16),
        "V": (16, 144),
        "pir": (16,),
        "pce": (16,),
        "attention": (16,),
        "density": (1, 36, 64),
        "patch_counts": (4, 4),
    },
}
# A 1024x576 image pixel-unshuffled by 2 before the stride-4 stem: the low-res trunk's shapes.
EXPECTED["cc-av-1024-cpu"] = EXPECTED["cc-av-lowres"]


def capture_shapes(model, images, audio) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            shapes[name] = tuple(output.shape)

        return hook

    def keep_branches(_module, _inputs, output):
        for index, branch in enumerate(output):
            shapes[f"S{index + 1}"] = tuple(branch.shape)

    handles = [
        model.afe.front_end.register_forward_hook(keep("log_mel")),
        model.afe.register_forward_hook(keep("A")),
        model.vfe.stem.register_forward_hook(keep("stem")),
        model.vfe.branches.register_forward_hook(keep_branches),
        model.vfe.merge_head.merge.register_forward_hook(keep("merge")),
        model.vfe.merge_head.head.register_forward_hook(keep("head")),
        model.vfe.register_forward_hook(keep("V")),
    ]
    with torch.no_grad():
        out = model(images, audio)
    for handle in handles:
        handle.remove()
    for name in ("pir", "pce", "attention", "density", "patch_counts"):
        shapes[name] = tuple(getattr(out, name).shape)
    shapes["count"] = tuple(out.count.shape)
    return shapes


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("preset", ["cc-av-lowres", "cc-av", "cc-av-1024-cpu"])
def test_every_stage_has_the_designed_shape(preset, batch):
    cfg = ModelConfig.from_preset(preset)
    model = build_model(cfg).eval()
    shapes = capture_shapes(model, *random_batch(cfg, batch))
    for stage, expected in EXPECTED[preset].items():
        assert shapes[stage] == (batch, *expected), stage
    assert shapes["count"] == (batch,)
    assert cfg.density_size == EXPECTED[preset]["density"][1:]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    ("preset", "density", "grid"),
    [("csrnet-lowres", (9, 16), (4, 4)), ("audiocsrnet-lowres", (9, 16), (4, 4)), ("cc-v-lowres", (36, 64), (4, 4))],
)
def test_other_lowres_presets_return_the_contract_shapes(preset, density, grid, batch):
    cfg = ModelConfig.from_preset(preset)
    with torch.no_grad():
        out = build_model(cfg).eval()(*random_batch(cfg, batch))
    assert tuple(out.density.shape) == (batch, 1, *density) == (batch, 1, *cfg.density_size)
    assert tuple(out.patch_counts.shape) == (batch, *grid)
    assert tuple(out.count.shape) == (batch,)
    if cfg.architecture != "cc":
        assert out.pir is None and out.pce is None and out.attention is None
    else:
        assert tuple(out.pir.shape) == (batch, cfg.num_patches)


@pytest.mark.parametrize("preset", ["csrnet", "audiocsrnet"])
def test_fullres_baselines_return_the_contract_shapes(preset):
    cfg = ModelConfig.from_preset(preset)
    with torch.no_grad():
        out = build_model(cfg).eval()(*random_batch(cfg, 1))
    assert tuple(out.density.shape) == (1, 1, 72, 128)
    assert tuple(out.patch_counts.shape) == (1, 8, 8)


def test_cc_v_fullres_runs_without_audio():
    cfg = ModelConfig.from_preset("cc-v")
    images, audio = random_batch(cfg, 1)
    assert audio is None
    with torch.no_grad():
        out = build_model(cfg).eval()(images, None)
    assert tuple(out.density.shape) == (1, 1, 72, 128)
    assert tuple(out.pir.shape) == (1, 64)
