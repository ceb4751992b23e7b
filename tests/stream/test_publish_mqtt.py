"""MQTT publisher against a real mosquitto (MQTT 3.1.1 and 5), received by a real subscriber."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from avcc_stream.config.mqtt import MqttSettings
from avcc_stream.stream.publish.base import Publisher, PublishError, PublisherUnavailable
from avcc_stream.stream.publish.mqtt import MqttPublisher, availability_topic
from tests.services import Mosquitto, MqttCollector
from tests.stream.record_samples import one_of_each

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]
PROTOCOLS = ["3.1.1", "5"]


def settings(broker: Mosquitto, protocol: str = "3.1.1", **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "host": broker.host, "port": broker.port, "protocol": protocol,
        "client_id": f"test-{protocol}-{time.monotonic_ns()}", "connect_timeout_s": 5,
        "publish_timeout_s": 2, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


async def wait_until(condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subscriber_receives_every_record_kind_with_its_payload(mosquitto: Mosquitto, protocol: str) -> None:
    records = one_of_each("gate1")
    config = settings(mosquitto, protocol)

    async def scenario() -> None:
        publisher = MqttPublisher(config)
        assert isinstance(publisher, Publisher)
        await publisher.start()
        assert publisher.connected
        for record in records:
            await publisher.publish(record)
        await publisher.close()

    with MqttCollector(mosquitto.port, "crowd/#") as inbox:
        asyncio.run(scenario())
        for record in records:
            message = inbox.wait_for(lambda m, r=record: m.topic == f"crowd/gate1/{r.kind}")
            assert json.loads(message.payload) == record.payload
            assert message.qos == 1
    count = records[0].payload
    assert set(count) == {"id", "camera", "ts", "window_start", "window_end", "count", "count_int",
                          "model", "audio", "latency_ms"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_and_availability_are_retained_for_late_subscribers(mosquitto: Mosquitto, protocol: str) -> None:
    status = one_of_each("gate1")[3]
    config = settings(mosquitto, protocol, topic_prefix="venue/crowd")

    async def scenario() -> None:
        publisher = MqttPublisher(config)
        await publisher.start()
        await publisher.publish(status)
        # Subscribe only now: what arrives must come from the broker's retained store.
        with MqttCollector(mosquitto.port, "venue/#") as late:
            message = late.wait_for(lambda m: m.topic == "venue/crowd/gate1/status")
            assert message.retain and json.loads(message.payload) == status.payload
            online = late.wait_for(lambda m: m.topic == availability_topic(config))
            assert online.retain and online.payload == b"online"
        await publisher.close()
        # A clean close says "offline" itself (the last will is not used then).
        with MqttCollector(mosquitto.port, "venue/#") as after:
            offline = after.wait_for(lambda m: m.topic == availability_topic(config))
            assert offline.retain and offline.payload == b"offline"

    asyncio.run(scenario())


DYING_DAEMON = textwrap.dedent("""
    import asyncio, sys
    from avcc_stream.config.mqtt import MqttSettings
    from avcc_stream.stream.publish.mqtt import MqttPublisher

    async def main():
        publisher = MqttPublisher(MqttSettings(host="127.0.0.1", port=int(sys.argv[1]),
                                               protocol=sys.argv[2], client_id=sys.argv[3]))
        await publisher.start()
        print("STATE", "connected" if publisher.connected else "not connected", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_broker_publishes_last_will_offline_when_the_daemon_is_killed(mosquitto: Mosquitto, protocol: str, tmp_path: Path) -> None:
    client_id = f"dying-{protocol}"
    topic = f"crowd/daemon/{client_id}/availability"
    with MqttCollector(mosquitto.port, topic) as inbox:
        daemon = subprocess.Popen(
            [sys.executable, "-c", DYING_DAEMON, str(mosquitto.port), protocol, client_id],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        )
        try:
            assert daemon.stdout is not None
            state = next(line for line in daemon.stdout if line.startswith("STATE"))  # skip log lines
            assert state.strip() == "STATE connected"
            inbox.wait_for(lambda m: m.payload == b"online")
            daemon.kill()  # SIGKILL: no DISCONNECT packet, the socket just closes
            daemon.wait(timeout=10)
            will = inbox.wait_for(lambda m: m.payload == b"offline", timeout=10)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    assert will.topic == topic
    with MqttCollector(mosquitto.port, topic) as late:
        assert late.wait_for(lambda m: m.topic == topic).payload == b"offline"  # retained


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_publish_fails_promptly_while_broker_is_down_and_works_after_restart(mosquitto: Mosquitto, protocol: str) -> None:
    first, second, third = (one_of_each("gate1", second=s)[0] for s in (1, 2, 3))
    config = settings(mosquitto, protocol)

    async def scenario() -> None:
        publisher = MqttPublisher(config)
        await publisher.start()
        await publisher.publish(first)

        mosquitto.stop()
        await wait_until(lambda: not publisher.connected)
        started = time.monotonic()
        with pytest.raises(PublisherUnavailable):
            await publisher.publish(second)
        # Bounded wait: no later than the configured acknowledgement timeout.
        assert time.monotonic() - started <= config.publish_timeout_s

        mosquitto.start()  # same port
        await wait_until(lambda: publisher.connected)
        with MqttCollector(mosquitto.port, "crowd/#") as inbox:
            await publisher.publish(third)
            message = inbox.wait_for(lambda m: m.topic == "crowd/gate1/count")
        await publisher.close()
        assert json.loads(message.payload)["id"] == third.record_id

    asyncio.run(scenario())


def test_publish_gives_up_when_a_hung_broker_never_acknowledges(mosquitto: Mosquitto) -> None:
    record = one_of_each("gate1")[0]
    config = settings(mosquitto, publish_timeout_s=0.5)

    async def scenario() -> None:
        publisher = MqttPublisher(config)
        await publisher.start()
        mosquitto.freeze()  # the TCP connection stays up, nothing answers
        try:
            with pytest.raises(PublisherUnavailable, match="did not acknowledge"):
                await asyncio.wait_for(publisher.publish(record), timeout=10)
        finally:
            mosquitto.thaw()
        await publisher.close()

    asyncio.run(scenario())


def test_qos0_publish_returns_once_sent(mosquitto: Mosquitto) -> None:
    record = one_of_each("gate1")[0]
    config = settings(mosquitto, qos=0)

    async def scenario() -> None:
        publisher = MqttPublisher(config)
        await publisher.start()
        await publisher.publish(record)
        await asyncio.sleep(0.2)  # QoS 0 has no acknowledgement to wait for
        await publisher.close()

    with MqttCollector(mosquitto.port, "crowd/#") as inbox:
        asyncio.run(scenario())
        assert json.loads(inbox.wait_for(lambda m: m.topic.endswith("/count")).payload) == record.payload


def test_start_with_broker_down_does_not_fail_and_publish_says_unavailable(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)  # never started: nothing listens on its port
    config = settings(broker)

    async def scenario() -> None:
        publisher = MqttPublisher(config)
        await publisher.start()
        assert not publisher.connected
        with pytest.raises(PublisherUnavailable, match="not connected"):
            await publisher.publish(one_of_each("gate1")[0])
        await publisher.close()

    asyncio.run(scenario())


def test_start_fails_clearly_when_the_broker_refuses_the_client(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, extra_config="allow_anonymous false") as broker:
        config = settings(broker)

        async def scenario() -> None:
            publisher = MqttPublisher(config)
            with pytest.raises(PublishError, match="refused"):
                await publisher.start()
            assert not publisher.connected

        asyncio.run(scenario())


def test_password_never_appears_in_repr_or_errors() -> None:
    config = MqttSettings(username="venue", password="s3cret-pw")
    assert "s3cret-pw" not in repr(config) and "s3cret-pw" not in str(config.model_dump())
    assert config.password is not None and config.password.get_secret_value() == "s3cret-pw"
    assert os.environ.get("NO_SUCH_VAR_FOR_TEST") is None


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (EC keys: fast to make)."""
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2", "-subj", "/CN=avcc test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(folder / "san.ext"))
    return ca_cert, cert, key


def test_tls_broker_accepts_a_client_that_trusts_its_ca_and_not_one_that_does_not(tmp_path: Path) -> None:
    ca_cert, cert, key = make_tls_files(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_tls_files(tmp_path / "other")
    tls_lines = f"cafile {ca_cert}\ncertfile {cert}\nkeyfile {key}\n"
    with Mosquitto(tmp_path, extra_config=tls_lines) as broker:
        trusted = settings(broker, tls={"enabled": True, "ca_file": str(ca_cert)})
        untrusted = settings(broker, tls={"enabled": True, "ca_file": str(other_ca)}, connect_timeout_s=2)

        async def scenario() -> None:
            good = MqttPublisher(trusted)
            await good.start()
            assert good.connected
            await good.publish(one_of_each("gate1")[0])  # returns on the broker's PUBACK
            await good.close()
            bad = MqttPublisher(untrusted)
            await bad.start()  # the handshake fails: not connected, paho keeps retrying
            assert not bad.connected
            with pytest.raises(PublisherUnavailable):
                await bad.publish(one_of_each("gate1")[0])
            await bad.close()

        asyncio.run(scenario())


class RecordingClient:
    """Stands in for paho's client where only reconnect_delay_set matters (pure logic)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None:
        assert min_delay == max_delay  # paho then waits exactly this long
        self.delays.append(min_delay)


def test_reconnect_waits_grow_exponentially_to_the_cap_with_jitter_and_restart_after_a_connection() -> None:
    publisher = MqttPublisher(MqttSettings(reconnect_min_s=1, reconnect_max_s=8))
    client = RecordingClient()
    for _ in range(8):
        publisher._on_connect_fail(client, None)  # noqa: SLF001 - paho's callback
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0.5 * ceiling <= delay <= ceiling for delay, ceiling in zip(client.delays, ceilings))
    assert len(set(client.delays[3:])) > 1  # jittered: daemons do not all retry at once
    publisher._backoff.reset()  # what a successful CONNACK does  # noqa: SLF001
    publisher._on_connect_fail(client, None)  # noqa: SLF001
    assert client.delays[-1] <= 1


def test_while_the_broker_is_down_reconnection_attempts_are_counted_and_it_reconnects_when_back(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)  # not started yet
    attempts: list[float] = []
    publisher = MqttPublisher(settings(broker, connect_timeout_s=0.5), on_reconnect=lambda: attempts.append(time.monotonic()))

    async def scenario() -> None:
        await publisher.start()
        assert not publisher.connected and publisher.last_error == "cannot reach the broker: Connection refused"
        await wait_until(lambda: len(attempts) >= 3)
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: publisher.connected)
        await publisher.publish(one_of_each("gate1")[0])
        await publisher.close()

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
    assert all(later > earlier for earlier, later in zip(attempts, attempts[1:]))
