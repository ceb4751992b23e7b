"""`avcc-stream` subcommands of the data area: synth, synth-video, dataset-info."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_size(text: str) -> tuple[int, int]:
    """'1024x576' -> (1024, 576)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1024x576, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def parse_splits(text: str) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15)."""
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions such as 0.7,0.15,0.15, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative fractions (train,val,test), got {text!r}")
    return parts  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the top-level parser."""
    synth = subparsers.add_parser(
        "synth",
        help="generate a synthetic audio-visual crowd dataset (DISCO layout + points)",
        description="Write N synthetic samples (image, 1 s of sound, head points, density map) in "
        "DISCO's layout plus the plain layout's points/ and splits/, and meta/<id>.json with the "
        "seed and parameters of each sample.",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    synth.add_argument("--count", required=True, type=int, help="number of samples")
    synth.add_argument("--seed", required=True, type=int, help="run seed: the dataset is a function of it")
    synth.add_argument("--size", type=parse_size, default=(1024, 576), help="WIDTHxHEIGHT (default 1024x576)")
    synth.add_argument("--splits", type=parse_splits, default=(0.7, 0.15, 0.15),
                       help="train,val,test fractions (default 0.7,0.15,0.15)")
    synth.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                       help="worker processes (default: up to 2); the output does not depend on it")
    synth.add_argument("--max-people", type=int, default=650, help="most people placed in one scene")
    synth.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    synth.set_defaults(func=run_synth)

    video = subparsers.add_parser(
        "synth-video",
        help="generate a synthetic camera clip (H.264 + AAC) with per-second ground-truth counts",
        description="Render a venue whose crowd changes over time and write FILE (MP4, H.264 + AAC, "
        "a keyframe every second) and FILE.counts.json (per-second head counts).",
    )
    video.add_argument("--out", required=True, type=Path, help="output .mp4 file")
    video.add_argument("--seconds", required=True, type=int, help="clip length in seconds")
    video.add_argument("--seed", required=True, type=int, help="seed: the clip is a function of it")
    video.add_argument("--size", type=parse_size, default=(1024, 576), help="WIDTHxHEIGHT, even (default 1024x576)")
    video.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    video.add_argument("--no-audio", dest="audio", action="store_false", help="write a video stream only")
    video.set_defaults(func=run_synth_video)

    info = subparsers.add_parser(
        "dataset-info",
        help="detect a dataset folder's layout and list its splits",
        description="Check that a folder is in a layout avcc-stream reads (DISCO, ShanghaiTech, "
        "UCF-QNRF, plain) and print its splits; with --counts also the head-count statistics.",
    )
    info.add_argument("root", type=Path, help="dataset folder")
    info.add_argument("--counts", action="store_true", help="load every sample and summarise counts")
    info.set_defaults(func=run_dataset_info)


def _progress(total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True)


def run_synth(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.data.synth.writer import write_dataset

    if args.count < 1:
        raise CommandError(f"--count must be at least 1, got {args.count}")
    if args.max_people < 0:
        raise CommandError(f"--max-people must be >= 0, got {args.max_people}")
    with _progress(args.count, "sample") as bar:
        try:
            summary = write_dataset(args.out, args.count, args.seed, args.size, args.splits,
                                    workers=max(args.workers, 1), max_people=args.max_people,
                                    overwrite=args.overwrite, progress=bar.update)
        except (FileExistsError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
    people = summary["people_per_image"]
    print(f"wrote {summary['count']} samples to {args.out} "
          f"(train {summary['split_sizes']['train']}, val {summary['split_sizes']['val']}, "
          f"test {summary['split_sizes']['test']}); people per image mean {people['mean']}, "
          f"max {people['max']}; {summary['samples_per_second']} samples/s with {summary['workers']} worker(s)")
    return 0


def run_synth_video(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.data.synth.video import counts_path, write_video

    with _progress(args.seconds * args.fps, "frame") as bar:
        try:
            document = write_video(args.out, args.seconds, args.seed, args.size, args.fps, args.audio,
                                   progress=bar.update)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    counts = [entry["count"] for entry in document["counts"]]
    print(f"wrote {args.out} ({args.seconds} s, {args.fps} fps, audio {'on' if document['audio'] else 'off'}) "
          f"and {counts_path(args.out)}; count per second min {min(counts)}, max {max(counts)}")
    return 0


def run_dataset_info(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.data.datasets import SPLITS, DatasetLayoutError, detect_layout, open_dataset

    try:
        layout = detect_layout(args.root)
    except DatasetLayoutError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{args.root}: {layout} layout")
    for split in SPLITS:
        try:
            dataset = open_dataset(args.root, split, layout)
        except DatasetLayoutError as exc:
            if "has no split" in str(exc):
                continue
            raise CommandError(str(exc)) from exc
        line = f"  {split}: {len(dataset)} samples"
        if args.counts and len(dataset):
            counts = [sample.count for sample in dataset]
            line += (f", heads mean {sum(counts) / len(counts):.1f}, min {min(counts):.0f}, "
                     f"max {max(counts):.0f}, audio padded {len(dataset.audio_padded)}")
        print(line)
    return 0
