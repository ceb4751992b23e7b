"""The training loop: one process or torchrun/DDP, resumable to the step, with a wall-clock budget.

Resuming continues exactly where a straight run would be: the state file holds model,
optimizer, scheduler, AMP scaler, epoch, step within the epoch, every process's RNG states and
the best validation MAE; shuffling is a function of (seed, epoch) and augmentation of
(data seed, epoch, sample id), so the resumed run skips the batches already seen and draws the
same ones after them. The DataLoader gets its own torch.Generator so that creating an iterator
does not advance the global RNG (which dropout uses).

Files in the output folder: state.pt (resumable, torch.save of tensors and plain values only,
read back with weights_only=True), best.safetensors (best validation MAE) and last.safetensors
(save_checkpoint, with provenance), steps.csv, metrics.csv, curves.png, config.yaml.

With train.ema_decay, an exponential moving average of the weights and buffers is kept next to
them (torch.optim.swa_utils.AveragedModel); validation, best and last use the average, and the
state file holds it, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from avcc_stream.data.training import DatasetKey, draw_parts
from avcc_stream.precision import autocast, cpu_has_bf16
from avcc_stream.train.config import TrainConfig
from avcc_stream.train.distributed import DistContext, init_distributed, shutdown_distributed
from avcc_stream.train.hard_examples import hard_example_weights, reader_and_ids
from avcc_stream.train.history import EPOCH_FIELDS, LOSS_TERMS, STEP_FIELDS, VAL_FIELDS, append_row, plot_history
from avcc_stream.train.metrics import CountErrors

STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"


class TrainingError(RuntimeError):
    """A run that cannot start or continue (bad resume state, empty dataset)."""


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    epochs_done: int
    global_step: int
    best_val_mae: float
    stopped_early: bool  # budget, signal or stop_after_steps; state.pt resumes it


# ------------------------------------------------------------------------------ data


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that can skip the first samples of an epoch.

    With `weights`, an epoch is instead a draw with replacement, sample i with probability
    proportional to weights[i], made from (seed, epoch) alike on every rank and dealt out
    rank::world_size, so the ranks split one draw and a resumed epoch repeats it. A sample's
    repeats within the epoch come as (index, draw) keys, draw 1, 2, ..., so that each gets its
    own augmentation (avcc_stream.data.training).
    """

    def __init__(
        self,
        dataset: Dataset,
        ctx: DistContext,
        seed: int,
        samples_per_epoch: int | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0
        if weights is not None and len(weights) != len(self.dataset):
            raise ValueError(f"{len(weights)} sampling weights for {len(self.dataset)} samples")
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        # An "epoch" may be a fresh random subset of the training set (validation more often).
        self.epoch_samples = self.num_samples
        if samples_per_epoch is not None:
            self.epoch_samples = min(self.num_samples, max(1, samples_per_epoch // ctx.world_size))

    def __iter__(self) -> Iterator[DatasetKey]:
        if self.weights is None:
            indices = list(super().__iter__())[: self.epoch_samples]
        else:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            drawn = torch.multinomial(
                self.weights, self.epoch_samples * self.num_replicas, replacement=True, generator=generator
            )
            indices = numbered_repeats(drawn.tolist())[self.rank :: self.num_replicas]
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return self.epoch_samples - self.skip


def numbered_repeats(indices: list[int]) -> list[DatasetKey]:
    """Each index as it is the first time it appears, then (index, 1), (index, 2), ..."""
    seen: Counter[int] = Counter()
    keys: list[DatasetKey] = []
    for index in indices:
        keys.append((index, seen[index]) if seen[index] else index)
        seen[index] += 1
    return keys


def count_weights(source: Any, exponent: float) -> torch.Tensor | None:
    """(1 + count) ** exponent per sample of `source` (a dataset reader or a Subset of one); None for 0."""
    if exponent == 0:
        return None
    reader, ids = reader_and_ids(source)
    counts = torch.tensor([reader.count_of(sample_id) for sample_id in ids], dtype=torch.float64)
    return (1.0 + counts) ** exponent


class BlackoutDataset(Dataset):
    """Replaces a seeded share of images by black frames (occlusion rate 1), keeping the targets,
    so the audio branch has to carry the count when the picture says nothing."""

    def __init__(self, base: Any, probability: float, seed: int) -> None:
        from avcc_stream.preprocess import prepare_image

        self.base = base
        self.probability = probability
        self.seed = seed
        self.epoch = 0
        width, height = base.input_size
        self.black = prepare_image(np.zeros((height, width, 3), dtype=np.uint8), (width, height))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: DatasetKey) -> dict[str, Any]:
        from avcc_stream.data.seeding import rng_for

        item = self.base[key]
        parts = draw_parts(item["id"], item["draw"])
        if self.probability > 0 and rng_for("blackout", self.seed, self.epoch, *parts).uniform() < self.probability:
            item["image"] = self.black.clone()
            item["clear"] = False
        return item


def _limit(source: Any, limit: int | None) -> Any:
    return source if limit is None or limit >= len(source) else Subset(source, range(limit))


def build_datasets(cfg: TrainConfig, model_cfg: Any) -> tuple[Any, dict[str, Any], torch.Tensor | None]:
    """The training set, one validation set per validation setting (name -> dataset), and the
    training samples' drawing weights (None: a plain shuffle)."""
    from avcc_stream.data.datasets import CombinedDataset, open_dataset
    from avcc_stream.data.degrade import setting
    from avcc_stream.data.training import Augmentation, CrowdTrainingDataset

    data = cfg.data
    train_reader = open_dataset(data.root, data.train_split)
    if data.extra_train_roots:
        extra = [open_dataset(root, data.train_split) for root in data.extra_train_roots]
        train_reader = CombinedDataset([train_reader, *extra])
    train_source = _limit(train_reader, data.max_train_samples)
    val_source = _limit(open_dataset(data.root, data.val_split), data.max_val_samples)
    train = CrowdTrainingDataset(
        train_source, model_cfg, augment=data.augment, seed=data.seed,
        augmentation=Augmentation(degrade_probability=data.degrade_probability),
    )
    if data.augment and data.blackout_probability > 0:
        train = BlackoutDataset(train, data.blackout_probability, data.seed)
    val = {
        name: CrowdTrainingDataset(val_source, model_cfg, augment=False, degradation=setting(name), seed=data.val_seed)
        for name in data.val_settings
    }
    weights = count_weights(train_source, data.count_weighting)
    hardness = hard_example_weights(
        train_source, [data.root, *data.extra_train_roots], data.hard_example_reports, data.hard_example_weighting
    )
    if hardness is not None:
        weights = hardness if weights is None else weights * hardness
    return train, val, weights


# ------------------------------------------------------------------------------ model step


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `mode` on `device`. "auto" is bf16 (fp16 without bf16 support) on
    CUDA and off on CPU; "bf16" on a CPU with AVX512-BF16/AMX is ~1.7x faster for CC-AV-lowres."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        if mode == "fp16":
            raise ValueError("train.amp fp16 needs CUDA; use bf16 or off on CPU")
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def amp_warning(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """A warning for bf16 autocast on a CPU that only emulates it (session 11: a cc-av-1024-cpu
    step took 53 s in bf16 against 6.3 s in float32 on an AVX2-only AMD EPYC)."""
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        return ("warning: train.amp bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): autocast "
                "emulates it and runs several times slower than float32; set train.amp: \"off\"")
    return None


def forward(model: torch.nn.Module, batch: dict[str, Any], device: torch.device, uses_audio: bool,
            dtype: torch.dtype | None, channels_last: bool = False):
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    audio = batch["audio"].to(device, non_blocking=True) if uses_audio else None
    with autocast(device, dtype):
        return model(images, audio)


@torch.no_grad()
def count_errors(model: torch.nn.Module, loader: DataLoader, device: torch.device, uses_audio: bool,
                 dtype: torch.dtype | None = None, channels_last: bool = False) -> CountErrors:
    was_training = model.training
    model.eval()
    errors = CountErrors()
    for batch in loader:
        out = forward(model, batch, device, uses_audio, dtype, channels_last)
        errors.update(out.count.float(), batch["count"])
    model.train(was_training)
    return errors


def freeze(model: torch.nn.Module, prefixes: Sequence[str]) -> None:
    """Stop the parameters under `prefixes` from training, and keep their modules in eval mode.

    requires_grad=False alone would still let batch norm move its running statistics and dropout
    drop, so a "fixed" part would change under the parts that train. Each outermost module under
    a prefix gets a `train` that always means eval; the trainer's and evaluation's train()/eval()
    calls reach it through its parent as usual.
    """
    if not prefixes:
        return
    matched = {prefix: False for prefix in prefixes}
    for name, parameter in model.named_parameters():
        for prefix in prefixes:
            if name.startswith(prefix):
                parameter.requires_grad_(False)
                matched[prefix] = True
    unmatched = [prefix for prefix, hit in matched.items() if not hit]
    if unmatched:
        raise TrainingError(f"optim.frozen: no parameter name starts with {', '.join(map(repr, unmatched))}")

    def always_eval(module: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
        return torch.nn.Module.train(module, False)

    outermost: list[str] = []
    for name, module in model.named_modules():
        inside = [p for p in prefixes if f"{name}.".startswith(p) or name.startswith(p)] if name else []
        if inside and not any(name.startswith(f"{outer}.") for outer in outermost):
            outermost.append(name)
            module.train = always_eval.__get__(module)
            module.train()


def parameter_groups(
    model: torch.nn.Module, lr: float, multipliers: dict[str, float], frozen: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Adam's parameter groups: the first at the base lr (the one logged), then one per multiplier.

    Each parameter goes to the longest prefix of `multipliers` its name starts with; frozen ones
    (requires_grad False) go nowhere, and so do multipliers under a `frozen` prefix.
    """
    multipliers = {m: f for m, f in multipliers.items() if not any(m.startswith(p) for p in frozen)}
    grouped: dict[str, list[torch.nn.Parameter]] = {"": []}
    grouped.update({prefix: [] for prefix in multipliers})
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        prefix = max((p for p in multipliers if name.startswith(p)), key=len, default="")
        grouped[prefix].append(parameter)
    unused = [prefix for prefix in multipliers if not grouped[prefix]]
    if unused:
        raise TrainingError(
            f"optim.lr_multipliers: no parameter goes to {', '.join(map(repr, unused))} (no parameter name "
            "starts with it, or a longer prefix takes them all)"
        )
    return [{"params": grouped[""], "lr": lr}] + [
        {"params": grouped[prefix], "lr": lr * factor} for prefix, factor in multipliers.items()
    ]


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr before optimizer step `step` (0-based)."""
    optim = cfg.optim
    warm = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
    if optim.schedule == "exponential":
        return warm * optim.gamma ** (step // max(1, steps_per_epoch))
    total = max(1, cfg.train.epochs * steps_per_epoch)
    progress = min(1.0, step / total)
    return warm * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------ state


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def dataset_seed(root: Path) -> int | None:
    """The generator seed recorded in a synthetic dataset's synth.json, if any."""
    import json

    try:
        meta = json.loads((root / "synth.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("seed",):
        if key in meta:
            return meta[key]
        if isinstance(meta.get("arguments"), dict) and key in meta["arguments"]:
            return meta["arguments"][key]
    return None


@contextmanager
def stop_on_signals(flag: dict[str, bool]) -> Iterator[None]:
    """SIGINT/SIGTERM set flag["stop"]; the loop saves a resumable state after the current step.
    A second SIGINT interrupts at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


# ------------------------------------------------------------------------------ the run


class Trainer:
    def __init__(
        self, cfg: TrainConfig, out_dir: Path, ctx: DistContext, progress: bool = True, resuming: bool = False
    ) -> None:
        from avcc_stream.model import build_model

        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ctx = ctx
        self.progress = progress and ctx.is_main
        self.device = ctx.device
        if cfg.train.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.train.threads)
        self.model_cfg = cfg.model_config_object()
        # Same initial weights on every process; different dropout streams afterwards.
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % 2**32)
        random.seed(cfg.train.seed)
        model = build_model(self.model_cfg)
        if cfg.model.init_from and not resuming:
            # Only a new run starts from it: a resumed run's weights come from its state, and the
            # source file need not exist any more.
            from avcc_stream.model.checkpoint import warm_start

            for source in cfg.model.init_from:
                started = warm_start(model, source)
                if ctx.is_main:
                    adapted = f"{len(started.adapted)} adapted to an unshuffled input, " if started.adapted else ""
                    print(
                        f"warm start from {started.source}: {len(started.copied)} tensors copied, "
                        f"{adapted}{len(started.kept)} not in it",
                        flush=True,
                    )
        freeze(model, cfg.optim.frozen)
        model = model.to(self.device)
        torch.manual_seed(cfg.train.seed + 1_000_003 * (ctx.rank + 1))
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.net = (
            torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if ctx.enabled
            else model
        )
        self.ema = (
            torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True
            )
            if cfg.train.ema_decay
            else None
        )
        self.dtype = amp_dtype(cfg.train.amp, self.device)
        self.val_dtype = self.dtype if cfg.train.val_amp else None
        warning = amp_warning(self.dtype, self.device)
        if warning and ctx.is_main:
            print(warning, file=sys.stderr, flush=True)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.optimizer = torch.optim.Adam(
            parameter_groups(model, cfg.optim.lr, cfg.optim.lr_multipliers, cfg.optim.frozen),
            lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
        )

        self.train_set, val_sets, weights = build_datasets(cfg, self.model_cfg)
        if len(self.train_set) < cfg.train.batch_size * ctx.world_size:
            raise TrainingError(
                f"{cfg.data.root} split {cfg.data.train_split!r} has {len(self.train_set)} samples, fewer than one "
                f"batch ({cfg.train.batch_size} x {ctx.world_size} processes)"
            )
        self.sampler = ResumableSampler(self.train_set, ctx, cfg.train.seed, cfg.data.samples_per_epoch, weights)
        self.steps_per_epoch = self.sampler.epoch_samples // cfg.train.batch_size
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            self.train_set, batch_size=cfg.train.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=workers, generator=torch.Generator(), pin_memory=self.device.type == "cuda",
        )
        self.val_loaders = {
            name: DataLoader(
                Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size)), batch_size=cfg.train.val_batch_size,
                shuffle=False, num_workers=workers, generator=torch.Generator(),
            )
            for name, val_set in val_sets.items()
        }
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, cfg)
        )
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_mae = math.inf
        self.best_epoch: float | None = None
        self.elapsed_before = 0.0  # training seconds of earlier (resumed) sessions
        self.started = time.monotonic()

    # -- state ------------------------------------------------------------------------

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights that are validated and saved: the moving average if there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def save_state(self) -> None:
        rngs = self.ctx.gather_objects(rng_state())
        if not self.ctx.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_mae": self.best_mae,
            "best_epoch": self.best_epoch,
            "elapsed_s": self.elapsed(),
            "world_size": self.ctx.world_size,
            "rng": rngs,
            "config": self.cfg.to_dict(),
        }
        atomic_torch_save(state, self.state_path)

    def load_state(self) -> None:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"{self.state_path}: cannot read the training state: {exc}") from None
        # Where the weights started does not matter once they are in the state (a finished run's
        # sources get pinned to files, or a builtin moves on), so init_from may differ.
        saved_model = {k: v for k, v in state["config"]["model"].items() if k != "init_from"}
        model_now = {k: v for k, v in self.cfg.to_dict()["model"].items() if k != "init_from"}
        if saved_model != model_now:
            raise TrainingError(f"{self.state_path}: saved for model {saved_model}, the config now says {model_now}")
        if state["world_size"] != self.ctx.world_size:
            raise TrainingError(
                f"{self.state_path}: saved by {state['world_size']} process(es), resumed with {self.ctx.world_size}; "
                "resume with the same number of processes"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # ema_decay switched on for a resumed run: average from the weights it resumes with
                self.ema.n_averaged.zero_()
                self.ema.update_parameters(self.model)
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best_mae = float(state["best_mae"])
        self.best_epoch = state["best_epoch"]
        self.elapsed_before = float(state["elapsed_s"])
        set_rng_state(state["rng"][self.ctx.rank])

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def provenance(self, val_mae: float) -> dict[str, Any]:
        return {
            "trainer": "avcc_stream.train",
            "config": self.cfg.to_dict(),
            "data_root": str(self.cfg.data.root),
            "data_seed": dataset_seed(Path(self.cfg.data.root)),
            "extra_train_data_seeds": [dataset_seed(Path(root)) for root in self.cfg.data.extra_train_roots],
            "augmentation_seed": self.cfg.data.seed,
            "commit": git_commit(),
            "machine": machine_description(self.device),
            "processes": self.ctx.world_size,
            "epochs": round(self.epoch + self.step_in_epoch / max(1, self.steps_per_epoch), 3),
            "global_step": self.global_step,
            "val_mae": val_mae,
            "val_split": self.cfg.data.val_split,
            "val_settings": self.cfg.data.val_settings,
            "val_dtype": str(self.val_dtype or torch.float32).removeprefix("torch."),
            "train_seconds": round(self.elapsed(), 1),
        }

    # -- loop -------------------------------------------------------------------------

    def validate_and_record(self, running: dict[str, float]) -> float:
        from avcc_stream.model.checkpoint import save_checkpoint

        by_setting = {
            name: CountErrors.from_tensor(self.ctx.sum(count_errors(
                self.evaluated, loader, self.device, self.model_cfg.uses_audio, self.val_dtype, self.channels_last
            ).as_tensor()))
            for name, loader in self.val_loaders.items()
        }
        # The selection metric: MAE (and RMSE) averaged over the validation settings.
        val_mae = sum(e.mae for e in by_setting.values()) / len(by_setting)
        val_rmse = sum(e.rmse for e in by_setting.values()) / len(by_setting)
        epoch_value = round(self.epoch + self.step_in_epoch / max(1, self.steps_per_epoch), 3)
        if self.ctx.is_main:
            storage = None if self.cfg.train.checkpoint_dtype == "float32" else getattr(torch, self.cfg.train.checkpoint_dtype)
            if val_mae < self.best_mae:
                self.best_mae, self.best_epoch = val_mae, epoch_value
                save_checkpoint(self.out_dir / BEST_FILE, self.evaluated, self.provenance(val_mae), storage)
            save_checkpoint(self.out_dir / LAST_FILE, self.evaluated, self.provenance(val_mae), storage)
            n = max(1.0, running["n"])
            append_row(self.out_dir / "metrics.csv", EPOCH_FIELDS, {
                "epoch": epoch_value, "global_step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": running["loss"] / max(1.0, running["batches"]), "train_mae": running["abs"] / n,
                "val_mae": val_mae, "val_rmse": val_rmse,
                "val_mean_count": next(iter(by_setting.values())).mean_count,
                "best_val_mae": self.best_mae, "elapsed_s": round(self.elapsed(), 1),
            })
            for name, errors in by_setting.items():
                append_row(self.out_dir / "val.csv", VAL_FIELDS, {
                    "epoch": epoch_value, "global_step": self.global_step, "setting": name,
                    "mae": errors.mae, "rmse": errors.rmse, "mean_count": errors.mean_count,
                })
            plot_history(self.out_dir, f"{self.model_cfg.name}: {self.out_dir.name}")
            detail = (
                "" if len(by_setting) == 1
                else " [" + ", ".join(f"{name} {e.mae:.2f}" for name, e in by_setting.items()) + "]"
            )
            print(
                f"[{self.model_cfg.name}] epoch {epoch_value}: val MAE {val_mae:.2f} RMSE {val_rmse:.2f}{detail} "
                f"(best {self.best_mae:.2f} at epoch {self.best_epoch})",
                flush=True,
            )
        # Every process needs the best MAE in its state (rank 0 writes it, but keep them equal).
        self.best_mae = float(self.ctx.sum(torch.tensor([self.best_mae if self.ctx.is_main else 0.0], dtype=torch.float64)))
        return val_mae

    def run(self, max_minutes: float | None = None, stop_after_steps: int | None = None) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg
        deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
        flag = {"stop": False}
        stopped = False
        self.net.train()
        with stop_on_signals(flag):
            while self.epoch < cfg.train.epochs and not stopped:
                self.train_set.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch)
                self.sampler.skip = self.step_in_epoch * cfg.train.batch_size
                running = {"loss": 0.0, "batches": 0.0, "abs": 0.0, "n": 0.0}
                window = {"loss": 0.0, "abs": 0.0, "n": 0.0, "batches": 0.0, **dict.fromkeys(LOSS_TERMS, 0.0)}
                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=not self.progress,
                           desc=f"{self.model_cfg.name} epoch {self.epoch + 1}/{cfg.train.epochs}", dynamic_ncols=True)
                for batch in self.loader:
                    losses, out = self.train_step(batch)
                    self.global_step += 1
                    self.step_in_epoch += 1
                    abs_err = float((out.count.detach().float().cpu() - batch["count"]).abs().sum())
                    for acc in (running, window):
                        acc["loss"] += float(losses["total"])
                        acc["batches"] += 1
                        acc["abs"] += abs_err
                        acc["n"] += len(batch["count"])
                    for key in LOSS_TERMS:
                        window[key] += float(losses[key])
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(losses['total']):.3g}", mae=f"{running['abs'] / running['n']:.1f}")
                    if self.global_step % cfg.train.log_every_steps == 0 and self.ctx.is_main:
                        b = window["batches"]
                        append_row(self.out_dir / "steps.csv", STEP_FIELDS, {
                            "global_step": self.global_step, "epoch": self.epoch,
                            "lr": self.optimizer.param_groups[0]["lr"], "loss": window["loss"] / b,
                            **{key: window[key] / b for key in LOSS_TERMS},
                            "train_mae": window["abs"] / window["n"], "elapsed_s": round(self.elapsed(), 1),
                        })
                        window = dict.fromkeys(window, 0.0)
                    out_of_time = deadline is not None and time.monotonic() >= deadline
                    asked = stop_after_steps is not None and self.global_step >= stop_after_steps
                    if self.ctx.broadcast_flag(flag["stop"] or out_of_time or asked):
                        stopped = self.step_in_epoch < self.steps_per_epoch or self.epoch + 1 < cfg.train.epochs
                        break
                    if self.global_step % cfg.train.save_every_steps == 0:
                        self.save_state()
                bar.close()
                if self.step_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.step_in_epoch = 0
                    self.validate_and_record(running)
                elif stopped and not flag["stop"] and deadline is not None and time.monotonic() >= deadline:
                    # Budget hit mid-epoch: keep the weights trained so far if they validate best.
                    self.validate_and_record(running)
                self.save_state()
        if stopped and self.ctx.is_main:
            print(
                f"[{self.model_cfg.name}] stopped at epoch {self.epoch}, step {self.step_in_epoch}/{self.steps_per_epoch}"
                f" (global step {self.global_step}); continue with --resume", flush=True,
            )
        return TrainResult(self.out_dir, self.epoch, self.global_step, self.best_mae, stopped)

    def train_step(self, batch: dict[str, Any]):
        from avcc_stream.model.losses import crowd_losses

        out = forward(self.net, batch, self.device, self.model_cfg.uses_audio, self.dtype, self.channels_last)
        density = batch["density"].to(self.device, non_blocking=True)
        patches = batch["patch_counts"].to(self.device, non_blocking=True)
        clear = batch["clear"].to(self.device, non_blocking=True)
        losses = crowd_losses(_float_output(out), density, patches, self.model_cfg, clear)
        self.optimizer.zero_grad(set_to_none=True)
        total = losses["total"]
        if self.scaler:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {k: v.detach() for k, v in losses.items()}, out


def _float_output(out: Any) -> Any:
    """Losses in float32 even under autocast (squared errors of small densities underflow in half)."""
    from dataclasses import fields, replace

    changes = {
        f.name: getattr(out, f.name).float()
        for f in fields(out)
        if isinstance(getattr(out, f.name), torch.Tensor) and getattr(out, f.name).is_floating_point()
    }
    return replace(out, **changes)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train per `cfg` into `out_dir` (see the module docstring). Under torchrun every process calls this."""
    out_dir = Path(out_dir)
    ctx = init_distributed()
    try:
        if not resume and (out_dir / STATE_FILE).exists():
            raise TrainingError(f"{out_dir} already holds a run ({STATE_FILE}); pass --resume or another --out")
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        ctx.barrier()
        resuming = resume and (out_dir / STATE_FILE).exists()
        if resume and not resuming and ctx.is_main:
            print(f"no {STATE_FILE} in {out_dir}: starting a new run", flush=True)
        trainer = Trainer(cfg, out_dir, ctx, progress=progress, resuming=resuming)
        if resuming:
            trainer.load_state()
        return trainer.run(max_minutes=max_minutes, stop_after_steps=stop_after_steps)
    finally:
        shutdown_distributed(ctx)
