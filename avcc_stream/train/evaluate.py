"""The paper's evaluation: Table 1 (MAE / RMSE under its degradations), the occlusion curve, and
density overlays of the worst images.

Every checkpoint sees the same corrupted image: a sample's corruption is seeded by
(--seed, sample id), and checkpoints with the same input size run on the very same batch.
Counts are all that the table needs; density maps are rendered only for the overlays.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from avcc_stream.precision import PRECISIONS, autocast
from avcc_stream.train.metrics import CountBin, CountErrors, errors_by_count


class EvaluationError(ValueError):
    """Evaluation inputs that cannot be used together (empty split, duplicate checkpoints)."""


# Table 1's columns: (setting name in avcc_stream.data.degrade, column heading).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("regular", "Regular"),
    ("lowres", "Low resolution"),
    ("noise25", "Noise B=25"),
    ("noise50", "Noise B=50"),
    ("lowlight25", "Low light R=0.2, B=25"),
    ("lowlight50", "Low light R=0.2, B=50"),
)


def table_settings(low_light_mode: str, only: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The six columns (or those named in `only`, which must hold regular: the crowd-size table
    and the worst images read it), with the low-light ones in the random (paper) or fixed mode."""
    if low_light_mode not in ("random", "fixed"):
        raise EvaluationError(f"low-light mode must be random or fixed, got {low_light_mode!r}")
    if only is not None:
        known = [name for name, _ in TABLE_COLUMNS]
        unknown = [name for name in only if name not in known]
        if unknown:
            raise EvaluationError(f"unknown setting(s) {', '.join(unknown)}: expected some of {', '.join(known)}")
        if "regular" not in only:
            raise EvaluationError("the settings must include regular (the crowd-size table and the overlays read it)")
    suffix = "-fixed" if low_light_mode == "fixed" else ""
    return [
        (name + suffix if name.startswith("lowlight") else name, title)
        for name, title in TABLE_COLUMNS
        if only is None or name in only
    ]


@dataclass
class Candidate:
    """One checkpoint under evaluation."""

    label: str
    spec: str
    model: torch.nn.Module
    config: Any  # ModelConfig
    header: dict[str, Any]


@dataclass
class SettingResult:
    errors: CountErrors = field(default_factory=CountErrors)
    predictions: dict[str, float] = field(default_factory=dict)
    # The picture's own count (DM_PRE before the audio fill), for checkpoints with a fill only.
    picture: CountErrors = field(default_factory=CountErrors)
    picture_total: float = 0.0
    # The sound's own count of the whole frame (the fill's beta x sub-map over all patches): it reads
    # only the audio, which no setting degrades, so the regular setting's is the one reported.
    sound: CountErrors = field(default_factory=CountErrors)

    @property
    def picture_share(self) -> float:
        """The share of the model's count that the picture supplies (the rest is the sound's,
        through the fill); NaN without a fill."""
        total = sum(self.predictions.values())
        return self.picture_total / total if self.picture.n and total > 0 else math.nan


def load_candidates(specs: Sequence[str], device: torch.device) -> list[Candidate]:
    from avcc_stream.model.checkpoint import load_checkpoint, resolve_checkpoint

    candidates: list[Candidate] = []
    for spec in specs:
        loaded = load_checkpoint(resolve_checkpoint(spec), map_location=device)
        label = spec.removeprefix("builtin:") if spec.startswith("builtin:") else loaded.config.name
        if any(c.label == label for c in candidates):
            label = f"{label} ({Path(spec).stem})"
        if any(c.label == label for c in candidates):
            raise EvaluationError(f"checkpoint {spec} given twice")
        candidates.append(Candidate(label, spec, loaded.model.eval(), loaded.config, loaded.header))
    return candidates


def _groups(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """Checkpoints that take the same input size share each batch."""
    groups: dict[tuple[int, int], list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(tuple(cand.config.input_size), []).append(cand)
    return list(groups.values())


@torch.no_grad()
def evaluate_setting(
    candidates: Sequence[Candidate],
    source: Sequence[Any],
    setting_name: str,
    seed: int,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    flip_average: bool = False,
) -> dict[str, SettingResult]:
    """Count every sample of `source` under one degradation setting with every checkpoint
    (under autocast to `dtype`, if given; averaged with the mirrored frame if `flip_average`)."""
    from tqdm import tqdm

    from avcc_stream.data.degrade import setting
    from avcc_stream.data.training import CrowdTrainingDataset
    from avcc_stream.model.flip import flip_averaged

    degradation = setting(setting_name)
    results = {c.label: SettingResult() for c in candidates}
    for group in _groups(candidates):
        dataset = CrowdTrainingDataset(source, group[0].config, augment=False, degradation=degradation, seed=seed)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for batch in tqdm(loader, desc=setting_name, disable=not progress, leave=False):
            images = batch["image"].to(device)
            audio = batch["audio"].to(device)
            for cand in group:
                sound = audio if cand.config.uses_audio else None
                with autocast(device, dtype):
                    out = flip_averaged(cand.model, images, sound) if flip_average else cand.model(images, sound)
                result = results[cand.label]
                result.errors.update(out.count, batch["count"])
                if out.picture_count is not None:
                    result.picture.update(out.picture_count, batch["count"])
                    result.picture_total += float(out.picture_count.sum())
                if out.sound_count is not None:
                    result.sound.update(out.sound_count, batch["count"])
                for sample_id, count in zip(batch["id"], out.count.tolist(), strict=True):
                    result.predictions[sample_id] = float(count)
    return results


@dataclass
class Evaluation:
    dataset: str
    split: str
    samples: int
    curve_samples: int
    seed: int
    low_light_mode: str
    precision: str  # fp32, or the autocast dtype the forward passes ran in (bf16, fp16)
    candidates: list[Candidate]
    table: dict[str, dict[str, SettingResult]]  # setting -> label -> result
    curve: dict[float, dict[str, SettingResult]]  # occlusion rate -> label -> result
    true_counts: dict[str, float]
    columns: list[tuple[str, str]]
    seconds: float = 0.0
    flip_average: bool = False  # every count is the mean of the frame's and its mirror image's

    def average(self, label: str) -> tuple[float, float]:
        """Mean of the columns' MAE and of their RMSE (Table 1's 'Average', with all six)."""
        maes = [self.table[name][label].errors.mae for name, _ in self.columns]
        rmses = [self.table[name][label].errors.rmse for name, _ in self.columns]
        return sum(maes) / len(maes), sum(rmses) / len(rmses)

    def worst(self, label: str, k: int) -> list[str]:
        """Ids of the k images with the largest absolute count error at the regular setting."""
        predictions = self.table["regular"][label].predictions
        return sorted(predictions, key=lambda i: -abs(predictions[i] - self.true_counts[i]))[:k]

    def by_count(self, label: str) -> list[CountBin]:
        """The regular setting's errors per crowd-size bin (where a single MAE hides compression)."""
        return errors_by_count(self.table["regular"][label].predictions, self.true_counts)

    def picture_settings(self) -> list[tuple[str, dict[str, SettingResult]]]:
        """(heading, label -> result) for every table column and occlusion rate, in report order."""
        return [(title, self.table[name]) for name, title in self.columns] + [
            (f"Occlusion {rate:g}", self.curve[rate]) for rate in sorted(self.curve)
        ]

    def fill_labels(self) -> list[str]:
        """The checkpoints that report the picture's own count (those with an audio fill)."""
        regular = self.table["regular"]
        return [c.label for c in self.candidates if regular[c.label].picture.n]


def run_evaluation(
    candidates: list[Candidate],
    dataset_root: Path,
    split: str,
    *,
    seed: int = 0,
    occlusion_rates: Sequence[float] = (),
    limit: int | None = None,
    curve_limit: int | None = None,
    low_light_mode: str = "random",
    settings: Sequence[str] | None = None,
    precision: str = "fp32",
    batch_size: int = 16,
    device: torch.device | None = None,
    progress: bool = False,
    flip_average: bool = False,
) -> Evaluation:
    import time

    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.degrade import occlusion

    device = device or torch.device("cpu")
    if precision not in PRECISIONS:
        raise EvaluationError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    columns = table_settings(low_light_mode, settings)
    source: Sequence[Any] = open_dataset(dataset_root, split)
    if len(source) == 0:
        raise EvaluationError(f"{dataset_root}: split {split!r} has no samples")
    if limit is not None:
        source = Subset(source, range(min(limit, len(source))))
    curve_source = Subset(source, range(min(curve_limit, len(source)))) if curve_limit else source
    started = time.monotonic()
    table = {}
    for name, _title in columns:
        table[name] = evaluate_setting(candidates, source, name, seed, batch_size, device, progress, dtype, flip_average)
    curve = {}
    for rate in occlusion_rates:
        curve[float(rate)] = evaluate_setting(
            candidates, curve_source, occlusion(rate).name, seed, batch_size, device, progress, dtype, flip_average
        )
    true_counts = {source[i].id: float(source[i].count) for i in range(len(source))}
    return Evaluation(
        dataset=str(dataset_root), split=split, samples=len(source), curve_samples=len(curve_source), seed=seed,
        low_light_mode=low_light_mode, precision=precision, candidates=candidates, table=table, curve=curve,
        true_counts=true_counts, columns=columns, seconds=time.monotonic() - started, flip_average=flip_average,
    )


def evaluate_command(args: Any, rates: list[float]) -> None:
    """`avcc-stream evaluate`: run, print the Markdown table, write the report files."""
    from avcc_stream.train.report import write_report

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = [name.strip() for name in args.settings.split(",") if name.strip()] if args.settings else None
    table_settings(args.low_light_mode, settings)  # a misspelt setting fails before the checkpoints load
    candidates = load_candidates(args.checkpoint, device)
    evaluation = run_evaluation(
        candidates, args.dataset, args.split, seed=args.seed, occlusion_rates=rates, limit=args.limit,
        curve_limit=args.curve_limit, low_light_mode=args.low_light_mode, settings=settings,
        precision=args.precision, batch_size=args.batch_size,
        device=device, progress=not args.no_progress, flip_average=args.flip_average,
    )
    paths = write_report(evaluation, args.out, worst=args.worst, device=device)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def candidate_summary(cand: Candidate) -> dict[str, Any]:
    provenance = cand.header.get("provenance", {}) or {}
    return {
        "label": cand.label,
        "checkpoint": cand.spec,
        "preset": cand.config.name,
        "uses_audio": cand.config.uses_audio,
        "input_size": list(cand.config.input_size),
        "storage_dtype": cand.header.get("storage_dtype"),
        "trained_epochs": provenance.get("epochs"),
        "val_mae": provenance.get("val_mae"),
        "data_seed": provenance.get("data_seed"),
        "commit": provenance.get("commit"),
    }


def json_payload(evaluation: Evaluation) -> dict[str, Any]:
    from avcc_stream.train.trainer import machine_description

    labels = [c.label for c in evaluation.candidates]
    table = {}
    for label in labels:
        row = {
            name: {
                "mae": finite(evaluation.table[name][label].errors.mae),
                "rmse": finite(evaluation.table[name][label].errors.rmse),
            }
            for name, _ in evaluation.columns
        }
        mae, rmse = evaluation.average(label)
        row["average"] = {"mae": finite(mae), "rmse": finite(rmse)}
        table[label] = row
    counts = list(evaluation.true_counts.values())
    return {
        "created_utc": utc_now(),
        "machine": machine_description(torch.device("cpu")),
        "dataset": evaluation.dataset,
        "split": evaluation.split,
        "samples": evaluation.samples,
        "mean_count": round(sum(counts) / len(counts), 4),
        "seed": evaluation.seed,
        "low_light_mode": evaluation.low_light_mode,
        "precision": evaluation.precision,
        "flip_average": evaluation.flip_average,
        "columns": [{"setting": name, "title": title} for name, title in evaluation.columns],
        "checkpoints": [candidate_summary(c) for c in evaluation.candidates],
        "table": table,
        "occlusion_curve": {
            "samples": evaluation.curve_samples,
            "rates": sorted(evaluation.curve),
            "mae": {
                label: [finite(evaluation.curve[r][label].errors.mae) for r in sorted(evaluation.curve)]
                for label in labels
            },
            "rmse": {
                label: [finite(evaluation.curve[r][label].errors.rmse) for r in sorted(evaluation.curve)]
                for label in labels
            },
        },
        "regular_by_count": {
            label: [
                {"low": b.low, "high": None if math.isinf(b.high) else b.high, "n": b.n,
                 "mae": finite(b.mae), "bias": finite(b.bias)}
                for b in evaluation.by_count(label)
            ]
            for label in labels
        },
        "picture_alone": {
            label: {
                heading: {"mae": finite(results[label].picture.mae), "share": finite(results[label].picture_share)}
                for heading, results in evaluation.picture_settings()
            }
            for label in evaluation.fill_labels()
        },
        "sound_alone_mae": {
            label: finite(evaluation.table["regular"][label].sound.mae) for label in evaluation.fill_labels()
        },
        "seconds": round(evaluation.seconds, 1),
        "predictions": {
            label: {name: evaluation.table[name][label].predictions for name, _ in evaluation.columns}
            for label in labels
        },
        "true_counts": evaluation.true_counts,
    }


def dump_json(payload: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(payload, indent=1))
