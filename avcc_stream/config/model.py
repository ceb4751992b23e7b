"""Which model counts, and where it runs."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from avcc_stream.config.common import StrictModel

# The checkpoints shipped in avcc_stream/checkpoints/ and used by default (docs/results.md).
SHIPPED_AUDIO_VISUAL = "builtin:cc-av-1024-cpu"
SHIPPED_VISION_ONLY = "builtin:cc-v-1024-cpu"

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ModelSettings(StrictModel):
    checkpoint: str = Field(
        default=SHIPPED_AUDIO_VISUAL,
        title="Audio-visual checkpoint: a path or builtin:<preset>",
    )
    fallback_checkpoint: str | None = Field(
        default=SHIPPED_VISION_ONLY,
        title="Vision-only checkpoint for windows without usable audio (null: use checkpoint)",
    )
    device: str | list[str] = Field(
        default="auto", title="auto, cpu, cuda, cuda:N, mps, or a list of devices"
    )
    amp: bool = Field(
        default=True,
        title="Mixed precision: float16 autocast on CUDA, bfloat16 on a CPU with bf16 instructions "
        "(AVX512-BF16, AMX); float32 elsewhere",
    )
    flip_average: bool = Field(
        default=False,
        title="Count each frame and its mirror image and average the two (test-time flip averaging): "
        "a little more accurate, twice the model's cost per window",
    )

    @field_validator("checkpoint", "fallback_checkpoint")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a checkpoint path or builtin:<preset>, got an empty string")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | list[str]) -> str | list[str]:
        devices = [value] if isinstance(value, str) else value
        if not devices:
            raise ValueError("expected at least one device")
        for device in devices:
            if not DEVICE_PATTERN.fullmatch(device):
                raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda, cuda:N or mps")
        return value

    @property
    def devices(self) -> list[str]:
        """The configured devices as a list (`auto` is resolved by the inference pool)."""
        return [self.device] if isinstance(self.device, str) else list(self.device)
