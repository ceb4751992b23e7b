"""Inference: a pool of worker threads that count windows from every camera in batches.

* `WindowQueue` holds at most `queue_per_camera` windows per camera. When inference falls
  behind, a new window pushes out its camera's oldest one (counted per camera): a venue
  wants the newest count, and memory stays bounded however slow the model is.
* A worker takes a batch dynamically: once one window is ready it waits at most `max_wait_s`
  for up to `max_batch` windows that go to the same model, taken round-robin over cameras so
  one busy camera cannot starve the others.
* Windows with sound go to the audio-visual checkpoint (CC-AV); windows without usable
  sound go to the vision-only fallback (CC-V), or, with no fallback configured, to the
  primary model with a silent waveform (the result then says `audio: false`).
* The forward pass runs under `torch.inference_mode()`, with autocast when AMP is on (float16
  on CUDA, bfloat16 on a CPU with bf16 instructions; see avcc_stream.precision), on the
  configured device(s): one model copy per device, `workers` threads spread over the devices.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avcc_stream.stream.types import AudioVisualWindow, CountResult

ResultCallback = Callable[[CountResult], None]
DropCallback = Callable[[AudioVisualWindow], None]
BatchCallback = Callable[[str, int, float], None]  # device, batch size, seconds


@dataclass(frozen=True)
class InferConfig:
    max_batch: int = 8
    max_wait_s: float = 0.05
    workers: int = 1
    queue_per_camera: int = 4
    flip_average: bool = False  # count each frame and its mirror image, average them (2 passes)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.workers < 1 or self.queue_per_camera < 1 or self.max_wait_s < 0:
            raise ValueError("max_batch, workers and queue_per_camera must be >= 1 and max_wait_s >= 0")


# --------------------------------------------------------------------------------------
# models


@dataclass
class CountingModel:
    """A loaded checkpoint on one device, with what the pool needs to feed it."""

    name: str  # shown in every result ("model" field)
    module: Any  # torch.nn.Module in eval mode
    input_size: tuple[int, int]  # (width, height)
    grid: tuple[int, int]
    uses_audio: bool
    audio_samples: int
    device: str


@dataclass
class DeviceModels:
    """The primary and (optional) fallback model on one device."""

    device: str
    primary: CountingModel
    fallback: CountingModel | None

    def route(self, window: AudioVisualWindow) -> CountingModel:
        if window.audio is not None and self.primary.uses_audio:
            return self.primary
        if self.fallback is not None:
            return self.fallback
        return self.primary


def resolve_devices(devices: Sequence[str]) -> list[str]:
    """`auto` -> cuda when present, else mps, else cpu; other names are kept."""
    import torch

    resolved = []
    for device in devices:
        if device == "auto":
            if torch.cuda.is_available():
                device = "cuda"
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} is configured but CUDA is not available on this machine")
        resolved.append(device)
    return resolved


def checkpoint_label(spec: str, config_name: str) -> str:
    """What results name as their model: the builtin name, or the preset and file name."""
    if spec.startswith("builtin:"):
        return spec[len("builtin:"):]
    return f"{config_name}:{Path(spec).name}"


def load_counting_model(spec: str, device: str) -> CountingModel:
    from avcc_stream.model.checkpoint import load_checkpoint, resolve_checkpoint

    loaded = load_checkpoint(resolve_checkpoint(spec), map_location=device)
    cfg = loaded.config
    return CountingModel(
        name=checkpoint_label(spec, cfg.name),
        module=loaded.model,
        input_size=tuple(cfg.input_size),
        grid=tuple(cfg.grid),
        uses_audio=bool(cfg.uses_audio),
        audio_samples=int(getattr(cfg, "audio_num_samples", 16_000)),
        device=device,
    )


def load_models(checkpoint: str, fallback: str | None, devices: Sequence[str]) -> list[DeviceModels]:
    """One primary (+ fallback) per device. A vision-only primary needs no fallback."""
    out = []
    for device in resolve_devices(devices):
        primary = load_counting_model(checkpoint, device)
        second = load_counting_model(fallback, device) if (fallback and primary.uses_audio) else None
        if second is not None and second.uses_audio:
            raise ValueError(f"fallback checkpoint {fallback!r} uses audio; it must be a vision-only model (e.g. cc-v)")
        out.append(DeviceModels(device, primary, second))
    return out


# --------------------------------------------------------------------------------------
# the queue


class WindowQueue:
    """Per-camera bounded queues of windows, read in fair batches by worker threads."""

    def __init__(self, per_camera: int) -> None:
        self.per_camera = per_camera
        self._queues: dict[str, deque[AudioVisualWindow]] = {}
        self._order: deque[str] = deque()  # round-robin order of cameras
        self._cond = threading.Condition()
        self._closed = False
        self.dropped: dict[str, int] = {}

    def put(self, window: AudioVisualWindow) -> AudioVisualWindow | None:
        """Enqueue (never blocks); returns the camera's oldest window if it had to make room."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the inference queue is closed")
            queue = self._queues.get(window.camera)
            if queue is None:
                queue = self._queues[window.camera] = deque()
                self._order.append(window.camera)
            dropped = None
            if len(queue) >= self.per_camera:
                dropped = queue.popleft()
                self.dropped[window.camera] = self.dropped.get(window.camera, 0) + 1
            queue.append(window)
            self._cond.notify()
            return dropped

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        """No more windows will come; workers finish what is queued, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        with self._cond:
            count = sum(len(q) for q in self._queues.values())
            for queue in self._queues.values():
                queue.clear()
            return count

    def take_batch(self, max_batch: int, max_wait_s: float, group: Callable[[AudioVisualWindow], Any]) -> list[AudioVisualWindow]:
        """Up to `max_batch` windows of one group; [] once closed and empty."""
        with self._cond:
            while not self._pending():
                if self._closed:
                    return []
                self._cond.wait()
            target = group(self._oldest())
            deadline = time.monotonic() + max_wait_s
            while self._count(group, target) < max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take(group, target, max_batch)

    def _pending(self) -> bool:
        return any(self._queues.values())

    def _oldest(self) -> AudioVisualWindow:
        heads = [q[0] for q in self._queues.values() if q]
        return min(heads, key=lambda w: w.enqueued_monotonic)

    def _count(self, group: Callable[[AudioVisualWindow], Any], target: Any) -> int:
        return sum(1 for q in self._queues.values() for w in q if group(w) == target)

    def _take(self, group: Callable[[AudioVisualWindow], Any], target: Any, limit: int) -> list[AudioVisualWindow]:
        batch: list[AudioVisualWindow] = []
        progress = True
        while len(batch) < limit and progress:
            progress = False
            for _ in range(len(self._order)):
                camera = self._order[0]
                self._order.rotate(-1)
                queue = self._queues[camera]
                for i, window in enumerate(queue):  # the camera's oldest window of this group
                    if group(window) == target:
                        del queue[i]
                        batch.append(window)
                        progress = True
                        break
                if len(batch) >= limit:
                    break
        return batch


# --------------------------------------------------------------------------------------
# the pool


@dataclass
class PoolStats:
    processed: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    largest_batch: int = 0
    errors: int = 0


class InferencePool:
    """Worker threads that turn windows into CountResults.

    `submit` is safe from any thread and never blocks; `on_result` is called from a worker
    thread (the daemon hands the result to its loop from there).
    """

    def __init__(
        self,
        models: Sequence[DeviceModels],
        config: InferConfig,
        on_result: ResultCallback,
        *,
        on_drop: DropCallback | None = None,
        on_batch: BatchCallback | None = None,
        on_error: Callable[[BaseException, list[AudioVisualWindow]], None] | None = None,
        amp: bool = True,
    ) -> None:
        if not models:
            raise ValueError("the inference pool needs at least one device's models")
        self.models = list(models)
        self.config = config
        self.on_result = on_result
        self.on_drop = on_drop
        self.on_batch = on_batch
        self.on_error = on_error
        self.amp = amp
        self.queue = WindowQueue(config.queue_per_camera)
        self.stats = PoolStats()
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()

    @property
    def dropped(self) -> dict[str, int]:
        return dict(self.queue.dropped)

    def start(self) -> None:
        for i in range(self.config.workers):
            device_models = self.models[i % len(self.models)]
            thread = threading.Thread(target=self._work, args=(device_models,), name=f"infer-{i}-{device_models.device}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, window: AudioVisualWindow) -> None:
        dropped = self.queue.put(window)
        if dropped is not None and self.on_drop is not None:
            self.on_drop(dropped)

    def stop(self, timeout: float | None = None, drain: bool = True) -> bool:
        """Finish the queued windows (or discard them with drain=False); True if all workers ended."""
        if not drain:
            self.queue.clear()
        self.queue.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # ---------------------------------------------------------------- worker

    def _work(self, device_models: DeviceModels) -> None:
        def group(window: AudioVisualWindow) -> int:
            return id(device_models.route(window))

        while True:
            batch = self.queue.take_batch(self.config.max_batch, self.config.max_wait_s, group)
            if not batch:
                return
            model = device_models.route(batch[0])
            started = time.perf_counter()
            try:
                results = self.count(model, batch)
            except Exception as exc:  # a bad batch must not kill the worker
                with self._stats_lock:
                    self.stats.errors += 1
                if self.on_error is not None:
                    self.on_error(exc, batch)
                continue
            elapsed = time.perf_counter() - started
            with self._stats_lock:
                self.stats.batches += 1
                self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
                for result in results:
                    self.stats.processed[result.camera] = self.stats.processed.get(result.camera, 0) + 1
            if self.on_batch is not None:
                self.on_batch(model.device, len(batch), elapsed)
            for result in results:
                self.on_result(result)

    def count(self, model: CountingModel, batch: list[AudioVisualWindow]) -> list[CountResult]:
        """One forward pass over `batch` (all routed to `model`)."""
        import torch

        from avcc_stream.model.flip import flip_averaged
        from avcc_stream.precision import autocast, inference_dtype
        from avcc_stream.preprocess import prepare_image

        images = torch.stack([prepare_image(w.frame, model.input_size) for w in batch]).to(model.device)
        with_sound = [w.audio is not None and model.uses_audio for w in batch]
        audio = None
        if model.uses_audio:
            waves = [
                torch.from_numpy(np.asarray(w.audio, dtype=np.float32)) if w.audio is not None
                else torch.zeros(model.audio_samples)  # no fallback model: silence
                for w in batch
            ]
            audio = torch.stack(waves).to(model.device)
        with torch.inference_mode(), autocast(model.device, inference_dtype(model.device, self.amp)):
            out = flip_averaged(model.module, images, audio) if self.config.flip_average else model.module(images, audio)
        counts = out.count.float().cpu().numpy()
        patch_counts = out.patch_counts.float().cpu().numpy()
        pir = out.pir.float().cpu().numpy() if out.pir is not None else None
        now = time.time()
        results = []
        for i, window in enumerate(batch):
            results.append(CountResult(
                camera=window.camera,
                window_start=window.window_start,
                window_end=window.window_end,
                count=float(counts[i]),
                model=model.name,
                audio=with_sound[i],
                latency_ms=(now - window.window_end.timestamp()) * 1000.0,
                patch_counts=patch_counts[i].reshape(model.grid),
                pir=None if pir is None else pir[i].reshape(model.grid),
                frame_size=(int(window.frame.shape[1]), int(window.frame.shape[0])),
            ))
        return results
