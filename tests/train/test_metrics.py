from __future__ import annotations

import math

import torch

from avcc_stream.train.metrics import CountErrors, mae_rmse


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
