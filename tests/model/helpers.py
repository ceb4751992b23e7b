"""Helpers other areas' tests use to get a model checkpoint without training one."""

from __future__ import annotations

from pathlib import Path

import torch

from avcc_stream.model import ModelConfig, build_model
from avcc_stream.model.checkpoint import save_checkpoint


def make_random_checkpoint(tmp_path: Path, preset: str, seed: int = 0, **overrides: object) -> Path:
    """A randomly initialised `preset` model saved as `tmp_path/<preset>.safetensors` (deterministic per seed)."""
    torch.manual_seed(seed)
    cfg = ModelConfig.from_preset(preset, **overrides)
    model = build_model(cfg).eval()
    path = Path(tmp_path) / f"{preset}.safetensors"
    return save_checkpoint(path, model, provenance={"source": "random init for tests", "seed": seed})


# Narrow widths for tests that need many forward/backward passes on two shared CPU cores.
# The module structure (stages, fusions, AVT, CCM, patch grid, shapes of V and the density map)
# is that of the preset; only channel counts and units per RS block shrink.
SMALL_WIDTHS: dict[str, object] = {
    "branch_channels": (8, 16, 32),
    "units_per_block": 1,
    "merge_channels": 32,
    "audio_channels": (8, 16, 32, 32),
}


def random_batch(cfg: ModelConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images shaped like prepare_image output and, when the model uses audio, B x 16000 waveforms."""
    generator = torch.Generator().manual_seed(seed)
    width, height = cfg.input_size
    images = torch.randn(batch, 3, height, width, generator=generator)
    audio = 0.1 * torch.randn(batch, cfg.audio_num_samples, generator=generator) if cfg.uses_audio else None
    return images, audio
