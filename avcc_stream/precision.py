"""Which autocast dtype a forward pass runs in, shared by the daemon, `evaluate`, the trainer
and the benchmarks.

Precisions are named as the benchmarks and `evaluate --precision` name them: fp32 (no
autocast), bf16 and fp16 (autocast to that dtype). bf16 autocast on a CPU is only worth it
where the CPU has bf16 instructions (AVX512-BF16 or AMX): elsewhere oneDNN emulates it, and it
runs many times slower than float32 (session 11 and 17: ~9x for a cc-av-1024-cpu training step
on AVX2-only AMD EPYCs).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache

import torch

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@cache  # asked before every batch the daemon counts; the CPU does not change
def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic (AVX512-BF16 or AMX), as oneDNN reports it."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else False  # unknown: assume emulated


def device_type(device: str | torch.device) -> str:
    """"cuda:1" -> "cuda": what torch.autocast takes."""
    return device.type if isinstance(device, torch.device) else device.split(":", 1)[0]


def inference_dtype(device: str | torch.device, amp: bool) -> torch.dtype | None:
    """The daemon's autocast dtype with `model.amp` on: float16 on CUDA, bfloat16 on a CPU with
    bf16 instructions (35 % less CPU time for a CC-AV forward pass on a Zen 4, docs/performance.md), and
    float32 anywhere else (an emulated bf16 would be slower, mps gains nothing measured)."""
    if not amp:
        return None
    kind = device_type(device)
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast for `dtype` on `device`, or nothing for float32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """bf16 / fp16 / fp32, as PRECISIONS names them."""
    return next(name for name, value in PRECISIONS.items() if value == dtype)
