"""A Publisher that never loses a record to an outage: it spools while the output is down.

`SpoolingPublisher(inner, spool)` wraps any Publisher (MQTT, Redis) and is one itself:

* output up, spool empty: each record goes straight to `inner` (no disk I/O);
* `inner` raises PublisherUnavailable (or times out): that record and every later one are
  appended to the spool instead, so order is kept;
* a background task replays the spool oldest first, with capped exponential backoff and
  jitter between attempts, deleting each record only after `inner.publish` returned (the
  output durably accepted it); when the spool is empty, records go straight through again.

A record the output refuses for good (`PublishError`) is passed to the caller on the direct
path, and logged, counted and dropped during a replay (nobody is waiting for it then).
Records keep their original timestamps and ids. A record whose acknowledgement was lost
(broker accepted it, then the connection died) is sent again: consumers drop such
duplicates by `record_id`, which is what at-least-once delivery promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog

from avcc_stream.stream.backoff import ExponentialBackoff
from avcc_stream.stream.publish.base import Publisher, PublishError, PublisherUnavailable
from avcc_stream.stream.spool import Spool, SpoolError, SpoolStats
from avcc_stream.stream.types import OutboundRecord

log = structlog.get_logger(__name__)

# What means "not now, try later". OSError covers TimeoutError and socket errors from an
# inner publisher that lets them escape instead of wrapping them.
TRANSIENT_ERRORS = (PublisherUnavailable, OSError)
RECONNECT_POLL_S = 0.1  # how often a backoff pause checks whether the output came back


@dataclass(frozen=True)
class SpoolingStats:
    direct_total: int  # records the output accepted at once
    spooled_total: int  # records that went through the spool
    replayed_total: int  # spooled records the output accepted later
    rejected_total: int  # spooled records the output refused for good (PublishError), dropped
    lost_total: int  # records the spool could not store (disk full...), dropped
    spooling: bool  # True while records queue behind a backlog
    spool: SpoolStats


class SpoolingPublisher:
    """Wraps `inner` (a Publisher) with an on-disk spool; see the module doc."""

    def __init__(
        self,
        inner: Publisher,
        spool: Spool,
        *,
        backoff: ExponentialBackoff | None = None,
        publish_timeout_s: float | None = 30.0,
        replay_batch: int = 100,
    ) -> None:
        self.inner = inner
        self.spool = spool
        self.name = inner.name
        self._backoff = backoff or ExponentialBackoff(initial_s=0.5, max_s=30.0)
        self._publish_timeout_s = publish_timeout_s
        self._replay_batch = replay_batch
        # Held while deciding "straight through or spool" and while appending, and by the
        # replay task when it declares the backlog gone: the two never interleave wrongly.
        self._order_lock = asyncio.Lock()
        self._backlog_waiting = asyncio.Event()
        self._spooling = False
        self._inner_started = False
        self._closed = False
        self._replay_task: asyncio.Task[None] | None = None
        self._outage_started: float | None = None
        self._direct = self._spooled = self._replayed = self._rejected = self._lost = 0

    # -- Publisher interface ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._inner_started and bool(self.inner.connected)

    async def start(self) -> None:
        await self.spool.open()
        try:
            await self.inner.start()
            self._inner_started = True
        except TRANSIENT_ERRORS as exc:
            # The daemon still starts: records spool until the output is reachable.
            log.warning("output_unavailable_at_start", output=self.name, error=str(exc))
            self._begin_outage()
        except BaseException:  # refused for good (e.g. PublishError: bad credentials)
            await self.spool.close()
            raise
        if self.spool.depth:
            self._begin_outage()
        self._replay_task = asyncio.create_task(self._replay_forever(), name=f"replay-{self.name}")

    async def publish(self, record: OutboundRecord) -> None:
        """Returns once the output accepted `record` or the spool stored it."""
        if self._closed:
            raise RuntimeError(f"publisher {self.name!r} is closed")
        async with self._order_lock:
            if not self._spooling:
                try:
                    await self._publish_inner(record)
                    self._direct += 1
                    return
                except TRANSIENT_ERRORS as exc:
                    log.warning(
                        "output_unavailable_spooling", output=self.name, error=str(exc) or type(exc).__name__,
                        record_id=record.record_id,
                    )
                    self._begin_outage()
            try:
                await self.spool.append(record)
            except SpoolError as exc:
                self._lost += 1
                log.error(
                    "spool_write_failed_record_lost", output=self.name,
                    record_id=record.record_id, error=str(exc), lost_total=self._lost,
                )
                return
            self._spooled += 1
            self._backlog_waiting.set()

    async def close(self) -> None:
        """Stops replaying; whatever is still spooled stays on disk for the next start.
        A publish in progress finishes first (delivered or spooled, within its timeout)."""
        self._closed = True
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        async with self._order_lock:
            try:
                if self._inner_started:
                    await self.inner.close()
            finally:
                await self.spool.close()

    # -- observability ---------------------------------------------------------------------

    @property
    def stats(self) -> SpoolingStats:
        return SpoolingStats(
            direct_total=self._direct,
            spooled_total=self._spooled,
            replayed_total=self._replayed,
            rejected_total=self._rejected,
            lost_total=self._lost,
            spooling=self._spooling,
            spool=self.spool.stats,
        )

    # -- internals -------------------------------------------------------------------------

    async def _publish_inner(self, record: OutboundRecord) -> None:
        if not self._inner_started:
            raise PublisherUnavailable(f"output {self.name!r} has not connected yet")
        if self._publish_timeout_s is None:
            await self.inner.publish(record)
        else:
            # A guard against an output that hangs instead of failing fast.
            await asyncio.wait_for(self.inner.publish(record), self._publish_timeout_s)

    def _begin_outage(self) -> None:
        if not self._spooling:
            self._outage_started = time.monotonic()
        self._spooling = True
        self._backlog_waiting.set()

    async def _replay_forever(self) -> None:
        while True:
            await self._backlog_waiting.wait()
            if not self._inner_started and not await self._try_start_inner():
                continue
            await self._drain()

    async def _try_start_inner(self) -> bool:
        try:
            await self.inner.start()
        except TRANSIENT_ERRORS as exc:
            await self._pause_after_failure("start", exc)
            return False
        self._inner_started = True
        self._backoff.reset()
        log.info("output_started", output=self.name)
        return True

    async def _drain(self) -> None:
        """Replay the spool oldest first until it is empty, then go back to direct mode."""
        while True:
            batch = await self.spool.peek(self._replay_batch)
            if not batch:
                async with self._order_lock:
                    if self.spool.depth == 0:  # nothing was appended since the peek
                        self._spooling = False
                        self._backlog_waiting.clear()
                        self._log_caught_up()
                        return
                continue
            for item in batch:
                try:
                    await self._publish_inner(item.record)
                except TRANSIENT_ERRORS as exc:
                    await self._pause_after_failure("replay", exc)
                    break  # re-read the head: the bound may have dropped it meanwhile
                except PublishError as exc:  # the output will never take this record
                    self._rejected += 1
                    log.error(
                        "output_rejected_spooled_record_dropped", output=self.name,
                        record_id=item.record.record_id, kind=item.record.kind, error=str(exc),
                    )
                except Exception as exc:  # noqa: BLE001 - a bug in the output: keep the record
                    log.exception("output_failed_unexpectedly", output=self.name, record_id=item.record.record_id)
                    await self._pause_after_failure("replay", exc)
                    break
                else:
                    self._replayed += 1
                    self._backoff.reset()
                await self._remove_through(item.seq)

    async def _remove_through(self, seq: int) -> None:
        try:
            await self.spool.remove_through(seq)
        except SpoolError as exc:
            # The record stays and is sent again later: a duplicate, never a loss.
            log.error("spool_delete_failed", output=self.name, error=str(exc))
            await asyncio.sleep(self._backoff.next_delay())

    async def _pause_after_failure(self, stage: str, exc: BaseException) -> None:
        delay = self._backoff.next_delay()
        log_event = log.warning if self._backoff.failures == 1 else log.debug
        log_event(
            "output_still_unavailable", output=self.name, stage=stage,
            error=str(exc) or type(exc).__name__, retry_in_s=round(delay, 2),
            backlog=self.spool.depth,
        )
        await self._sleep_unless_reconnected(delay)

    async def _sleep_unless_reconnected(self, delay: float) -> None:
        """Wait out the backoff, but stop as soon as an output that was disconnected says it
        is connected again (MQTT: paho reconnected by itself), so the backlog starts draining
        at once instead of up to a whole backoff period later."""
        was_connected = self.connected
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if not was_connected and self.connected:
                return
            await asyncio.sleep(min(RECONNECT_POLL_S, remaining))

    def _log_caught_up(self) -> None:
        outage_s = None
        if self._outage_started is not None:
            outage_s = round(time.monotonic() - self._outage_started, 1)
        self._outage_started = None
        log.info(
            "output_caught_up", output=self.name, outage_s=outage_s,
            replayed_total=self._replayed, dropped_total=self.spool.stats.dropped_total,
        )
