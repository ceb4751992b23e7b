"""Logging: level and format (JSON lines for journald/collectors, or human console)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from avcc_stream.config.common import StrictModel


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", title="Log level")
    format: Literal["json", "console"] = Field(default="json", title="json lines or console text")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
