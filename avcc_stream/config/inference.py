"""How windows are batched and queued for the model."""

from __future__ import annotations

from pydantic import Field

from avcc_stream.config.common import StrictModel


class InferenceSettings(StrictModel):
    max_batch: int = Field(default=8, ge=1, le=256, title="Largest batch of windows per forward pass")
    max_wait_ms: float = Field(
        default=50.0, ge=0, le=5000, title="Longest wait to fill a batch once one window is ready"
    )
    workers: int = Field(default=1, ge=1, le=64, title="Inference worker threads")
    queue_per_camera: int = Field(
        default=4, ge=1, le=1000,
        title="Windows kept per camera while inference is behind (oldest dropped past it)",
    )
