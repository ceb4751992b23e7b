"""`avcc-stream` subcommands of the model area: `infer`, `model-info` and `average-checkpoints`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REFERENCE_BY_RESOLUTION = {(1024, 576): "audiocsrnet", (128, 72): "audiocsrnet-lowres"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the top-level parser."""
    infer = subparsers.add_parser(
        "infer",
        help="count the people in one image (+ one second of sound) or one moment of a video",
        description="Run a checkpoint on an image (with --audio for CC-AV) or on the frame of a video nearest "
        "--at SECONDS with one second of its sound centred on that frame. Prints the count and the PIR "
        "hotspots and writes a density overlay PNG.",
    )
    infer.add_argument("--checkpoint", required=True, help="checkpoint file, or builtin:NAME (e.g. builtin:cc-av-512)")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="image file (any format Pillow reads)")
    source.add_argument("--video", type=Path, help="video file with or without sound (any format FFmpeg reads)")
    infer.add_argument("--audio", type=Path, help="audio file for --image; its first second is used")
    infer.add_argument("--at", type=float, help="with --video: time of the frame, in seconds")
    infer.add_argument("--overlay", type=Path, help="density overlay PNG (default: next to the input, *.density.png)")
    infer.add_argument("--top", type=int, default=3, help="number of hotspots to print (default 3)")
    infer.add_argument("--json", action="store_true", help="print the result as one JSON object")
    infer.add_argument("--flip-average", action="store_true",
                       help="count the frame and its mirror image and average them (as model.flip_average does)")
    infer.set_defaults(func=run_infer)

    info = subparsers.add_parser(
        "model-info",
        help="parameters, GFLOPs and CPU forward time of every preset and baseline",
        description="For every preset (or those given): parameters, GFLOPs at batch 1 (torch.utils.flop_counter) "
        "and the median CPU forward time at batch 1, with ratios to AudioCSRNet at the same resolution.",
    )
    info.add_argument("--presets", nargs="+", metavar="PRESET", help="only these presets (default: all)")
    info.add_argument("--no-timing", action="store_true", help="skip the forward-time measurement")
    info.add_argument("--runs", type=int, default=3, help="timed runs per preset, median reported (default 3)")
    info.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice); 1 is the stable choice on a busy machine"
    )
    info.set_defaults(func=run_model_info)

    average = subparsers.add_parser(
        "average-checkpoints",
        help="write one checkpoint whose weights are the (weighted) mean of several of one model",
        description="Weight averaging ('model soup') of checkpoints of one lineage, e.g. a fine-tuned run and the "
        "file it started from. Refuses checkpoints of different model configs; records the sources, their "
        "digests and weights in the new file's provenance. Evaluate the result before using it.",
    )
    average.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint files or builtin:NAME (two or more)")
    average.add_argument("--out", type=Path, required=True, help="the averaged checkpoint to write")
    average.add_argument("--weights", help="comma-separated positive weights, one per checkpoint (default: equal)")
    average.add_argument("--storage", choices=("float32", "float16", "bfloat16"), default="float32",
                         help="how the floating-point tensors are stored (float16: half size, as the shipped files)")
    average.set_defaults(func=run_average_checkpoints)


def _default_overlay_path(args: argparse.Namespace) -> Path:
    if args.image is not None:
        return args.image.with_name(f"{args.image.stem}.density.png")
    return args.video.with_name(f"{args.video.stem}.t{args.at:g}.density.png")


def run_infer(args: argparse.Namespace) -> int:
    import torch

    from avcc_stream.cli import CommandError
    from avcc_stream.model.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
    from avcc_stream.model.flip import flip_averaged
    from avcc_stream.model.hotspots import top_hotspots
    from avcc_stream.model.media import MediaError, read_audio, read_image, read_video_moment
    from avcc_stream.model.overlay import density_overlay
    from avcc_stream.preprocess import prepare_audio, prepare_image

    if args.video is not None and args.at is None:
        raise CommandError("--video needs --at SECONDS (the time of the frame to count)")
    if args.video is not None and args.audio is not None:
        raise CommandError("--audio goes with --image; a --video's own sound is used")
    try:
        loaded = load_checkpoint(resolve_checkpoint(args.checkpoint))
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    cfg = loaded.config
    notes = []
    try:
        if args.image is not None:
            rgb = read_image(args.image)
            clip = read_audio(args.audio) if args.audio is not None else None
            source = str(args.image)
        else:
            moment = read_video_moment(args.video, args.at)
            rgb, clip = moment.rgb, moment.audio
            source = f"{args.video} at {moment.frame_time:.3f} s"
    except MediaError as exc:
        raise CommandError(str(exc)) from None

    if cfg.uses_audio and clip is None:
        where = "the video has no audio stream" if args.video is not None else "no --audio was given"
        raise CommandError(
            f"checkpoint {args.checkpoint} ({cfg.name}) counts from image and sound, but {where}; "
            "pass --audio WAV or use a CC-V checkpoint"
        )
    if clip is not None and not cfg.uses_audio:
        notes.append(f"{cfg.name} is vision-only: the audio is not used")
        clip = None
    images = prepare_image(rgb, cfg.input_size).unsqueeze(0)
    audio = prepare_audio(clip.samples, clip.sample_rate).unsqueeze(0) if clip is not None else None
    with torch.no_grad():
        output = flip_averaged(loaded.model, images, audio) if args.flip_average else loaded.model(images, audio)
    height, width = rgb.shape[:2]
    spots = top_hotspots(output, cfg, (width, height), top=args.top)
    overlay_path = args.overlay or _default_overlay_path(args)
    overlay_path.parent.mkdir(parents=True, exist_ok=True)
    density_overlay(rgb, output.density[0]).save(overlay_path)
    count = float(output.count[0])

    if args.json:
        print(json.dumps({
            "source": source, "model": cfg.name, "count": round(count, 3),
            "hotspots": [{"row": s.row, "col": s.col, "share": round(s.share, 4), "count": round(s.count, 3),
                          "box": list(s.box), "source": s.source} for s in spots],
            "overlay": str(overlay_path), "notes": notes, "flip_average": bool(args.flip_average),
        }))  # fmt: skip
        return 0
    for note in notes:
        print(f"note: {note}")
    print(f"{source}: {count:.1f} people ({cfg.name})")
    ranking = "PIR" if spots and spots[0].source == "pir" else "share of the density map"
    print(f"hotspots (patch row, col of {cfg.grid[0]}x{cfg.grid[1]}, by {ranking}):")
    for spot in spots:
        x0, y0, x1, y1 = spot.box
        print(f"  ({spot.row}, {spot.col})  {spot.share:6.1%}  ~{spot.count:.1f} people  pixels {x0},{y0}-{x1},{y1}")
    print(f"density overlay: {overlay_path}")
    return 0


def run_model_info(args: argparse.Namespace) -> int:
    import torch

    from avcc_stream.cli import CommandError
    from avcc_stream.model.config import PRESETS
    from avcc_stream.model.profile import measure

    presets = args.presets or list(PRESETS)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise CommandError(f"unknown preset(s) {', '.join(unknown)}; available: {', '.join(PRESETS)}")
    runs = 0 if args.no_timing else args.runs
    if args.threads is not None:
        if args.threads < 1:
            raise CommandError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    costs = {p: measure(p, runs) for p in presets}
    print(f"batch 1, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}; ratios are to AudioCSRNet "
          "at the same input size (its preset measured here when not listed); x time uses the medians")  # fmt: skip
    header = (
        f"{'preset':20s} {'input':>9s} {'params':>9s} {'GFLOPs':>8s} {'median ms':>9s} {'best ms':>8s}   "
        f"{'x params':>8s} {'x GFLOPs':>8s} {'x time':>7s}"
    )
    print(header)
    for preset in presets:
        cost = costs[preset]
        reference_name = REFERENCE_BY_RESOLUTION.get(cost.input_size)
        reference = None
        if reference_name is not None:
            if reference_name not in costs:
                costs[reference_name] = measure(reference_name, runs)
            reference = costs[reference_name]
        size = f"{cost.input_size[0]}x{cost.input_size[1]}"
        millis = (
            f"{cost.forward_ms:9.1f} {cost.forward_best_ms:8.1f}" if cost.forward_ms is not None else f"{'-':>9s} {'-':>8s}"
        )
        ratios = ""
        if reference is not None:
            time_ratio = (
                f"{cost.forward_ms / reference.forward_ms:7.3f}" if cost.forward_ms and reference.forward_ms else f"{'-':>7s}"
            )
            ratios = f"{cost.parameters / reference.parameters:8.3f} {cost.gflops / reference.gflops:8.3f} {time_ratio}"
        print(f"{preset:20s} {size:>9s} {cost.parameters / 1e6:8.2f}M {cost.gflops:8.2f} {millis}   {ratios}")
    return 0


def run_average_checkpoints(args: argparse.Namespace) -> int:
    import torch

    from avcc_stream.cli import CommandError
    from avcc_stream.model.average import write_average
    from avcc_stream.model.checkpoint import CheckpointError

    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    except ValueError:
        raise CommandError(f"--weights must be comma-separated numbers, got {args.weights!r}") from None
    storage = None if args.storage == "float32" else getattr(torch, args.storage)
    try:
        path = write_average(args.checkpoints, args.out, weights, storage_dtype=storage)
    except (CheckpointError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    shares = ", ".join(f"{spec} x {w:g}" for spec, w in zip(args.checkpoints, weights or [1] * len(args.checkpoints), strict=True))
    print(f"wrote {path}: the weighted mean of {shares} (weights normalised to sum to 1)")
    return 0
