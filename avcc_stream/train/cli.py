"""`avcc-stream` subcommands of the train area: `train` and `evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the top-level parser."""
    train = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (resumable, torchrun-ready)",
        description="Train CC-AV / CC-V or a baseline. Under torchrun every process runs this command.",
    )
    train.add_argument("config", type=Path, help="training config (configs/train/*.yaml)")
    train.add_argument("--out", type=Path, help="output folder (default runs/<config name>)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/state.pt (starts fresh if absent)")
    train.add_argument("--max-minutes", type=float, help="wall-clock budget; stops with a resumable state")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=3 --set optim.lr=1e-4")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser(
        "evaluate",
        help="Table-1 report (MAE/RMSE under the paper's degradations), occlusion curve, worst-image overlays",
        description="Evaluate checkpoints on a dataset split under regular, low-resolution, noise and "
        "low-light settings; writes report.md, report.json, occlusion.png and overlays.",
    )
    ev.add_argument("--checkpoint", action="append", required=True, help="checkpoint path or builtin:NAME (repeatable)")
    ev.add_argument("--dataset", type=Path, required=True, help="dataset folder (any layout open_dataset reads)")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--out", type=Path, default=Path("results/evaluate"), help="report folder (default results/evaluate)")
    ev.add_argument("--occlusion-rates", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
                    help="comma-separated occlusion rates for the curve (empty: no curve)")
    ev.add_argument("--seed", type=int, default=0, help="degradation seed (each sample's corruption derives from it)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N samples of the split")
    ev.add_argument("--curve-limit", type=int, help="samples for the occlusion curve (default: all evaluated)")
    ev.add_argument("--worst", type=int, default=4, help="density overlays for this many worst images per checkpoint")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--low-light-mode", choices=("random", "fixed"), default="random",
                    help="random: brightness ~ U(0, 0.2) and noise variance ~ U(0, B^2) per image (the paper); "
                    "fixed: exactly R=0.2 and sigma=B")
    ev.add_argument("--settings", default=None, metavar="NAME,...",
                    help="only these Table 1 columns (regular required): regular, lowres, noise25, noise50, "
                    "lowlight25, lowlight50 (default: all six)")
    ev.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="fp32, or autocast to bf16/fp16: what a deployment with model.amp counts (default fp32)")
    ev.add_argument("--flip-average", action="store_true",
                    help="count each frame and its mirror image and average them (two passes per frame; "
                    "what a deployment with model.flip_average counts)")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.train.config import ConfigError, load_config
    from avcc_stream.train.trainer import TrainingError, train

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    out = args.out or Path("runs") / args.config.stem
    try:
        result = train(cfg, out, resume=args.resume, max_minutes=args.max_minutes, progress=not args.no_progress)
    except (TrainingError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from avcc_stream.cli import CommandError
    from avcc_stream.model.checkpoint import CheckpointError
    from avcc_stream.train.evaluate import EvaluationError, evaluate_command

    try:
        rates = [float(r) for r in args.occlusion_rates.split(",") if r.strip()]
    except ValueError:
        raise CommandError(f"--occlusion-rates {args.occlusion_rates!r}: expected comma-separated numbers in [0, 1]") from None
    if any(not 0.0 <= r <= 1.0 for r in rates):
        raise CommandError(f"--occlusion-rates {args.occlusion_rates!r}: every rate must be in [0, 1]")
    try:
        evaluate_command(args, rates)
    except (CheckpointError, EvaluationError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    return 0
