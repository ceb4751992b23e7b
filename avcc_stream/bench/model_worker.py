"""Measure one model variant in a fresh process: `python -m avcc_stream.bench.model_worker < job.json`.

Why a process per variant: a process's peak resident memory (`ru_maxrss`) only ever grows,
so on a CPU the only honest peak-memory figure for a configuration is the growth of a
process that ran nothing else; a fresh process also keeps `torch.compile` caches, thread
pools and allocator state of one variant from flattering or penalising the next.

The job (JSON on stdin) names a preset and a variant (precision, memory format, compile);
the worker times the forward pass at each batch size (ascending, so the peak RSS growth
recorded after batch b is the peak of batch b whenever memory grows with the batch) and
prints one JSON object on its last stdout line. With `profile` it instead runs
torch.profiler over one forward pass, every submodule wrapped in a `record_function`
named after it, and returns where the time goes by module, by module class and by operator.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from avcc_stream.bench.model_bench import ModelJob
from avcc_stream.model import ModelConfig, build_model

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODULE_LABEL = "module:"
# Containers only group other modules: their time says nothing a class table needs.
CONTAINER_CLASSES = {"Sequential", "ModuleList", "ModuleDict"}


# --------------------------------------------------------------------------------------
# helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_rss_mib() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_inputs(cfg: ModelConfig, batch: int, device: torch.device, channels_last: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random model inputs shaped like prepare_image / prepare_audio output, created on `device`."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    width, height = cfg.input_size
    images = torch.randn(batch, 3, height, width, generator=generator).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    audio = None
    if cfg.uses_audio:
        audio = (0.1 * torch.randn(batch, cfg.audio_num_samples, generator=generator)).to(device)
    return images, audio


def forward_fn(runner: Callable[..., Any], images: torch.Tensor, audio: torch.Tensor | None, device: torch.device, precision: str) -> Callable[[], Any]:
    dtype = PRECISIONS[precision]

    def forward() -> Any:
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return runner(images, audio)

    return forward


def count_flops(model: torch.nn.Module, cfg: ModelConfig, device: torch.device) -> float:
    """FLOPs of one batch-1 fp32 forward pass (torch's FlopCounterMode: a multiply-add is 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    images, audio = make_inputs(cfg, 1, device, channels_last=False)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(images, audio)
    return float(counter.get_total_flops())


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:300]


# --------------------------------------------------------------------------------------
# timing


def time_batch(forward: Callable[[], Any], device: torch.device, warmup: int, repeats: int, budget_s: float) -> dict[str, Any]:
    """Warm up (the first call includes compilation), then time up to `repeats` calls within `budget_s`."""
    synchronize(device)
    started = time.perf_counter()
    forward()
    synchronize(device)
    first_call_s = time.perf_counter() - started
    for _ in range(warmup - 1):
        forward()
    synchronize(device)
    latencies: list[float] = []
    deadline = time.monotonic() + budget_s
    for _ in range(repeats):
        started = time.perf_counter()
        forward()
        synchronize(device)
        latencies.append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    latencies.sort()
    mid = len(latencies) // 2
    med = latencies[mid] if len(latencies) % 2 else (latencies[mid - 1] + latencies[mid]) / 2
    return {
        "first_call_s": first_call_s,
        "latency_ms": med * 1000.0,
        "latency_min_ms": latencies[0] * 1000.0,
        "latency_max_ms": latencies[-1] * 1000.0,
        "repeats": len(latencies),
    }


def build(job: ModelJob) -> tuple[ModelConfig, torch.nn.Module, torch.device]:
    torch.manual_seed(job.seed)
    if job.threads:
        torch.set_num_threads(job.threads)
    device = torch.device(job.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick kernels
    cfg = ModelConfig.from_preset(job.preset, **job.overrides)
    model = build_model(cfg).eval().to(device)
    if job.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return cfg, model, device


def measure(job: ModelJob) -> dict[str, Any]:
    """Throughput, latency and peak memory of `job`'s variant at each of its batch sizes."""
    cfg, model, device = build(job)
    result: dict[str, Any] = {
        "preset": job.preset,
        "input_size": list(cfg.input_size),
        "params": sum(p.numel() for p in model.parameters()),
        "uses_audio": cfg.uses_audio,
        "flops": None,
        "memory_method": "cuda max_memory_allocated" if device.type == "cuda" else "growth of process peak RSS (ru_maxrss)",
        "batches": [],
    }
    runner: Callable[..., Any] = model
    if job.compile:
        runner = torch.compile(model, backend=job.compile_backend, dynamic=False)
    rss_before = max_rss_mib()
    for batch in sorted(set(job.batch_sizes)):
        row: dict[str, Any] = {"batch": batch}
        try:
            images, audio = make_inputs(cfg, batch, device, job.memory_format == "channels_last", job.seed)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            row.update(time_batch(forward_fn(runner, images, audio, device, job.precision), device, job.warmup, job.repeats, job.budget_s))
            row["throughput"] = batch / (row["latency_ms"] / 1000.0)
            if device.type == "cuda":
                row["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            else:
                row["peak_mem_mib"] = max_rss_mib() - rss_before
        except torch.OutOfMemoryError as exc:
            row["error"] = describe_error(exc)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as exc:
            row["error"] = describe_error(exc)
        finally:
            images = audio = None  # noqa: F841 - free the batch before the next, larger one
        result["batches"].append(row)
    if job.flops:  # after the timing, so its forward pass does not raise the peak RSS baseline
        try:
            result["flops"] = count_flops(model, cfg, device)
        except Exception as exc:  # a counting failure must not cost the timing
            result["flops_error"] = describe_error(exc)
    return result


# --------------------------------------------------------------------------------------
# profiling by module


@contextlib.contextmanager
def module_labels(model: torch.nn.Module, max_depth: int) -> Iterator[dict[str, str]]:
    """Wrap the forward of every submodule (up to `max_depth` name components) in a record_function.

    Yields {module name: class name} for the modules that were labelled.
    """
    from torch.profiler import record_function

    classes: dict[str, str] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or name.count(".") + 1 > max_depth:
            continue
        classes[name] = type(module).__name__
        stack: list[Any] = []

        def pre_hook(_module: torch.nn.Module, _inputs: Any, label: str = MODULE_LABEL + name, stack: list[Any] = stack) -> None:
            context = record_function(label)
            context.__enter__()
            stack.append(context)

        def post_hook(_module: torch.nn.Module, _inputs: Any, _output: Any, stack: list[Any] = stack) -> None:
            stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    try:
        yield classes
    finally:
        for handle in handles:
            handle.remove()


def outermost_by_class(totals: dict[str, float], classes: dict[str, str]) -> dict[str, float]:
    """Time per module class, counting only instances not nested in another of the same class."""
    by_class: dict[str, float] = {}
    for name, total in totals.items():
        cls = classes[name]
        if cls in CONTAINER_CLASSES:
            continue
        parts = name.split(".")
        ancestors = (".".join(parts[:i]) for i in range(1, len(parts)))
        if any(classes.get(a) == cls for a in ancestors):
            continue
        by_class[cls] = by_class.get(cls, 0.0) + total
    return by_class


def profile(job: ModelJob) -> dict[str, Any]:
    """Where one forward pass spends its time: by module (inclusive), module class and operator (self)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg, model, device = build(job)
    batch = min(job.batch_sizes)
    images, audio = make_inputs(cfg, batch, device, job.memory_format == "channels_last", job.seed)
    forward = forward_fn(model, images, audio, device, job.precision)
    for _ in range(job.warmup):
        forward()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with module_labels(model, job.profile_depth) as classes, torch_profile(activities=activities) as prof:
        started = time.perf_counter()
        forward()
        synchronize(device)
        wall_ms = (time.perf_counter() - started) * 1000.0
    averages = prof.key_averages()
    module_ms = {e.key[len(MODULE_LABEL):]: e.cpu_time_total / 1000.0 for e in averages if e.key.startswith(MODULE_LABEL)}
    ops = sorted(
        (e for e in averages if not e.key.startswith(MODULE_LABEL)), key=lambda e: e.self_cpu_time_total, reverse=True
    )
    order = list(classes)
    return {
        "preset": job.preset,
        "batch": batch,
        "wall_ms": wall_ms,
        "modules": [
            {"module": name, "class": classes[name], "ms": module_ms[name]} for name in order if name in module_ms
        ],
        "classes": sorted(
            ({"class": c, "ms": ms} for c, ms in outermost_by_class(module_ms, classes).items()),
            key=lambda r: r["ms"], reverse=True,
        ),
        "ops": [
            {"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000.0} for e in ops[:15]
        ],
    }


def main() -> int:
    try:
        job = ModelJob.from_json(json.loads(sys.stdin.read()))
        result = profile(job) if job.profile else measure(job)
    except Exception as exc:
        result = {"error": describe_error(exc)}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
