"""CountResult / AlertEvent / camera state -> OutboundRecord: payload shapes, stable ids."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from avcc_stream.stream.alerts import AlertEvent
from avcc_stream.stream.publish.base import payload_json
from avcc_stream.stream.records import (
    alert_record, count_record, epoch_ms, hotspots_record, result_records, rfc3339, status_record,
)
from tests.stream.record_samples import at, result


def test_count_payload_has_exactly_the_published_fields() -> None:
    record = count_record(result(12.6, second=3))
    assert record.kind == "count" and record.camera == "gate1" and record.timestamp == at(3)
    assert record.payload == {
        "id": "gate1:count:" + str(int(at(3).timestamp() * 1000)),
        "camera": "gate1",
        "ts": "2026-05-01T12:00:03.000Z",
        "window_start": "2026-05-01T12:00:02.000Z",
        "window_end": "2026-05-01T12:00:03.000Z",
        "count": 12.6,
        "count_int": 13,
        "model": "cc-av-lowres",
        "audio": True,
        "latency_ms": 42.5,
    }
    assert record.record_id == record.payload["id"] and not record.retain
    assert isinstance(record.payload["count"], float)


def test_ids_are_stable_per_camera_and_window_end() -> None:
    assert count_record(result(5, 3)).record_id == count_record(result(7, 3)).record_id
    assert count_record(result(5, 3)).record_id != count_record(result(5, 4)).record_id
    assert count_record(result(5, 3)).record_id != count_record(result(5, 3, camera="bar")).record_id
    assert count_record(result(5, 3)).record_id != hotspots_record(result(5, 3)).record_id


def test_negative_model_output_is_published_as_zero() -> None:
    payload = count_record(result(-0.2)).payload
    assert payload["count"] == 0.0 and payload["count_int"] == 0


def test_rfc3339_is_utc_with_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 5, 1, 14, 0, 0, 123456, tzinfo=plus_two)) == "2026-05-01T12:00:00.123Z"
    assert rfc3339(datetime(2026, 5, 1, 12, 0, 0)) == "2026-05-01T12:00:00.000Z"  # naive = UTC


@pytest.mark.parametrize("microsecond", [0, 1, 499, 500, 501, 123456, 999499, 999500, 999999])
def test_rfc3339_and_epoch_ms_name_the_same_whole_millisecond(microsecond: int) -> None:
    # A record's id (epoch ms) and its ts (rfc3339) must agree, or a consumer joining
    # MQTT payloads with Redis entry ids sees two different times for one window.
    moment = datetime(2026, 5, 1, 12, 0, 1, microsecond, tzinfo=timezone.utc)
    shown = datetime.fromisoformat(rfc3339(moment).replace("Z", "+00:00"))
    assert epoch_ms(shown) == epoch_ms(moment)
    assert epoch_ms(moment) == 1777636801000 + (microsecond + 500) // 1000  # rounded half up


def test_hotspots_from_patch_counts_share_top_k_and_pixel_boxes() -> None:
    counts = np.zeros((4, 4))
    counts[1, 2], counts[3, 0], counts[0, 0] = 6.0, 3.0, 1.0
    payload = hotspots_record(result(10.0, patch_counts=counts, frame_size=(640, 480)), top_k=2).payload
    assert payload["grid"] == [4, 4] and payload["source"] == "patch_counts" and payload["count"] == 10.0
    assert sum(map(sum, payload["share"])) == pytest.approx(1.0)
    assert payload["share"][1][2] == pytest.approx(0.6)
    assert payload["top"] == [
        {"row": 1, "col": 2, "share": 0.6, "count": 6.0, "box": [320, 120, 480, 240]},
        {"row": 3, "col": 0, "share": 0.3, "count": 3.0, "box": [0, 360, 160, 480]},
    ]


def test_hotspots_prefer_the_pir_distribution() -> None:
    pir = np.full((4, 4), 1.0)
    pir[2, 3] = 5.0
    payload = hotspots_record(result(8.0, pir=pir), top_k=1).payload
    assert payload["source"] == "pir"
    assert sum(map(sum, payload["share"])) == pytest.approx(1.0)
    assert payload["top"][0]["row"] == 2 and payload["top"][0]["col"] == 3
    assert payload["top"][0]["share"] == pytest.approx(5 / 20)


def test_empty_scene_has_zero_shares_zero_count_and_no_top() -> None:
    payload = hotspots_record(result(0.0, patch_counts=np.zeros((4, 4)), pir=np.full((4, 4), 1 / 16))).payload
    assert payload["share"] == [[0.0] * 4] * 4 and payload["count"] == 0.0 and payload["top"] == []


def test_top_k_ties_are_ordered_by_position_and_capped_by_nonzero_patches() -> None:
    counts = np.zeros((2, 2))
    counts[0, 1] = counts[1, 0] = 2.0
    payload = hotspots_record(result(4.0, patch_counts=counts, frame_size=(100, 50)), top_k=10).payload
    assert [(p["row"], p["col"]) for p in payload["top"]] == [(0, 1), (1, 0)]
    assert payload["top"][1]["box"] == [0, 25, 50, 50]


def test_alert_record_carries_level_value_threshold_zone_and_since() -> None:
    event = AlertEvent("gate1", "exit", "level", "critical", "warn", 41.25, 40.0, at(7), at(10))
    record = alert_record(event)
    assert record.kind == "alert" and record.timestamp == at(10)
    assert {k: record.payload[k] for k in ("camera", "zone", "kind", "level", "previous", "value", "threshold", "since", "window_end")} == {
        "camera": "gate1", "zone": "exit", "kind": "level", "level": "critical", "previous": "warn",
        "value": 41.25, "threshold": 40.0, "since": "2026-05-01T12:00:07.000Z", "window_end": "2026-05-01T12:00:10.000Z",
    }
    scene = alert_record(AlertEvent("gate1", None, "level", "critical", "warn", 41.25, 40.0, at(7), at(10)))
    assert scene.record_id != record.record_id and scene.payload["zone"] is None


def test_status_record_is_retained_with_state_and_reason() -> None:
    record = status_record("gate1", "offline", "connection refused by rtsp://***@cam/x", at(5), retry_in_s=4.0)
    assert record.retain and record.kind == "status"
    assert record.payload["state"] == "offline" and record.payload["retry_in_s"] == 4.0
    assert record.payload["ts"] == "2026-05-01T12:00:05.000Z"


def test_records_of_a_window_are_plain_json() -> None:
    window = result(3.0, pir=np.full((4, 4), 1 / 16, dtype=np.float32))
    records = result_records(window, top_k=3)
    assert [r.kind for r in records] == ["count", "hotspots"]
    for record in records:
        assert json.loads(payload_json(record)) == record.payload  # no numpy scalars, no NaN
    assert [r.kind for r in result_records(window, hotspots=False)] == ["count"]
