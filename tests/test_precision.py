"""Which autocast dtype the daemon's forward pass runs in (avcc_stream.precision)."""

from __future__ import annotations

import pytest
import torch

from avcc_stream import precision


@pytest.mark.parametrize(
    ("device", "amp", "cpu_bf16", "expected"),
    [
        ("cuda", True, False, torch.float16),
        ("cuda:1", True, True, torch.float16),
        ("cpu", True, True, torch.bfloat16),
        ("cpu", True, False, None),  # emulated bf16 is slower than float32
        ("mps", True, True, None),
        ("cuda", False, True, None),
        ("cpu", False, True, None),
    ],
)
def test_inference_dtype(monkeypatch: pytest.MonkeyPatch, device: str, amp: bool, cpu_bf16: bool,
                         expected: torch.dtype | None) -> None:
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: cpu_bf16)
    assert precision.inference_dtype(device, amp) == expected


def test_this_cpu_answers_whether_it_has_bf16() -> None:
    assert isinstance(precision.cpu_has_bf16(), bool)


def test_autocast_and_precision_names() -> None:
    with precision.autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert [precision.precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


def test_counts_are_summed_in_float32_under_bf16_autocast() -> None:
    """A bf16 count of 200-odd people would round to whole people; the model sums its density
    map in float32 whatever the autocast, so only the map itself is rounded."""
    from avcc_stream.model import ModelConfig, build_model
    from tests.model.helpers import SMALL_WIDTHS

    torch.manual_seed(3)
    model = build_model(ModelConfig.from_preset("cc-av-lowres", patch_embedding="pixels", **SMALL_WIDTHS)).eval()
    with torch.no_grad():
        model.vfe.merge_head.head[1].bias.fill_(1.0)  # a random head's map is all zeros: give it a count
    images, audio = torch.rand(2, 3, 72, 128), 0.1 * torch.randn(2, 16_000)
    with torch.inference_mode():
        exact = model(images, audio)
        with precision.autocast("cpu", torch.bfloat16):
            half = model(images, audio)
    assert half.density.dtype == torch.bfloat16
    assert half.count.dtype == torch.float32 and half.patch_counts.dtype == torch.float32
    assert float(exact.count.min()) > 1.0
    assert torch.allclose(half.count, half.density.float().sum(dim=(1, 2, 3)))
    assert torch.allclose(half.count, exact.count, rtol=0.03)
