"""Outputs with credentials, configured the way an operator writes them (YAML, a password
file), against real servers: MQTT over TLS with a password file, Redis with a password, with
an ACL user, and over TLS. The right credentials connect and deliver; wrong ones fail at start with a
line that says so (and never shows the password)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from avcc_stream.cli import main
from avcc_stream.config import AppConfig, parse_config
from avcc_stream.stream.localservices import Mosquitto, RedisServer, find_binary, free_port
from avcc_stream.stream.publish import PublishError, PublisherUnavailable, publishers_from_config
from avcc_stream.stream.publish.mqtt import MqttPublisher
from avcc_stream.stream.publish.redis import RedisPublisher
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint
from tests.stream.record_samples import one_of_each
from tests.stream.test_publish_mqtt import make_tls_files

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]

PASSWORD = "correct-horse-battery"
WRONG = "wrong-horse-battery"
# The least a Redis ACL user needs for the Streams back end (Redis Stack adds +@timeseries).
REDIS_ACL = ["~crowd:*", "resetchannels", "-@all", "+ping", "+xadd", "+xrange", "+hset", "+module|list"]


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("tls-broker")
    ca, cert, key = make_tls_files(folder)
    passwords = folder / "passwords"
    subprocess.run([find_binary("mosquitto_passwd"), "-c", "-b", str(passwords), "venue", PASSWORD], check=True)
    broker = Mosquitto(folder, extra_config=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                                            f"password_file {passwords}\nallow_anonymous false\n")
    broker.start()
    try:
        yield broker, ca, folder
    finally:
        broker.stop()


def mqtt_yaml(port: int, ca: Path, password_file: Path, extra: str = "") -> str:
    return f"""
mqtt:
  host: 127.0.0.1
  port: {port}
  client_id: creds-test
  username: venue
  password_file: {password_file}
  connect_timeout_s: 3
  tls: {{enabled: true, ca_file: {ca}}}
{extra}cameras:
  gate: {{url: rtsp://127.0.0.1:1/gate}}
"""


def mqtt_publisher(app: AppConfig) -> MqttPublisher:
    [publisher] = publishers_from_config(app, spool=False)
    assert isinstance(publisher, MqttPublisher)
    return publisher


def test_tls_broker_with_a_password_file_accepts_the_right_credentials(tls_broker, tmp_path: Path) -> None:  # noqa: ANN001
    broker, ca, _ = tls_broker
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")  # as `echo ... > file` writes it
    publisher = mqtt_publisher(parse_config(mqtt_yaml(broker.port, ca, secret), environ={}))

    async def scenario() -> None:
        await publisher.start()
        assert publisher.connected
        for record in one_of_each("gate"):
            await publisher.publish(record)  # returns on the broker's PUBACK
        await publisher.close()

    asyncio.run(scenario())


def test_wrong_mqtt_credentials_stop_the_daemon_at_start_with_a_clear_line(
        tls_broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    broker, ca, _ = tls_broker
    secret = tmp_path / "mqtt-password"
    secret.write_text(WRONG)
    av = make_random_checkpoint(tmp_path, "cc-av-lowres", **SMALL_WIDTHS)
    v = make_random_checkpoint(tmp_path, "cc-v-lowres", **SMALL_WIDTHS)
    config = tmp_path / "avcc.yaml"
    config.write_text(mqtt_yaml(broker.port, ca, secret, extra=(
        f'model: {{checkpoint: "{av}", fallback_checkpoint: "{v}", device: cpu}}\n'
        f'metrics: {{listen: "127.0.0.1:0"}}\nstate_dir: "{tmp_path / "state"}"\n')))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"MQTT broker 127.0.0.1:{broker.port} refused the connection: connection refused: Not authorized" in err
    assert WRONG not in err


def test_an_untrusted_broker_certificate_is_named_as_the_cause(tls_broker, tmp_path: Path) -> None:  # noqa: ANN001
    broker, _, _ = tls_broker
    other_ca, _, _ = make_tls_files(tmp_path)  # a CA that did not sign the broker's certificate
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD)
    publisher = mqtt_publisher(parse_config(mqtt_yaml(broker.port, other_ca, secret), environ={}))

    async def scenario() -> None:
        await publisher.start()  # not fatal (the broker's certificate may be fixed), but said
        assert not publisher.connected
        assert publisher.last_error is not None and "TLS handshake failed: CERTIFICATE_VERIFY_FAILED" in publisher.last_error
        await publisher.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("user", [None, "avcc"], ids=["password", "acl-user"])
def test_redis_with_a_password_or_an_acl_user_accepts_the_right_one_and_refuses_a_wrong_one(
        tmp_path: Path, user: str | None) -> None:
    if user is None:
        extra = ["--requirepass", PASSWORD]
    else:  # the default user is switched off: only the restricted user exists
        extra = ["--user", "default", "off", "--user", user, "on", f">{PASSWORD}", *REDIS_ACL]
    with RedisServer(tmp_path, extra_args=extra) as server:

        def publisher(password: str) -> RedisPublisher:
            username = f"username: {user}\n  " if user else ""
            app = parse_config(f"""
mqtt: {{enabled: false}}
redis:
  enabled: true
  port: {server.port}
  {username}password: "{password}"
cameras: {{gate: {{url: rtsp://127.0.0.1:1/gate}}}}
""", environ={})
            [built] = publishers_from_config(app, spool=False)
            assert isinstance(built, RedisPublisher)
            return built

        async def scenario() -> None:
            good = publisher(PASSWORD)
            await good.start()
            assert good.backend == "streams"
            for record in one_of_each("gate"):
                await good.publish(record)
            assert await good._client.xrange("crowd:gate:count")  # written and readable
            await good.close()
            bad = publisher(WRONG)
            with pytest.raises(PublishError, match=f"Redis 127.0.0.1:{server.port} refused the credentials") as refused:
                await bad.start()
            assert WRONG not in str(refused.value)
            await bad.close()

        asyncio.run(scenario())


def test_redis_over_tls_with_a_password_connects_when_the_ca_is_trusted(tmp_path: Path) -> None:
    ca, cert, key = make_tls_files(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_tls_files(tmp_path / "other")
    port = free_port()
    tls_only = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--requirepass", PASSWORD]
    with RedisServer(tmp_path, port=port, extra_args=tls_only):

        def publisher(ca_file: Path) -> RedisPublisher:
            app = parse_config(f"""
mqtt: {{enabled: false}}
redis: {{enabled: true, port: {port}, password: "{PASSWORD}", tls: {{enabled: true, ca_file: "{ca_file}"}}}}
cameras: {{gate: {{url: rtsp://127.0.0.1:1/gate}}}}
""", environ={})
            [built] = publishers_from_config(app, spool=False)
            return built

        async def scenario() -> None:
            good = publisher(ca)
            await good.start()
            for record in one_of_each("gate"):
                await good.publish(record)
            assert await good._client.xrange("crowd:gate:count")
            await good.close()
            untrusted = publisher(other_ca)
            await untrusted.start()  # an unreachable (untrusted) server is not fatal: records would spool
            assert not untrusted.connected
            with pytest.raises(PublisherUnavailable, match="certificate verify failed"):
                await untrusted.publish(one_of_each("gate")[0])
            await untrusted.close()

        asyncio.run(scenario())
