"""Checkpoints: one .safetensors file, weights plus a JSON header in its metadata. Never pickled.

The header (metadata key "avcc_stream") holds the model config, the preprocessing the model
expects (input size, image mean/std, audio rate and length), the package and torch versions,
training provenance and a SHA-256 of the tensors, so a file that was truncated or corrupted
in its data section is caught too. Every failure is a `CheckpointError` naming the file and
what is wrong with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avcc_stream import __version__
from avcc_stream.model.config import AUDIO_SAMPLE_RATE, AUDIO_SECONDS, ModelConfig
from avcc_stream.model.network import build_model
from avcc_stream.preprocess import IMAGENET_MEAN, IMAGENET_STD

HEADER_KEY = "avcc_stream"
FORMAT_NAME = "avcc-stream-checkpoint"
FORMAT_VERSION = 1
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, or not matching this code."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: nn.Module  # in eval mode, on map_location
    config: ModelConfig
    header: dict[str, Any]
    path: Path


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def preprocessing_header(cfg: ModelConfig) -> dict[str, Any]:
    """What a caller must do to raw pixels and sound before this model sees them."""
    return {
        "input_size": list(cfg.input_size),
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "audio_sample_rate": AUDIO_SAMPLE_RATE,
        "audio_seconds": AUDIO_SECONDS,
        "audio_channels": 1,
    }


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    provenance: dict[str, Any] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` (built by build_model, so it carries `.config`) to `path`, atomically.

    `storage_dtype=torch.float16` (or bfloat16) stores floating-point tensors at half size, for
    checkpoints shipped in the repository; loading casts them back to the model's float32.
    """
    from safetensors.torch import save

    path = Path(path)
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise TypeError("save_checkpoint needs a model built by build_model (it has no ModelConfig in .config)")
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().clone()
        if storage_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(storage_dtype)
        tensors[name] = tensor
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": cfg.to_dict(),
        "preprocessing": preprocessing_header(cfg),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": dict(provenance or {}),
        "storage_dtype": str(storage_dtype).removeprefix("torch.") if storage_dtype is not None else "native",
        "tensors_sha256": _tensors_digest(tensors),
    }
    try:
        header_json = json.dumps(header)
    except TypeError as exc:
        raise ValueError(f"checkpoint provenance must be JSON-serialisable: {exc}") from None
    data = save(tensors, metadata={HEADER_KEY: header_json})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a crash never leaves a half-written checkpoint.
    # Not mkstemp, whose file is private (0600): created with 0666, the kernel applies the umask as
    # for any new file, so a service running as another user (deploy/avcc-stream.service) can read
    # a checkpoint an operator trained.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for truncated / garbage files
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint (truncated or corrupt?): {exc}") from None
    if HEADER_KEY not in metadata:
        raise CheckpointError(f"{path}: safetensors file without an avcc-stream header (metadata key {HEADER_KEY!r})")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: header is not an {FORMAT_NAME} header")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {header.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    return header, tensors


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """The JSON header alone (config, preprocessing, provenance), without building the model."""
    return _read(Path(path))[0]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from the header's config and load its weights; the model is in eval mode."""
    path = Path(path)
    header, tensors = _read(path)
    if header.get("tensors_sha256") != _tensors_digest(tensors):
        raise CheckpointError(f"{path}: tensor data does not match the header's SHA-256 (file corrupted)")
    try:
        cfg = ModelConfig.from_dict(header.get("model_config"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: model config does not match this code: {exc}") from None
    model = build_model(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(
        f"{name} {tuple(tensors[name].shape)} (code expects {tuple(expected[name].shape)})"
        for name in set(expected) & set(tensors)
        if tuple(tensors[name].shape) != tuple(expected[name].shape)
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            problems.append(f"{len(names)} {label} tensor(s): {', '.join(names[:5])}{more}")
    if problems:
        raise CheckpointError(
            f"{path}: weights do not match the {cfg.name} ({cfg.architecture}) model this code builds from its "
            f"config: {'; '.join(problems)}"
        )
    model.load_state_dict(tensors, strict=True)  # copies, so half-precision storage becomes float32
    model.to(map_location).eval()
    return LoadedCheckpoint(model=model, config=cfg, header=header, path=path)


def builtin_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in avcc_stream/checkpoints/."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.safetensors"))


def resolve_checkpoint(spec: str | Path) -> Path:
    """`builtin:NAME` -> the shipped avcc_stream/checkpoints/NAME.safetensors; anything else is a path."""
    text = str(spec)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        path = BUILTIN_DIR / f"{name}.safetensors"
        if not path.is_file():
            available = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in builtin_checkpoints()) or "none shipped yet"
            raise CheckpointError(f"no built-in checkpoint {name!r} in {BUILTIN_DIR}; available: {available}")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


@dataclass(frozen=True)
class WarmStart:
    """What `warm_start` copied: tensors matched by name and shape (or `adapted` to an unshuffled
    input, see `unshuffled_conv_weight`), and the model's tensors it left as they were."""

    source: Path
    copied: list[str]
    kept: list[str]
    adapted: list[str] = field(default_factory=list)


def unshuffled_conv_weight(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """A conv weight (out x C x k x k) for an image read at 1/factor of its size -> the same conv
    for that image pixel-unshuffled by `factor` (out x C * factor**2 x k x k).

    Each of the factor**2 sub-pixel channels of colour c gets weight[:, c] / factor**2, so the
    new conv on the unshuffled image equals the old one on the image area-averaged by `factor`:
    a model moved to the larger input starts exactly where it was and learns to use the detail.
    """
    repeated = weight.repeat_interleave(factor * factor, dim=1)  # pixel_unshuffle's order: c * f * f + i * f + j
    return repeated / float(factor * factor)


# The one tensor whose shape the input unshuffle changes: the stem's first conv (C_in = 3 * f * f),
# by its state-dict name in model/visual.py (VisualFeatureExtractor.stem -> Stem.layers[0] conv).
STEM_INPUT_CONV = "vfe.stem.layers.0.0.weight"


def _adapted_to_unshuffle(model: Any, tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The source's stem input conv spread over `model`'s unshuffled channels, when `model`
    unshuffles its input and the source does not; otherwise nothing."""
    factor = getattr(getattr(model, "config", None), "input_unshuffle", 1)
    source, target = tensors.get(STEM_INPUT_CONV), own.get(STEM_INPUT_CONV)
    if factor < 2 or source is None or target is None:
        return {}
    if tuple(target.shape) != (source.shape[0], source.shape[1] * factor * factor, *source.shape[2:]):
        return {}
    return {STEM_INPUT_CONV: unshuffled_conv_weight(source, factor)}


def warm_start(model: Any, spec: str | Path) -> WarmStart:
    """Copy into `model` every tensor of checkpoint `spec` whose name and shape match; leave the rest.

    For starting one variant from another's training (e.g. CC-AV from a trained CC-V: the whole
    visual path carries over, the audio parts start fresh). A checkpoint that shares nothing
    with the model is an error, not a silent fresh start.
    """
    source = resolve_checkpoint(spec)
    tensors = load_checkpoint(source).model.state_dict()  # verifies the file's digest and config
    own = model.state_dict()
    matching = {n: t for n, t in tensors.items() if n in own and tuple(t.shape) == tuple(own[n].shape)}
    adapted = _adapted_to_unshuffle(model, tensors, own)
    if not matching:
        raise CheckpointError(f"{source}: no tensor matches this model by name and shape; nothing to start from")
    with torch.no_grad():
        for name, tensor in {**matching, **adapted}.items():
            own[name].copy_(tensor)
    return WarmStart(
        source=source,
        copied=sorted(matching),
        kept=sorted(set(own) - set(matching) - set(adapted)),
        adapted=sorted(adapted),
    )
