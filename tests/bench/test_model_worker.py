"""The model worker's measurements, in-process with tiny models: interleaved timing and BN folding."""

from __future__ import annotations

import torch

from avcc_stream.bench.model_bench import ModelJob
from avcc_stream.bench.model_worker import build, fold_batchnorm, make_inputs, measure

TINY = {"branch_channels": [8, 16, 32], "units_per_block": 1, "merge_channels": 32, "audio_channels": [8, 16, 32, 32]}


def test_interleaved_jobs_are_each_timed_and_leave_peak_memory_unmeasured():
    jobs = [ModelJob(preset=p, batch_sizes=(1,), repeats=2, overrides=TINY, flops=False) for p in ("cc-v-lowres", "cc-av-lowres")]
    results = measure(jobs)
    assert [r["preset"] for r in results] == ["cc-v-lowres", "cc-av-lowres"]
    for result in results:
        assert result["memory_method"].startswith("not measured")
        (row,) = result["batches"]
        assert row["repeats"] == 2 and row["latency_ms"] > 0 and row["cpu_ms"] > 0 and "peak_mem_mib" not in row


def test_a_job_alone_reports_peak_memory_growth():
    (result,) = measure([ModelJob(preset="cc-v-lowres", batch_sizes=(1,), repeats=1, overrides=TINY, flops=False)])
    assert result["batches"][0]["peak_mem_mib"] >= 0 and result["flops"] is None


def test_folding_batchnorm_into_convs_keeps_the_output():
    torch.manual_seed(0)
    _, model, device = build(ModelJob(preset="cc-av-lowres", overrides=TINY))
    for module in model.modules():  # non-trivial running statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images, audio = make_inputs(model.config, 2, device, channels_last=False)
    with torch.inference_mode():
        before = model(images, audio).density
        folded = fold_batchnorm(model)
        after = model(images, audio).density
    assert folded > 10
    left = [(a, b) for m in model.modules() if isinstance(m, torch.nn.Sequential) for a, b in zip(m, list(m)[1:])
            if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)]
    assert left == []  # every conv -> BN pair was folded
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-6)
