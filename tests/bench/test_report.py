"""Report writing and the pure logic of the modes (ratios, baselines, the window lattice)."""

from __future__ import annotations

import json

from avcc_stream.bench.e2e_bench import analyse_counts
from avcc_stream.bench.model_bench import add_ratios, target_summary, with_baselines
from avcc_stream.bench.report import BenchReport, Column, Table, write_report


def test_report_writes_json_and_markdown_with_missing_values_shown_as_dashes(tmp_path):
    report = BenchReport("demo", {"cpu_model": "Test CPU", "cpu_cores": 2, "gpus": []}, {"n": 1})
    report.tables.append(Table("t", [Column("name", "name"), Column("x", "x", "{:.2f}")],
                               [{"name": "a", "x": 1.234}, {"name": "b", "x": None}, {"name": "c", "x": float("nan")}]))
    report.summary.append("all good")
    json_path, md_path = write_report(report.finish(), tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert [r["x"] for r in data["tables"][0]["rows"]] == [1.234, None, None]  # NaN is not valid JSON
    markdown = md_path.read_text()
    assert "| a | 1.23 |" in markdown and "| b | - |" in markdown and "- all good" in markdown
    assert "Test CPU, 2 cores" in markdown


def test_every_resolution_gets_its_audiocsrnet_baseline_and_ratios_come_from_the_same_variant():
    assert with_baselines(["cc-av", "cc-v-lowres"]) == ("cc-av", "cc-v-lowres", "audiocsrnet", "audiocsrnet-lowres")
    rows = [
        {"preset": "cc-av", "variant": "fp32", "batch": 1, "throughput": 8.0},
        {"preset": "audiocsrnet", "variant": "fp32", "batch": 1, "throughput": 0.5},
        {"preset": "cc-av", "variant": "bf16", "batch": 1, "throughput": 9.0},  # no bf16 baseline
        {"preset": "cc-av-lowres", "variant": "fp32", "batch": 1, "throughput": 100.0},  # no lowres baseline
    ]
    add_ratios(rows)
    assert [r["vs_audiocsrnet"] for r in rows] == [16.0, 1.0, None, None]
    verdicts, missed = target_summary(rows, "cpu", overridden=False)
    assert len(verdicts) == 1 and "16.00x" in verdicts[0] and "met" in verdicts[0] and not missed
    rows[0]["vs_audiocsrnet"] = 3.0
    verdicts, missed = target_summary(rows, "cuda", overridden=False)
    assert missed and "MISSED" in verdicts[0] and ">= 4x" in verdicts[0]


def test_windows_missing_from_a_cameras_one_second_lattice_are_dropped_and_latency_is_receipt_minus_end():
    start, end = 1000.0, 1010.0
    received = []
    for k in range(-2, 12):  # cam1: window ends 998.3 ... 1011.3, each received 0.2 s later
        if k in (4, 7):  # two windows never arrive
            continue
        received.append((998.3 + k + 0.2, "cam1", 998.3 + k, True))
    received.append((1003.5, "cam1", 1003.3, True))  # a duplicate (at-least-once) of a delivered window
    # cam2: all there, one without sound, one 0.6 s late
    received += [(1000.5 + k + (0.6 if k == 5 else 0.2), "cam2", 1000.5 + k, k != 3) for k in range(0, 10)]
    received.append((1030.0, "cam2", 1009.9, True))  # arrives after the grace period: not delivered
    result = analyse_counts(received, ["cam1", "cam2", "cam3"], start, end, grace_s=5.0)
    assert result["per_camera"]["cam1"] == {"delivered": 8, "dropped": 2}
    assert result["per_camera"]["cam2"] == {"delivered": 10, "dropped": 0}
    assert result["per_camera"]["cam3"] == {"delivered": 0, "dropped": 10}  # never counted
    assert result["dropped"] == 12 and result["delivered"] == 18 and result["without_sound"] == 1
    assert abs(result["latency_p50_s"] - 0.2) < 1e-6 and abs(result["latency_max_s"] - 0.6) < 1e-6
