"""SpoolingPublisher around the real MqttPublisher, against real mosquitto stopped and
restarted on its port: every record of the outage arrives, in order, with its id.

The subscriber keeps a persistent session (clean_session=False, QoS 1) on a broker with
persistence, so the broker queues what arrives while the subscriber is still reconnecting:
what the test sees is what the publisher delivered, not a race between two reconnects.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from avcc_stream.config.mqtt import MqttSettings
from avcc_stream.stream.backoff import ExponentialBackoff
from avcc_stream.stream.publish.mqtt import MqttPublisher
from avcc_stream.stream.publish.spooling import SpoolingPublisher
from avcc_stream.stream.records import count_record
from avcc_stream.stream.spool import Spool
from avcc_stream.stream.types import OutboundRecord
from tests.services import Mosquitto
from tests.stream.record_samples import result

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]


def window(second: int) -> OutboundRecord:
    return count_record(result(count=float(second % 50), second=float(second), camera="gate1"))


class PersistentSubscriber:
    """Collects `crowd/+/count` with a session the broker keeps across its own restart."""

    def __init__(self, port: int) -> None:
        self.ids: list[str] = []
        self.timestamps: list[str] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"spool-test-sub-{os.getpid()}", clean_session=False
        )
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self._client.on_connect = lambda c, u, f, reason, p: c.subscribe("crowd/+/count", qos=1)
        self._client.on_message = self._on_message
        self._port = port
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        with self._lock:
            self.ids.append(payload["id"])
            self.timestamps.append(payload["ts"])

    def __enter__(self) -> PersistentSubscriber:
        self._client.connect_async("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()
        assert self._subscribed.wait(10), "subscriber could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def distinct_ids(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys(self.ids))


def persistent_broker(tmp_path: Path) -> Mosquitto:
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    # Later lines win: this overrides the fixture's `persistence false`.
    return Mosquitto(tmp_path, extra_config=f"persistence true\npersistence_location {store}/\n")


def mqtt_settings(port: int) -> MqttSettings:
    return MqttSettings.model_validate({
        "host": "127.0.0.1", "port": port, "client_id": f"spool-test-pub-{os.getpid()}",
        "connect_timeout_s": 5, "publish_timeout_s": 2, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
    })


def spooling_publisher(port: int, state_dir: str | Path) -> SpoolingPublisher:
    return SpoolingPublisher(
        MqttPublisher(mqtt_settings(port)), Spool.for_output(state_dir, "mqtt"),
        backoff=ExponentialBackoff(initial_s=0.05, max_s=0.5),
    )


async def wait_until(condition, what: str, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)


def assert_delivered_in_order(subscriber: PersistentSubscriber, seconds: range) -> None:
    expected = [window(s).record_id for s in seconds]
    # None missing, none out of order. Duplicates are allowed (QoS 1: the publisher resends
    # a record whose PUBACK was lost; the broker redelivers what its subscriber had not
    # acknowledged before the restart); they carry the same id.
    assert subscriber.distinct_ids() == expected
    with subscriber._lock:
        ids, stamps = list(subscriber.ids), list(subscriber.timestamps)
    original = {window(s).record_id: window(s).payload["ts"] for s in seconds}
    assert all(original[i] == ts for i, ts in zip(ids, stamps))  # original window times


@pytest.mark.parametrize(
    "outage_s",
    [pytest.param(1.0, id="short-outage"), pytest.param(60.0, id="60s-outage", marks=pytest.mark.slow)],
)
def test_broker_outage_loses_nothing_and_keeps_order(tmp_path: Path, outage_s: float) -> None:
    broker = persistent_broker(tmp_path)
    broker.start()
    try:
        with PersistentSubscriber(broker.port) as subscriber:

            async def scenario() -> None:
                publisher = spooling_publisher(broker.port, tmp_path / "state")
                await publisher.start()
                assert publisher.connected
                second = 0
                for second in range(5):
                    await publisher.publish(window(second))
                assert publisher.stats.direct_total == 5

                await asyncio.to_thread(broker.stop)
                await wait_until(lambda: not publisher.connected, "publisher noticed the outage")
                # The windows of the outage: one a second, as the daemon makes them, for
                # the 60 s run; 20 without pause for the short one.
                windows_in_outage = max(20, int(outage_s))
                pause = 1.0 if outage_s > 1.0 else 0.0
                for second in range(5, 5 + windows_in_outage):
                    await publisher.publish(window(second))
                    await asyncio.sleep(pause)
                second += 1
                spooled = publisher.spool.depth
                assert spooled == windows_in_outage and publisher.stats.spooling

                await asyncio.to_thread(broker.start)
                for extra in range(second, second + 5):  # windows keep coming during replay
                    await publisher.publish(window(extra))
                await wait_until(lambda: not publisher.stats.spooling, "backlog replayed")
                assert publisher.stats.replayed_total >= spooled
                await publisher.publish(window(second + 5))
                await publisher.close()
                await wait_until(
                    lambda: len(subscriber.distinct_ids()) >= second + 6, "subscriber has everything"
                )
                assert_delivered_in_order(subscriber, range(second + 6))

            asyncio.run(scenario())
    finally:
        broker.stop()


KILLED_DAEMON = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from tests.stream.test_spooling_mqtt import spooling_publisher, window

async def main():
    publisher = spooling_publisher(int(sys.argv[2]), sys.argv[3])  # that broker is down
    await publisher.start()
    for second in range(30):
        await publisher.publish(window(second))
        print("PUBLISHED", second, flush=True)  # (the rest of stdout is the daemon's log)
    await asyncio.sleep(3600)  # killed here, spool full

asyncio.run(main())
"""


def test_spool_left_by_a_sigkilled_daemon_is_replayed_by_the_next_one(tmp_path: Path) -> None:
    broker = persistent_broker(tmp_path)  # not started: the first daemon sees an outage
    state = tmp_path / "state"
    errors = tmp_path / "daemon.stderr"
    with open(errors, "w") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-c", KILLED_DAEMON, str(REPO), str(broker.port), str(state)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO,
        )
    published = -1
    try:
        assert daemon.stdout is not None
        deadline = time.monotonic() + 60
        while published < 29 and time.monotonic() < deadline:
            line = daemon.stdout.readline()
            if not line:
                break  # it died
            if line.startswith("PUBLISHED "):
                published = int(line.split()[1])
    finally:
        os.kill(daemon.pid, signal.SIGKILL)  # spool full, broker down: the worst moment
        daemon.wait(timeout=10)
    assert published == 29, errors.read_text()[-3000:]
    assert daemon.returncode == -signal.SIGKILL

    broker.start()
    try:
        with PersistentSubscriber(broker.port) as subscriber:

            async def next_daemon() -> None:
                publisher = spooling_publisher(broker.port, state)
                await publisher.start()
                assert publisher.spool.depth == 30  # nothing was lost to the kill
                await publisher.publish(window(30))  # queued behind the backlog
                await wait_until(lambda: not publisher.stats.spooling, "backlog replayed")
                await publisher.close()
                await wait_until(lambda: len(subscriber.distinct_ids()) >= 31, "subscriber has everything")

            asyncio.run(next_daemon())
            assert_delivered_in_order(subscriber, range(31))
    finally:
        broker.stop()
