"""Shared settings of the bench smoke tests: tiny models and clips, so every mode runs in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The presets' module structure with narrow widths (as tests/model/helpers.SMALL_WIDTHS).
TINY_OVERRIDES = [
    "--override", "branch_channels=[8,16,32]",
    "--override", "units_per_block=1",
    "--override", "merge_channels=32",
    "--override", "audio_channels=[8,16,32,32]",
]


def pyav_version() -> str | None:
    """PyAV's version, or None where it is not installed (a GPU machine's image may lack it)."""
    try:
        import av
    except ImportError:
        return None
    return av.__version__


def read_results(folder: Path, mode: str) -> tuple[dict[str, Any], str]:
    """The JSON and Markdown a mode wrote, after checking both exist and share the machine record."""
    json_path, md_path = folder / f"{mode}.json", folder / f"{mode}.md"
    assert json_path.is_file(), f"{json_path} not written"
    assert md_path.is_file(), f"{md_path} not written"
    data = json.loads(json_path.read_text())
    markdown = md_path.read_text()
    assert data["mode"] == mode
    machine = data["machine"]
    assert machine["cpu_cores"] >= 1 and machine["cpu_model"]
    assert machine["torch"] and machine["python"]
    assert machine["pyav"] == pyav_version()
    assert "cuda_available" in machine and isinstance(machine["gpus"], list)
    assert data["started"] and data["finished"]
    assert f"## avcc-stream bench {mode}" in markdown and machine["cpu_model"] in markdown
    return data, markdown


def table(data: dict[str, Any], title_part: str) -> dict[str, Any]:
    matches = [t for t in data["tables"] if title_part in t["title"]]
    assert matches, f"no table titled *{title_part}* in {[t['title'] for t in data['tables']]}"
    return matches[0]
