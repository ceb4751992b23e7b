"""The data area's commands, run through the real `avcc-stream` entry point."""

from __future__ import annotations

import json
from pathlib import Path

from avcc_stream.cli import main


def test_synth_writes_a_dataset_that_dataset_info_reads(tmp_path: Path, capsys):
    out = tmp_path / "syn"
    assert main(["synth", "--out", str(out), "--count", "3", "--seed", "1", "--size", "96x54",
                 "--splits", "1,1,1", "--workers", "1"]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["split_sizes"] == {"train": 1, "val": 1, "test": 1}
    assert main(["dataset-info", str(out), "--counts"]) == 0
    report = capsys.readouterr().out
    assert "disco layout" in report and "train: 1 samples" in report and "audio padded 0" in report


def test_synth_refuses_a_non_empty_folder_with_one_line(tmp_path: Path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path), "--count", "1", "--seed", "1"]) == 2
    assert "folder is not empty (--overwrite writes into it anyway)" in capsys.readouterr().err


def test_synth_video_writes_the_clip_and_its_counts(tmp_path: Path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["synth-video", "--out", str(out), "--seconds", "2", "--seed", "3", "--size", "64x36",
                 "--fps", "5"]) == 0
    assert out.stat().st_size > 0
    counts = json.loads(Path(f"{out}.counts.json").read_text())["counts"]
    assert [c["second"] for c in counts] == [0, 1]


def test_dataset_info_on_a_wrong_folder_says_what_was_expected(tmp_path: Path, capsys):
    (tmp_path / "photos").mkdir()
    assert main(["dataset-info", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "not a dataset layout avcc-stream reads. Expected one of: DISCO" in error
    assert "Found: photos/" in error
