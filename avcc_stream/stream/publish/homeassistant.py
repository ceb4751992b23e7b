"""Home Assistant MQTT discovery: retained sensor configs so each camera shows up by itself.

Per camera, three sensors on the daemon's own topics (nothing extra is published per window):
people (`<prefix>/<camera>/count`, the rounded count, with the rest of the payload as
attributes), camera state (`.../status`: online/offline/stalled) and the latest alert event
(`.../alert`: its level, for the scene or any zone; details as attributes).
The people and alert sensors are available only while both the daemon (its availability
topic) and the camera (its status) are online.

The configs are retained on `<discovery_prefix>/sensor/<node_id>/<camera>_<sensor>/config`;
an empty retained message on the same topic removes the sensor (`removal_messages`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from avcc_stream import __version__
from avcc_stream.security import validate_camera_name

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
SENSORS = ("people", "status", "alert")


@dataclass(frozen=True)
class DiscoveryMessage:
    topic: str
    payload: dict[str, Any] | None  # None: an empty message (removes the entity)
    retain: bool = True


def node_id_for(client_id: str) -> str:
    """A discovery node id from the MQTT client id (HA allows [a-zA-Z0-9_-] only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", client_id) or "avcc_stream"


def discovery_messages(
    cameras: Iterable[str],
    *,
    topic_prefix: str,
    availability_topic: str,
    node_id: str,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> list[DiscoveryMessage]:
    """The retained config messages announcing every camera's sensors."""
    messages = []
    for camera in cameras:
        validate_camera_name(camera)
        for sensor, payload in _sensor_configs(camera, topic_prefix, availability_topic, node_id).items():
            messages.append(DiscoveryMessage(_config_topic(discovery_prefix, node_id, camera, sensor), payload))
    return messages


def removal_messages(
    cameras: Iterable[str], *, node_id: str, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
) -> list[DiscoveryMessage]:
    """Empty retained configs: Home Assistant forgets these cameras' sensors."""
    return [
        DiscoveryMessage(_config_topic(discovery_prefix, node_id, validate_camera_name(camera), sensor), None)
        for camera in cameras
        for sensor in SENSORS
    ]


def _config_topic(discovery_prefix: str, node_id: str, camera: str, sensor: str) -> str:
    # HA's object id allows [a-zA-Z0-9_-]; camera names may also hold '.'.
    object_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{camera}_{sensor}")
    return f"{discovery_prefix}/sensor/{node_id}/{object_id}/config"


def _sensor_configs(
    camera: str, topic_prefix: str, availability_topic: str, node_id: str
) -> dict[str, dict[str, Any]]:
    base = f"{topic_prefix}/{camera}"
    device = {
        "identifiers": [f"{node_id}_{camera}"],
        "name": f"Crowd {camera}",
        "manufacturer": "avcc-stream",
        "model": "audio-visual crowd counter",
        "sw_version": __version__,
    }
    origin = {"name": "avcc-stream", "sw_version": __version__}
    daemon_online = {"topic": availability_topic, "payload_available": "online", "payload_not_available": "offline"}
    camera_online = {
        "topic": f"{base}/status",
        "value_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }

    def sensor(name: str, unique: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "unique_id": f"{node_id}_{camera}_{unique}", "device": device, "origin": origin, **fields}

    return {
        "people": sensor(
            "People", "people",
            state_topic=f"{base}/count",
            value_template="{{ value_json.count_int }}",
            json_attributes_topic=f"{base}/count",
            unit_of_measurement="people",
            state_class="measurement",
            icon="mdi:account-group",
            availability=[daemon_online, camera_online],
            availability_mode="all",
        ),
        "status": sensor(
            "Camera state", "status",
            state_topic=f"{base}/status",
            value_template="{{ value_json.state }}",
            json_attributes_topic=f"{base}/status",
            icon="mdi:cctv",
            availability=[daemon_online],
        ),
        "alert": sensor(
            "Crowd alert", "alert",
            state_topic=f"{base}/alert",
            value_template="{{ value_json.level }}",
            json_attributes_topic=f"{base}/alert",
            icon="mdi:alert",
            availability=[daemon_online, camera_online],
            availability_mode="all",
        ),
    }
