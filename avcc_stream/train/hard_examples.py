"""Hard-example weights: draw the training scenes a trained model still miscounts more often.

Why: with a few thousand optimizer steps per run, every training scene is seen a handful of times,
and most of them are already counted well (validation: the 25 worst of 300 images carry half of
the absolute error; docs/results.md, session 24). Drawing scenes in proportion to how wrong a
trained model is on them spends the steps where there is something left to learn. It is the
importance-sampling form of hard-example mining, done offline from a report of `avcc-stream
evaluate --split train` so the weights are fixed, reproducible and inspectable.

Measured once (docs/results.md, session 28; strength 1 on a CC-AV): the draws then hold far more
people, the sound learns its count from them and got worse under low light and occlusion, and the
regular setting did not gain. It stays a tested option, off by default; whether a smaller
strength, a vision-only model or other data gain from it is not measured.

A sample's multiplier is 1 + strength * error / mean error, where error is |predicted - true| at
the regular setting: every scene keeps at least its plain share (a scene counted exactly is
not dropped), and a scene miscounted by k times the mean error is drawn (1 + strength * k) times
as often. It multiplies the count weighting's (1 + count) ** exponent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset


def report_errors(report_path: Path) -> tuple[Path, dict[str, float]]:
    """(dataset folder, {sample id: |predicted - true|}) from one `avcc-stream evaluate` report.json
    of one checkpoint; the regular setting's counts."""
    try:
        report = json.loads(Path(report_path).read_text())
        dataset = Path(report["dataset"])
        predictions = report["predictions"]
        truth = report["true_counts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{report_path}: not a readable `avcc-stream evaluate` report.json "
            f"(needs dataset, predictions and true_counts): {exc}"
        ) from None
    if len(predictions) != 1:
        raise ValueError(
            f"{report_path}: holds {len(predictions)} checkpoints ({', '.join(predictions)}); "
            "hard-example weights need the report of one checkpoint"
        )
    (counts,) = predictions.values()
    if "regular" not in counts:
        raise ValueError(f"{report_path}: has no regular-setting predictions")
    regular = counts["regular"]
    missing = sorted(set(truth) - set(regular))
    if missing:
        raise ValueError(f"{report_path}: no prediction for {len(missing)} samples (e.g. {missing[0]})")
    return dataset, {sample_id: abs(float(regular[sample_id]) - float(true)) for sample_id, true in truth.items()}


def reader_and_ids(source: Any) -> tuple[Any, list[str]]:
    """(the dataset reader, the ids of its samples in the training set's order) of a reader, a
    CombinedDataset or a Subset of either (data.max_train_samples)."""
    if isinstance(source, Subset):
        return source.dataset, [source.dataset.ids[i] for i in source.indices]
    return source, list(source.ids)


def _source_ids(source: Any) -> list[tuple[int, str]]:
    """(reader index, the reader's own sample id) of every sample, in the training set's order."""
    reader, ids = reader_and_ids(source)
    if hasattr(reader, "origin"):  # CombinedDataset
        return [reader.origin(sample_id) for sample_id in ids]
    return [(0, sample_id) for sample_id in ids]


def hard_example_weights(
    source: Any, roots: list[Path], reports: list[Path], strength: float
) -> torch.Tensor | None:
    """1 + strength * error / mean error per training sample (None for strength 0).

    `roots` are the training folders in the order the training set combines them (data.root,
    then data.extra_train_roots); each must be covered by one report whose `dataset` is that
    folder, and every training sample by its folder's report, so no scene is weighted by guess.
    """
    if strength == 0:
        return None
    if not reports:
        raise ValueError("data.hard_example_weighting > 0 needs data.hard_example_reports")
    by_root: dict[Path, dict[str, float]] = {}
    for report in reports:
        dataset, errors = report_errors(report)
        by_root[dataset.resolve()] = errors
    errors_per_root = []
    for root in roots:
        if root.resolve() not in by_root:
            raise ValueError(
                f"no hard-example report covers training folder {root} "
                f"(reports cover: {', '.join(str(p) for p in by_root) or 'nothing'})"
            )
        errors_per_root.append(by_root[root.resolve()])
    values = []
    for reader, sample_id in _source_ids(source):
        try:
            values.append(errors_per_root[reader][sample_id])
        except KeyError:
            raise ValueError(
                f"the hard-example report of {roots[reader]} has no sample {sample_id}: "
                "evaluate the same split the training uses (--split train)"
            ) from None
    errors = torch.tensor(values, dtype=torch.float64)
    mean = errors.mean()
    if mean <= 0:
        return torch.ones_like(errors)  # every scene counted exactly: nothing is harder
    return 1.0 + strength * errors / mean
