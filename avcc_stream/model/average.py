"""Weight averaging ("model soup"): one checkpoint whose weights are a weighted mean of others.

Averaging works for files of one lineage (fine-tuned from a common ancestor, so they lie in one
basin of the loss); it is meaningless for unrelated models, which this code cannot tell apart,
so the command says what it averaged and leaves the judging to an evaluation. Integer tensors
(batch-norm step counters) are taken from the first file. The result records its sources, their
tensor digests and weights as provenance, so a shipped average can be traced and remade.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from avcc_stream.model.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint


def _differing_keys(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    return sorted(key for key in set(first) | set(other) if first.get(key) != other.get(key))


def average_checkpoints(specs: Sequence[str], weights: Sequence[float] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model whose floating-point weights are sum_i w_i * weights_i, and its provenance.

    `weights` default to equal; they must be positive and are normalised to sum to 1. Every
    checkpoint must hold the same model config (CheckpointError naming the differing keys).
    """
    if len(specs) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    weights = [1.0] * len(specs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(specs):
        raise ValueError(f"{len(weights)} weights for {len(specs)} checkpoints")
    if any(not w > 0 for w in weights):
        raise ValueError(f"weights must be positive, got {weights}")
    weights = [w / sum(weights) for w in weights]
    loaded = [load_checkpoint(resolve_checkpoint(spec)) for spec in specs]
    first = loaded[0]
    for spec, other in zip(specs[1:], loaded[1:], strict=True):
        differing = _differing_keys(first.header["model_config"], other.header["model_config"])
        if differing:
            raise CheckpointError(
                f"{spec}: a different model from {specs[0]} (model config differs in {', '.join(differing)}); "
                "only checkpoints of one model can be averaged"
            )
    states = [item.model.state_dict() for item in loaded]
    averaged = {
        name: sum(w * state[name] for w, state in zip(weights, states, strict=True)) if tensor.is_floating_point() else tensor
        for name, tensor in states[0].items()
    }
    first.model.load_state_dict(averaged)
    provenance = {
        "weight_average": [
            {"checkpoint": str(spec), "weight": round(w, 6), "tensors_sha256": item.header.get("tensors_sha256"),
             "provenance": item.header.get("provenance", {})}
            for spec, w, item in zip(specs, weights, loaded, strict=True)
        ]
    }
    return first.model, provenance


def write_average(specs: Sequence[str], out: Path, weights: Sequence[float] | None = None,
                  storage_dtype: torch.dtype | None = None) -> Path:
    """Average `specs` and save the result to `out` (half-size storage with `storage_dtype`)."""
    model, provenance = average_checkpoints(specs, weights)
    return save_checkpoint(out, model, provenance=provenance, storage_dtype=storage_dtype)
