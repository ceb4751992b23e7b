from __future__ import annotations

import math

import pytest
import torch

from avcc_stream.train.metrics import CountErrors, errors_by_count, mae_rmse


def test_mae_rmse_known_values() -> None:
    mae, rmse = mae_rmse(torch.tensor([10.0, 0.0, 5.0]), torch.tensor([7.0, 4.0, 5.0]))
    assert math.isclose(mae, 7 / 3)
    assert math.isclose(rmse, math.sqrt(25 / 3))


def test_shards_merge_to_the_whole() -> None:
    pred, true = torch.arange(10.0), torch.arange(10.0).flip(0)
    whole = CountErrors()
    whole.update(pred, true)
    a, b = CountErrors(), CountErrors()
    a.update(pred[:3], true[:3])
    b.update(pred[3:], true[3:])
    merged = CountErrors.from_tensor(a.as_tensor() + b.as_tensor())
    assert merged.n == 10 and math.isclose(merged.mae, whole.mae) and math.isclose(merged.rmse, whole.rmse)
    assert math.isclose(merged.mean_count, 4.5)
    assert math.isnan(CountErrors().mae)


def test_errors_by_count_splits_by_the_true_count_and_keeps_the_sign() -> None:
    true = {"a": 0.0, "b": 9.0, "c": 12.0, "d": 250.0, "e": 2000.0}
    predicted = {"a": 2.0, "b": 7.0, "c": 12.0, "d": 200.0, "e": 1500.0, "extra": 1.0}
    bins = errors_by_count(predicted, true)
    assert [(b.label, b.n) for b in bins] == [("0-9", 2), ("10-24", 1), ("200-499", 1), ("1000+", 1)]
    assert bins[0].mae == 2.0 and bins[0].bias == 0.0  # +2 and -2: the MAE sees them, the bias cancels
    assert bins[2].bias == -50.0 and bins[3].mae == 500.0
    assert sum(b.n for b in bins) == len(true)


def test_errors_by_count_names_an_image_without_a_prediction() -> None:
    with pytest.raises(ValueError, match="no prediction for 1 images"):
        errors_by_count({"a": 1.0}, {"a": 1.0, "b": 3.0})
