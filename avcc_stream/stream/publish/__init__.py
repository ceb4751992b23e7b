"""Outputs. Every publisher implements `Publisher` (base.py): MQTT, Redis, console/JSONL."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from avcc_stream.config.app import AppConfig
from avcc_stream.stream.publish.base import Publisher, PublishError, PublisherUnavailable, payload_json

__all__ = ["Publisher", "PublishError", "PublisherUnavailable", "payload_json", "publishers_from_config"]


def publishers_from_config(app: AppConfig, *, spool: bool = True,
                           on_reconnect: Callable[[str], None] | None = None) -> list[Publisher]:
    """The enabled outputs of a config, not started yet.

    MQTT and Redis are wrapped in a SpoolingPublisher (unless `spool=False`): while one is
    unreachable its records wait in `<state_dir>/spool/<output>.sqlite3` and are replayed in
    order, retried with the output's capped, jittered backoff. The console needs no spool.
    `on_reconnect(output_name)` is called before each reconnection attempt (metrics).
    """
    from avcc_stream.stream.backoff import ExponentialBackoff

    publishers: list[Publisher] = []

    def hook(name: str) -> Callable[[], None] | None:
        return partial(on_reconnect, name) if on_reconnect is not None else None

    def spooled(inner: Publisher, min_s: float, max_s: float) -> Publisher:
        if not spool:
            return inner
        from avcc_stream.stream.publish.spooling import SpoolingPublisher
        from avcc_stream.stream.spool import Spool, SpoolLimits

        limits = SpoolLimits(max_records=app.spool.max_records, max_bytes=app.spool.max_bytes)
        return SpoolingPublisher(
            inner, Spool.for_output(app.state_dir, inner.name, limits, synchronous=app.spool.synchronous),
            backoff=ExponentialBackoff(min_s, max_s),
        )

    if app.mqtt.enabled:
        from avcc_stream.stream.publish.mqtt import MqttPublisher

        mqtt = MqttPublisher(app.mqtt, on_reconnect=hook("mqtt"))
        publishers.append(spooled(mqtt, app.mqtt.reconnect_min_s, app.mqtt.reconnect_max_s))
    if app.redis.enabled:
        from avcc_stream.stream.publish.redis import RedisPublisher

        redis = RedisPublisher(app.redis, on_reconnect=hook("redis"))
        publishers.append(spooled(redis, app.redis.reconnect_min_s, app.redis.reconnect_max_s))
    if app.console.enabled:
        from avcc_stream.stream.publish.console import ConsolePublisher

        publishers.append(ConsolePublisher(app.console.path, topic_prefix=app.mqtt.topic_prefix))
    return publishers
