"""What a training run writes as it goes: steps.csv, metrics.csv (one row per validation) and a plot.

Rows are appended, so a resumed run continues the same files; the plot is redrawn from the
CSVs after every validation.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

# Every loss term on its own (crowd_losses' keys), so a run shows which term moved. New columns go
# last: a run resumed from an older steps.csv keeps that file's columns (see append_row).
LOSS_TERMS = ("dm", "pir", "pce", "count", "picture", "sound")
STEP_FIELDS = (
    "global_step", "epoch", "lr", "loss", "dm", "pir", "pce", "train_mae", "elapsed_s", "count", "picture", "sound",
)
EPOCH_FIELDS = (
    "epoch", "global_step", "lr", "train_loss", "train_mae", "val_mae", "val_rmse", "val_mean_count",
    "best_val_mae", "elapsed_s",
)
# One row per validation setting per evaluation (metrics.csv's val_mae is their average).
VAL_FIELDS = ("epoch", "global_step", "setting", "mae", "rmse", "mean_count")


def append_row(path: Path, fields: tuple[str, ...], row: dict[str, Any]) -> None:
    """Append `row`; a new file gets `fields` as its header. An existing file keeps its own header
    (a run resumed by a newer version writes the columns that file has), so it never goes ragged."""
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as handle:
            fields = tuple(next(csv.reader(handle), fields))
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow({key: _fmt(row.get(key)) for key in fields})


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_rows(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _val_by_setting(path: Path) -> dict[str, list[dict[str, float]]]:
    """val.csv's rows grouped by setting, in the order the settings first appear."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    grouped: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        grouped.setdefault(row["setting"], []).append({"epoch": _num(row["epoch"]), "mae": _num(row["mae"])})
    return grouped


def plot_history(out_dir: Path, title: str) -> Path:
    """curves.png: training loss by step (left), train and validation MAE by epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = read_rows(out_dir / "steps.csv")
    epochs = read_rows(out_dir / "metrics.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        left.plot([r["global_step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="total")
        left.plot([r["global_step"] for r in steps], [r["dm"] for r in steps], lw=0.8, label="density (Eq. 12)")
        for term, label in (("count", "count"), ("picture", "picture's own count"), ("sound", "sound's own count")):
            values = [r.get(term, math.nan) for r in steps]
            if any(v > 0 for v in values):  # only the terms the run used (NaN compares False)
                left.plot([r["global_step"] for r in steps], values, lw=0.8, label=label)
        left.set_yscale("log")
        left.legend()
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss")
    if epochs:
        xs = [r["epoch"] for r in epochs]
        right.plot(xs, [r["train_mae"] for r in epochs], "o-", label="train MAE (augmented)")
        by_setting = _val_by_setting(out_dir / "val.csv")
        if len(by_setting) > 1:
            right.plot(xs, [r["val_mae"] for r in epochs], "o-", lw=2, label="validation MAE (mean of settings)")
            for name, rows in by_setting.items():
                right.plot([r["epoch"] for r in rows], [r["mae"] for r in rows], ".--", lw=0.8, label=f"  {name}")
        else:
            right.plot(xs, [r["val_mae"] for r in epochs], "o-", label="validation MAE")
        right.legend(fontsize="small")
    right.set_xlabel("epoch")
    right.set_ylabel("MAE (people)")
    fig.suptitle(title)
    fig.tight_layout()
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
