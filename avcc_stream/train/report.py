"""Writing an evaluation: report.md (Table 1 + occlusion table, the regular setting by crowd size,
and for audio-fill checkpoints where the count comes from), report.json, occlusion.png and
overlays/<checkpoint>.png (the worst images: frame, true and predicted density)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from avcc_stream.train.evaluate import TABLE_COLUMNS, Evaluation, dump_json, json_payload


def _cell(mae: float, rmse: float) -> str:
    return f"{mae:.2f} / {rmse:.2f}"


def markdown_report(evaluation: Evaluation) -> str:
    labels = [c.label for c in evaluation.candidates]
    counts = list(evaluation.true_counts.values())
    mode = (
        "random (brightness factor ~ U(0, 0.2), noise variance ~ U(0, B^2) per image, as the paper)"
        if evaluation.low_light_mode == "random"
        else "fixed (brightness factor 0.2, noise sigma = B)"
    )
    lines = [
        f"# Evaluation: {evaluation.dataset}, split `{evaluation.split}`",
        "",
        f"{evaluation.samples} images, mean count {sum(counts) / len(counts):.2f}; degradation seed "
        f"{evaluation.seed} (every checkpoint sees the same corrupted image). Low-light mode: {mode}.",
        f"Precision: {precision_text(evaluation.precision)}."
        + (" Every count is the mean of the frame's and its mirror image's (--flip-average)."
           if evaluation.flip_average else ""),
        "",
        "MAE / RMSE (people per image; lower is better):",
        "",
        "| checkpoint | " + " | ".join(title for _, title in evaluation.columns) + f" | {average_heading(evaluation)} |",
        "|---|" + "---|" * (len(evaluation.columns) + 1),
    ]
    for label in labels:
        cells = [
            _cell(evaluation.table[name][label].errors.mae, evaluation.table[name][label].errors.rmse)
            for name, _ in evaluation.columns
        ]
        cells.append(_cell(*evaluation.average(label)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if evaluation.curve:
        rates = sorted(evaluation.curve)
        lines += [
            "",
            f"Occlusion rate (share of the image blacked out by one rectangle), MAE on "
            f"{evaluation.curve_samples} images:",
            "",
            "| checkpoint | " + " | ".join(f"{r:g}" for r in rates) + " |",
            "|---|" + "---|" * len(rates),
        ]
        for label in labels:
            lines.append(
                f"| {label} | " + " | ".join(f"{evaluation.curve[r][label].errors.mae:.2f}" for r in rates) + " |"
            )
    lines += by_count_lines(evaluation)
    lines += picture_alone_lines(evaluation)
    lines += ["", f"Evaluation took {evaluation.seconds:.0f} s.", ""]
    return "\n".join(lines)


def precision_text(precision: str) -> str:
    return "float32" if precision == "fp32" else f"{precision} autocast (weights and counts stay float32)"


def average_heading(evaluation: Evaluation) -> str:
    """Table 1's 'Average' is over its six columns; an evaluation of fewer says so."""
    columns = len(evaluation.columns)
    return "Average" if columns == len(TABLE_COLUMNS) else f"Average ({columns} of {len(TABLE_COLUMNS)})"


def by_count_lines(evaluation: Evaluation) -> list[str]:
    """The regular setting per crowd-size bin: MAE and mean signed error (the bias shows whether
    small scenes are over-counted and dense ones under-counted)."""
    labels = [c.label for c in evaluation.candidates]
    bins = {label: evaluation.by_count(label) for label in labels}
    headings = [f"{b.label} ({b.n})" for b in bins[labels[0]]]
    lines = [
        "",
        "Regular setting by crowd size: MAE / bias (mean of predicted - true; negative is under-counted) "
        "per true-count bin, images in brackets:",
        "",
        "| checkpoint | " + " | ".join(headings) + " |",
        "|---|" + "---|" * len(headings),
    ]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{b.mae:.2f} / {b.bias:+.2f}" for b in bins[label]) + " |")
    return lines


def picture_alone_lines(evaluation: Evaluation) -> list[str]:
    """For checkpoints with the audio fill: the MAE of the picture's own count (before the fill)
    and the share of the model's count it supplies, per setting; the rest is the sound's."""
    labels = evaluation.fill_labels()
    if not labels:
        return []
    settings = evaluation.picture_settings()
    lines = [
        "",
        "Where the count comes from (checkpoints with the audio fill): MAE of the picture's own count "
        "(DM_PRE before the fill) and, in brackets, the share of the model's count that the picture "
        "supplies; the sound supplies the rest:",
        "",
        "| checkpoint | " + " | ".join(heading for heading, _ in settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for label in labels:
        cells = [f"{results[label].picture.mae:.2f} ({results[label].picture_share:.0%})" for _, results in settings]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sound = "; ".join(f"{label} {evaluation.table['regular'][label].sound.mae:.2f}" for label in labels)
    lines += ["", "MAE of the sound's own count of the whole frame (the fill's beta x sub-map over all patches: "
              f"what it counts with the gate open and the picture blank; it reads only the audio): {sound}."]
    return lines


def plot_occlusion_curve(evaluation: Evaluation, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted(evaluation.curve)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for cand in evaluation.candidates:
        style = "-" if cand.config.uses_audio else "--"
        ax.plot(rates, [evaluation.curve[r][cand.label].errors.mae for r in rates], style, marker="o", label=cand.label)
    ax.set_xlabel("occlusion rate")
    ax.set_ylabel("MAE (people)")
    ax.set_title(f"MAE vs occlusion, {evaluation.curve_samples} images ({evaluation.split})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_worst_images(evaluation: Evaluation, out_dir: Path, k: int, device: torch.device) -> list[Path]:
    """One PNG per checkpoint: its k worst images at the regular setting (frame, truth, prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.training import CrowdTrainingDataset
    from avcc_stream.model.flip import flip_averaged
    from avcc_stream.model.overlay import density_overlay

    reader = open_dataset(evaluation.dataset, evaluation.split)
    index = {reader[i].id: i for i in range(len(reader))} if k else {}
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for cand in evaluation.candidates:
        ids = evaluation.worst(cand.label, k)
        if not ids:
            continue
        dataset = CrowdTrainingDataset(reader, cand.config, augment=False, seed=evaluation.seed)
        fig, axes = plt.subplots(len(ids), 2, figsize=(9, 2.6 * len(ids)), squeeze=False)
        for row, sample_id in enumerate(ids):
            item = dataset[index[sample_id]]
            sample = reader[index[sample_id]]
            image = item["image"][None].to(device)
            audio = item["audio"][None].to(device) if cand.config.uses_audio else None
            # the count the table holds for this image: the same passes
            out = flip_averaged(cand.model, image, audio) if evaluation.flip_average else cand.model(image, audio)
            axes[row, 0].imshow(density_overlay(sample.image, item["density"]))
            axes[row, 0].set_title(f"{sample_id}: true {float(item['count']):.0f}", fontsize=9)
            axes[row, 1].imshow(density_overlay(sample.image, out.density[0]))
            axes[row, 1].set_title(f"{cand.label}: predicted {float(out.count[0]):.1f}", fontsize=9)
            for ax in axes[row]:
                ax.axis("off")
        fig.suptitle(f"{cand.label}: worst {len(ids)} images by |error| (regular setting)")
        fig.tight_layout()
        path = out_dir / f"{_slug(cand.label)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "checkpoint"


def write_report(evaluation: Evaluation, out_dir: str | Path, worst: int = 4,
                 device: torch.device | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"markdown": out_dir / "report.md", "json": out_dir / "report.json"}
    paths["markdown"].write_text(markdown_report(evaluation))
    dump_json(json_payload(evaluation), paths["json"])
    if evaluation.curve:
        paths["curve"] = plot_occlusion_curve(evaluation, out_dir / "occlusion.png")
    for i, path in enumerate(plot_worst_images(evaluation, out_dir / "overlays", worst, device or torch.device("cpu"))):
        paths[f"overlay{i}"] = path
    return paths


