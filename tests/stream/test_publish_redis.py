"""Redis publisher: Streams against a real redis-server (Debian's has no TimeSeries module),
the RedisTimeSeries path against fakeredis (which implements TS.*)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import fakeredis
import pytest
import redis

from avcc_stream.config.redis import RedisSettings
from avcc_stream.stream.publish.base import Publisher, PublisherUnavailable
from avcc_stream.stream.publish.redis import RedisPublisher
from avcc_stream.stream.records import alert_record, epoch_ms
from avcc_stream.stream.alerts import AlertEvent
from tests.services import RedisServer
from tests.stream.record_samples import at, one_of_each

pytestmark = pytest.mark.timeout(60)


def settings(server: RedisServer | None = None, **overrides: object) -> RedisSettings:
    values: dict[str, object] = {"enabled": True, "venue": "arena", "socket_timeout_s": 1, "connect_timeout_s": 1}
    if server is not None:
        values.update(host=server.host, port=server.port)
    values.update(overrides)
    return RedisSettings.model_validate(values)


def as_text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in fields.items()}


@pytest.mark.services
def test_real_redis_without_timeseries_uses_streams_with_window_end_ids(redis_server: RedisServer) -> None:
    count, hotspots, alert, status = one_of_each("gate1")

    async def scenario() -> None:
        publisher = RedisPublisher(settings(redis_server))
        assert isinstance(publisher, Publisher)
        await publisher.start()
        assert publisher.backend == "streams" and publisher.connected
        for record in (count, hotspots, alert, status):
            await publisher.publish(record)
        await publisher.close()

    asyncio.run(scenario())
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    entries = client.xrange("crowd:gate1:count")
    assert [entry_id.decode() for entry_id, _ in entries] == [f"{epoch_ms(count.timestamp)}-0"]
    stored = as_text(entries[0][1])
    assert stored["id"] == count.record_id and float(stored["count"]) == count.payload["count"]
    assert stored["audio"] == "true" and stored["ts"] == count.payload["ts"]
    assert set(stored) == set(count.payload)
    assert as_text(client.xrange("crowd:gate1:hotspots")[0][1])["id"] == hotspots.record_id
    assert as_text(client.xrange("crowd:gate1:alerts")[0][1])["level"] == "warn"
    assert as_text(client.hgetall("crowd:gate1:status"))["state"] == "online"
    client.close()


@pytest.mark.services
def test_replaying_records_stores_each_once(redis_server: RedisServer) -> None:
    count = one_of_each("gate1", second=5)[0]
    # Two different alerts of the same window share a millisecond but are both kept.
    scene, zone = (
        alert_record(AlertEvent("gate1", zone_name, "level", "warn", "clear", 9.0, 8.0, at(3), at(5)))
        for zone_name in (None, "exit")
    )

    async def scenario() -> None:
        publisher = RedisPublisher(settings(redis_server))
        await publisher.start()
        for record in (count, scene, zone, count, scene, zone):  # the second pass is a replay
            await publisher.publish(record)
        await publisher.close()

    asyncio.run(scenario())
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert client.xlen("crowd:gate1:count") == 1
    alerts = [as_text(fields)["id"] for _, fields in client.xrange("crowd:gate1:alerts")]
    assert alerts == [scene.record_id, zone.record_id]
    client.close()


@pytest.mark.services
def test_an_older_record_after_a_newer_one_is_counted_not_silently_lost(redis_server: RedisServer) -> None:
    newer, older = (one_of_each("gate1", second=s)[0] for s in (9, 4))

    async def scenario() -> RedisPublisher:
        publisher = RedisPublisher(settings(redis_server))
        await publisher.start()
        await publisher.publish(newer)
        await publisher.publish(older)
        await publisher.close()
        return publisher

    publisher = asyncio.run(scenario())
    assert publisher.out_of_order_dropped == 1
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert client.xlen("crowd:gate1:count") == 1
    client.close()


@pytest.mark.services
def test_publish_raises_promptly_while_redis_is_down_and_works_after_restart(redis_server: RedisServer) -> None:
    first, second, third = (one_of_each("gate1", second=s)[0] for s in (1, 2, 3))
    config = settings(redis_server)

    async def scenario() -> None:
        publisher = RedisPublisher(config)
        await publisher.start()
        await publisher.publish(first)
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(PublisherUnavailable):
            await publisher.publish(second)
        # One retry on a fresh connection, each bounded by the connect/socket timeouts.
        assert time.monotonic() - started <= 2 * (config.connect_timeout_s + config.socket_timeout_s)
        assert not publisher.connected
        redis_server.start()  # same port, empty (no persistence)
        await publisher.publish(third)
        assert publisher.connected
        await publisher.close()

    asyncio.run(scenario())
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert [as_text(f)["id"] for _, f in client.xrange("crowd:gate1:count")] == [third.record_id]
    client.close()


def test_start_with_redis_down_is_not_fatal_and_publish_says_unavailable(tmp_path: Path) -> None:
    absent = RedisServer(tmp_path)  # never started

    async def scenario() -> None:
        publisher = RedisPublisher(settings(absent))
        await publisher.start()
        assert publisher.backend is None and not publisher.connected
        with pytest.raises(PublisherUnavailable):
            await publisher.publish(one_of_each("gate1")[0])
        await publisher.close()

    asyncio.run(scenario())


def test_timeseries_path_adds_points_with_retention_labels_and_idempotent_replay() -> None:
    server = fakeredis.FakeServer()
    count = one_of_each("gate1", second=7)[0]
    recount = type(count)(**{**count.__dict__, "payload": {**count.payload, "count": 99.0}})

    async def scenario() -> RedisPublisher:
        client = fakeredis.FakeAsyncRedis(server=server)
        publisher = RedisPublisher(settings(retention_s=3600), client=client)
        await publisher.start()  # fakeredis has no MODULE LIST: detected by the TS.INFO probe
        await publisher.publish(count)
        await publisher.publish(count)  # replay
        await publisher.publish(recount)  # same window again, new value: the last one wins
        await publisher.close()
        await client.aclose()
        return publisher

    publisher = asyncio.run(scenario())
    assert publisher.backend == "timeseries"
    client = fakeredis.FakeRedis(server=server)
    ms = epoch_ms(count.timestamp)
    assert client.execute_command("TS.RANGE", "crowd:gate1:count", "-", "+") == [[ms, 99.0]]
    info = client.execute_command("TS.INFO", "crowd:gate1:count")
    assert info[b"retentionTime"] == 3600 * 1000
    assert info[b"labels"] == {b"camera": b"gate1", b"venue": b"arena", b"metric": b"count"}


def test_forced_streams_backend_skips_detection() -> None:
    async def scenario() -> RedisPublisher:
        client = fakeredis.FakeAsyncRedis()
        publisher = RedisPublisher(settings(backend="streams"), client=client)
        await publisher.start()
        await publisher.publish(one_of_each("gate1")[0])
        assert await client.xlen("crowd:gate1:count") == 1
        await client.aclose()
        return publisher

    assert asyncio.run(scenario()).backend == "streams"


@pytest.mark.services
def test_a_hung_redis_makes_publish_fail_within_the_socket_timeout(redis_server: RedisServer) -> None:
    config = settings(redis_server, socket_timeout_s=0.3)

    async def scenario() -> None:
        publisher = RedisPublisher(config)
        await publisher.start()
        redis_server.freeze()  # connections stay open, nothing answers
        try:
            with pytest.raises(PublisherUnavailable):
                await asyncio.wait_for(publisher.publish(one_of_each("gate1")[0]), timeout=10)
        finally:
            redis_server.thaw()
        await publisher.close()

    asyncio.run(scenario())


@pytest.mark.services
def test_password_protected_redis_accepts_the_right_password_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    from avcc_stream.stream.publish.base import PublishError

    with RedisServer(tmp_path, extra_args=["--requirepass", "venue-pw"]) as server:

        async def scenario() -> None:
            good = RedisPublisher(settings(server, password="venue-pw"))
            await good.start()
            await good.publish(one_of_each("gate1")[0])
            await good.close()
            bad = RedisPublisher(settings(server, password="wrong"))
            with pytest.raises(PublishError, match="refused the credentials"):
                await bad.start()
            await bad.close()

        asyncio.run(scenario())
        client = redis.Redis(host=server.host, port=server.port, password="venue-pw")
        assert client.xlen("crowd:gate1:count") == 1
        client.close()


class ModuleListOnly:
    """Answers PING and MODULE LIST as a Redis Stack server does (RESP2 flat pairs)."""

    def __init__(self, modules: list[list[object]]) -> None:
        self.modules = modules

    async def ping(self) -> bool:
        return True

    async def execute_command(self, *args: object) -> object:
        assert args == ("MODULE", "LIST")
        return self.modules


@pytest.mark.parametrize(
    ("modules", "backend"),
    [
        ([[b"name", b"timeseries", b"ver", 11206, b"path", b"/opt/redis-stack/lib/redistimeseries.so"]], "timeseries"),
        ([[b"name", b"search", b"ver", 21005]], "streams"),
        ([], "streams"),
    ],
)
def test_module_list_decides_the_backend(modules: list[list[object]], backend: str) -> None:
    async def scenario() -> str | None:
        publisher = RedisPublisher(settings(), client=ModuleListOnly(modules))  # type: ignore[arg-type]
        await publisher.start()
        return publisher.backend

    assert asyncio.run(scenario()) == backend
