"""Outputs. Every publisher implements `Publisher` (base.py): MQTT, Redis, console/JSONL."""

from __future__ import annotations

from avcc_stream.config.app import AppConfig
from avcc_stream.stream.publish.base import Publisher, PublishError, PublisherUnavailable, payload_json

__all__ = ["Publisher", "PublishError", "PublisherUnavailable", "payload_json", "publishers_from_config"]


def publishers_from_config(app: AppConfig) -> list[Publisher]:
    """The enabled outputs of a config, not started yet."""
    publishers: list[Publisher] = []
    if app.mqtt.enabled:
        from avcc_stream.stream.publish.mqtt import MqttPublisher

        publishers.append(MqttPublisher(app.mqtt))
    if app.redis.enabled:
        from avcc_stream.stream.publish.redis import RedisPublisher

        publishers.append(RedisPublisher(app.redis))
    if app.console.enabled:
        from avcc_stream.stream.publish.console import ConsolePublisher

        publishers.append(ConsolePublisher(app.console.path, topic_prefix=app.mqtt.topic_prefix))
    return publishers
