"""Counting metrics: MAE and RMSE of predicted vs true counts, accumulable across batches and processes.

RMSE is the square root of the mean squared count error (the crowd-counting papers call it
"MSE" in their tables; we name it for what it is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class CountErrors:
    """Running sums of |error| and error^2 over images; `merge` combines shards (DDP, workers)."""

    abs_sum: float = 0.0
    sq_sum: float = 0.0
    n: int = 0
    true_sum: float = 0.0

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        predicted = predicted.detach().reshape(-1).double().cpu()
        target = target.detach().reshape(-1).double().cpu()
        if predicted.shape != target.shape:
            raise ValueError(f"{predicted.numel()} predicted counts for {target.numel()} targets")
        error = predicted - target
        self.abs_sum += float(error.abs().sum())
        self.sq_sum += float(error.pow(2).sum())
        self.true_sum += float(target.sum())
        self.n += int(target.numel())

    def merge(self, other: CountErrors) -> CountErrors:
        return CountErrors(
            self.abs_sum + other.abs_sum, self.sq_sum + other.sq_sum, self.n + other.n, self.true_sum + other.true_sum
        )

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.abs_sum, self.sq_sum, float(self.n), self.true_sum], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> CountErrors:
        abs_sum, sq_sum, n, true_sum = (float(v) for v in values.tolist())
        return cls(abs_sum, sq_sum, int(round(n)), true_sum)

    @property
    def mae(self) -> float:
        return self.abs_sum / self.n if self.n else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sq_sum / self.n) if self.n else math.nan

    @property
    def mean_count(self) -> float:
        return self.true_sum / self.n if self.n else math.nan


def mae_rmse(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(MAE, RMSE) of two 1-D count tensors."""
    errors = CountErrors()
    errors.update(predicted, target)
    return errors.mae, errors.rmse
