"""The README's main command, `avcc-stream demo` (what `make demo` runs), end to end.

It generates its clip, starts gst-rtsp-server, mosquitto and redis-server, runs the daemon with
the shipped checkpoints, prints what a subscriber receives, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from avcc_stream.config.model import SHIPPED_AUDIO_VISUAL

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.services


def _processes_mentioning(text: str) -> list[str]:
    """Processes whose command line or environment holds `text` (the demo's children inherit
    the test's XDG_CACHE_HOME, whatever they renamed themselves to)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environment = (entry / "environ").read_bytes().decode(errors="replace")
            except OSError:  # it ended while we looked, or is not ours to read
                continue
            if text in command or text in environment:
                found.append(command)
    return found


def test_the_demo_counts_the_synthetic_camera_with_the_shipped_model_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))  # the clip is generated here, not reused
    done = subprocess.run([sys.executable, "-m", "avcc_stream", "demo", "--seconds", "4", "--workdir", str(workdir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    counts = [json.loads(line.split(maxsplit=1)[1]) for line in out.splitlines() if line.startswith("crowd/plaza/count")]
    assert len(counts) >= 3, out  # 4 s from the first count, one a second
    shipped_name = SHIPPED_AUDIO_VISUAL.removeprefix("builtin:")
    assert all(c["audio"] is True and c["model"] == shipped_name and c["count"] >= 0 for c in counts)
    received = re.search(r"(\d+) count messages received\. Everything the demo started is stopped\.", out)
    assert received and int(received.group(1)) >= len(counts)
    assert re.search(r"SIGTERM -> exit 0 in", out)
    assert "Redis         crowd:plaza:count:" in out and "outputs mqtt connected, redis connected" in out
    assert list((tmp_path / "cache").rglob("*.counts.json")), "the clip's ground truth was not written"
    assert not _processes_mentioning(str(tmp_path)), "the demo left processes running"


def test_without_the_shipped_checkpoints_the_demo_stops_with_a_reason(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout that lacks the shipped models must not demo untrained ones."""
    from avcc_stream.cli import CommandError
    from avcc_stream.model import checkpoint
    from avcc_stream.stream import demo

    monkeypatch.setattr(checkpoint, "BUILTIN_DIR", tmp_path)
    reason = "the demo needs the shipped checkpoints: no built-in checkpoint 'cc-av-1024-cpu'"
    with pytest.raises(CommandError, match=reason):
        demo.run_demo(seconds=1, workdir=str(tmp_path / "work"))
    assert not (tmp_path / "work" / "daemon.log").exists()
