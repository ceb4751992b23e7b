"""Checkpoints: exact round trip, a readable header, and clear errors for bad files (never unpickled)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from avcc_stream import __version__
from avcc_stream.model import ModelConfig, build_model
from avcc_stream.model.checkpoint import (
    HEADER_KEY,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_header,
    resolve_checkpoint,
    save_checkpoint,
)

from .helpers import make_random_checkpoint, random_batch


def test_a_saved_checkpoint_has_the_mode_the_umask_gives_new_files(tmp_path):
    """Not mkstemp's private 0600: the service user must be able to read a file an operator trained."""
    previous = os.umask(0o022)
    try:
        path = make_random_checkpoint(tmp_path, "cc-v-lowres")
        os.umask(0o077)
        private = make_random_checkpoint(tmp_path / "private", "cc-v-lowres")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("preset", ["cc-av-lowres", "cc-v-lowres", "audiocsrnet-lowres"])
def test_round_trip_is_exact(tmp_path, preset):
    path = make_random_checkpoint(tmp_path, preset)
    torch.manual_seed(0)
    original = build_model(ModelConfig.from_preset(preset)).eval()  # same seed as the helper
    loaded = load_checkpoint(path)
    assert loaded.config == original.config
    assert not loaded.model.training
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    images, audio = random_batch(loaded.config, 2)
    with torch.no_grad():
        assert torch.equal(loaded.model(images, audio).density, original(images, audio).density)


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("cc-v-lowres")).eval()
    full = save_checkpoint(tmp_path / "full.safetensors", model)
    half = save_checkpoint(tmp_path / "half.safetensors", model, storage_dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert loaded.header["storage_dtype"] == "float16"
    weight = loaded.model.state_dict()["vfe.stem.layers.0.0.weight"]
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.state_dict()["vfe.stem.layers.0.0.weight"], rtol=1e-3, atol=1e-4)


def test_header_holds_config_preprocessing_version_and_provenance(tmp_path):
    model = build_model(ModelConfig.from_preset("cc-v-lowres"))
    path = save_checkpoint(tmp_path / "m.safetensors", model, provenance={"dataset": "synth", "epoch": 3})
    header = read_checkpoint_header(path)
    assert header["model_config"] == model.config.to_dict()
    assert header["preprocessing"]["input_size"] == [128, 72]
    assert header["preprocessing"]["audio_sample_rate"] == 16000
    assert header["preprocessing"]["image_mean"] == [0.485, 0.456, 0.406]
    assert header["package_version"] == __version__
    assert header["provenance"] == {"dataset": "synth", "epoch": 3}
    with safe_open(str(path), framework="pt") as handle:  # plain safetensors, readable by any tool
        assert json.loads(handle.metadata()[HEADER_KEY])["format"] == "avcc-stream-checkpoint"


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt"), "cc-v-lowres")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"", "empty"),
        (lambda data: data[: len(data) // 2], "truncated or corrupt"),
        (lambda data: b"\x00garbage that is not safetensors\xff" * 10, "truncated or corrupt"),
        (lambda data: data[:-200] + bytes(b ^ 0xFF for b in data[-200:]), "SHA-256"),
    ],
    ids=["zero-bytes", "truncated", "garbage", "flipped-bits"],
)
def test_corrupt_files_fail_clearly_naming_the_file(tmp_path, good_checkpoint, damage, message):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(good_checkpoint.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(bad)
    assert str(bad) in str(error.value)


def test_a_safetensors_file_without_our_header_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without an avcc-stream header"):
        load_checkpoint(path)


def rewrite_with(tmp_path, source, tensors=None, config_update=None):
    """Copy a checkpoint, changing its tensors and/or the header's model config (digest kept valid)."""
    from avcc_stream.model.checkpoint import _tensors_digest

    with safe_open(str(source), framework="pt") as handle:
        header = json.loads(handle.metadata()[HEADER_KEY])
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    state = tensors(state) if tensors else state
    if config_update:
        header["model_config"].update(config_update)
    header["tensors_sha256"] = _tensors_digest(state)
    path = tmp_path / "changed.safetensors"
    save_file(state, str(path), metadata={HEADER_KEY: json.dumps(header)})
    return path


def test_missing_unexpected_and_misshaped_tensors_are_listed(tmp_path, good_checkpoint):
    def tamper(state):
        state.pop("avt.pir_linear.weight")
        state["leftover.weight"] = torch.zeros(3)
        state["avt.pce_linear.linear.weight"] = torch.zeros(1, 7)
        return state

    with pytest.raises(CheckpointError) as error:
        load_checkpoint(rewrite_with(tmp_path, good_checkpoint, tensors=tamper))
    text = str(error.value)
    assert "changed.safetensors" in text
    assert "missing tensor(s): avt.pir_linear.weight" in text
    assert "unexpected tensor(s): leftover.weight" in text
    assert "avt.pce_linear.linear.weight (1, 7) (code expects (1, 16))" in text


def test_a_config_that_does_not_build_the_stored_weights_is_a_mismatch(tmp_path, good_checkpoint):
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_checkpoint(rewrite_with(tmp_path, good_checkpoint, config_update={"embed_dim": 64, "submap_size": [8, 8]}))


def test_a_config_this_code_does_not_know_is_named(tmp_path, good_checkpoint):
    with pytest.raises(CheckpointError, match="does not match this code: .*attention_heads"):
        load_checkpoint(rewrite_with(tmp_path, good_checkpoint, config_update={"attention_heads": 4}))


def test_resolve_builtin_names_the_available_checkpoints():
    with pytest.raises(CheckpointError, match="no built-in checkpoint 'no-such-model'.*available"):
        resolve_checkpoint("builtin:no-such-model")


def test_resolve_plain_path(tmp_path, good_checkpoint):
    assert resolve_checkpoint(str(good_checkpoint)) == good_checkpoint
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        resolve_checkpoint(tmp_path / "absent.safetensors")


def test_loading_never_unpickles(monkeypatch, good_checkpoint):
    import pickle

    def refuse(*_args, **_kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_checkpoint(good_checkpoint).config.name == "cc-v-lowres"
