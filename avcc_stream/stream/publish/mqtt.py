"""MQTT publisher (paho-mqtt 2.x): `<prefix>/<camera>/<kind>`, QoS 1 by default.

paho's network loop runs in its own thread (`loop_start`) and reconnects by itself; we set
each wait ourselves (capped exponential backoff with jitter, `reconnect_min_s` doubling to
`reconnect_max_s`), since paho's own backoff has no jitter and every daemon of a venue would
reconnect at once after a broker restart. The asyncio side never waits on paho: `publish` registers a future per message
id, paho's `on_publish` (PUBACK received) resolves it through `call_soon_threadsafe`, and the
coroutine awaits it with a timeout. When the connection drops, every pending future fails at
once, so a caller learns of an outage within `publish_timeout_s` at worst.

A message in flight when the connection drops may still be delivered by paho after the
reconnect, in addition to the caller's retry: such duplicates are what QoS 1 allows, and the
payload's `id` identifies them.

`publish_raw` publishes any topic with the same acknowledgement (Home Assistant discovery);
`add_connect_listener` callbacks run on the event loop after every (re)connection.

Availability: `<prefix>/daemon/<client_id>/availability` is "online" (retained) while connected;
the broker publishes the last will "offline" (retained) if the daemon dies, and `close()`
publishes "offline" itself before a clean disconnect.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from avcc_stream.config.mqtt import MqttSettings
from avcc_stream.security import validate_camera_name
from avcc_stream.stream.backoff import ExponentialBackoff
from avcc_stream.stream.publish.base import PublishError, PublisherUnavailable, payload_json
from avcc_stream.stream.types import OutboundRecord

log = structlog.get_logger(__name__)

# Upper bound of messages paho may hold (in flight or waiting for a window); past it publish
# fails instead of buffering. Far above what a few cameras have in flight at 1 Hz.
MAX_QUEUED_MESSAGES = 1000
ONLINE, OFFLINE = "online", "offline"
# An acknowledgement that beat its future's registration is matched within this time; older
# ones belong to messages nobody waits for (paho reuses message ids after 65535 messages).
EARLY_ACK_MAX_AGE_S = 10.0


def availability_topic(settings: MqttSettings) -> str:
    return f"{settings.topic_prefix}/daemon/{settings.client_id}/availability"


def record_topic(settings: MqttSettings, record: OutboundRecord) -> str:
    return f"{settings.topic_prefix}/{validate_camera_name(record.camera)}/{record.kind}"


def _reason_text(reason: Any) -> str:
    return getattr(reason, "getName", lambda: str(reason))()


class MqttPublisher:
    name = "mqtt"

    def __init__(self, settings: MqttSettings, *, on_reconnect: Callable[[], None] | None = None) -> None:
        """`on_reconnect` is called (from paho's thread) before each reconnection attempt."""
        self.settings = settings
        self._on_reconnect = on_reconnect
        # Used from paho's thread only (its callbacks), never from the loop.
        self._backoff = ExponentialBackoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._connect_listeners: list[Callable[[], Any]] = []
        self._listener_tasks: set[asyncio.Future[Any]] = set()
        self._closing = False
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._first_answer: asyncio.Event | None = None  # set on the first CONNACK
        self._refused: str | None = None  # the broker's reason when it refused the connection
        # mid -> future, resolved from paho's thread. A PUBACK can beat the registration of
        # its future (paho's thread answers while publish() returns): on_publish then parks
        # it in `_early_acks` for the registration to find. The lock guards these two dicts
        # only; it is never held while calling paho (paho holds its own mutex around
        # on_publish, so holding ours across client.publish() would deadlock).
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early_acks: dict[int, tuple[float, ReasonCode]] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    # --- lifecycle -------------------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
        )
        if s.username:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls.enabled:
            client.tls_set(
                ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if s.tls.insecure else ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(s.tls.insecure)
        client.will_set(availability_topic(s), OFFLINE, qos=1, retain=True)
        first = self.settings.reconnect_min_s
        client.reconnect_delay_set(min_delay=first, max_delay=first)  # type: ignore[arg-type]
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        return client

    async def start(self) -> None:
        """Connect in paho's thread and wait up to connect_timeout_s for the broker's answer.

        An unreachable broker is not an error (paho keeps retrying; publish raises meanwhile);
        a broker that refuses us (bad credentials, not authorised) is: PublishError."""
        if self._client is not None:
            return
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._first_answer = asyncio.Event()
        self._client = self._build_client()
        # connect_async only records the target; paho's thread makes the first attempt.
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._first_answer.wait(), s.connect_timeout_s)
        except asyncio.TimeoutError:
            pass
        if not self._connected and self._refused is None:
            # paho does not say why a connection failed; ask the network ourselves, so the
            # log names the cause (refused, timed out, an untrusted TLS certificate...).
            self.last_error = await asyncio.to_thread(self._diagnose_connect_failure)
            log.warning("mqtt broker unreachable; retrying in the background",
                        publisher=self.name, host=s.host, port=s.port, error=self.last_error)
            return
        if self._refused is not None:
            reason = self._refused
            await self._stop_loop()
            raise PublishError(f"MQTT broker {s.host}:{s.port} refused the connection: {reason}")
        log.info("mqtt connected", publisher=self.name, host=s.host, port=s.port,
                 protocol=s.protocol, qos=s.qos, tls=s.tls.enabled, client_id=s.client_id)

    def _diagnose_connect_failure(self) -> str:
        """Why a TCP (+ TLS) connection to the broker fails right now, in a few words."""
        import socket

        s = self.settings
        try:
            with socket.create_connection((s.host, s.port), timeout=s.connect_timeout_s) as sock:
                if not s.tls.enabled:
                    return "cannot reach the broker (TCP connects; no MQTT answer)"
                context = ssl.create_default_context(cafile=str(s.tls.ca_file) if s.tls.ca_file else None)
                if s.tls.insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                if s.tls.cert_file and s.tls.key_file:
                    context.load_cert_chain(str(s.tls.cert_file), str(s.tls.key_file))
                with context.wrap_socket(sock, server_hostname=s.host):
                    return "cannot reach the broker (TLS handshake succeeds; no MQTT answer)"
        except ssl.SSLError as exc:
            return f"TLS handshake failed: {exc.reason or exc}" + (
                f" ({exc.verify_message})" if getattr(exc, "verify_message", None) else "")
        except OSError as exc:
            return f"cannot reach the broker: {exc.strerror or exc}"

    async def close(self) -> None:
        client = self._client
        if client is None:
            return
        self._closing = True
        if self._connected:
            try:
                info = client.publish(availability_topic(self.settings), OFFLINE, qos=1, retain=True)
                await asyncio.wait_for(asyncio.to_thread(info.wait_for_publish, 2.0), 3.0)
            except (RuntimeError, ValueError, asyncio.TimeoutError) as exc:
                log.warning("mqtt could not publish offline availability", publisher=self.name, error=str(exc))
            client.disconnect()  # a clean DISCONNECT: the broker discards the last will
        await self._stop_loop()
        self._fail_pending("publisher closed")

    async def _stop_loop(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is not None:
            await asyncio.to_thread(client.loop_stop)  # joins paho's thread

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, record: OutboundRecord) -> None:
        properties = None
        if self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.ContentType = "application/json"
            properties.UserProperty = [("id", record.record_id)]
        await self.publish_raw(record_topic(self.settings, record), payload_json(record),
                               retain=record.retain, properties=properties)

    async def publish_raw(self, topic: str, payload: bytes | str, *, retain: bool = False,
                          properties: Properties | None = None) -> None:
        """Publish any message at the configured QoS; returns once the broker acknowledged
        it (QoS >= 1), raises PublisherUnavailable like `publish`."""
        client = self._client
        if client is None:
            raise PublisherUnavailable("MQTT publisher is not started")
        if not self._connected:
            raise PublisherUnavailable(f"MQTT broker {self.settings.host}:{self.settings.port} is not connected"
                                       + (f" ({self.last_error})" if self.last_error else ""))
        qos = self.settings.qos
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublisherUnavailable(f"MQTT publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos == 0:
            return  # "sent": handed to paho, no acknowledgement exists at QoS 0
        with self._lock:
            early = self._early_acks.pop(info.mid, None)
            if early is not None and time.monotonic() - early[0] > EARLY_ACK_MAX_AGE_S:
                early = None
            if early is None:
                self._pending[info.mid] = future
        if early is not None:
            self._resolve(future, early[1])
        try:
            await asyncio.wait_for(future, self.settings.publish_timeout_s)
        except asyncio.TimeoutError:
            raise PublisherUnavailable(
                f"MQTT broker did not acknowledge {topic} within {self.settings.publish_timeout_s} s"
            ) from None
        finally:
            with self._lock:
                self._pending.pop(info.mid, None)

    def add_connect_listener(self, callback: Callable[[], Any]) -> None:
        """Call `callback()` on the event loop after every successful (re)connection; a
        coroutine function's coroutine is run as a task (e.g. re-announcing discovery)."""
        self._connect_listeners.append(callback)

    def _connected_on_loop(self) -> None:
        for callback in self._connect_listeners:
            outcome = callback()
            if asyncio.iscoroutine(outcome):
                task = asyncio.ensure_future(outcome)
                self._listener_tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self._listener_tasks.discard)

    # --- paho callbacks (paho's thread) ------------------------------------------------------

    def _to_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            self._refused = self.last_error = f"connection refused: {_reason_text(reason)}"
            log.error("mqtt connection refused", publisher=self.name, reason=_reason_text(reason))
        else:
            reconnected = self.last_error is not None and self._first_answer is not None and self._first_answer.is_set()
            self._refused = self.last_error = None
            self._connected = True
            self._backoff.reset()
            # Retained, so every subscriber (and Home Assistant) sees the daemon as available.
            client.publish(availability_topic(self.settings), ONLINE, qos=1, retain=True)
            if reconnected:
                log.info("mqtt reconnected", publisher=self.name, host=self.settings.host, port=self.settings.port)
            self._to_loop(self._connected_on_loop)
        if self._first_answer is not None:
            self._to_loop(self._first_answer.set)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.last_error = "cannot reach the broker"
        self._schedule_reconnect(client)
        if self._first_answer is not None:
            self._to_loop(self._first_answer.set)  # start() need not wait out its timeout

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        was_connected, self._connected = self._connected, False
        if was_connected:
            self.last_error = f"disconnected: {_reason_text(reason)}"
            log.warning("mqtt disconnected; reconnecting", publisher=self.name, reason=_reason_text(reason))
        self._schedule_reconnect(client)
        self._to_loop(self._fail_pending, f"MQTT connection lost ({_reason_text(reason)})")

    def _schedule_reconnect(self, client: paho.Client) -> None:
        """Set paho's next reconnect wait to our jittered backoff (paho reads it right after
        its connect-failure and disconnect callbacks)."""
        if self._closing:
            return  # our own clean disconnect: paho will not reconnect
        delay = self._backoff.next_delay()
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        if self._on_reconnect is not None:
            self._on_reconnect()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        now = time.monotonic()
        with self._lock:
            future = self._pending.get(mid)
            if future is None:
                self._early_acks[mid] = (now, reason)
                # Acks nobody waits for (availability, QoS 0, given-up messages) age out.
                for stale in [m for m, (at, _) in self._early_acks.items() if now - at > EARLY_ACK_MAX_AGE_S]:
                    del self._early_acks[stale]
        if future is not None:
            self._to_loop(self._resolve, future, reason)

    # --- asyncio side -------------------------------------------------------------------------

    @staticmethod
    def _resolve(future: asyncio.Future[None], reason: ReasonCode) -> None:
        if future.done():
            return
        if reason.is_failure:  # MQTT 5 PUBACK with an error (e.g. not authorised for the topic)
            future.set_exception(PublishError(f"MQTT broker rejected the message: {_reason_text(reason)}"))
        else:
            future.set_result(None)

    def _fail_pending(self, why: str) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            if not future.done():
                future.set_exception(PublisherUnavailable(why))
