"""`avcc-stream bench model`: forward throughput, latency and peak memory, with the paper's baseline beside it.

Every preset x variant (precision, memory format, torch.compile) runs in its own worker
process (see `model_worker`), one after the other, so two measurements never share the
cores. The AudioCSRNet baseline at each measured resolution is always included, and every
row carries its throughput ratio to that baseline at the same resolution, batch and variant
from the same run. When CC-AV misses its target ratio the bench profiles it (torch.profiler,
by module) and adds where the time goes to the report.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from avcc_stream.bench.report import BenchReport, Column, Table

FULL_RES_PRESETS = ("cc-av", "cc-v", "audiocsrnet", "csrnet")
DEFAULT_PRESETS = FULL_RES_PRESETS + tuple(f"{p}-lowres" for p in FULL_RES_PRESETS)
# The targets: CC-AV throughput over AudioCSRNet's at 1024x576, same run.
TARGET_RATIO = {"cpu": 8.0, "cuda": 4.0}
TARGET_PRESET = "cc-av"
PRECISIONS = ("fp32", "bf16", "fp16")  # fp32, or autocast to bf16 / fp16
MEMORY_FORMATS = ("contiguous", "channels_last")


@dataclass(frozen=True)
class ModelJob:
    """One worker process's task: a preset and variant to time at each batch size (or to profile)."""

    preset: str
    device: str = "cpu"
    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: bool = False
    compile_backend: str = "inductor"
    fold_bn: bool = False  # fold BatchNorm into the preceding conv (Sequential conv-BN pairs)
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 1
    repeats: int = 5
    budget_s: float = 60.0  # stop repeating a batch size after this long (at least one timed run)
    flops: bool = True
    threads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    profile: bool = False
    profile_depth: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory format must be one of {', '.join(MEMORY_FORMATS)}, got {self.memory_format!r}")
        if self.warmup < 1 or self.repeats < 1 or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("warmup, repeats and every batch size must be >= 1")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelJob:
        data = dict(data)
        data["batch_sizes"] = tuple(data.get("batch_sizes", (1,)))
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelBenchSettings:
    presets: tuple[str, ...] = DEFAULT_PRESETS
    device: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 4)
    precisions: tuple[str, ...] = ("fp32",)
    memory_formats: tuple[str, ...] = ("contiguous",)
    compile_modes: tuple[bool, ...] = (False,)
    compile_backend: str = "inductor"
    fold_bn_modes: tuple[bool, ...] = (False,)
    warmup: int = 1
    repeats: int = 5
    budget_s: float = 60.0
    flops: bool = True
    threads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    profile: str = "auto"  # "auto" (profile CC-AV when it misses its target), "none", or preset names
    profile_depth: int = 5
    interleave: bool = False  # time the presets of one resolution in turn, in one process
    job_timeout_s: float = 1800.0


def baseline_for(preset: str) -> str:
    """The AudioCSRNet preset at the same resolution as `preset` (the paper's baseline)."""
    return "audiocsrnet-lowres" if preset.endswith("-lowres") else "audiocsrnet"


def with_baselines(presets: Sequence[str]) -> tuple[str, ...]:
    ordered = list(dict.fromkeys(presets))
    for preset in list(ordered):
        if baseline_for(preset) not in ordered:
            ordered.append(baseline_for(preset))
    return tuple(ordered)


def run_worker(jobs: Sequence[ModelJob], timeout_s: float) -> Any:
    """Run one worker process on `jobs`; its last stdout line is the JSON result ({"error": ...} on failure)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "avcc_stream.bench.model_worker"],
            input=json.dumps({"jobs": [job.to_json() for job in jobs]}), capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"worker timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited with {done.returncode}: {tail[:300]}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"worker printed no result: {lines[-1][:200]}"}


def job_groups(presets: Sequence[str], interleave: bool) -> list[list[str]]:
    """Presets measured together: one per worker, or (interleaved) every preset of one resolution."""
    if not interleave:
        return [[preset] for preset in presets]
    groups: dict[str, list[str]] = {}
    for preset in presets:
        groups.setdefault(baseline_for(preset), []).append(preset)
    return list(groups.values())


def variant_label(job: ModelJob) -> str:
    compiled = f"compile({job.compile_backend})" if job.compile else "eager"
    return f"{job.precision} {job.memory_format} {compiled}{' fold-bn' if job.fold_bn else ''}"


def measured_rows(job: ModelJob, result: dict[str, Any]) -> list[dict[str, Any]]:
    common = {
        "preset": job.preset,
        "precision": job.precision,
        "memory_format": job.memory_format,
        "compile": job.compile_backend if job.compile else "off",
        "fold_bn": job.fold_bn,
        "variant": variant_label(job),
        "load_start": result.get("load_start"),
        "load_end": result.get("load_end"),
    }
    if "error" in result:
        return [{**common, "batch": b, "error": result["error"]} for b in sorted(set(job.batch_sizes))]
    width, height = result["input_size"]
    flops = result.get("flops")
    common.update({
        "resolution": f"{width}x{height}",
        "params_m": result["params"] / 1e6,
        "gflops": flops / 1e9 if flops else None,
    })
    return [{**common, **batch} for batch in result["batches"]]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Throughput / AudioCSRNet's throughput at the same resolution, batch and variant."""
    def key(row: dict[str, Any], preset: str) -> tuple[Any, ...]:
        return (preset, row["variant"], row["batch"])

    baseline = {key(r, r["preset"]): r for r in rows}
    for row in rows:
        reference = baseline.get(key(row, baseline_for(row["preset"])), {})
        throughput, reference_throughput = row.get("throughput"), reference.get("throughput")
        row["vs_audiocsrnet"] = throughput / reference_throughput if (throughput and reference_throughput) else None
        cpu, reference_cpu = row.get("cpu_ms"), reference.get("cpu_ms")
        row["cpu_vs_audiocsrnet"] = reference_cpu / cpu if (cpu and reference_cpu) else None


def target_summary(rows: list[dict[str, Any]], device_type: str, overridden: bool) -> tuple[list[str], bool]:
    """Verdict lines for CC-AV vs AudioCSRNet at 1024x576; and whether any was missed."""
    target = TARGET_RATIO["cuda" if device_type == "cuda" else "cpu"]
    lines, missed = [], False
    for row in rows:
        if row["preset"] != TARGET_PRESET or row.get("vs_audiocsrnet") is None:
            continue
        ok = row["vs_audiocsrnet"] >= target
        missed |= not ok
        lines.append(
            f"CC-AV / AudioCSRNet throughput at 1024x576, batch {row['batch']}, {row['variant']} on {device_type}: "
            f"{row['vs_audiocsrnet']:.2f}x (target >= {target:g}x): {'met' if ok else 'MISSED'}"
        )
    if overridden and lines:
        lines = [f"{line} [with overridden config fields: not the real preset]" for line in lines]
    return lines, missed


MODEL_COLUMNS = [
    Column("preset", "model"),
    Column("resolution", "input"),
    Column("params_m", "params (M)", "{:.2f}"),
    Column("gflops", "GFLOPs/img", "{:.1f}"),
    Column("variant", "variant"),
    Column("batch", "batch", "{:d}"),
    Column("latency_ms", "latency (ms)", "{:.1f}"),
    Column("throughput", "images/s", "{:.2f}"),
    Column("vs_audiocsrnet", "x AudioCSRNet", "{:.2f}"),
    Column("cpu_ms", "CPU ms/batch", "{:.0f}"),
    Column("cpu_vs_audiocsrnet", "x AudioCSRNet (CPU time)", "{:.2f}"),
    Column("peak_mem_mib", "peak mem (MiB)", "{:.0f}"),
    Column("repeats", "runs", "{:d}"),
    Column("first_call_s", "1st call (s)", "{:.1f}"),
    Column("load_start", "load avg", "{:.1f}"),
    Column("error", "error"),
]


def profile_tables(result: dict[str, Any], min_share: float = 0.02) -> list[Table]:
    """Module, class and operator tables of one profiled forward pass."""
    wall = result["wall_ms"]
    title = f"where the time goes: {result['preset']}, batch {result['batch']} (one profiled forward, {wall:.0f} ms)"
    modules = Table(
        f"{title}, by module (inclusive, >= {min_share:.0%})",
        [Column("module", "module"), Column("class", "class"), Column("ms", "ms", "{:.1f}"), Column("share", "share", "{:.1%}")],
        [{**m, "share": m["ms"] / wall} for m in result["modules"] if m["ms"] / wall >= min_share],
    )
    classes = Table(
        f"{title}, by module class (outermost instances)",
        [Column("class", "class"), Column("ms", "ms", "{:.1f}"), Column("share", "share", "{:.1%}")],
        [{**c, "share": c["ms"] / wall} for c in result["classes"] if c["ms"] / wall >= min_share / 2],
    )
    ops = Table(
        f"{title}, by operator (self time, top 15)",
        [Column("op", "operator"), Column("calls", "calls", "{:d}"), Column("self_ms", "self ms", "{:.1f}"), Column("share", "share", "{:.1%}")],
        [{**o, "share": o["self_ms"] / wall} for o in result["ops"]],
    )
    return [modules, classes, ops]


def run_model_bench(
    settings: ModelBenchSettings,
    machine: dict[str, Any],
    progress: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    presets = with_baselines(settings.presets)
    report = BenchReport("model", machine, {"presets": list(presets), **{k: v for k, v in vars(settings).items() if k != "presets"}})
    base = ModelJob(
        preset=presets[0], device=settings.device, compile_backend=settings.compile_backend,
        batch_sizes=tuple(settings.batch_sizes), warmup=settings.warmup, repeats=settings.repeats,
        budget_s=settings.budget_s, flops=settings.flops, threads=settings.threads,
        overrides=dict(settings.overrides), profile_depth=settings.profile_depth,
    )
    rows: list[dict[str, Any]] = []
    variants = list(itertools.product(settings.precisions, settings.memory_formats, settings.compile_modes, settings.fold_bn_modes))
    for group, (precision, memory_format, compiled, fold_bn) in itertools.product(job_groups(presets, settings.interleave), variants):
        jobs = [replace(base, preset=p, precision=precision, memory_format=memory_format, compile=compiled, fold_bn=fold_bn)
                for p in group]
        label = f"{' + '.join(group)} {variant_label(jobs[0])}"
        progress(f"model: {label} batches {','.join(map(str, base.batch_sizes))} ...")
        started = time.monotonic()
        results = run_worker(jobs, settings.job_timeout_s)
        if isinstance(results, dict):  # the worker failed as a whole
            results = [results] * len(jobs)
        for job, result in zip(jobs, results):
            rows += measured_rows(job, result)
        progress(f"model: {label} done in {time.monotonic() - started:.0f} s")
    add_ratios(rows)
    device_type = settings.device.split(":")[0]
    report.tables.append(Table(f"forward pass on {settings.device}", MODEL_COLUMNS, rows))
    verdicts, missed = target_summary(rows, device_type, bool(settings.overrides))
    report.summary += verdicts
    if not verdicts:
        report.summary.append(f"no CC-AV vs AudioCSRNet ratio at 1024x576 in this run (presets: {', '.join(presets)})")

    to_profile = profile_targets(settings, missed)
    for preset in to_profile:
        job = replace(base, preset=preset, precision=settings.precisions[0], memory_format=settings.memory_formats[0],
                      fold_bn=settings.fold_bn_modes[0], profile=True, batch_sizes=(min(settings.batch_sizes),))
        progress(f"model: profiling {preset} ...")
        result = run_worker([job], settings.job_timeout_s)
        if "error" in result:
            report.notes.append(f"profiling {preset} failed: {result['error']}")
            continue
        report.tables += profile_tables(result)
        report.data.setdefault("profiles", []).append(result)
    report.notes += [
        f"latency is the median of up to {settings.repeats} timed forward passes after {settings.warmup} warm-up "
        f"pass(es), stopped early after {settings.budget_s:g} s per batch size ('runs' says how many); "
        "images/s = batch / median latency; inputs are already on the device (no decode, resize or transfer).",
        "GFLOPs: torch.utils.flop_counter at batch 1, fp32 (a multiply-add counts 2).",
        *(["interleaved: the presets of one resolution were timed in turn (A, B, A, B, ...) in one process, so "
            "load changes on the shared machine hit them alike; peak memory is not measured in this mode."]
          if settings.interleave else []),
        "peak mem: CUDA max_memory_allocated on a GPU; on a CPU the growth of the worker process's peak RSS "
        "over its value before the first forward pass (batch sizes run in ascending order in one process, "
        "so a figure is the batch's own peak whenever memory grows with the batch).",
        "'1st call' is the first forward pass of a batch size, including torch.compile's compilation when on.",
        "CPU ms/batch: this process's CPU time per forward pass (all threads; median). On a shared CPU it is "
        "barely inflated by other processes while wall time is, so 'x AudioCSRNet (CPU time)' is the steadier "
        "ratio when the load average ('load avg', 1 min, when the variant started) is above the core count.",
        "fold-bn: every BatchNorm2d directly after a Conv2d in a Sequential folded into the conv "
        "(torch.nn.utils.fusion.fuse_conv_bn_eval); the baselines' audio-conditioned BatchNorm is not foldable.",
    ]
    if to_profile:
        report.notes.append(
            "profiles: one forward pass under torch.profiler with every submodule wrapped in a record_function; "
            "profiler overhead inflates small ops, so read shares, not absolute ms."
        )
    if settings.overrides:
        report.notes.append(f"config fields overridden for every preset: {settings.overrides}")
    return report


def profile_targets(settings: ModelBenchSettings, missed: bool) -> list[str]:
    if settings.profile == "none":
        return []
    if settings.profile == "auto":
        return [TARGET_PRESET, "audiocsrnet"] if missed else []
    return [p.strip() for p in settings.profile.split(",") if p.strip()]
