"""The whole configuration file: global sections and the `cameras:` map.

Global `camera_defaults:` and `alerts:` are merged under each camera's own keys before the
camera is validated, so `app.cameras[name]` is already the camera's effective config.
Sub-sections merge key by key; a camera's `alerts.levels` replaces the global levels whole
(a venue that sets only `warn` for a camera does not want a global `critical` it never chose).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from avcc_stream.config.alerts import AlertSettings
from avcc_stream.config.camera import CameraConfig, CameraDefaults, CameraName
from avcc_stream.config.common import RuleError, StrictModel
from avcc_stream.config.inference import InferenceSettings
from avcc_stream.config.logs import LoggingSettings
from avcc_stream.config.model import ModelSettings
from avcc_stream.config.mqtt import MqttSettings
from avcc_stream.config.outputs import ConsoleSettings, HotspotSettings
from avcc_stream.config.redis import RedisSettings
from avcc_stream.config.service import (
    HomeAssistantSettings,
    MetricsSettings,
    SpoolSettings,
    default_state_dir,
)

# Keys whose value replaces the inherited one instead of merging into it.
REPLACED_WHOLE = frozenset({"levels", "zones", "polygon", "patches"})


def merge_defaults(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` on top of `defaults`, merging nested mappings (except REPLACED_WHOLE)."""
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        inherited = merged.get(key)
        if isinstance(inherited, dict) and isinstance(value, dict) and key not in REPLACED_WHOLE:
            merged[key] = merge_defaults(inherited, value)
        else:
            merged[key] = value
    return merged


def _as_raw(section: Any) -> Any:
    """A section as plain data (callers may pass models instead of YAML dicts)."""
    if isinstance(section, BaseModel):
        return section.model_dump(exclude_unset=True)
    return section


class AppConfig(StrictModel):
    model: ModelSettings = Field(default_factory=ModelSettings, title="Model and device")
    inference: InferenceSettings = Field(default_factory=InferenceSettings, title="Batching")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, title="MQTT output")
    redis: RedisSettings = Field(default_factory=RedisSettings, title="Redis output")
    console: ConsoleSettings = Field(default_factory=ConsoleSettings, title="JSON-lines output")
    hotspots: HotspotSettings = Field(default_factory=HotspotSettings, title="PIR hotspots")
    alerts: AlertSettings = Field(default_factory=AlertSettings, title="Alert defaults")
    camera_defaults: CameraDefaults = Field(default_factory=CameraDefaults, title="Camera defaults")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, title="Logging")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        title="Where the daemon keeps its state (the spool); default $STATE_DIRECTORY or ./state",
    )
    spool: SpoolSettings = Field(default_factory=SpoolSettings, title="Outputs' on-disk backlog")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, title="/metrics and /healthz")
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, title="Home Assistant MQTT discovery"
    )
    cameras: dict[CameraName, CameraConfig] = Field(default_factory=dict, title="Cameras by name")

    @model_validator(mode="before")
    @classmethod
    def _merge_camera_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict):
            return data
        camera_defaults = _as_raw(data.get("camera_defaults")) or {}
        alert_defaults = _as_raw(data.get("alerts")) or {}
        if not isinstance(camera_defaults, dict):
            camera_defaults = {}
        if not isinstance(alert_defaults, dict):
            alert_defaults = {}
        cameras: dict[Any, Any] = {}
        for name, camera in data["cameras"].items():
            if isinstance(camera, CameraConfig) or not isinstance(camera, dict):
                cameras[name] = camera  # already effective, or a type error to report
                continue
            merged = merge_defaults(camera_defaults, camera)
            camera_alerts = _as_raw(camera.get("alerts", {}))
            if isinstance(camera_alerts, dict):
                merged["alerts"] = merge_defaults(alert_defaults, camera_alerts)
            cameras[name] = merged
        return {**data, "cameras": cameras}

    @model_validator(mode="after")
    def _check_rules(self) -> AppConfig:
        if self.homeassistant.enabled and not self.mqtt.enabled:
            raise RuleError("Home Assistant discovery is published over MQTT: it needs mqtt.enabled",
                            "homeassistant", "enabled")
        return self

    def enabled_cameras(self) -> dict[str, CameraConfig]:
        """The cameras to run, by name."""
        return {name: camera for name, camera in self.cameras.items() if camera.enabled}


def effective_camera_config(app: AppConfig, name: str) -> CameraConfig:
    """One camera's settings with the global defaults merged in (KeyError if unknown)."""
    try:
        return app.cameras[name]
    except KeyError:
        raise KeyError(f"no camera named {name!r} (configured: {', '.join(app.cameras) or 'none'})") from None
