"""`avcc-stream average-checkpoints`: the weighted mean of checkpoints of one model, traced in provenance."""

from __future__ import annotations

import pytest
import torch

from avcc_stream.cli import main
from avcc_stream.model.checkpoint import load_checkpoint

from .helpers import SMALL_WIDTHS, make_random_checkpoint


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("average")
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    return (make_random_checkpoint(folder / "a", "cc-v-lowres", seed=1, **SMALL_WIDTHS),
            make_random_checkpoint(folder / "b", "cc-v-lowres", seed=2, **SMALL_WIDTHS))


def test_the_average_holds_the_weighted_mean_and_names_its_sources(pair, tmp_path, capsys):
    a, b = pair
    out = tmp_path / "soup.safetensors"
    assert main(["average-checkpoints", str(a), str(b), "--weights", "3,1", "--out", str(out)]) == 0
    assert "weights normalised to sum to 1" in capsys.readouterr().out
    first, second, soup = (load_checkpoint(p) for p in (a, b, out))
    states = [item.model.state_dict() for item in (first, second, soup)]
    floats = [name for name, tensor in states[0].items() if tensor.is_floating_point()]
    integers = [name for name, tensor in states[0].items() if not tensor.is_floating_point()]
    assert floats and integers  # batch-norm counters are integers
    for name in floats:
        assert torch.allclose(states[2][name], 0.75 * states[0][name] + 0.25 * states[1][name], atol=1e-6), name
    assert any(not torch.equal(states[0][name], states[1][name]) for name in floats)
    for name in integers:
        assert torch.equal(states[2][name], states[0][name])
    sources = soup.header["provenance"]["weight_average"]
    assert [s["checkpoint"] for s in sources] == [str(a), str(b)]
    assert [s["weight"] for s in sources] == [0.75, 0.25]
    assert sources[0]["tensors_sha256"] == first.header["tensors_sha256"]
    assert sources[1]["provenance"]["seed"] == 2


def test_equal_weights_by_default_and_half_size_storage(pair, tmp_path, capsys):
    a, b = pair
    out = tmp_path / "half.safetensors"
    assert main(["average-checkpoints", str(a), str(b), "--out", str(out), "--storage", "float16"]) == 0
    soup = load_checkpoint(out)
    assert soup.header["storage_dtype"] == "float16"
    assert [s["weight"] for s in soup.header["provenance"]["weight_average"]] == [0.5, 0.5]
    with torch.no_grad():
        out_count = soup.model(torch.rand(1, 3, 72, 128), None).count
    assert torch.isfinite(out_count).all()


def test_checkpoints_of_different_models_and_bad_weights_are_refused(pair, tmp_path, capsys):
    a, _ = pair
    other = make_random_checkpoint(tmp_path, "cc-v-lowres", seed=3, **{**SMALL_WIDTHS, "units_per_block": 2})
    out = tmp_path / "never.safetensors"
    assert main(["average-checkpoints", str(a), str(other), "--out", str(out)]) == 2
    assert "model config differs in units_per_block" in capsys.readouterr().err
    assert main(["average-checkpoints", str(a), str(a), "--weights", "1,-1", "--out", str(out)]) == 2
    assert "weights must be positive" in capsys.readouterr().err
    assert main(["average-checkpoints", str(a), "--out", str(out)]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert main(["average-checkpoints", str(a), str(a), "--weights", "1,x", "--out", str(out)]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert not out.exists()
