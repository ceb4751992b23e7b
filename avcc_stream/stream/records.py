"""What leaves the process: CountResults, alert events and camera states as OutboundRecords.

Every record has a stable id (camera, kind and window end, or event time), so consumers can
drop the duplicates that at-least-once delivery and spool replay allow, and a replayed record
overwrites itself in Redis instead of adding a point.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np

from avcc_stream.stream.alerts import AlertEvent
from avcc_stream.stream.types import CountResult, OutboundRecord, RecordKind

CameraState = Literal["online", "offline", "stalled"]
SHARE_DIGITS = 6


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch, rounded half up (naive times are taken as UTC).

    Integer arithmetic on the timedelta, so the rounding never depends on float error and
    `rfc3339` shows exactly this millisecond."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - EPOCH
    microseconds = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return (microseconds + 500) // 1000


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and a Z, `2026-05-01T12:00:01.000Z`: the millisecond of `epoch_ms`."""
    whole = EPOCH + timedelta(milliseconds=epoch_ms(moment))
    return whole.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_id(camera: str, kind: RecordKind, moment: datetime, *qualifiers: str) -> str:
    """`gate1:count:1714564801000`: unique per camera, kind and time (plus qualifiers)."""
    return ":".join([camera, kind, *qualifiers, str(epoch_ms(moment))])


def _window_fields(result: CountResult) -> dict[str, Any]:
    return {
        "camera": result.camera,
        "ts": rfc3339(result.window_end),
        "window_start": rfc3339(result.window_start),
        "window_end": rfc3339(result.window_end),
    }


def count_record(result: CountResult) -> OutboundRecord:
    """`{id, camera, ts, window_start, window_end, count, count_int, model, audio, latency_ms}`."""
    count = max(0.0, float(result.count))
    rid = record_id(result.camera, "count", result.window_end)
    payload = {
        "id": rid,
        **_window_fields(result),
        "count": round(count, 3),
        "count_int": int(round(count)),
        "model": result.model,
        "audio": bool(result.audio),
        "latency_ms": round(float(result.latency_ms), 1),
    }
    return OutboundRecord("count", result.camera, rid, result.window_end, payload)


def hotspot_shares(result: CountResult) -> tuple[np.ndarray, str]:
    """Share of the people per patch (sums to 1, or all zeros for an empty scene) and its
    source: the PIR head's distribution when the model has one, else normalised patch counts."""
    patch_counts = np.clip(np.asarray(result.patch_counts, dtype=np.float64), 0.0, None)
    if result.pir is not None:
        raw, source = np.clip(np.asarray(result.pir, dtype=np.float64), 0.0, None), "pir"
        raw = raw.reshape(patch_counts.shape)
    else:
        raw, source = patch_counts, "patch_counts"
    total = float(raw.sum())
    if total <= 0.0 or not np.isfinite(total) or float(result.count) <= 0.0:
        return np.zeros_like(raw), source
    return raw / total, source


def patch_box(row: int, col: int, grid: tuple[int, int], frame_size: tuple[int, int]) -> list[int]:
    """The patch's rectangle in the camera frame: [x0, y0, x1, y1] in pixels (x1, y1 exclusive)."""
    grid_h, grid_w = grid
    width, height = frame_size
    return [
        round(col * width / grid_w), round(row * height / grid_h),
        round((col + 1) * width / grid_w), round((row + 1) * height / grid_h),
    ]


def hotspots_record(result: CountResult, top_k: int = 3) -> OutboundRecord:
    """Grid shape, share per patch (row-major rows), and the top-k patches with pixel boxes."""
    shares, source = hotspot_shares(result)
    grid = (int(shares.shape[0]), int(shares.shape[1]))
    patch_counts = np.asarray(result.patch_counts, dtype=np.float64).reshape(grid)
    # Stable order: larger share first, then row-major position.
    order = sorted(range(shares.size), key=lambda flat: (-shares.flat[flat], flat))
    top = []
    for flat in order[:top_k]:
        if shares.flat[flat] <= 0.0:
            break
        row, col = divmod(flat, grid[1])
        top.append({
            "row": row,
            "col": col,
            "share": round(float(shares[row, col]), SHARE_DIGITS),
            "count": round(float(max(0.0, patch_counts[row, col])), 3),
            "box": patch_box(row, col, grid, result.frame_size),
        })
    rid = record_id(result.camera, "hotspots", result.window_end)
    payload = {
        "id": rid,
        **_window_fields(result),
        "grid": list(grid),
        "frame_size": [int(result.frame_size[0]), int(result.frame_size[1])],
        "source": source,
        "count": round(max(0.0, float(result.count)), 3) if shares.any() else 0.0,
        "share": [[round(float(value), SHARE_DIGITS) for value in row] for row in shares],
        "top": top,
    }
    return OutboundRecord("hotspots", result.camera, rid, result.window_end, payload)


def alert_record(event: AlertEvent) -> OutboundRecord:
    """An alert state change: level (or "clear"), value, threshold, zone and since."""
    rid = record_id(event.camera, "alert", event.window_end, event.zone or "scene", event.kind)
    payload = {
        "id": rid,
        "camera": event.camera,
        "ts": rfc3339(event.window_end),
        "zone": event.zone,
        "kind": event.kind,
        "level": event.level,
        "previous": event.previous,
        "value": round(float(event.value), 3),
        "threshold": round(float(event.threshold), 3),
        "since": rfc3339(event.since),
        "window_end": rfc3339(event.window_end),
    }
    return OutboundRecord("alert", event.camera, rid, event.window_end, payload)


def status_record(camera: str, state: CameraState, reason: str, at: datetime | None = None,
                  **details: Any) -> OutboundRecord:
    """A camera's state (retained, so a new subscriber learns it at once). `reason` and
    `details` must already be safe to publish (URLs redacted)."""
    at = at or datetime.now(timezone.utc)
    rid = record_id(camera, "status", at)
    payload = {"id": rid, "camera": camera, "ts": rfc3339(at), "state": state, "reason": reason, **details}
    return OutboundRecord("status", camera, rid, at, payload, retain=True)


def result_records(result: CountResult, *, hotspots: bool = True, top_k: int = 3) -> list[OutboundRecord]:
    """The records one window produces (count first, then hotspots)."""
    records = [count_record(result)]
    if hotspots:
        records.append(hotspots_record(result, top_k))
    return records
