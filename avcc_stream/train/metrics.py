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


# Crowd-size bins for the error breakdown: a count model's typical failure is compression towards
# the mean (small scenes over-counted, dense ones under-counted), which one MAE hides.
COUNT_BIN_EDGES: tuple[float, ...] = (0, 10, 25, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class CountBin:
    """Errors of the images whose true count lies in [low, high)."""

    low: float
    high: float  # math.inf for the last bin
    n: int
    mae: float
    bias: float  # mean of predicted - true: negative means under-counted

    @property
    def label(self) -> str:
        return f"{self.low:g}+" if math.isinf(self.high) else f"{self.low:g}-{self.high - 1:g}"


def errors_by_count(
    predicted: dict[str, float], true: dict[str, float], edges: tuple[float, ...] = COUNT_BIN_EDGES
) -> list[CountBin]:
    """MAE and mean signed error per true-count bin (bins [e_i, e_i+1), the last open-ended);
    empty bins are left out. Ids in `true` without a prediction are an error."""
    missing = set(true) - set(predicted)
    if missing:
        raise ValueError(f"no prediction for {len(missing)} images (e.g. {sorted(missing)[0]})")
    bounds = [*edges, math.inf]
    bins = []
    for low, high in zip(bounds, bounds[1:]):
        errors = [predicted[i] - t for i, t in true.items() if low <= t < high]
        if errors:
            bins.append(CountBin(low, high, len(errors), sum(map(abs, errors)) / len(errors), sum(errors) / len(errors)))
    return bins
