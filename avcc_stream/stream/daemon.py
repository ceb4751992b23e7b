"""The daemon: an asyncio pipeline of bounded stages, source -> align -> infer -> publish.

    camera runners (one task each)         inference pool (threads)     publish stage (task)
    source thread -> SourceQueue -> align -> WindowQueue -> workers -> outbox -> MQTT/Redis/console

* Each camera runs on its own: a dead URL, a frozen server or a broken stream changes that
  camera's status (online / offline / stalled, with the reason) and its runner reconnects
  with capped exponential backoff and jitter, while every other camera keeps counting.
* Per-camera watchdog: no video frame for `watchdog_s` -> status "stalled", reconnect.
* The event loop never does pixel, sample or model work: decoding runs in each source's
  thread, RGB conversion and resampling of a finished window in a short `to_thread` call,
  and counting in the inference pool's threads.
* Every queue is bounded and counts what it drops: the source queue (media items), the
  inference queue (oldest windows per camera) and the outbox (oldest records).
* `stop()` (SIGTERM / SIGINT, via `service.py`): stop the sources, count the windows already
  cut, publish their records and each camera's "offline" status, close the outputs; well
  within 10 s. `start_camera` / `stop_camera` change the camera set of a running daemon
  (config reloads) without touching the other cameras.
* structlog JSON logs with `camera` in every line (null for the daemon's own lines).

Outputs, metrics, systemd and reloads are wired around this pipeline in `service.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from avcc_stream.stream.align import AlignConfig, AlignedWindow, WindowAligner
from avcc_stream.stream.backoff import ExponentialBackoff
from avcc_stream.stream.infer import DeviceModels, InferConfig, InferencePool
from avcc_stream.stream.publish.base import Publisher, PublishError, PublisherUnavailable
from avcc_stream.stream.records import CameraState, alert_record, result_records, status_record
from avcc_stream.stream.sources import (
    AudioItem,
    Source,
    SourceEnded,
    SourceOpened,
    SourceQueue,
    StreamInfo,
    VideoItem,
)
from avcc_stream.stream.types import AudioVisualWindow, CountResult, OutboundRecord

log = structlog.get_logger("avcc_stream.daemon")

SHUTDOWN_BUDGET_S = 8.0  # SIGTERM -> exit, leaving room under systemd's and the tests' 10 s
# A camera that stays down is retried every couple of seconds for months: its first attempts
# are reported (status record + warning), then only a change of reason or one a minute.
REPORTED_RETRIES = 3
RETRY_REPORT_EVERY_S = 60.0
SOURCE_QUEUE_ITEMS = 512  # ~7 s of 25 fps video + 48 kHz AAC per camera
OUTBOX_RECORDS = 1024
STATS_EVERY_WINDOWS = 60  # a camera_stats log line (A/V skew, gaps, decode fps) per minute


# --------------------------------------------------------------------------------------
# logging


def _ensure_camera(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("camera", None)  # every line says which camera it is about (or none)
    return event


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured (a
    test harness may have swapped it and closed the old one since)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """structlog: one JSON object per line (or console text) with `camera` on every line.

    Libraries that log through the standard `logging` module, and Python warnings, are
    rendered the same way, so the journal never holds a line a log collector cannot parse.
    Calling it again (a config reload) replaces the previous set-up.
    """
    stream = stream or _CurrentStderr()
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _ensure_camera,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    logging.captureWarnings(True)


# --------------------------------------------------------------------------------------
# per-camera settings (plain parameters; `camera_specs` builds them from the config)


@dataclass(frozen=True)
class ReconnectPolicy:
    """Capped exponential backoff with jitter. The cap bounds how late a camera that comes
    back after a long outage is found: max_s 2 s -> counting again within ~4 s (see
    docs/streaming.md); the backoff restarts from initial_s after a connection that streamed."""

    initial_s: float = 0.5
    max_s: float = 2.0
    jitter: float = 0.2


@dataclass(frozen=True)
class CameraSpec:
    name: str
    source_factory: Callable[[], Source]
    label: str  # where it reads from, credentials redacted
    watchdog_s: float = 10.0
    open_timeout_s: float = 10.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    align: AlignConfig = field(default_factory=AlignConfig)
    retry_after_end: bool = True  # a file that ends without looping is not retried


# --------------------------------------------------------------------------------------
# one camera


class CameraRunner:
    """Connects, aligns and hands windows to the pool; reconnects for ever until stopped."""

    def __init__(self, spec: CameraSpec, daemon: Daemon) -> None:
        self.spec = spec
        self.daemon = daemon
        self.log = log.bind(camera=spec.name)
        self.backoff = ExponentialBackoff(spec.reconnect.initial_s, spec.reconnect.max_s, jitter=spec.reconnect.jitter)
        self.state: CameraState | None = None
        self._reason: str | None = None
        self.attempts = 0
        self._stopping = False
        self._queue: SourceQueue | None = None
        self._said_no_audio = False
        self._said_audio_gap = False
        self.windows_cut = 0
        self._aligner: WindowAligner | None = None
        self._frames = 0
        self._session_started = time.monotonic()
        self._last_report: tuple[str, str, float] | None = None  # state, reason, monotonic time
        self._quiet = False  # this retry was not reported: its connection attempt logs at debug

    def stop(self) -> None:
        """Ask the runner to finish: the current connection's complete windows are still counted."""
        self._stopping = True
        if self._queue is not None:
            self._queue.interrupt(SourceEnded("daemon stopping", error=False))

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(camera=self.spec.name)  # this task's lines
        while not self._stopping:
            self.attempts += 1
            outcome = await self._session()
            if self._stopping or outcome is None:
                return
            state, reason, retry = outcome
            if not retry:
                self._set_state(state, reason)
                return
            delay = self.backoff.next_delay()
            self.daemon.count_reconnect(self.spec.name)
            self._report_retry(state, reason, delay)
            await self._sleep(delay)

    def _report_retry(self, state: CameraState, reason: str, delay: float) -> None:
        """Status record and warning for the first retries, a new reason, or once a minute."""
        now = time.monotonic()
        last = self._last_report
        if (last is None or (last[0], last[1]) != (state, reason) or self.backoff.failures <= REPORTED_RETRIES
                or now - last[2] >= RETRY_REPORT_EVERY_S):
            self._last_report = (state, reason, now)
            self._quiet = False
            self._set_state(state, reason, attempt=self.attempts, retry_in_s=round(delay, 2))
            self.log.warning("camera_reconnecting", state=state, reason=reason, attempt=self.attempts,
                             retry_in_s=round(delay, 2))
        else:
            self._quiet = True
            self.log.debug("camera_reconnecting", state=state, reason=reason, attempt=self.attempts,
                           retry_in_s=round(delay, 2))

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    async def _session(self) -> tuple[CameraState, str, bool] | None:
        """One connection; returns (state, why it ended, retry?), or None when stopping."""
        queue = self._queue = SourceQueue(asyncio.get_running_loop(), SOURCE_QUEUE_ITEMS)
        source = self.spec.source_factory()
        source.start(queue)
        aligner: WindowAligner | None = None
        info: StreamInfo | None = None
        self._frames = frames = 0
        self._session_started = time.monotonic()
        frame_duration = 0.04
        deadline = time.monotonic() + self.spec.open_timeout_s + self.spec.watchdog_s
        (self.log.debug if self._quiet else self.log.info)("camera_connecting", source=self.spec.label,
                                                           attempt=self.attempts)
        try:
            while True:
                if self._stopping:  # stop() may have come before this queue existed
                    if aligner is not None:
                        await self._forward(aligner.flush())
                    return None
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    reason = f"no frames for {self.spec.watchdog_s:g} s"
                    self.log.warning("camera_stalled", reason=reason, frames=frames)
                    return "stalled", reason, True
                if isinstance(item, VideoItem):
                    frames += 1
                    self._frames = frames
                    deadline = time.monotonic() + self.spec.watchdog_s
                    if frames == 1:
                        self._went_online(info)
                    if aligner is not None:
                        await self._forward(aligner.push_video(item.pts, item.frame, item.arrival, frame_duration))
                elif isinstance(item, AudioItem):
                    if aligner is not None:
                        await self._forward(aligner.push_audio(item.pts, item.samples, item.sample_rate, item.arrival))
                elif isinstance(item, SourceOpened):
                    info = item.info
                    frame_duration = 1.0 / info.frame_rate if info.frame_rate else 0.04
                    aligner = self._aligner = WindowAligner(
                        self.spec.name, has_audio=info.has_audio, shared_clock=info.shared_clock,
                        wrap_periods_s=info.wrap_periods_s, config=self.spec.align,
                    )
                    self._opened(info)
                elif isinstance(item, SourceEnded):
                    if aligner is not None:
                        await self._forward(aligner.flush())
                    if self._stopping:
                        return None
                    if frames:  # it streamed for a while: say so, and start the backoff from the bottom
                        self.log.warning("camera_stream_ended", reason=item.reason, frames=frames)
                        self.backoff.reset()
                    return "offline", item.reason, (item.error or self.spec.retry_after_end)
        finally:
            source.stop()
            self._queue = None
            self._aligner = None
            if aligner is not None:
                self.daemon.note_align_stats(self.spec.name, aligner, self._decode_fps())

    def _opened(self, info: StreamInfo) -> None:
        self.log.info("camera_opened", source=info.url, video=info.video_codec, size=info.video_size,
                      fps=info.frame_rate, audio=info.audio_codec, audio_rate=info.audio_rate,
                      audio_channels=info.audio_channels, shared_clock=info.shared_clock)
        if not info.has_audio and not self._said_no_audio:
            self._said_no_audio = True  # once per camera, not once per reconnect
            self.log.warning("camera_without_audio_using_vision_only_model", model=self.daemon.vision_model_name)

    def _went_online(self, info: StreamInfo | None) -> None:
        self._last_report, self._quiet = None, False
        details: dict[str, Any] = {"source": self.spec.label}
        if info is not None:
            details.update(audio=info.has_audio, video_codec=info.video_codec, audio_codec=info.audio_codec)
        self._set_state("online", "streaming", **details)

    async def _forward(self, windows: list[AlignedWindow]) -> None:
        for aligned in windows:
            if aligned.audio is None and not self._said_audio_gap and aligned.audio_coverage > 0:
                self._said_audio_gap = True
                self.log.warning("audio_gap_window_counted_without_sound", coverage=round(aligned.audio_coverage, 3))
            window = await asyncio.to_thread(aligned.materialize)  # RGB + 16 kHz off the loop
            self.windows_cut += 1
            self.daemon.submit(window, aligned)
            if self.windows_cut % STATS_EVERY_WINDOWS == 0 and self._aligner is not None:
                self.daemon.note_align_stats(self.spec.name, self._aligner, self._decode_fps(), periodic=True)

    def _decode_fps(self) -> float:
        elapsed = time.monotonic() - self._session_started
        return self._frames / elapsed if elapsed > 0 else 0.0

    def _set_state(self, state: CameraState, reason: str, **details: Any) -> None:
        changed = (state, reason) != (self.state, getattr(self, "_reason", None))
        self.state, self._reason = state, reason
        if changed or state != "online":
            self.daemon.emit_status(self.spec.name, state, reason, **details)


# --------------------------------------------------------------------------------------
# the daemon


@dataclass
class DaemonStats:
    results: int = 0
    outbox_dropped: int = 0
    publish_failures: dict[str, int] = field(default_factory=dict)


class Daemon:
    """Runs the cameras, the inference pool and the publish stage until `stop()`."""

    def __init__(
        self,
        cameras: Sequence[CameraSpec],
        models: Sequence[DeviceModels],
        publishers: Sequence[Publisher],
        *,
        infer: InferConfig = InferConfig(),
        amp: bool = True,
        alerts: Any = None,  # AlertEngine (or anything with update(result) -> [AlertEvent])
        hotspots: bool = True,
        top_k: int = 3,
        metrics: Any = None,  # avcc_stream.observability.Metrics
        shutdown_budget_s: float = SHUTDOWN_BUDGET_S,
    ) -> None:
        self.specs = list(cameras)
        self.models = list(models)
        self.publishers = list(publishers)
        self.infer_config = infer
        self.amp = amp
        self.alerts = alerts
        self.hotspots = hotspots
        self.top_k = top_k
        self.metrics = metrics
        self.shutdown_budget_s = shutdown_budget_s
        self.stats = DaemonStats()
        self.runners: dict[str, CameraRunner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[CountResult | OutboundRecord | None] | None = None
        self._stop_event = asyncio.Event()  # stop() before run() has started still counts
        self._pool: InferencePool | None = None
        self._camera_tasks: dict[str, asyncio.Task[None]] = {}
        self.started = asyncio.Event()  # set once the outputs and every camera are started

    # ---------------------------------------------------------------- public

    @property
    def vision_model_name(self) -> str:
        first = self.models[0]
        model = first.fallback or first.primary
        return model.name

    def stop(self) -> None:
        """Begin a clean shutdown (safe to call from a signal handler on the loop)."""
        self._stop_event.set()

    async def run(self) -> None:
        from avcc_stream.precision import inference_dtype, precision_name  # torch is loaded with the models

        self._loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue(OUTBOX_RECORDS)
        await self._start_outputs()
        self._pool = InferencePool(
            self.models, self.infer_config, self._result_from_worker, on_drop=self._window_dropped,
            on_batch=self._batch_done, on_error=self._batch_failed, amp=self.amp,
        )
        self._pool.start()
        publish_task = asyncio.create_task(self._publish_stage(), name="publish")
        for spec in self.specs:
            self.start_camera(spec)
        log.info("daemon_started", cameras=[s.name for s in self.specs], devices=[m.device for m in self.models],
                 precision=[precision_name(inference_dtype(m.device, self.amp)) for m in self.models],
                 model=self.models[0].primary.name, fallback=self.vision_model_name,
                 outputs=[p.name for p in self.publishers], max_batch=self.infer_config.max_batch,
                 flip_average=self.infer_config.flip_average)
        self.started.set()
        await self._stop_event.wait()
        await self._shutdown(self._camera_tasks, publish_task)

    async def _start_outputs(self) -> None:
        """Start every output; if one refuses for good (PublishError: bad credentials), close
        the ones already started (releasing their spools and threads) and let it rise."""
        started: list[Publisher] = []
        try:
            for publisher in self.publishers:
                await publisher.start()
                started.append(publisher)
                if self.metrics is not None:
                    self.metrics.health.track_output(publisher)
        except BaseException:
            for publisher in started:
                with contextlib.suppress(Exception):
                    await publisher.close()
            raise

    def start_camera(self, spec: CameraSpec) -> None:
        """Add a camera to a running daemon (e.g. after a config reload)."""
        if spec.name in self.runners:
            raise ValueError(f"camera {spec.name!r} is already running")
        runner = self.runners[spec.name] = CameraRunner(spec, self)
        if self.metrics is not None:
            self.metrics.health.set_camera(spec.name, "starting")
        self._camera_tasks[spec.name] = asyncio.create_task(self._supervise(runner), name=f"camera-{spec.name}")

    async def stop_camera(self, name: str, timeout: float = 5.0, *, reason: str | None = None,
                          forget: bool = True) -> None:
        """Stop one camera (its cut windows are still counted); the others are not touched.

        `reason`: publish a last "offline" status saying why (e.g. removed from the config).
        `forget`: drop its metrics and health entry (False when it restarts at once)."""
        runner = self.runners.pop(name)
        task = self._camera_tasks.pop(name)
        runner.stop()
        _, late = await asyncio.wait({task}, timeout=timeout)
        for pending in late:
            pending.cancel()
        if reason is not None:
            self.emit_status(name, "offline", reason)
        if forget and self.metrics is not None:
            self.metrics.forget_camera(name)

    async def _supervise(self, runner: CameraRunner) -> None:
        """A bug in one camera's code path must not take the other cameras down."""
        while True:
            try:
                await runner.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                runner.log.exception("camera_runner_failed_restarting")
                self.emit_status(runner.spec.name, "offline", "internal error (see logs)")
                await asyncio.sleep(runner.backoff.next_delay())
                if runner._stopping:
                    return

    async def _shutdown(self, camera_tasks: dict[str, asyncio.Task[None]], publish_task: asyncio.Task[None]) -> None:
        started = time.monotonic()
        deadline = started + self.shutdown_budget_s
        log.info("daemon_stopping", queued_windows=len(self._pool.queue) if self._pool else 0)
        for runner in self.runners.values():
            runner.stop()
        # 1. the cameras finish the window they are cutting (a bounded wait)
        if camera_tasks:
            _, late = await asyncio.wait(camera_tasks.values(), timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            for task in late:
                task.cancel()
        # 2. the pool counts what is queued
        assert self._pool is not None
        drained = await asyncio.to_thread(self._pool.stop, max(0.1, deadline - time.monotonic() - 2.0))
        # 3. the outputs receive every record, then each camera's "offline"
        for name in self.runners:
            self.emit_status(name, "offline", "daemon stopped")
        assert self._outbox is not None
        await self._outbox.put(None)
        try:
            await asyncio.wait_for(publish_task, max(0.1, deadline - time.monotonic() - 0.5))
        except asyncio.TimeoutError:
            log.error("daemon_stop_outputs_too_slow", unpublished=self._outbox.qsize())
        # 4. goodbye (MQTT availability "offline"), each output bounded in time
        for publisher in self.publishers:
            try:
                await asyncio.wait_for(publisher.close(), max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # one output failing to close must not stop the others
                log.warning("output_close_failed", output=publisher.name, error=str(exc) or type(exc).__name__)
        log.info("daemon_stopped", seconds=round(time.monotonic() - started, 2), inference_drained=drained,
                 results=self.stats.results, dropped=self._pool.dropped, outbox_dropped=self.stats.outbox_dropped)

    # ---------------------------------------------------------------- called by runners

    def submit(self, window: AudioVisualWindow, aligned: AlignedWindow) -> None:
        assert self._pool is not None
        self._pool.submit(window)
        if self.metrics is not None:
            self.metrics.av_skew_seconds.labels(window.camera).set(aligned.av_skew_ms / 1000.0)

    def emit_status(self, camera: str, state: CameraState, reason: str, **details: Any) -> None:
        self._to_outbox(status_record(camera, state, reason, **details))
        if self.metrics is not None:
            self.metrics.health.set_camera(camera, state, reason)

    def count_reconnect(self, camera: str) -> None:
        if self.metrics is not None:
            self.metrics.reconnects.labels("camera", camera).inc()

    def note_align_stats(self, camera: str, aligner: WindowAligner, decode_fps: float, periodic: bool = False) -> None:
        """Log a connection's alignment figures (A/V skew, gaps, jumps), periodically and at its end."""
        stats = aligner.stats
        dropped = self._pool.dropped.get(camera, 0) if self._pool is not None else 0
        log.info("camera_stats" if periodic else "camera_connection_summary", camera=camera, windows=stats.windows,
                 decode_fps=round(decode_fps, 1), inference_dropped_total=dropped,
                 without_audio=stats.windows_without_audio, no_frame=stats.windows_dropped_no_frame,
                 late_audio_chunks=stats.late_audio_chunks, audio_gap_s=round(stats.audio_gap_s, 3),
                 jumps=stats.jumps, wraps=stats.wraps, av_skew_ms_max=round(stats.av_skew_ms_max, 1),
                 arrival_skew_ms=None if stats.arrival_skew_ms is None else round(stats.arrival_skew_ms, 1))
        if self.metrics is not None:
            self.metrics.decode_fps.labels(camera).set(decode_fps)
            if not periodic and stats.windows_dropped_no_frame:
                self.metrics.windows_dropped.labels(camera, "no_frame").inc(stats.windows_dropped_no_frame)

    # ---------------------------------------------------------------- pool callbacks (worker threads)

    def _result_from_worker(self, result: CountResult) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._to_outbox, result)

    def _window_dropped(self, window: AudioVisualWindow) -> None:
        if self.metrics is not None:
            self.metrics.windows_dropped.labels(window.camera, "inference_behind").inc()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._log_drop, window.camera)

    def _log_drop(self, camera: str) -> None:
        dropped = self._pool.dropped.get(camera, 0) if self._pool else 0
        if dropped in (1, 10, 100) or dropped % 1000 == 0:
            log.warning("inference_behind_dropping_oldest_windows", camera=camera, dropped_total=dropped)

    def _batch_done(self, device: str, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.inference_seconds.labels(device).observe(seconds)
            self.metrics.batch_size.labels(device).observe(size)

    def _batch_failed(self, exc: BaseException, batch: list[AudioVisualWindow]) -> None:
        log.error("inference_failed", error=f"{type(exc).__name__}: {exc}", windows=len(batch),
                  cameras=sorted({w.camera for w in batch}))

    # ---------------------------------------------------------------- publish stage

    def _to_outbox(self, item: CountResult | OutboundRecord) -> None:
        assert self._outbox is not None
        if self._outbox.full():  # outputs far behind: the oldest record goes, and is counted
            self._outbox.get_nowait()
            self.stats.outbox_dropped += 1
            if self.stats.outbox_dropped in (1, 10, 100) or self.stats.outbox_dropped % 1000 == 0:
                log.warning("outbox_full_dropping_oldest", dropped_total=self.stats.outbox_dropped)
        self._outbox.put_nowait(item)

    async def _publish_stage(self) -> None:
        assert self._outbox is not None
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            records = self._records(item) if isinstance(item, CountResult) else [item]
            for record in records:
                await self._publish(record)

    def _records(self, result: CountResult) -> list[OutboundRecord]:
        self.stats.results += 1
        records = result_records(result, hotspots=self.hotspots, top_k=self.top_k)
        if self.alerts is not None:
            records += [alert_record(event) for event in self.alerts.update(result)]
        if self.metrics is not None:
            self.metrics.windows_processed.labels(result.camera).inc()
            self.metrics.window_latency_seconds.labels(result.camera).observe(max(0.0, result.latency_ms / 1000.0))
            if self.alerts is not None and hasattr(self.alerts, "states"):
                for (zone, kind), state in self.alerts.states().get(result.camera, {}).items():
                    if kind == "level":
                        self.metrics.set_alert_level(result.camera, zone, None if state == "clear" else state)
        return records

    async def _publish(self, record: OutboundRecord) -> None:
        await asyncio.gather(*(self._publish_to(p, record) for p in self.publishers))

    async def _publish_to(self, publisher: Publisher, record: OutboundRecord) -> None:
        try:
            await publisher.publish(record)
        except PublisherUnavailable as exc:
            failures = self.stats.publish_failures[publisher.name] = self.stats.publish_failures.get(publisher.name, 0) + 1
            if failures in (1, 10, 100) or failures % 1000 == 0:
                log.warning("output_unavailable_record_not_delivered", camera=record.camera, output=publisher.name,
                            error=str(exc), failures_total=failures)
        except PublishError as exc:
            log.error("output_refused_record", camera=record.camera, output=publisher.name, kind=record.kind,
                      error=str(exc))


# --------------------------------------------------------------------------------------
# from the config file


def camera_spec(name: str, camera: Any) -> CameraSpec:
    """One camera's CameraSpec from its (effective) CameraConfig."""
    from functools import partial

    from avcc_stream.stream.sources import build_source

    factory = partial(
        build_source,
        url=camera.url,
        file=camera.file,
        loop=camera.loop,
        transport=camera.transport,
        open_timeout_s=camera.open_timeout_s,
        read_timeout_s=camera.read_timeout_s,
        audio=camera.audio == "auto",
        microphone=camera.microphone,
        label=camera.source_label,
    )
    return CameraSpec(
        name=name,
        source_factory=factory,
        label=camera.source_label,
        watchdog_s=camera.watchdog_s,
        open_timeout_s=camera.open_timeout_s,
        reconnect=ReconnectPolicy(camera.reconnect.initial_s, camera.reconnect.max_s, camera.reconnect.jitter),
        align=AlignConfig(frame_position=camera.align.frame_position, max_audio_wait_s=camera.align.max_audio_wait_s),
        retry_after_end=camera.file is None or camera.loop,
    )


def camera_specs(app: Any) -> list[CameraSpec]:
    """The enabled cameras of an AppConfig as CameraSpecs."""
    return [camera_spec(name, camera) for name, camera in app.enabled_cameras().items()]


def daemon_from_config(app: Any, publishers: Sequence[Publisher], *, metrics: Any = None,
                       models: Sequence[DeviceModels] | None = None) -> Daemon:
    """Everything the config describes, with models loaded (CheckpointError if they cannot be)."""
    from avcc_stream.stream.alerts import AlertEngine
    from avcc_stream.stream.infer import load_models

    if models is None:
        models = load_models(app.model.checkpoint, app.model.fallback_checkpoint, app.model.devices)
    infer = InferConfig(
        max_batch=app.inference.max_batch,
        max_wait_s=app.inference.max_wait_ms / 1000.0,
        workers=app.inference.workers,
        queue_per_camera=app.inference.queue_per_camera,
        flip_average=app.model.flip_average,
    )
    return Daemon(
        camera_specs(app), models, publishers, infer=infer, amp=app.model.amp,
        alerts=AlertEngine(app.enabled_cameras()), hotspots=app.hotspots.enabled, top_k=app.hotspots.top_k,
        metrics=metrics,
    )
