"""Where a benchmark ran: CPU, cores, memory, GPU, library versions, commit and load.

A number without its machine is no number: every report carries this record. The load
average is taken at the start and at the end of a run, because the development machines
are shared and a busy neighbour slows every figure down.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, GPUs, Python/torch/CUDA/PyAV versions, commit, load average."""
    import torch
    import torchaudio

    av = pyav()
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "torchaudio": torchaudio.__version__,
        "pyav": av.__version__ if av else None,
        "libavcodec": ".".join(str(v) for v in av.library_versions.get("libavcodec", ())) if av else None,
        "torch_threads": torch.get_num_threads(),
        "load_start": load_average(),
        "load_end": None,
    }
    info.update(git_commit())
    return info


def pyav() -> Any:
    """The PyAV module, or None where it is not installed (a GPU machine's image may lack it: the
    benchmarks then say so instead of failing)."""
    try:
        import av
    except ImportError:
        return None
    return av


def finish_machine_info(info: dict[str, Any]) -> dict[str, Any]:
    """Record the load average at the end of the run."""
    info["load_end"] = load_average()
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    except OSError:
        pass
    return None


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether its working tree differs from it (None outside git)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("diff", "--quiet", "HEAD", "--").returncode != 0
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
