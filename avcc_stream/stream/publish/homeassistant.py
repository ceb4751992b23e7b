"""Home Assistant MQTT discovery: retained sensor configs so each camera shows up by itself.

Per camera, three sensors on the daemon's own topics (nothing extra is published per window):
people (`<prefix>/<camera>/count`, the rounded count, with the rest of the payload as
attributes), camera state (`.../status`: online/offline/stalled) and the latest alert event
(`.../alert`: its level, for the scene or any zone; details as attributes).
The people and alert sensors are available only while both the daemon (its availability
topic) and the camera (its status) are online.

The configs are retained on `<discovery_prefix>/sensor/<node_id>/<camera>_<sensor>/config`;
an empty retained message on the same topic removes the sensor (`removal_messages`).
`DiscoveryAnnouncer` publishes them after every MQTT connection and follows config reloads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from avcc_stream import __version__
from avcc_stream.security import validate_camera_name
from avcc_stream.stream.publish.base import PublishError, PublisherUnavailable

log = structlog.get_logger(__name__)

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


class DiscoveryAnnouncer:
    """Keeps Home Assistant's retained sensor configs in line with the running cameras.

    It announces every camera after each MQTT (re)connection (a broker without persistence
    forgets retained messages when it restarts) and, on a config reload, removes the sensors
    of cameras taken out of the config. A discovery message that cannot be sent now (broker
    down) is not spooled: the next connection announces everything again.
    """

    def __init__(self, mqtt: Any, cameras: Iterable[str], discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> None:
        from avcc_stream.stream.publish.mqtt import availability_topic

        self.mqtt = mqtt  # MqttPublisher (publish_raw, add_connect_listener, settings)
        self.cameras = list(cameras)
        self.discovery_prefix = discovery_prefix
        self.enabled = True
        self.node_id = node_id_for(mqtt.settings.client_id)
        self._availability = availability_topic(mqtt.settings)
        self.sent = 0  # messages the broker acknowledged
        mqtt.add_connect_listener(self.announce)

    async def announce(self) -> None:
        if self.enabled:
            await self._send(discovery_messages(
                self.cameras, topic_prefix=self.mqtt.settings.topic_prefix, availability_topic=self._availability,
                node_id=self.node_id, discovery_prefix=self.discovery_prefix,
            ))

    async def update(self, cameras: Iterable[str], discovery_prefix: str, enabled: bool = True) -> None:
        """After a reload: remove what is gone (or everything, when disabled or moved), announce the rest."""
        cameras = list(cameras)
        if not enabled or discovery_prefix != self.discovery_prefix:
            gone = list(self.cameras)
        else:
            gone = [camera for camera in self.cameras if camera not in cameras]
        if self.enabled and gone:
            await self._send(removal_messages(gone, node_id=self.node_id, discovery_prefix=self.discovery_prefix))
        self.cameras, self.discovery_prefix, self.enabled = cameras, discovery_prefix, enabled
        await self.announce()

    async def _send(self, messages: list[DiscoveryMessage]) -> None:
        for message in messages:
            body = b"" if message.payload is None else json.dumps(message.payload, separators=(",", ":")).encode()
            try:
                await self.mqtt.publish_raw(message.topic, body, retain=message.retain)
            except (PublisherUnavailable, PublishError) as exc:
                log.warning(
                    "homeassistant_discovery_not_sent", topic=message.topic, error=str(exc),
                    retry="on the next MQTT connection")
                return
            self.sent += 1
