"""The run's CSV files: appended rows keep the file's own columns."""

from __future__ import annotations

import csv
from pathlib import Path

from avcc_stream.train.history import STEP_FIELDS, append_row, plot_history


def test_a_new_file_gets_every_column(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    append_row(path, STEP_FIELDS, {"global_step": 5, "loss": 1.5, "picture": 0.25})
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == STEP_FIELDS
    assert (rows[0]["global_step"], rows[0]["picture"], rows[0]["count"]) == ("5", "0.25", "")


def test_a_file_from_an_older_version_keeps_its_header_and_still_plots(tmp_path: Path) -> None:
    """A run resumed by a newer version must not write rows longer than the header above them."""
    path = tmp_path / "steps.csv"
    old_fields = ("global_step", "epoch", "lr", "loss", "dm", "pir", "pce", "train_mae", "elapsed_s")
    append_row(path, old_fields, {"global_step": 5, "loss": 2.0, "dm": 1.0})
    append_row(path, STEP_FIELDS, {"global_step": 10, "loss": 1.0, "dm": 0.5, "picture": 0.25})
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(old_fields)
    assert all(len(line.split(",")) == len(old_fields) for line in lines)
    assert [row["loss"] for row in csv.DictReader(path.open())] == ["2", "1"]
    assert plot_history(tmp_path, "old run").stat().st_size > 0
