"""`avcc-stream check-config`: exit 0 with a summary for a valid file, 2 with every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcc_stream.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "example.yaml"
BROKEN = Path(__file__).parent / "broken_configs" / "hysteresis_over_threshold.yaml"


def test_valid_config_is_summarised_without_secrets(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATE1_RTSP_PASSWORD", "rtsp-secret-42")
    assert main(["check-config", "--print", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid; 3 of 4 cameras enabled" in out and "camera gate1 (enabled)" in out
    assert "rtsp-secret-42" not in out
    effective = json.loads(out[out.index("\n{") + 1:])
    assert effective["cameras"]["bar"]["alerts"]["levels"] == {"warn": 150.0, "critical": 250.0}


def test_invalid_config_exits_2_naming_file_line_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(BROKEN)]) == 2
    err = capsys.readouterr().err
    assert f"{BROKEN}:10:15: cameras.gate1.alerts.levels.warn: threshold 4" in err
