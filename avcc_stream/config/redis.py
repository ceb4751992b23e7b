"""Redis output: a time series per camera (RedisTimeSeries if loaded, else Streams)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from avcc_stream.config.common import Credentials, RuleError, TlsSettings

KEY_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*$")


class RedisSettings(Credentials):
    enabled: bool = Field(default=False, title="Write counts to Redis")
    host: str = Field(default="127.0.0.1", min_length=1, title="Server host name or address")
    port: int = Field(default=6379, ge=1, le=65535, title="Server port")
    db: int = Field(default=0, ge=0, title="Database number")
    backend: Literal["auto", "timeseries", "streams"] = Field(
        default="auto",
        title="auto: RedisTimeSeries when the module is loaded, else Streams",
    )
    key_prefix: str = Field(default="crowd", title="Keys are <prefix>:<camera>:<series>")
    venue: str = Field(default="default", min_length=1, title="Venue label on every series")
    retention_s: int = Field(
        default=30 * 24 * 3600, ge=0, title="TimeSeries retention (0 keeps everything)"
    )
    stream_maxlen: int = Field(
        default=30 * 24 * 3600, ge=1,
        title="Approximate length cap of each stream (entries; one per second per camera)",
    )
    hotspots: bool = Field(default=True, title="Also store the hotspot shares per window")
    socket_timeout_s: float = Field(
        default=2.0, gt=0, le=300, title="How long one command may take before the server counts as down"
    )
    connect_timeout_s: float = Field(default=2.0, gt=0, le=300, title="Connect timeout")
    reconnect_min_s: float = Field(default=1.0, gt=0, title="First retry delay while Redis is down")
    reconnect_max_s: float = Field(default=30.0, gt=0, title="Retry delay cap (doubles up to it, with jitter)")
    tls: TlsSettings = Field(default_factory=TlsSettings, title="TLS")

    @model_validator(mode="after")
    def _check_rules(self) -> RedisSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise RuleError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s "
                f"({self.reconnect_min_s})",
                "reconnect_max_s",
            )
        return self

    @field_validator("key_prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if not KEY_PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid key prefix {value!r}: expected parts of letters, digits, '_', '.', '-' "
                "separated by ':'"
            )
        return value
