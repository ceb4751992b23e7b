"""Measure model variants in a fresh process: `python -m avcc_stream.bench.model_worker < request.json`.

Why a process per variant: a process's peak resident memory (`ru_maxrss`) only ever grows,
so on a CPU the only honest peak-memory figure for a configuration is the growth of a
process that ran nothing else; a fresh process also keeps `torch.compile` caches, thread
pools and allocator state of one variant from flattering or penalising the next.

The request (JSON on stdin, `{"jobs": [...]}`) holds one job, or several jobs of one variant
to be timed interleaved (A, B, A, B, ...: on a shared machine a change of load then hits
every model alike, so their ratio holds; their peak memory is not measured then). Batch
sizes run in ascending order, so the peak RSS growth recorded after batch b is the peak of
batch b whenever memory grows with the batch. The worker prints one JSON value on its last
stdout line. With `profile` it instead runs torch.profiler over one forward pass, every
submodule wrapped in a `record_function` named after it, and returns where the time goes by
module, by module class and by operator.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from avcc_stream.bench.model_bench import ModelJob
from avcc_stream.model import ModelConfig, build_model
from avcc_stream.precision import PRECISIONS, autocast

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
        with torch.inference_mode(), autocast(device, dtype):
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


def timed_call(forward: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call, the device synchronised."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    forward()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(
    forwards: list[Callable[[], Any]], device: torch.device, warmup: int, repeats: int, budget_s: float
) -> list[dict[str, Any]]:
    """Time several forward passes in turn (A, B, A, B, ...), so a change in load hits all alike.

    Each is warmed up first (its first call includes compilation); then up to `repeats`
    rounds run, stopping after the round that passes `budget_s` per forward.
    """
    first_calls = [timed_call(forward, device)[0] for forward in forwards]
    for _ in range(warmup - 1):
        for forward in forwards:
            forward()
    walls: list[list[float]] = [[] for _ in forwards]
    cpus: list[list[float]] = [[] for _ in forwards]
    deadline = time.monotonic() + budget_s * len(forwards)
    for _ in range(repeats):
        for i, forward in enumerate(forwards):
            wall, cpu = timed_call(forward, device)
            walls[i].append(wall)
            cpus[i].append(cpu)
        if time.monotonic() > deadline:
            break
    return [
        {
            "first_call_s": first,
            "latency_ms": statistics.median(wall) * 1000.0,
            "latency_min_ms": min(wall) * 1000.0,
            "latency_max_ms": max(wall) * 1000.0,
            # CPU seconds of this process per forward pass: on a CPU the work itself, far less
            # inflated than wall time when other processes compete for the cores.
            "cpu_ms": statistics.median(cpu) * 1000.0,
            "repeats": len(wall),
        }
        for first, wall, cpu in zip(first_calls, walls, cpus)
    ]


def time_batch(forward: Callable[[], Any], device: torch.device, warmup: int, repeats: int, budget_s: float) -> dict[str, Any]:
    """Warm up, then time up to `repeats` calls of one forward pass within `budget_s`."""
    return time_interleaved([forward], device, warmup, repeats, budget_s)[0]


def fold_batchnorm(model: torch.nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in a Sequential into the conv (eval only).

    What an inference export would do: the BN's affine map joins the conv's weights and one
    pass over the feature map disappears. Returns how many were folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d) and norm.affine:
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = torch.nn.Identity()
                folded += 1
    return folded


def build(job: ModelJob) -> tuple[ModelConfig, torch.nn.Module, torch.device]:
    torch.manual_seed(job.seed)
    if job.threads:
        torch.set_num_threads(job.threads)
    device = torch.device(job.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick kernels
    cfg = ModelConfig.from_preset(job.preset, **job.overrides)
    model = build_model(cfg).eval().to(device)
    if job.fold_bn:
        fold_batchnorm(model)
    if job.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return cfg, model, device


def measure(jobs: list[ModelJob]) -> list[dict[str, Any]]:
    """Throughput, latency and peak memory of each job at each of its batch sizes.

    Jobs given together share the variant and batch sizes and are timed interleaved; their
    peak memory cannot be told apart then, so it is measured only for a job alone.
    """
    first = jobs[0]
    load_start = os.getloadavg()[0]
    built = [build(job) for job in jobs]
    device = built[0][2]
    alone = len(jobs) == 1
    results: list[dict[str, Any]] = []
    runners: list[Callable[..., Any]] = []
    for job, (cfg, model, _) in zip(jobs, built):
        results.append({
            "preset": job.preset,
            "load_start": load_start,
            "input_size": list(cfg.input_size),
            "params": sum(p.numel() for p in model.parameters()),
            "uses_audio": cfg.uses_audio,
            "flops": None,
            "memory_method": ("cuda max_memory_allocated" if device.type == "cuda" else "growth of process peak RSS (ru_maxrss)")
            if alone else "not measured (interleaved timing)",
            "batches": [],
        })
        runners.append(torch.compile(model, backend=job.compile_backend, dynamic=False) if job.compile else model)
    rss_before = max_rss_mib()
    for batch in sorted(set(first.batch_sizes)):
        rows: list[dict[str, Any]] = [{"batch": batch} for _ in jobs]
        inputs: list[Any] = []
        try:
            forwards = []
            for job, (cfg, _, _), runner in zip(jobs, built, runners):
                images, audio = make_inputs(cfg, batch, device, job.memory_format == "channels_last", job.seed)
                inputs.append((images, audio))
                forwards.append(forward_fn(runner, images, audio, device, job.precision))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            timings = time_interleaved(forwards, device, first.warmup, first.repeats, first.budget_s)
            for row, timing in zip(rows, timings):
                row.update(timing)
                row["throughput"] = batch / (row["latency_ms"] / 1000.0)
                if alone:
                    row["peak_mem_mib"] = (
                        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else max_rss_mib() - rss_before
                    )
        except Exception as exc:  # out of memory at a large batch is an answer, not a crash
            for row in rows:
                row.setdefault("error", describe_error(exc))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            inputs.clear()  # free this batch before the next, larger one
        for result, row in zip(results, rows):
            result["batches"].append(row)
    load_end = os.getloadavg()[0]
    for job, (cfg, model, _), result in zip(jobs, built, results):
        result["load_end"] = load_end
        if job.flops:  # after the timing, so its forward pass does not raise the peak RSS baseline
            try:
                result["flops"] = count_flops(model, cfg, device)
            except Exception as exc:  # a counting failure must not cost the timing
                result["flops_error"] = describe_error(exc)
    return results


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
        request = json.loads(sys.stdin.read())
        jobs = [ModelJob.from_json(job) for job in request["jobs"]]
        result: Any = profile(jobs[0]) if jobs[0].profile else measure(jobs)
    except Exception as exc:
        result = {"error": describe_error(exc)}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
