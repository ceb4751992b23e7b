"""`avcc-stream run`: the daemon of one config file, run as a service.

Around the pipeline (`daemon.py`) this module wires what a venue needs to leave it alone:

* outputs: MQTT and Redis wrapped in a spool each (`<state_dir>/spool/`), so an outage
  loses nothing (`publish/spooling.py`);
* observability: Prometheus `/metrics` and `/healthz` on `metrics.listen` (loopback by
  default), bound before anything slow happens so a busy port fails at once;
* systemd: READY=1 once the outputs and cameras are started, WATCHDOG=1 from the event loop
  (`keep_alive`), RELOADING=1 ... READY=1 around a reload, STOPPING=1 at shutdown, and a
  STATUS= line saying what runs;
* Home Assistant discovery (optional), re-announced after every MQTT connection;
* signals: SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the config file (`reload.py` says
  what changes). A config that does not validate is rejected with its errors logged and the
  running config stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from avcc_stream.config import AppConfig, ConfigError, ConfigIssue, load_config
from avcc_stream.observability import Health, Metrics, ObservabilityServer, keep_alive, sd_notify
from avcc_stream.stream.daemon import Daemon, camera_spec, configure_logging, daemon_from_config
from avcc_stream.stream.publish import Publisher, publishers_from_config
from avcc_stream.stream.reload import ReloadPlan, plan_reload

log = structlog.get_logger("avcc_stream.service")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Service:
    """The daemon of `config_path` with its outputs, metrics, systemd link and reloads.

    Build it with `Service.from_config` (binds the metrics port and loads the models, so
    mistakes surface before anything runs), then `await service.run()` until a signal."""

    def __init__(self, config_path: str | Path, app: AppConfig, daemon: Daemon, publishers: Sequence[Publisher],
                 metrics: Metrics | None, server: ObservabilityServer | None) -> None:
        self.config_path = Path(config_path)
        self.app = app  # the running config (after reloads: what was applied)
        self.daemon = daemon
        self.publishers = list(publishers)
        self.metrics = metrics
        self.health = metrics.health if metrics is not None else Health()
        self.server = server
        self.announcer: Any = None  # DiscoveryAnnouncer, when Home Assistant discovery is on
        self.reloads = 0  # reloads applied (a rejected config does not count)
        self._reload_wanted = asyncio.Event()
        self._reload_task: asyncio.Task[None] | None = None
        self._stopping = False
        if app.homeassistant.enabled:
            self._set_discovery(app)

    @classmethod
    def from_config(cls, config_path: str | Path, app: AppConfig, *, models: Sequence[Any] | None = None) -> Service:
        """Bind the metrics endpoint, build the outputs and load the models (CheckpointError,
        OSError for a busy port). Nothing connects yet."""
        metrics = Metrics() if app.metrics.enabled else None
        server = None
        if metrics is not None:
            host, port = app.metrics.address
            server = ObservabilityServer(metrics, host, port)  # OSError: says which address is busy
        try:
            publishers = publishers_from_config(app, on_reconnect=cls._reconnect_counter(metrics))
            daemon = daemon_from_config(app, publishers, metrics=metrics, models=models)
        except BaseException:
            if server is not None:
                server.close()
            raise
        return cls(config_path, app, daemon, publishers, metrics, server)

    @staticmethod
    def _reconnect_counter(metrics: Metrics | None) -> Any:
        if metrics is None:
            return None
        return lambda output: metrics.reconnects.labels(output, output).inc()  # thread-safe

    # ---------------------------------------------------------------- running

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`); PublishError/SpoolError if an output
        refuses at start (bad credentials, spool in use)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if self.server is not None:
            self.server.start()
        beat = asyncio.create_task(keep_alive(self.health), name="keep-alive")
        daemon_task = asyncio.create_task(self.daemon.run(), name="daemon")
        started = asyncio.create_task(self.daemon.started.wait())
        try:
            await asyncio.wait({daemon_task, started}, return_when=asyncio.FIRST_COMPLETED)
            if started.done() and not daemon_task.done() and not self._stopping:
                sd_notify("READY=1", self._status_line())
                log.info("daemon_ready", cameras=sorted(self.app.enabled_cameras()),
                         outputs=[p.name for p in self.publishers],
                         metrics=self.server.url if self.server is not None else None)
                self._reload_task = asyncio.create_task(self._reload_when_asked(), name="reload")
            await daemon_task  # raises what stopped the daemon from starting
        finally:
            started.cancel()
            for task in (self._reload_task, beat):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for signum in HANDLED_SIGNALS:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)
            if self.server is not None:
                self.server.close()

    def stop(self) -> None:
        """Begin a clean shutdown (signal handler)."""
        if not self._stopping:
            self._stopping = True
            sd_notify("STOPPING=1", "STATUS=stopping: draining windows and closing outputs")
            if self._reload_task is not None:
                self._reload_task.cancel()  # a half-applied reload does not matter any more
        self.daemon.stop()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config as soon as the daemon is ready (reloads never overlap)."""
        log.info("config_reload_requested", file=str(self.config_path))
        self._reload_wanted.set()

    async def _reload_when_asked(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reload()

    # ---------------------------------------------------------------- reload

    async def reload(self) -> bool:
        """Re-read the config file and apply it; False (and nothing changed) if it is invalid."""
        sd_notify("RELOADING=1", "STATUS=reloading the config")
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            if not new.enabled_cameras():
                raise ConfigError([ConfigIssue(str(self.config_path), None, None, "cameras",
                                               "no camera is enabled: add one under cameras:")])
        except ConfigError as exc:
            log.error("config_reload_rejected", file=str(self.config_path), problems=[str(i) for i in exc.issues],
                      running="the previous config is kept")
            sd_notify("READY=1", f"STATUS=reload rejected ({len(exc.issues)} problem(s), see the log); "
                                 + self._status_line().removeprefix("STATUS="))
            return False
        plan = plan_reload(self.app, new)
        try:
            await self._apply(plan)
        except Exception:  # a bug must not leave systemd waiting for READY=1
            log.exception("config_reload_failed", file=str(self.config_path))
        self.app = plan.effective
        self.reloads += 1
        sd_notify("READY=1", self._status_line())
        return True

    async def _apply(self, plan: ReloadPlan) -> None:
        new = plan.effective
        if "logging" in plan.live_sections:
            configure_logging(new.logging.level, new.logging.format)
        if plan.restart_needed:
            log.warning("config_reload_needs_restart", sections=list(plan.restart_needed),
                        running="the previous values of these sections are kept until a restart",
                        hint="systemctl restart avcc-stream (records waiting in the spool are kept)")
        daemon = self.daemon
        daemon.hotspots, daemon.top_k = new.hotspots.enabled, new.hotspots.top_k
        if daemon.alerts is not None:
            daemon.alerts.configure(new.enabled_cameras())  # unchanged cameras keep their state
        stops = [daemon.stop_camera(name, reason="removed from the config") for name in plan.removed]
        stops += [daemon.stop_camera(name, forget=False) for name in plan.restarted]
        await asyncio.gather(*stops)
        for name, camera in {**plan.restarted, **plan.added}.items():
            daemon.start_camera(camera_spec(name, camera))
        if "homeassistant" in plan.live_sections or plan.added or plan.removed:
            await self._update_discovery(new)
        log.info("config_reloaded", file=str(self.config_path), **plan.summary)

    # ---------------------------------------------------------------- Home Assistant

    def _mqtt(self) -> Any:
        from avcc_stream.stream.publish.mqtt import MqttPublisher

        for publisher in self.publishers:
            inner = getattr(publisher, "inner", publisher)  # unwrap the spool
            if isinstance(inner, MqttPublisher):
                return inner
        return None

    def _set_discovery(self, app: AppConfig) -> None:
        from avcc_stream.stream.publish.homeassistant import DiscoveryAnnouncer

        mqtt = self._mqtt()
        if mqtt is not None:  # the config requires mqtt for homeassistant
            self.announcer = DiscoveryAnnouncer(mqtt, app.enabled_cameras(), app.homeassistant.discovery_prefix)

    async def _update_discovery(self, app: AppConfig) -> None:
        if self.announcer is None:
            if app.homeassistant.enabled:
                self._set_discovery(app)
                if self.announcer is not None:
                    await self.announcer.announce()
            return
        await self.announcer.update(app.enabled_cameras(), app.homeassistant.discovery_prefix,
                                    enabled=app.homeassistant.enabled)

    # ---------------------------------------------------------------- systemd

    def _status_line(self) -> str:
        cameras = sorted(self.app.enabled_cameras())
        outputs = ", ".join(p.name for p in self.publishers) or "none"
        text = f"STATUS=counting {len(cameras)} camera(s) ({', '.join(cameras)}); outputs: {outputs}"
        if self.server is not None:
            text += f"; metrics {self.server.url}"
        return text
