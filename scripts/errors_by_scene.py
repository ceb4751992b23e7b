"""Where a checkpoint's error lives on a synthetic dataset: its regular-setting errors set against
how tall the annotated heads are in pixels and against what the generator drew in each scene
(camera height, ground, layout, lighting, occluders). An analysis, not a test.

    .venv/bin/python scripts/errors_by_scene.py data/eval-31/val-cc-av-avg/report.json \
        [--dataset data/synth-1024] [--tiny-px 2] [--visible-px 1,2,3,4,6]

The report is an `avcc-stream evaluate` report.json of one checkpoint on a dataset written by
`avcc-stream synth`, whose meta/<id>.json holds the camera; each head's height comes from its point
and that camera (avcc_stream.data.synth.people.head_heights_from_points). With --visible-px the
script also makes every sample again from the seed in its meta (same generator version) to learn how
many pixels of each annotated head are left visible, and scores the predictions against the counts
less the heads with at most k visible pixels: what the error would be if such heads were not labelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from avcc_stream.data.synth.people import head_heights_from_points
from avcc_stream.data.synth.sample import GENERATOR_VERSION, generate_sample
from avcc_stream.data.synth.scene import Camera


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.json of `avcc-stream evaluate` (one checkpoint)")
    parser.add_argument("--dataset", type=Path, default=Path("data/synth-1024"), help="the synth dataset it ran on")
    parser.add_argument("--tiny-px", type=float, default=2.0, help="a head shorter than this counts as tiny")
    parser.add_argument("--visible-px", type=lambda text: [int(k) for k in text.split(",")], default=[],
                        help="comma-separated k: also score against the counts less heads with <= k visible pixels")
    args = parser.parse_args()

    label, rows = read_rows(args.report, args.dataset, args.tiny_px)
    mae = np.mean([abs(r["error"]) for r in rows])
    print(f"{args.report}: {label}, {len(rows)} images, regular MAE {mae:.2f}")
    print_by_head_size(rows, args.tiny_px)
    print_by_attribute(rows)
    if args.visible_px:
        print_without_barely_visible_heads(rows, args.dataset, args.visible_px)


def read_rows(report_path: Path, dataset: Path, tiny_px: float) -> tuple[str, list[dict]]:
    """The report's checkpoint and one row per image: its count, its error, its heads' sizes, its scene."""
    report = json.loads(report_path.read_text())
    label = next(iter(report["table"]))
    predicted = report["predictions"][label]["regular"]
    rows = []
    for sample_id, true in report["true_counts"].items():
        meta = json.loads((dataset / "meta" / f"{sample_id}.json").read_text())
        points_text = (dataset / "points" / f"{sample_id}.json").read_text()
        points = np.asarray(json.loads(points_text), dtype=float).reshape(-1, 2)
        heights = head_heights_from_points(Camera.from_params(meta["scene"]["camera"], meta["size"]), points)
        rows.append({"id": sample_id, "true": true, "error": predicted[sample_id] - true,
                     "median_px": float(np.median(heights)) if len(heights) else float("nan"),
                     "tiny": int((heights < tiny_px).sum()), "heads": len(heights),
                     "elevation_m": meta["scene"]["camera"]["elevation_m"], "scene": scene_attributes(meta),
                     "made_by": (meta["generator_version"], meta["seed"], tuple(meta["size"]))})
    return label, rows


def print_by_head_size(rows: list[dict], tiny_px: float) -> None:
    """How the error follows the size of the heads: the tiny ones, and the dense bins by median size."""
    errors = np.array([r["error"] for r in rows])
    heads, tiny = sum(r["heads"] for r in rows), sum(r["tiny"] for r in rows)
    print(f"heads under {tiny_px:g} px: {tiny} of {heads} ({tiny / max(heads, 1):.1%})")
    crowded_tiny = [r for r in rows if r["tiny"] >= 20]
    lost = sum(r["error"] for r in crowded_tiny)
    print(f"images with >= 20 of them: {len(crowded_tiny)}, holding {sum(r['tiny'] for r in crowded_tiny)}; "
          f"their summed error {lost:+.1f} ({abs(lost) / np.abs(errors).sum():.0%} of the summed absolute error)")
    # A diagnostic, not a benchmark: the same predictions against labels without the tiny heads.
    tiny_per_image = np.array([r["tiny"] for r in rows])
    truth = np.array([r["true"] for r in rows])
    mae_without, mean_without = np.abs(errors + tiny_per_image).mean(), (truth - tiny_per_image).mean()
    print(f"MAE against the counts less those heads: {mae_without:.2f} ({mae_without / mean_without:.1%} "
          f"of their mean {mean_without:.2f}; with them {np.abs(errors).mean() / truth.mean():.1%})")

    for low, high in ((100, 200), (200, 500)):
        group = [r for r in rows if low <= r["true"] < high]
        if not group:
            continue
        print(f"true {low}-{high - 1}: {len(group)} images, bias {np.mean([r['error'] for r in group]):+.2f}")
        for small, large in ((0, 6), (6, 10), (10, np.inf)):
            part = [r for r in group if small <= r["median_px"] < large]
            if part:
                relative = np.mean([r["error"] / r["true"] for r in part])
                print(f"  median head {small:g}-{large:g} px: {len(part)} images, relative bias {relative:+.1%}")
    print("largest under-counts:")
    for r in sorted(rows, key=lambda r: r["error"])[:6]:
        print(f"  {r['id']}: true {r['true']:.0f}, error {r['error']:+.1f}, median head {r['median_px']:.1f} px, "
              f"{r['tiny']} under {tiny_px:g} px, camera {r['elevation_m']:.1f} m up")


def _binned(value: float, edges: tuple[float, ...], unit: str = "") -> str:
    """'<a', 'a-b' or '>=b' for the bin of `value` between consecutive edges."""
    if value < edges[0]:
        return f"<{edges[0]:g}{unit}"
    for low, high in zip(edges, edges[1:]):
        if value < high:
            return f"{low:g}-{high:g}{unit}"
    return f">={edges[-1]:g}{unit}"


def scene_attributes(meta: dict) -> dict[str, str]:
    """What the generator drew in one sample, from its meta/<id>.json, as a category per attribute."""
    scene, lighting = meta["scene"], meta["scene"]["lighting"]
    hidden_share = meta["people_hidden_or_cut"] / max(meta["people_placed"], 1)
    return {
        "camera height": _binned(scene["camera"]["elevation_m"], (4, 10), " m"),
        "indoor": str(scene["indoor"]),
        "ground palette": scene["ground"]["palette"],
        "ground pattern": scene["ground"]["pattern"],
        "crowd layout": meta["crowd"]["layout"],
        "exposure": _binned(lighting["exposure"], (0.5, 0.8)),
        "spotlights": str(lighting["spots"] > 0),
        "fog": str(lighting["fog_distance_m"] is not None),
        "people hidden or cut (share of placed)": _binned(hidden_share, (0.2, 0.4)),
        "scene objects": str(len(meta["objects"])) if len(meta["objects"]) < 4 else "4 or more",
    }


def print_by_attribute(rows: list[dict]) -> None:
    """Per attribute value: images, MAE, bias, error relative to the people there, share of all error."""
    total_error = sum(abs(r["error"]) for r in rows)
    for attribute in rows[0]["scene"]:
        print(f"by {attribute}: images, MAE, bias, summed |error| / summed count, share of the summed |error|")
        for value in sorted({r["scene"][attribute] for r in rows}):
            group = [r for r in rows if r["scene"][attribute] == value]
            errors = np.array([r["error"] for r in group])
            people = sum(r["true"] for r in group)
            print(f"  {value}: {len(group)}, {np.abs(errors).mean():.2f}, {errors.mean():+.2f}, "
                  f"{np.abs(errors).sum() / max(people, 1):.1%}, {np.abs(errors).sum() / total_error:.0%}")


def print_without_barely_visible_heads(rows: list[dict], dataset: Path, thresholds: list[int]) -> None:
    """Per k: heads with <= k visible pixels, how their number per image follows the error, and the
    MAE against the counts without them (a diagnostic of the labels, not a benchmark)."""
    max_people = json.loads((dataset / "synth.json").read_text())["max_people"]
    visible = []
    for r in rows:
        version, seed, size = r["made_by"]
        if version != GENERATOR_VERSION:
            raise SystemExit(f"{r['id']}: written by generator version {version}, "
                             f"this one is {GENERATOR_VERSION}: its samples cannot be made again")
        sample = generate_sample(seed, size, max_people)
        if sample.count != r["true"]:
            raise SystemExit(f"{r['id']}: made again it has {sample.count} heads, the dataset {r['true']:.0f}")
        visible.append(sample.head_visible_pixels)
    errors = np.array([r["error"] for r in rows])
    truth = np.array([r["true"] for r in rows])
    print(f"against the counts less the heads with <= k visible pixels (as is: MAE {np.abs(errors).mean():.2f}, "
          f"{np.abs(errors).mean() / truth.mean():.1%} of the mean):")
    for k in thresholds:
        left_out = np.array([int((pixels <= k).sum()) for pixels in visible])
        mae, mean = np.abs(errors + left_out).mean(), (truth - left_out).mean()
        correlation = np.corrcoef(left_out, errors)[0, 1] if left_out.std() > 0 else float("nan")
        print(f"  k={k}: {left_out.sum()} heads ({left_out.sum() / max(truth.sum(), 1):.1%}), correlation with the "
              f"error {correlation:+.2f}, MAE {mae:.2f} ({mae / mean:.1%} of {mean:.2f})")


if __name__ == "__main__":
    main()
