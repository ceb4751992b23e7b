"""Home Assistant discovery configs: topics, ids, and templates that read the real payloads.

The value templates are rendered with Jinja2 (what Home Assistant uses) against the
payloads records.py really publishes, so a renamed payload field breaks this test.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import jinja2
import numpy as np
import pytest

from avcc_stream.stream.alerts import AlertEvent
from avcc_stream.stream.publish.homeassistant import (
    DiscoveryMessage,
    discovery_messages,
    node_id_for,
    removal_messages,
)
from avcc_stream.stream.records import alert_record, count_record, status_record
from avcc_stream.stream.types import CountResult

T = datetime(2026, 5, 1, 12, 0, 1, tzinfo=timezone.utc)
AVAILABILITY = "crowd/daemon/avcc-stream-box1/availability"


def messages(cameras: list[str] = ["gate-1", "hall.a"]) -> list[DiscoveryMessage]:  # noqa: B006
    return discovery_messages(
        cameras, topic_prefix="crowd", availability_topic=AVAILABILITY, node_id=node_id_for("avcc-stream-box1")
    )


def render(template: str, payload: dict) -> str:
    return jinja2.Environment().from_string(template).render(value_json=payload)


def config_for(camera: str, sensor: str) -> dict:
    object_id = f"{camera}_{sensor}".replace(".", "_")
    [message] = [m for m in messages() if m.topic == f"homeassistant/sensor/avcc-stream-box1/{object_id}/config"]
    assert message.retain and message.payload is not None
    json.dumps(message.payload)  # what goes on the wire
    return message.payload


def test_every_camera_gets_three_retained_sensors_with_unique_ids() -> None:
    announced = messages()
    assert len(announced) == 6 and all(m.retain for m in announced)
    unique_ids = [m.payload["unique_id"] for m in announced]
    assert len(set(unique_ids)) == 6
    assert {m.payload["device"]["identifiers"][0] for m in announced} == {
        "avcc-stream-box1_gate-1", "avcc-stream-box1_hall.a"
    }


def test_people_sensor_reads_the_count_topic() -> None:
    config = config_for("gate-1", "people")
    assert config["state_topic"] == config["json_attributes_topic"] == "crowd/gate-1/count"
    result = CountResult(
        camera="gate-1", window_start=T - timedelta(seconds=1), window_end=T, count=12.4, model="cc-av-lowres",
        audio=True, latency_ms=40.0, patch_counts=np.full((2, 2), 3.1), pir=None, frame_size=(640, 480),
    )
    assert render(config["value_template"], count_record(result).payload) == "12"
    assert config["unit_of_measurement"] == "people" and config["state_class"] == "measurement"
    assert config["availability_mode"] == "all"
    daemon, camera = config["availability"]
    assert daemon["topic"] == AVAILABILITY
    assert camera["topic"] == "crowd/gate-1/status"
    for state, expected in [("online", "online"), ("stalled", "offline"), ("offline", "offline")]:
        payload = status_record("gate-1", state, "test", T).payload
        assert render(camera["value_template"], payload) == expected


def test_status_and_alert_sensors_read_their_topics() -> None:
    status = config_for("hall.a", "status")
    assert status["state_topic"] == "crowd/hall.a/status"
    assert render(status["value_template"], status_record("hall.a", "stalled", "no frames", T).payload) == "stalled"

    alert = config_for("hall.a", "alert")
    assert alert["state_topic"] == "crowd/hall.a/alert"
    event = AlertEvent(camera="hall.a", zone="stage", kind="level", level="critical", previous="warn",
                       value=80.0, threshold=75.0, since=T, window_end=T)
    assert render(alert["value_template"], alert_record(event).payload) == "critical"


def test_removal_empties_every_config_topic() -> None:
    removed = removal_messages(["gate-1"], node_id="avcc-stream-box1")
    assert {m.topic for m in removed} == {m.topic for m in messages(["gate-1"])}
    assert all(m.payload is None and m.retain for m in removed)


def test_unsafe_camera_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid camera name"):
        messages(["gate/#"])
    assert node_id_for("box 1/a") == "box_1_a"
