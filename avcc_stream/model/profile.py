"""Cost of every preset: parameters, FLOPs (torch.utils.flop_counter) and CPU forward time at batch 1."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avcc_stream.model.config import ModelConfig
from avcc_stream.model.network import build_model


@dataclass(frozen=True)
class ModelCost:
    preset: str
    input_size: tuple[int, int]
    parameters: int
    gflops: float  # 2 x multiply-accumulates, batch 1 (the log-mel FFT is not counted)
    forward_ms: float | None  # median CPU wall time at batch 1, None when not timed
    forward_best_ms: float | None  # fastest run: less sensitive to other load on a shared machine


def example_inputs(cfg: ModelConfig, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    width, height = cfg.input_size
    audio = 0.1 * torch.randn(batch, cfg.audio_num_samples) if cfg.uses_audio else None
    return torch.randn(batch, 3, height, width), audio


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, cfg: ModelConfig) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*example_inputs(cfg))
    return counter.get_total_flops() / 1e9


def time_forward_ms(model: nn.Module, cfg: ModelConfig, runs: int = 3) -> tuple[float, float]:
    """(median, fastest) of `runs` timed forward passes after one warm-up, in milliseconds."""
    inputs = example_inputs(cfg)
    timings = []
    with torch.no_grad():
        model(*inputs)
        for _ in range(runs):
            start = time.perf_counter()
            model(*inputs)
            timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings), min(timings)


def measure(preset: str, timing_runs: int = 3) -> ModelCost:
    """Cost of one preset; `timing_runs=0` skips timing."""
    cfg = ModelConfig.from_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    median, best = time_forward_ms(model, cfg, timing_runs) if timing_runs > 0 else (None, None)
    return ModelCost(
        preset=preset,
        input_size=cfg.input_size,
        parameters=count_parameters(model),
        gflops=count_gflops(model, cfg),
        forward_ms=median,
        forward_best_ms=best,
    )
