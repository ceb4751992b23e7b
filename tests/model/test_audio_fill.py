"""`audio_fill`: the sound adds density per patch through a visibility gate, and a fresh fill
changes nothing (docs/model.md, "Audio fill")."""

from __future__ import annotations

import pytest
import torch

from avcc_stream.model import ModelConfig, build_model
from avcc_stream.model.fill import AudioFill

from .helpers import SMALL_WIDTHS, random_batch
from .test_gradients import parameters_without_gradient

FILL = {"patch_embedding": "pixels", "ccm_residual": True, "audio_fill": "add"}


def test_add_mode_adds_gate_times_beta_times_the_sound_map_per_patch():
    torch.manual_seed(0)
    fill = AudioFill(embed_dim=6, feature_channels=4, mode="add")
    with torch.no_grad():
        fill.beta.fill_(2.0)
    audio = torch.tensor([[1.0, -1.0, 0.5, 0.0, 3.0, -2.0]])
    features = torch.randn(1, 5, 4)
    dm_pre = torch.rand(1, 5, 6)
    out = fill(dm_pre, audio, features)
    gate = fill.visibility_gate(features)
    assert out.shape == (1, 5, 6) and gate.shape == (1, 5)
    assert ((gate > 0) & (gate < 1)).all()
    # The sound map starts as the identity: ReLU(A) itself, the same sub-map for every patch.
    torch.testing.assert_close(out, dm_pre + gate[..., None] * 2.0 * torch.relu(audio)[:, None, :])
    # The gate reads each patch's own features: different patches get different shares.
    assert gate.std() > 0


def test_blend_mode_is_a_per_patch_weighted_mean_of_picture_and_sound():
    torch.manual_seed(0)
    fill = AudioFill(embed_dim=6, feature_channels=4, mode="blend")
    audio = torch.tensor([[1.0, -1.0, 0.5, 0.0, 3.0, -2.0]])
    features = torch.randn(2, 5, 4)
    dm_pre = torch.rand(2, 5, 6)
    gate = fill.visibility_gate(features)[..., None]
    with torch.no_grad():
        fill.beta.fill_(0.5)
        torch.testing.assert_close(fill(dm_pre, audio, features), (1 - 0.5 * gate) * dm_pre + 0.5 * gate * torch.relu(audio))
        fill.beta.fill_(3.0)  # past 1 the picture's share turns negative; the ReLU keeps the map >= 0
        out = fill(dm_pre, audio, features)
    torch.testing.assert_close(out, torch.relu((1 - 3 * gate) * dm_pre + 3 * gate * torch.relu(audio)))
    assert (out >= 0).all()


def test_visibility_gate_depends_on_the_whole_frame_too():
    torch.manual_seed(0)
    fill = AudioFill(embed_dim=4, feature_channels=3)
    patch = torch.randn(1, 1, 3)
    alone = fill.visibility_gate(torch.cat([patch, torch.zeros(1, 1, 3)], dim=1))[0, 0]
    with_bright_frame = fill.visibility_gate(torch.cat([patch, torch.full((1, 1, 3), 5.0)], dim=1))[0, 0]
    assert alone != with_bright_frame


@pytest.mark.parametrize("fill_mode", ["add", "blend"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_fresh_fill_leaves_the_network_unchanged(mode, fill_mode):
    """beta = 0: the same weights with and without the fill give the same density map."""
    torch.manual_seed(0)
    with_fill = build_model(ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": fill_mode}, **SMALL_WIDTHS))
    without = build_model(ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": "off"}, **SMALL_WIDTHS))
    missing, unexpected = without.load_state_dict(with_fill.state_dict(), strict=False)
    assert missing == [] and all(name.startswith("audio_fill.") for name in unexpected)
    with_fill.train(mode == "train")
    without.train(mode == "train")
    batch = random_batch(with_fill.config, 2)
    torch.manual_seed(1)  # the same dropout masks for both
    with torch.no_grad():
        a = with_fill(*batch)
    torch.manual_seed(1)
    with torch.no_grad():
        b = without(*batch)
    torch.testing.assert_close(a.density, b.density)


@pytest.mark.parametrize("fill_mode", ["add", "blend"])
def test_once_beta_grows_the_sound_counts_a_black_frame_and_more_for_a_louder_one(fill_mode):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": fill_mode}, **SMALL_WIDTHS)
    model = build_model(cfg).eval()
    black = torch.zeros(2, 3, cfg.input_size[1], cfg.input_size[0])
    _, audio = random_batch(cfg, 2)
    with torch.no_grad():
        before = model(black, audio).count
        model.audio_fill.beta.fill_(1.0)
        encoded = model.encode(black, audio)
        louder = model.decode(encoded.visual, encoded.embedding.abs() * 3, encoded.patch_features).count
        after = model.decode(*encoded).count
    assert (after > before).all()
    assert (louder > after).all()


@pytest.mark.parametrize("fill_mode", ["add", "blend"])
def test_every_parameter_of_the_fill_variant_learns(fill_mode):
    """Two steps: the first moves beta from 0, after which the gate and the sound map get gradients."""
    cfg = ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": fill_mode}, **SMALL_WIDTHS)
    assert parameters_without_gradient(cfg) == []


def test_a_boolean_fill_reads_as_add_so_first_recipe_checkpoints_load():
    assert ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": True}).audio_fill == "add"
    assert ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": False}).audio_fill == "off"


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("cc-av-512", {"audio_fill": "add"}, r"patch_embedding='pixels'"),
        ("cc-v-512", {"audio_fill": "blend", "patch_embedding": "pixels"}, "use_audio=True"),
    ],
)
def test_fill_without_what_it_needs_is_a_clear_config_error(preset, overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_preset(preset, **overrides)


@pytest.mark.parametrize("fill_mode", ["add", "blend"])
def test_picture_count_is_the_count_before_the_fill(fill_mode):
    """A fresh fill (beta 0) changes nothing, so the picture's count is the count; once beta grows,
    the count moves and the picture's count stays what DM_PRE alone holds."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": fill_mode}, **SMALL_WIDTHS))
    model.eval()
    batch = random_batch(model.config, 2)
    with torch.no_grad():
        fresh = model(*batch)
        model.audio_fill.beta.fill_(0.5)
        filled = model(*batch)
    torch.testing.assert_close(fresh.picture_count, fresh.count)
    torch.testing.assert_close(filled.picture_count, fresh.picture_count)
    assert not torch.allclose(filled.count, fresh.count)
    without = build_model(ModelConfig.from_preset("cc-av-512", **SMALL_WIDTHS)).eval()
    with torch.no_grad():
        assert without(*random_batch(without.config, 1)).picture_count is None


def test_sound_count_is_the_count_when_the_blend_hands_every_patch_to_the_sound():
    """With the gate open everywhere and beta 1, the blend's map is the sound's sub-map on every
    patch, so the model's count is the sound's own count; DM_PRE no longer matters."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("cc-av-512", **{**FILL, "audio_fill": "blend"}, **SMALL_WIDTHS))
    model.eval()
    images, audio = random_batch(model.config, 2)
    with torch.no_grad():
        model.audio_fill.beta.fill_(1.0)
        last = model.audio_fill.gate[-1]
        last.weight.zero_()
        last.bias.fill_(60.0)  # sigmoid(60) == 1 in float32
        out = model(images, audio)
        other_picture = model(torch.rand_like(images), audio)
    assert out.sound_count.shape == (2,)
    torch.testing.assert_close(out.count, out.sound_count)
    torch.testing.assert_close(other_picture.count, out.count)
    assert not torch.allclose(out.sound_count[0], out.sound_count[1])  # it reads each clip's sound
    with torch.no_grad():
        model.audio_fill.beta.fill_(0.25)  # the sound's estimate is beta x S: a quarter of it
        torch.testing.assert_close(model(images, audio).sound_count, out.sound_count * 0.25)
