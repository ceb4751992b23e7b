"""What a config reload changes: a pure comparison of the running config with the new one.

Per camera (after `camera_defaults:` and the global `alerts:` are merged in):

* added / removed: the camera starts / stops (a last "offline" status says why);
* restarted: how the stream is read changed (url, file, timeouts, reconnect, alignment,
  audio...): only that camera reconnects, and its alerts start clear;
* realerted: only its alerts or zones changed: the stream is not touched, its alert state
  starts clear (AlertEngine.configure);
* unchanged: nothing happens to it, its alert state is kept.

Global sections are applied at once when that is safe (`LIVE_SECTIONS`); the others would
mean new connections, a new spool or new model weights under running cameras, so a change to
them is logged as needing a restart and the running values are kept (`RESTART_SECTIONS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from avcc_stream.config import AppConfig, CameraConfig

LIVE_SECTIONS = ("logging", "hotspots", "homeassistant")
RESTART_SECTIONS = ("model", "inference", "mqtt", "redis", "console", "spool", "state_dir", "metrics")
ALERT_FIELDS = frozenset({"alerts", "zones"})  # a change here does not touch the stream


@dataclass(frozen=True)
class ReloadPlan:
    added: dict[str, CameraConfig]
    removed: tuple[str, ...]
    restarted: dict[str, CameraConfig]
    realerted: tuple[str, ...]
    unchanged: tuple[str, ...]
    live_sections: tuple[str, ...]  # changed, applied now
    restart_needed: tuple[str, ...]  # changed, running values kept until a restart
    effective: AppConfig  # what runs after the reload: `new` with restart_needed sections kept

    @property
    def summary(self) -> dict[str, list[str]]:
        """For the log line."""
        return {
            "added": sorted(self.added), "removed": list(self.removed), "restarted": sorted(self.restarted),
            "alerts_reset": list(self.realerted), "unchanged": list(self.unchanged),
            "applied": list(self.live_sections), "needs_restart": list(self.restart_needed),
        }


def _reads_stream_differently(old: CameraConfig, new: CameraConfig) -> bool:
    return old.model_dump(exclude=set(ALERT_FIELDS)) != new.model_dump(exclude=set(ALERT_FIELDS))


def plan_reload(running: AppConfig, new: AppConfig) -> ReloadPlan:
    """Compare the running config with a freshly loaded one (both already validated)."""
    old_cameras, new_cameras = running.enabled_cameras(), new.enabled_cameras()
    restarted: dict[str, CameraConfig] = {}
    realerted, unchanged = [], []
    for name in sorted(old_cameras.keys() & new_cameras.keys()):
        old, fresh = old_cameras[name], new_cameras[name]
        if _reads_stream_differently(old, fresh):
            restarted[name] = fresh
        elif old != fresh:
            realerted.append(name)
        else:
            unchanged.append(name)
    restart_needed = tuple(s for s in RESTART_SECTIONS if getattr(running, s) != getattr(new, s))
    live = tuple(s for s in LIVE_SECTIONS if getattr(running, s) != getattr(new, s))
    effective = new.model_copy(update={s: getattr(running, s) for s in restart_needed})
    return ReloadPlan(
        added={name: new_cameras[name] for name in new_cameras if name not in old_cameras},
        removed=tuple(name for name in old_cameras if name not in new_cameras),
        restarted=restarted,
        realerted=tuple(realerted),
        unchanged=tuple(unchanged),
        live_sections=live,
        restart_needed=restart_needed,
        effective=effective,
    )
