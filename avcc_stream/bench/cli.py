"""`avcc-stream bench {model,decode,e2e,gpu-plan}`: measure, print a table, write JSON + Markdown.

Every mode records the machine it ran on and writes `<mode>.json` and `<mode>.md` into the
results folder (default `results/bench/<UTC timestamp>/`; pass the same `--out` to several
modes to collect one run's results together).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the top-level parser."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmarks: model throughput, decode cost, end-to-end scale, GPU plan",
        description="Measure speed, cost and scale; print a table and write JSON + Markdown results.",
    )
    modes = bench.add_subparsers(dest="bench_mode", metavar="MODE", required=True)
    _add_model(modes)
    _add_decode(modes)
    _add_e2e(modes)
    _add_gpu_plan(modes)


# --------------------------------------------------------------------------------------
# argument helpers


def comma_list(parse: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    def parse_list(text: str) -> tuple[T, ...]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        try:
            return tuple(parse(item) for item in items)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_list


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text}")
    return value


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text

    return parse


def on_off(text: str) -> bool:
    return {"on": True, "off": False}[choice("on", "off")(text)]


def size(text: str) -> tuple[int, int]:
    from avcc_stream.bench.clips import parse_size

    return parse_size(text)


def override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. units_per_block=1), got {text!r}")
    return key.strip(), yaml.safe_load(value)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="results folder (default: results/bench/<UTC timestamp>/)")


def resolve_device(device: str) -> str:
    import torch

    from avcc_stream.cli import CommandError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {device}: CUDA is not available on this machine")
    return device


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def finish(report: Any, args: argparse.Namespace) -> int:
    from avcc_stream.bench.machine import finish_machine_info
    from avcc_stream.bench.report import default_results_dir, print_report, write_report

    finish_machine_info(report.machine)
    report.finish()
    print_report(report)
    folder = args.out if args.out is not None else default_results_dir()
    json_path, md_path = write_report(report, folder)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


# --------------------------------------------------------------------------------------
# model


def _add_model(modes: argparse._SubParsersAction) -> None:
    from avcc_stream.bench.model_bench import DEFAULT_PRESETS, MEMORY_FORMATS, PRECISIONS

    p = modes.add_parser("model", help="forward throughput, latency and peak memory vs AudioCSRNet",
                         description="Forward-pass throughput, latency and peak memory of each preset and "
                         "variant, with AudioCSRNet at the same resolution measured in the same run.")
    p.add_argument("--presets", type=comma_list(str), default=DEFAULT_PRESETS,
                   help=f"comma-separated presets (default: {','.join(DEFAULT_PRESETS)}); "
                   "the AudioCSRNet baseline of each resolution is always added")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-sizes", type=comma_list(positive_int), default=None,
                   help="default: 1,4 on CPU, 1,4,16,64 on CUDA")
    p.add_argument("--precision", type=comma_list(choice(*PRECISIONS)), default=None,
                   help="fp32 and/or autocast bf16/fp16 (default: fp32,bf16,fp16 on CUDA; fp32 on a CPU, "
                   "with bf16 where it has bf16 instructions)")
    p.add_argument("--memory-format", type=comma_list(choice(*MEMORY_FORMATS)), default=None,
                   help="default: contiguous on CPU, contiguous,channels_last on CUDA")
    p.add_argument("--compile", type=comma_list(on_off), default=(False,),
                   help="torch.compile off and/or on (default: off)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor; aot_eager traces without code generation)")
    p.add_argument("--fold-bn", type=comma_list(on_off), default=(False,),
                   help="fold BatchNorm into the preceding conv: off and/or on (default: off)")
    p.add_argument("--interleave", action="store_true",
                   help="time the presets of one resolution in turn in one process (A, B, A, B, ...), so load "
                   "changes on a shared machine hit them alike; peak memory is then not measured")
    p.add_argument("--warmup", type=positive_int, default=None, help="warm-up passes (default: 1 on CPU, 3 on CUDA)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes; the median is reported (default 5)")
    p.add_argument("--budget-s", type=float, default=60.0,
                   help="stop repeating a batch size after this many seconds (default 60)")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--override", type=override, action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig field for every preset (YAML value), e.g. units_per_block=1")
    p.add_argument("--profile", default="auto",
                   help="auto: profile CC-AV and AudioCSRNet by module when CC-AV misses its target; "
                   "none; or comma-separated presets to profile")
    p.add_argument("--profile-depth", type=positive_int, default=5, help="module name depth to label (default 5)")
    _add_common(p)
    p.set_defaults(func=run_model)


def run_model(args: argparse.Namespace) -> int:
    from avcc_stream.bench.machine import machine_info
    from avcc_stream.bench.model_bench import ModelBenchSettings, run_model_bench
    from avcc_stream.cli import CommandError
    from avcc_stream.model import PRESETS
    from avcc_stream.precision import cpu_has_bf16

    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        raise CommandError(f"--presets: unknown preset(s) {', '.join(unknown)}; available: {', '.join(PRESETS)}")
    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    settings = ModelBenchSettings(
        presets=tuple(args.presets),
        device=device,
        batch_sizes=args.batch_sizes or ((1, 4, 16, 64) if cuda else (1, 4)),
        precisions=args.precision or (
            ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16") if cpu_has_bf16() else ("fp32",)
        ),
        memory_formats=args.memory_format or (("contiguous", "channels_last") if cuda else ("contiguous",)),
        compile_modes=tuple(dict.fromkeys(args.compile)),
        compile_backend=args.compile_backend,
        fold_bn_modes=tuple(dict.fromkeys(args.fold_bn)),
        warmup=args.warmup or (3 if cuda else 1),
        repeats=args.repeats,
        budget_s=args.budget_s,
        flops=args.flops,
        threads=args.threads,
        overrides=dict(args.override),
        profile=args.profile,
        profile_depth=args.profile_depth,
        interleave=args.interleave,
    )
    return finish(run_model_bench(settings, machine_info(), progress), args)


# --------------------------------------------------------------------------------------
# decode


def _add_decode(modes: argparse._SubParsersAction) -> None:
    from avcc_stream.bench.decode_bench import DEFAULT_THREAD_TYPE, HWACCEL_CHOICES, VIDEO_MODES

    p = modes.add_parser("decode", help="share of one core per camera: video decode modes, audio, preprocessing",
                         description="CPU cost per camera of H.264 decode (full, keyframes only, decode-then-skip), "
                         "NVDEC where available, AAC decode + resample, and per-window image preparation.")
    p.add_argument("--sizes", type=comma_list(size), default=((1920, 1080), (1280, 720)),
                   help="video sizes (default: 1920x1080,1280x720)")
    p.add_argument("--fps", type=positive_int, default=25)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    p.add_argument("--modes", type=comma_list(choice(*VIDEO_MODES)), default=VIDEO_MODES,
                   help=f"video modes (default: {','.join(VIDEO_MODES)})")
    p.add_argument("--thread-type", default=DEFAULT_THREAD_TYPE, type=choice("SLICE", "FRAME", "AUTO", "NONE"),
                   help=f"FFmpeg decoder threading (default {DEFAULT_THREAD_TYPE}, as the daemon)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--hwaccel", type=choice(*HWACCEL_CHOICES), default="auto",
                   help="auto: try NVDEC when FFmpeg has CUDA; none: skip")
    p.add_argument("--model-sizes", type=comma_list(size), default=((1024, 576), (128, 72)),
                   help="model input sizes for the prepare_image cost (default: 1024x576,128x72)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where clips are kept (default ~/.cache/avcc-stream/bench)")
    _add_common(p)
    p.set_defaults(func=run_decode)


def run_decode(args: argparse.Namespace) -> int:
    from avcc_stream.bench.decode_bench import DecodeBenchSettings, run_decode_bench
    from avcc_stream.bench.machine import machine_info
    from avcc_stream.cli import CommandError

    if args.seconds < 1:
        raise CommandError(f"--seconds must be >= 1 (one audio window), got {args.seconds}")
    settings = DecodeBenchSettings(
        sizes=args.sizes, fps=args.fps, seconds=args.seconds, video_modes=args.modes, thread_type=args.thread_type,
        repeats=args.repeats, hwaccel=args.hwaccel, model_sizes=args.model_sizes, cache_dir=args.cache_dir,
    )
    return finish(run_decode_bench(settings, machine_info(), progress), args)


# --------------------------------------------------------------------------------------
# end to end


def _add_e2e(modes: argparse._SubParsersAction) -> None:
    p = modes.add_parser("e2e", help="N synthetic RTSP cameras -> daemon -> mosquitto: windows/s, drops, latency",
                         description="For each camera count: a local RTSP server with N H.264 + AAC cameras, the "
                         "daemon (its own process, generated config) and a local mosquitto; measures windows/s, "
                         "dropped windows, window-end -> MQTT latency, the daemon's CPU and RSS; reports the "
                         "largest count without drops.")
    p.add_argument("--cameras", type=comma_list(positive_int), default=(1, 2, 4, 6, 8),
                   help="camera counts to run (default 1,2,4,6,8)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per camera count (default 30)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds a window's count may arrive after the interval (default 5)")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds for every camera's first counts (default 120)")
    p.add_argument("--camera-size", type=size, default=(1920, 1080), help="camera video size (default 1920x1080)")
    p.add_argument("--fps", type=positive_int, default=25)
    p.add_argument("--preset", default="cc-av-1024-cpu",
                   help="model: the shipped builtin:<preset>, or a random init when none is shipped (default cc-av-1024-cpu)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint (builtin:NAME or path) instead of --preset")
    p.add_argument("--override", type=override, action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig field of --preset (forces a random init)")
    p.add_argument("--device", default="cpu", help="the daemon's model.device (default cpu)")
    p.add_argument("--max-batch", type=positive_int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=50.0)
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--queue-per-camera", type=positive_int, default=4)
    p.add_argument("--torch-threads", type=positive_int, default=None,
                   help="the daemon's torch intra-op threads (OMP_NUM_THREADS); default: torch's (one per core)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where clips are kept (default ~/.cache/avcc-stream/bench)")
    p.add_argument("--keep-workdir", type=Path, default=None, metavar="DIR",
                   help="keep daemon configs and logs here (default: a temporary folder, removed)")
    _add_common(p)
    p.set_defaults(func=run_e2e)


def run_e2e(args: argparse.Namespace) -> int:
    from avcc_stream.bench.e2e_bench import E2EBenchSettings, run_e2e_bench
    from avcc_stream.bench.machine import machine_info
    from avcc_stream.cli import CommandError
    from avcc_stream.model import PRESETS

    if args.duration < 1 or args.grace < 0 or args.startup_timeout <= 0:
        raise CommandError("--duration must be >= 1, --grace >= 0 and --startup-timeout > 0")
    if args.checkpoint is None and args.preset not in PRESETS:
        raise CommandError(f"--preset: unknown preset {args.preset!r}; available: {', '.join(PRESETS)}")
    settings = E2EBenchSettings(
        cameras=args.cameras, duration_s=args.duration, grace_s=args.grace, startup_timeout_s=args.startup_timeout,
        camera_size=args.camera_size, fps=args.fps, checkpoint=args.checkpoint, preset=args.preset,
        overrides=dict(args.override), device=args.device, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        workers=args.workers, queue_per_camera=args.queue_per_camera, torch_threads=args.torch_threads,
        cache_dir=args.cache_dir,
        keep_workdir=args.keep_workdir,
    )
    return finish(run_e2e_bench(settings, machine_info(), progress), args)


# --------------------------------------------------------------------------------------
# GPU plan


def _add_gpu_plan(modes: argparse._SubParsersAction) -> None:
    from avcc_stream.bench.model_bench import PRECISIONS

    p = modes.add_parser("gpu-plan", help="camera-windows/s one GPU serves (inference pool, AMP, dynamic batching)",
                         description="Capacity of each stage (decode, preprocess, transfer, model, inference pool) "
                         "on a CUDA GPU, how many cameras at one window per second it serves, and the bottleneck. "
                         "Without a GPU it says so and exits 0; --device cpu runs the same code as a dry run.")
    p.add_argument("--device", default="auto", help="auto (cuda when present, else only a message), cuda, cuda:1, cpu (dry run)")
    p.add_argument("--preset", default="cc-av", help="model preset, randomly initialised (default cc-av)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint (builtin:NAME or a path) instead of --preset")
    p.add_argument("--override", type=override, action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig field of --preset (YAML value)")
    p.add_argument("--precision", type=choice(*PRECISIONS), default=None,
                   help="model-stage precision (default: the pool's with model.amp on: fp16 autocast on CUDA; on a CPU "
                   "bf16 where it has bf16 instructions, else fp32)")
    p.add_argument("--channels-last", type=on_off, default=True, help="on/off (default on)")
    p.add_argument("--compile", type=on_off, default=False, help="torch.compile on/off (default off)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--batch-sizes", type=comma_list(positive_int), default=(1, 8, 16, 32, 64),
                   help="model-stage batch sizes (default 1,8,16,32,64)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="the pool's largest batch (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="the pool's batch-filling wait (default 20)")
    p.add_argument("--workers", type=positive_int, default=4, help="the pool's worker threads (default 4)")
    p.add_argument("--queue-per-camera", type=positive_int, default=4)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per pool run (default 10)")
    p.add_argument("--frame-size", type=size, default=(1920, 1080), help="camera frame size (default 1920x1080)")
    p.add_argument("--decode-seconds", type=float, default=5.0, help="length of the decode clip (default 5)")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--cache-dir", type=Path, default=None)
    _add_common(p)
    p.set_defaults(func=run_gpu_plan)


NEEDS_GPU = "bench gpu-plan needs a CUDA GPU and none is available on this machine; nothing measured"


def run_gpu_plan(args: argparse.Namespace) -> int:
    import torch

    from avcc_stream.bench.machine import machine_info
    from avcc_stream.bench.report import BenchReport
    from avcc_stream.cli import CommandError

    if args.device == "auto" and not torch.cuda.is_available():
        print(NEEDS_GPU)
        report = BenchReport("gpu-plan", machine_info(), {"device": "auto"}, summary=[f"not measured: {NEEDS_GPU}"])
        report.data["measured"] = False
        return finish(report, args)
    from avcc_stream.bench.gpu_plan import GpuPlanSettings, run_gpu_plan as run_plan
    from avcc_stream.precision import inference_dtype, precision_name

    if args.duration <= 0 or args.max_wait_ms < 0:
        raise CommandError("--duration must be > 0 and --max-wait-ms >= 0")
    device = resolve_device(args.device)
    settings = GpuPlanSettings(
        device=device, preset=args.preset, checkpoint=args.checkpoint, overrides=dict(args.override),
        precision=args.precision or precision_name(inference_dtype(device, amp=True)),  # what the pool runs
        channels_last=args.channels_last, compile=args.compile,
        compile_backend=args.compile_backend, batch_sizes=args.batch_sizes, max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000.0, workers=args.workers, queue_per_camera=args.queue_per_camera,
        duration_s=args.duration, frame_size=args.frame_size, decode_seconds=args.decode_seconds,
        repeats=args.repeats, cache_dir=args.cache_dir,
    )
    report = run_plan(settings, machine_info(), progress)
    report.data["measured"] = True
    return finish(report, args)
