"""Training configuration: one YAML file per run, validated by pydantic.

Unknown keys are rejected and every error names the file and the dotted key, so a typo in a
config never silently falls back to a default. Defaults are the paper's (section 4): Adam,
lr 1e-5 decayed x0.99 per epoch, batch 4, weight decay 1e-4 (dropout 0.3 lives in the model
config), evaluation every epoch, best checkpoint by validation MAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the file and the key."""


def _as_list(value: Any) -> Any:
    """A list field written as one string (or null) in YAML means a list of that one (or none)."""
    return [value] if isinstance(value, str) else ([] if value is None else value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    preset: str = Field(title="avcc_stream.model preset, e.g. cc-av-lowres")
    overrides: dict[str, Any] = Field(default_factory=dict, title="ModelConfig fields to override")
    init_from: list[str] = Field(
        default_factory=list,
        title="checkpoints (path or builtin:NAME), in order, whose tensors of matching name and shape "
        "start this run (e.g. CC-AV from a trained CC-V); a later one overrides an earlier one where "
        "both have a tensor; one path alone is fine; ignored when resuming",
    )

    _one_or_many = field_validator("init_from", mode="before")(lambda value: _as_list(value))


class DataSection(_Strict):
    root: Path = Field(title="dataset folder (any layout open_dataset reads)")
    train_split: str = "train"
    val_split: str = "val"
    extra_train_roots: list[Path] = Field(
        default_factory=list,
        title="more dataset folders whose train_split is trained on as well (e.g. freshly generated "
        "synthetic data); validation stays on root's val_split; one path alone is fine",
    )
    seed: int = Field(0, title="augmentation / degradation seed of the training samples (draws from (seed, epoch, id))")
    val_seed: int = Field(
        0, title="degradation seed of the validation images (noise, low light, where the occluding rectangle "
        "falls), kept apart from seed so that the checks of runs with different augmentation seeds compare; "
        "the images are the ones `avcc-stream evaluate --seed` with this value sees",
    )
    augment: bool = Field(True, title="crops, flips, random paper-style degradations, audio gain")
    degrade_probability: float = Field(0.5, ge=0.0, le=1.0, title="share of training images given a random corruption")
    blackout_probability: float = Field(
        0.0, ge=0.0, le=1.0, title="share of training images replaced by black (occlusion rate 1): the sound must count"
    )
    val_settings: list[str] = Field(
        default_factory=lambda: ["regular"],
        title="degradation settings of the validation images (avcc_stream.data.degrade names, e.g. regular, "
        "lowlight25, occlusion:1); the best checkpoint has the lowest MAE averaged over them, so an "
        "audio-visual model is chosen for what the sound is for too; one name alone is fine",
    )
    max_train_samples: int | None = Field(None, ge=1, title="use only the first N training samples (smoke runs)")
    samples_per_epoch: int | None = Field(
        None, ge=1, title="an epoch is this many samples, a new random subset each epoch (None: the whole split)"
    )
    count_weighting: float = Field(
        0.0, ge=0.0, le=2.0,
        title="draw each epoch's training samples with replacement, weighted by (1 + count) ** this "
        "(0: a plain shuffle); dense scenes are rare in a crowd dataset but hold most of the counting error",
    )
    hard_example_reports: list[Path] = Field(
        default_factory=list,
        title="`avcc-stream evaluate --split train` report.json files of one trained checkpoint, one per "
        "training folder (root and each extra root), for hard_example_weighting",
    )
    hard_example_weighting: float = Field(
        0.0, ge=0.0, le=10.0,
        title="draw each training sample with its weight times 1 + this * error / mean error, the error "
        "being |predicted - true| in hard_example_reports (0: off); the steps go to the scenes a trained "
        "model still miscounts (avcc_stream.train.hard_examples)",
    )
    max_val_samples: int | None = Field(None, ge=1, title="use only the first N validation samples")
    num_workers: int = Field(0, ge=0, title="DataLoader worker processes")

    _one_or_many = field_validator("val_settings", "extra_train_roots", "hard_example_reports", mode="before")(
        lambda value: _as_list(value)
    )

    @field_validator("val_settings")
    @classmethod
    def _known_settings(cls, value: list[str]) -> list[str]:
        from avcc_stream.data.degrade import setting

        if not value:
            raise ValueError("give at least one validation setting (e.g. regular)")
        for name in value:
            setting(name)  # ValueError naming the unknown setting and the known ones
        if len(set(value)) != len(value):
            raise ValueError(f"a validation setting is listed twice: {value}")
        return value

    @model_validator(mode="after")
    def _hard_examples_have_reports(self) -> DataSection:
        if self.hard_example_weighting > 0 and not self.hard_example_reports:
            raise ValueError("hard_example_weighting > 0 needs hard_example_reports (avcc-stream evaluate --split train)")
        return self


class OptimSection(_Strict):
    lr: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["exponential", "cosine"] = Field(
        "exponential", title="exponential: lr * gamma ** epoch (paper); cosine: to min_lr_ratio over all steps"
    )
    gamma: float = Field(0.99, gt=0.0, le=1.0, title="per-epoch decay of the exponential schedule")
    warmup_steps: int = Field(0, ge=0, title="linear warm-up from 0 over this many optimizer steps")
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0, title="final lr / lr of the cosine schedule")
    grad_clip: float | None = Field(None, gt=0.0, title="clip the gradient norm to this (None: no clipping)")
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict,
        title="parameter-name prefix -> lr multiplier (longest prefix wins), e.g. {audio_fill.: 25} so the "
        "fresh parts of a warm-started network learn at their own pace; a prefix that matches no "
        "parameter is an error",
    )

    frozen: list[str] = Field(
        default_factory=list,
        title="parameter-name prefixes that do not train: their parameters stay as the warm start left them, "
        "and their modules run in eval mode (batch-norm statistics kept, no dropout), e.g. [vfe.] to "
        "retrain the sound path under a fixed picture path; lr_multipliers under a frozen prefix are "
        "ignored; a prefix that matches no parameter is an error",
    )

    _one_or_many = field_validator("frozen", mode="before")(lambda value: _as_list(value))

    @field_validator("lr_multipliers")
    @classmethod
    def _positive_multipliers(cls, value: dict[str, float]) -> dict[str, float]:
        for prefix, factor in value.items():
            if not factor > 0:
                raise ValueError(f"lr multiplier for {prefix!r} must be > 0, got {factor}")
        return value


class TrainSection(_Strict):
    epochs: int = Field(500, ge=1)
    batch_size: int = Field(4, ge=1, title="per process (DDP: global batch = batch_size * world size)")
    seed: int = Field(0, title="model initialisation, dropout and shuffling")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", title="auto: bf16 (or fp16) on CUDA, off on CPU; bf16 also runs on CPU (autocast), fast only "
        "where the CPU has bf16 instructions (AVX512-BF16, AMX); elsewhere it is emulated and slower than off"
    )
    # YAML 1.1 (PyYAML) reads a bare `off` as false, in a config file and in --set alike.
    _amp_off = field_validator("amp", mode="before")(lambda value: "off" if value is False else value)
    channels_last: bool = Field(True, title="channels_last memory format (CUDA only)")
    threads: int | None = Field(None, ge=1, title="torch.set_num_threads for this process (CPU)")
    save_every_steps: int = Field(100, ge=1, title="write the resumable state this often (and every epoch)")
    log_every_steps: int = Field(10, ge=1, title="append to steps.csv this often")
    checkpoint_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", title="storage dtype of best/last .safetensors (float16 halves shipped files)"
    )
    val_batch_size: int = Field(16, ge=1)
    val_amp: bool = Field(
        True, title="validate under the training autocast (true: faster) or in float32 (false: the dtype "
        "the daemon counts in on a CPU, so the best checkpoint is chosen on the numbers it will give)"
    )
    ema_decay: float | None = Field(
        None, gt=0.0, lt=1.0,
        title="keep an exponential moving average of the weights and buffers (BN statistics too), "
        "W_ema <- decay * W_ema + (1 - decay) * W after every step, and validate and save it instead of "
        "the raw weights; it starts from the weights after the first step, so 1 / (1 - decay) steps should be well "
        "under the run's length (None: off)",
    )


class TrainConfig(_Strict):
    model: ModelSection
    data: DataSection
    optim: OptimSection = OptimSection()
    train: TrainSection = TrainSection()

    @model_validator(mode="after")
    def _check_model(self) -> TrainConfig:
        self.model_config_object()  # raises ValueError naming the bad field
        return self

    def model_config_object(self):  # -> avcc_stream.model.ModelConfig
        from avcc_stream.model import ModelConfig

        return ModelConfig.from_preset(self.model.preset, **self.model.overrides)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings -> (key, YAML-parsed value), e.g. train.epochs=3, optim.lr=1e-4."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        parsed.append((key.strip(), yaml.safe_load(raw)))
    return parsed


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_mapping(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[Path]]:
    """One config file as a mapping, with its `extends:` parents (paths relative to it) beneath it,
    and the parents' paths, nearest first.

    A run that differs from another in a few keys is written as those keys, so the record of a
    run says what changed rather than repeating a whole file.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file" + (f" (extended by {chain[-1]})" if chain else "")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections model, data, optim, train")
    parent = data.pop("extends", None)
    if parent is None:
        return data, []
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends: expected the path of another config file (got {parent!r})")
    parent_path = path.parent / parent
    if parent_path.resolve() in {p.resolve() for p in (*chain, path)}:
        raise ConfigError(f"{path}: extends: {parent} is already in the chain "
                          f"{' -> '.join(str(p) for p in (*chain, path))} (a cycle)")
    base, ancestors = _read_mapping(parent_path, (*chain, path))
    return _merged(base, data), [parent_path, *ancestors]


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read (with `extends:` parents), override (`--set` items) and validate a training config.

    ConfigError names, per problem, where the value came from (file:line:column of the file in
    the `extends:` chain that set it, or the --set item) and the dotted key, one problem per line.
    """
    path = Path(path)
    data, parents = _read_mapping(path)
    set_items = parse_overrides(overrides or [])
    for key, value in set_items:
        _set_dotted(data, key, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        set_keys = [key for key, _ in set_items]
        chain = [(file, _composed(file)) for file in (path, *parents)]  # each file parsed once, for positions
        problems = [
            f"{_origin(err['loc'], chain, set_keys)}: "
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else "")
            for err in exc.errors()
        ]
        raise ConfigError("\n".join(problems)) from None


def _composed(file: Path) -> yaml.Node | None:
    try:
        return yaml.compose(file.read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None  # it was read a moment ago; without a position the file name still says enough


def _origin(loc: tuple[Any, ...], chain: list[tuple[Path, yaml.Node | None]], set_keys: list[str]) -> str:
    """Where the value at `loc` was set: the last --set item that reached it, else the nearest file
    of the chain (the file given first, then its parents) that holds it (file:line:column), else
    the file given (a missing key)."""
    from avcc_stream.config.loader import position_of

    dotted = ".".join(str(p) for p in loc)
    for key in reversed(set_keys):
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            return f"--set {key}"
    path = chain[0][0]
    for file, root in chain:
        position = position_of(root, loc) if loc else None
        if position is not None:
            through = f" (extended by {path})" if file != path else ""
            return f"{file}:{position[0]}:{position[1]}{through}"
    parents = [file for file, _ in chain[1:]]
    return f"{path}" + (f" (with {', '.join(str(p) for p in parents)})" if parents else "")
