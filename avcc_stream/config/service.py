"""How the daemon runs as a service: its state directory, the outputs' spool bounds, the
metrics endpoint and Home Assistant discovery."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from avcc_stream.config.common import StrictModel

DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
DISCOVERY_PREFIX_PATTERN = re.compile(r"^[^/+#\s]+(/[^/+#\s]+)*$")


def default_state_dir() -> Path:
    """systemd's `StateDirectory=` ($STATE_DIRECTORY, the first if it lists several), else ./state."""
    listed = os.environ.get("STATE_DIRECTORY", "")
    first = listed.split(":", 1)[0].strip()
    return Path(first) if first else Path("state")


class SpoolSettings(StrictModel):
    """Each spooled output (MQTT, Redis) keeps its backlog in `<state_dir>/spool/<output>.sqlite3`."""

    max_records: int = Field(
        default=1_000_000, ge=1, title="Records kept per output during an outage; past it the oldest are dropped"
    )
    max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024,
        title="Encoded record bytes kept per output; past it the oldest are dropped",
    )
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        title="normal: survives a killed daemon; full: also a power loss (an fsync per record)",
    )

    @field_validator("synchronous", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class MetricsSettings(StrictModel):
    enabled: bool = Field(default=True, title="Serve /metrics (Prometheus) and /healthz")
    listen: str = Field(
        default=DEFAULT_METRICS_LISTEN,
        title="HOST:PORT, [IPv6]:PORT or PORT (loopback); port 0 picks a free one",
    )

    @field_validator("listen")
    @classmethod
    def _parsable(cls, value: str) -> str:
        from avcc_stream.observability import parse_listen_address

        parse_listen_address(value)  # ValueError says what is expected
        return value

    @property
    def address(self) -> tuple[str, int]:
        from avcc_stream.observability import parse_listen_address

        return parse_listen_address(self.listen)


class HomeAssistantSettings(StrictModel):
    enabled: bool = Field(default=False, title="Publish Home Assistant MQTT discovery configs (needs mqtt)")
    discovery_prefix: str = Field(default="homeassistant", title="Home Assistant's discovery topic prefix")

    @field_validator("discovery_prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if not DISCOVERY_PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid discovery prefix {value!r}: expected topic levels separated by '/', "
                "without '+', '#', spaces, or a leading/trailing/double '/'"
            )
        return value
