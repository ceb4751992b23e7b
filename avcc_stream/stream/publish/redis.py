"""Redis publisher (redis-py asyncio): a count series per camera, plus hotspots, alerts, status.

Back ends, chosen at start-up (`redis.backend: auto` asks the server with MODULE LIST, or,
where that command is not allowed, probes TS.INFO) and logged:
- RedisTimeSeries: `<prefix>:<camera>:count` is a time series (TS.CREATE once with
  RETENTION, DUPLICATE_POLICY LAST and LABELS camera/venue/metric; then TS.ADD ... ON_DUPLICATE
  LAST), so replaying a window overwrites its own point.
- Streams (core Redis, always there): `XADD <prefix>:<camera>:count MAXLEN ~ N <ms>-*` with the
  count payload's fields; the entry id starts with the window end in ms. Before adding, the
  entries of that millisecond are read back: one carrying the same record id means this is a
  replay, stored already.
Hotspots (`...:hotspots`) and alerts (`...:alerts`) are streams in both back ends; the status
is a hash `...:status` holding the latest state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avcc_stream.config.redis import RedisSettings
from avcc_stream.security import validate_camera_name
from avcc_stream.stream.publish.base import PublishError, PublisherUnavailable
from avcc_stream.stream.records import epoch_ms
from avcc_stream.stream.types import OutboundRecord

log = structlog.get_logger(__name__)

Backend = Literal["timeseries", "streams"]


def _field_value(value: Any) -> str:
    """Stream fields are strings: numbers as text, booleans as true/false, nested as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _fields(payload: dict[str, Any]) -> dict[str, str]:
    return {key: _field_value(value) for key, value in payload.items()}


class RedisPublisher:
    name = "redis"

    def __init__(self, settings: RedisSettings, client: aioredis.Redis | None = None, *,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        """`client` replaces the connection built from settings (tests pass fakeredis);
        `on_reconnect` is called before each attempt to reach a server that was down."""
        self.settings = settings
        self._on_reconnect = on_reconnect
        self._down = False  # the last call found the server unreachable
        self._client = client
        self._owns_client = client is None
        self.backend: Backend | None = None
        self._connected = False
        self._created_series: set[str] = set()
        self.out_of_order_dropped = 0

    @property
    def connected(self) -> bool:
        return self._connected

    def _build_client(self) -> aioredis.Redis:
        s = self.settings
        tls: dict[str, Any] = {}
        if s.tls.enabled:
            tls = {
                "ssl": True,
                "ssl_ca_certs": str(s.tls.ca_file) if s.tls.ca_file else None,
                "ssl_certfile": str(s.tls.cert_file) if s.tls.cert_file else None,
                "ssl_keyfile": str(s.tls.key_file) if s.tls.key_file else None,
                "ssl_cert_reqs": "none" if s.tls.insecure else "required",
                "ssl_check_hostname": not s.tls.insecure,
            }
        return aioredis.Redis(
            host=s.host, port=s.port, db=s.db,
            username=s.username, password=s.password.get_secret_value() if s.password else None,
            socket_timeout=s.socket_timeout_s, socket_connect_timeout=s.connect_timeout_s,
            # One immediate retry on a fresh connection (a pooled one dies with a restarted
            # server); past that the caller hears at once that Redis is down.
            retry=Retry(NoBackoff(), 1),
            **tls,
        )

    def key(self, camera: str, series: str) -> str:
        return f"{self.settings.key_prefix}:{validate_camera_name(camera)}:{series}"

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is None:
            self._client = self._build_client()
        try:
            await self._ensure_backend()  # PublishError (bad credentials) propagates
        except PublisherUnavailable as exc:
            log.warning("redis unreachable; will retry on publish", publisher=self.name,
                        host=self.settings.host, port=self.settings.port, error=str(exc))

    async def close(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is not None and self._owns_client:
            await client.aclose()

    async def _ensure_backend(self) -> Backend:
        if self.backend is None:
            backend = await self._call(self._detect_backend())
            self.backend = backend
            log.info("redis output ready", publisher=self.name, backend=backend,
                     host=self.settings.host, port=self.settings.port, db=self.settings.db)
        return self.backend

    async def _detect_backend(self) -> Backend:
        assert self._client is not None
        await self._client.ping()
        if self.settings.backend != "auto":
            return self.settings.backend
        try:
            modules = await self._client.execute_command("MODULE", "LIST")
        except ResponseError:
            # MODULE LIST may be unknown (emulators) or forbidden by an ACL: ask TS.INFO instead;
            # "unknown command" means no module, any other answer means it is there.
            try:
                await self._client.execute_command("TS.INFO", f"{self.settings.key_prefix}:__probe__")
            except ResponseError as exc:
                return "streams" if "unknown command" in str(exc).lower() else "timeseries"
            return "timeseries"
        for module in modules or []:
            entry = module if isinstance(module, dict) else dict(zip(module[::2], module[1::2]))
            name = entry.get(b"name", entry.get("name", b""))
            if (name.decode() if isinstance(name, bytes) else str(name)).lower() in ("timeseries", "redistimeseries"):
                return "timeseries"
        return "streams"

    async def _call(self, operation: Any) -> Any:
        """Run one Redis operation; map "server down" to PublisherUnavailable."""
        if self._down and self._on_reconnect is not None:
            self._on_reconnect()
        try:
            result = await operation
        except AuthenticationError as exc:
            # Wrong credentials will not fix themselves: not "unavailable" but refused.
            self._connected = False
            raise PublishError(f"Redis {self.settings.host}:{self.settings.port} refused the credentials: {exc}") from exc
        except (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError) as exc:
            self._connected = False
            self._down = True
            raise PublisherUnavailable(
                f"Redis {self.settings.host}:{self.settings.port} unavailable: {exc}") from exc
        except ResponseError as exc:
            self._connected = True
            if str(exc).startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")):
                raise PublisherUnavailable(f"Redis is not ready: {exc}") from exc
            raise PublishError(f"Redis refused the command: {exc}") from exc
        except RedisError as exc:
            self._connected = False
            self._down = True
            raise PublisherUnavailable(f"Redis error: {exc}") from exc
        if self._down:
            self._down = False
            log.info("redis reconnected", publisher=self.name, host=self.settings.host, port=self.settings.port)
        self._connected = True
        return result

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, record: OutboundRecord) -> None:
        if self._client is None:
            raise PublisherUnavailable("Redis publisher is not started")
        backend = await self._ensure_backend()
        if record.kind == "count":
            if backend == "timeseries":
                await self._call(self._ts_add(record, "count", float(record.payload["count"])))
            else:
                await self._call(self._xadd_once(self.key(record.camera, "count"), record))
        elif record.kind == "hotspots":
            if self.settings.hotspots:
                await self._call(self._xadd_once(self.key(record.camera, "hotspots"), record))
        elif record.kind == "alert":
            await self._call(self._xadd_once(self.key(record.camera, "alerts"), record))
        elif record.kind == "status":
            await self._call(self._client.hset(self.key(record.camera, "status"), mapping=_fields(record.payload)))

    async def _ts_add(self, record: OutboundRecord, metric: str, value: float) -> None:
        assert self._client is not None
        key = self.key(record.camera, metric)
        if key not in self._created_series:
            try:
                await self._client.execute_command(
                    "TS.CREATE", key,
                    "RETENTION", self.settings.retention_s * 1000,
                    "DUPLICATE_POLICY", "LAST",
                    "LABELS", "camera", record.camera, "venue", self.settings.venue, "metric", metric,
                )
            except ResponseError as exc:
                if "already exists" not in str(exc).lower():
                    raise
            self._created_series.add(key)
        await self._client.execute_command("TS.ADD", key, epoch_ms(record.timestamp), value, "ON_DUPLICATE", "LAST")

    async def _xadd_once(self, key: str, record: OutboundRecord) -> None:
        """XADD with an id from the record's time, skipping a record that is already stored."""
        assert self._client is not None
        ms = epoch_ms(record.timestamp)
        same_ms = await self._client.xrange(key, min=str(ms), max=str(ms))
        for _, fields in same_ms:
            if fields.get(b"id", fields.get("id")) in (record.record_id, record.record_id.encode()):
                return  # a replay of a stored record
        try:
            await self._client.xadd(
                key, _fields(record.payload), id=f"{ms}-*",
                maxlen=self.settings.stream_maxlen, approximate=True,
            )
        except ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
            # Older than the newest entry and not stored: a stream cannot take it any more.
            self.out_of_order_dropped += 1
            log.warning("redis stream entry older than the stream's last one; not stored",
                        publisher=self.name, key=key, record_id=record.record_id,
                        dropped_total=self.out_of_order_dropped)
