"""Cameras: where the stream comes from, how it is read and aligned, and its alerts.

`CameraDefaults` are the global `camera_defaults:`; `CameraConfig` is one camera after the
loader merged those defaults (and the global `alerts:`) under its own keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from typing import Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from avcc_stream.config.alerts import AlertSettings, check_levels_above_hysteresis
from avcc_stream.config.common import RuleError, StrictModel
from avcc_stream.config.zones import ZoneSettings, check_zone_name
from avcc_stream.security import validate_camera_name

CameraName = Annotated[str, AfterValidator(validate_camera_name)]
ZoneName = Annotated[str, AfterValidator(check_zone_name)]


class ReconnectSettings(StrictModel):
    """Capped exponential backoff with jitter. The cap also bounds how long a camera that
    comes back after a long outage waits to be found: with the defaults it counts again
    within 5 s of being readable (the backoff restarts from `initial_s` once it streamed)."""

    initial_s: float = Field(default=0.5, gt=0, title="First delay before reconnecting")
    max_s: float = Field(default=2.0, gt=0, title="Cap of the doubling delay")
    jitter: float = Field(
        default=0.2, ge=0, le=1, title="Random spread of each delay, as a fraction of it"
    )

    @model_validator(mode="after")
    def _check_rules(self) -> ReconnectSettings:
        if self.max_s < self.initial_s:
            raise RuleError(
                f"max_s ({self.max_s:g}) must be >= initial_s ({self.initial_s:g})", "max_s"
            )
        return self


class AlignSettings(StrictModel):
    frame_position: Literal["center", "start", "end"] = Field(
        default="center", title="Which frame of the one-second window is counted"
    )
    max_audio_wait_s: float = Field(
        default=0.5, ge=0, le=10,
        title="How long a window waits for late audio before it is counted without sound",
    )


class CameraDefaults(StrictModel):
    transport: Literal["tcp", "udp"] = Field(default="tcp", title="RTSP transport")
    open_timeout_s: float = Field(default=10.0, gt=0, le=300, title="Connect/open timeout")
    read_timeout_s: float = Field(default=5.0, gt=0, le=300, title="Timeout of one read")
    watchdog_s: float = Field(
        default=10.0, gt=0, le=3600, title="No frames for this long: reconnect, status 'stalled'"
    )
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings, title="Reconnect backoff")
    align: AlignSettings = Field(default_factory=AlignSettings, title="Audio/video alignment")
    audio: Literal["auto", "off"] = Field(
        default="auto", title="auto: count with sound when the stream has it; off: vision only"
    )

    @field_validator("audio", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        if isinstance(value, bool):
            return "auto" if value else "off"
        return value


class CameraConfig(CameraDefaults):
    url: str | None = Field(default=None, title="Stream URL (rtsp://..., anything PyAV opens)")
    file: Path | None = Field(default=None, title="A local video file instead of a URL")
    loop: bool = Field(default=False, title="Replay `file` from the start when it ends")
    microphone: str | int | None = Field(
        default=None,
        title="sounddevice input (name or index) that supplies the sound instead of the stream",
    )
    enabled: bool = Field(default=True, title="Count this camera")
    alerts: AlertSettings = Field(default_factory=AlertSettings, title="Alerts (merged with global alerts)")
    zones: dict[ZoneName, ZoneSettings] = Field(default_factory=dict, title="Zones with their own levels")

    @model_validator(mode="after")
    def _check_rules(self) -> CameraConfig:
        if (self.url is None) == (self.file is None):
            raise RuleError("a camera needs exactly one of url or file", "url")
        if self.url is not None and not self.url.strip():
            raise RuleError("url is empty", "url")
        if self.loop and self.file is None:
            raise RuleError("loop only applies to a file source", "loop")
        if self.microphone is not None and self.audio == "off":
            raise RuleError("a microphone is set but audio is off", "microphone")
        for zone_name, zone in self.zones.items():
            hysteresis = self.alerts.hysteresis if zone.hysteresis is None else zone.hysteresis
            check_levels_above_hysteresis(zone.levels, hysteresis, "zones", zone_name)
        return self

    @property
    def source_label(self) -> str:
        """Where the camera reads from, safe to log (credentials redacted)."""
        from avcc_stream.security import redact_url

        return redact_url(self.url) if self.url is not None else str(self.file)
