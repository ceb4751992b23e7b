"""Output options shared by every publisher, and the console/JSONL sink."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from avcc_stream.config.common import StrictModel


class HotspotSettings(StrictModel):
    enabled: bool = Field(default=True, title="Publish PIR hotspots per window")
    top_k: int = Field(default=3, ge=0, le=1024, title="How many of the busiest patches to list")


class ConsoleSettings(StrictModel):
    enabled: bool = Field(default=False, title="Write every record as one JSON line")
    path: Path | None = Field(default=None, title="File to append to; null: standard output")
