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
