"""Pytest fixtures for real mosquitto and redis-server on 127.0.0.1 (the launchers live in
`avcc_stream.stream.localservices`, shared with the demo), and an MQTT collector.

    def test_x(mosquitto):                    # a running broker, stopped after the test
        mosquitto.stop(); ...; mosquitto.start()   # same port

Use them suite-wide with `pytest_plugins = ["tests.services"]` in tests/conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avcc_stream.stream.localservices import (  # noqa: F401 (re-exported for the tests)
    LOCALHOST,
    LocalService,
    Mosquitto,
    RedisServer,
    find_binary,
    free_port,
    port_accepts,
)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker for this test (stop/start/kill it freely; it is stopped after)."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server for this test (stopped after)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class MqttCollector:
    """A real paho subscriber that records every message it gets (re-subscribes on reconnect).

        with MqttCollector(broker.port, "crowd/#") as inbox:
            message = inbox.wait_for(lambda m: m.topic == "crowd/gate1/count", timeout=5)
    """

    def __init__(self, port: int, *topics: str, host: str = LOCALHOST, client_id: str | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = topics or ("#",)
        self.messages: list[paho.MQTTMessage] = []
        self._condition = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{id(self):x}")
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._host, self._port = host, port
        self._subscribed = threading.Event()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:  # noqa: ANN001
        if not reason.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])
            self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def start(self, timeout: float = 5.0) -> MqttCollector:
        self._client.connect_async(self._host, self._port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"MQTT collector could not connect to {self._host}:{self._port}")
        time.sleep(0.05)  # let the SUBACK land before the test publishes
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, predicate, timeout: float = 5.0):  # noqa: ANN001, ANN201
        """The first message (received so far or within `timeout`) that satisfies predicate."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise AssertionError(f"no matching MQTT message within {timeout} s; last seen: {seen}")
                self._condition.wait(remaining)

    def on_topic(self, topic: str) -> list:  # noqa: ANN201
        with self._condition:
            return [m for m in self.messages if m.topic == topic]

    def __enter__(self) -> MqttCollector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
