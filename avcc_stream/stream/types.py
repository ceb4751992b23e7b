"""The small frozen records that pass between the daemon's stages.

source -> align produces `AudioVisualWindow`s, infer turns them into `CountResult`s, and
everything that leaves the process (MQTT, Redis, console, spool) is an `OutboundRecord`.
Nothing else is shared between stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

RecordKind = Literal["count", "hotspots", "alert", "status"]


@dataclass(frozen=True)
class AudioVisualWindow:
    """One second of one camera: the frame nearest the window's centre and its sound."""

    camera: str
    window_start: datetime  # timezone-aware UTC wall-clock time
    window_end: datetime
    frame: np.ndarray  # H x W x 3 uint8 RGB, at the camera's native resolution
    audio: np.ndarray | None  # float32 mono 16 kHz samples; None when no usable audio
    av_skew_ms: float | None = None  # |frame pts - window centre|, measured per window
    enqueued_monotonic: float = 0.0  # time.monotonic() when the window was complete


@dataclass(frozen=True)
class CountResult:
    """The model's answer for one window."""

    camera: str
    window_start: datetime
    window_end: datetime
    count: float
    model: str  # checkpoint name / preset that produced the count
    audio: bool  # True when the audio-visual model counted it with real sound
    latency_ms: float  # window end -> result ready
    patch_counts: np.ndarray  # grid_h x grid_w, people per patch (sums to `count`)
    pir: np.ndarray | None  # grid_h x grid_w shares from the PIR head (sum 1), if the model has one
    frame_size: tuple[int, int]  # (width, height) of the camera frame, for pixel boxes


@dataclass(frozen=True)
class OutboundRecord:
    """One message for the outside world; publishers map `kind` to a topic / key / series.

    `record_id` is stable (camera + window end, or camera + kind + time for events), so a
    consumer can drop the duplicates that at-least-once delivery and spool replay allow.
    """

    kind: RecordKind
    camera: str
    record_id: str
    timestamp: datetime
    payload: dict[str, Any]
    retain: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
