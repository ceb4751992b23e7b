"""Small CountResults and records for the output tests (alerts, records, publishers)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from avcc_stream.stream.alerts import AlertEvent
from avcc_stream.stream.records import alert_record, count_record, hotspots_record, status_record
from avcc_stream.stream.types import CountResult, OutboundRecord

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def result(
    count: float,
    second: float = 1.0,
    camera: str = "gate1",
    patch_counts: np.ndarray | None = None,
    pir: np.ndarray | None = None,
    frame_size: tuple[int, int] = (640, 480),
    audio: bool = True,
) -> CountResult:
    """The window ending `second` seconds after T0; patch counts spread evenly unless given."""
    if patch_counts is None:
        patch_counts = np.full((4, 4), count / 16.0)
    return CountResult(
        camera=camera, window_start=at(second - 1), window_end=at(second), count=float(count),
        model="cc-av-lowres" if audio else "cc-v-lowres", audio=audio, latency_ms=42.5,
        patch_counts=np.asarray(patch_counts, dtype=np.float64), pir=pir, frame_size=frame_size,
    )


def one_of_each(camera: str = "gate1", second: float = 1.0) -> list[OutboundRecord]:
    """A count, a hotspots, an alert and a status record of one window."""
    window = result(12.0, second, camera, patch_counts=np.arange(16, dtype=np.float64).reshape(4, 4) * 0.1)
    event = AlertEvent(camera=camera, zone=None, kind="level", level="warn", previous="clear", value=12.0,
                       threshold=10.0, since=at(second - 3), window_end=at(second))
    return [
        count_record(window),
        hotspots_record(window, top_k=2),
        alert_record(event),
        status_record(camera, "online", "stream opened", at(second)),
    ]
