"""A tiny synthetic audio-visual dataset (the data area's generator) and small-model configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.model.helpers import SMALL_WIDTHS


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 samples at 256x144 (train 8, val 4, test 4), at most 30 people each."""
    from avcc_stream.data.synth.writer import write_dataset

    root = tmp_path_factory.mktemp("synth") / "tiny"
    write_dataset(root, count=16, seed=11, size=(256, 144), splits=(0.5, 0.25, 0.25), workers=1, max_people=30)
    return root


def small_config_dict(root: Path, preset: str = "cc-av-lowres", **train: object) -> dict:
    """A training config for a narrow `preset` (same module structure, fewer channels)."""
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL_WIDTHS.items()}
    if not preset.startswith("cc-"):
        overrides = {}
    return {
        "model": {"preset": preset, "overrides": overrides},
        "data": {"root": str(root), "seed": 5, "blackout_probability": 0.25},
        "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 1},
        "train": {"epochs": 1, "batch_size": 4, "seed": 3, "threads": 1, "log_every_steps": 1,
                  "save_every_steps": 1, **train},
    }


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
