"""ModelConfig: presets, derived shapes, JSON round trip, and clear errors for bad configs."""

from __future__ import annotations

import json

import pytest

from avcc_stream.model import ABLATIONS, PRESETS, ModelConfig, ablation_config


@pytest.mark.parametrize(
    ("preset", "input_size", "grid", "density_size", "uses_audio"),
    [
        ("cc-av", (1024, 576), (8, 8), (72, 128), True),
        ("cc-v", (1024, 576), (8, 8), (72, 128), False),
        ("cc-av-lowres", (128, 72), (4, 4), (36, 64), True),
        ("cc-v-lowres", (128, 72), (4, 4), (36, 64), False),
        ("cc-av-512", (512, 288), (4, 4), (36, 64), True),
        ("cc-v-512", (512, 288), (4, 4), (36, 64), False),
        ("cc-av-1024-cpu", (1024, 576), (4, 4), (36, 64), True),
        ("cc-v-1024-cpu", (1024, 576), (4, 4), (36, 64), False),
        ("csrnet", (1024, 576), (8, 8), (72, 128), False),
        ("audiocsrnet", (1024, 576), (8, 8), (72, 128), True),
        ("csrnet-lowres", (128, 72), (4, 4), (9, 16), False),
        ("audiocsrnet-lowres", (128, 72), (4, 4), (9, 16), True),
    ],
)
def test_preset_exposes_the_contract_fields(preset, input_size, grid, density_size, uses_audio):
    cfg = ModelConfig.from_preset(preset)
    assert cfg.name == preset
    assert cfg.input_size == input_size
    assert cfg.grid == grid
    assert cfg.density_size == density_size
    assert cfg.uses_audio is uses_audio


def test_lowres_presets_do_not_downsample_in_the_stem():
    assert ModelConfig.from_preset("cc-av-lowres").stem_stride == 1
    assert ModelConfig.from_preset("cc-av").stem_stride == 4


def test_512_presets_give_the_trunk_the_lowres_feature_maps():
    """The CPU presets see 16x the pixels of low-res at the same trunk size (hence the same cost)."""
    low, mid = ModelConfig.from_preset("cc-av-lowres"), ModelConfig.from_preset("cc-av-512")
    assert mid.input_size[0] // mid.stem_stride == low.input_size[0] // low.stem_stride
    assert mid.input_size[1] // mid.stem_stride == low.input_size[1] // low.stem_stride
    assert mid.grid == low.grid  # same AVT size: both shipped models fit the 50 MB budget


def test_the_unshuffled_1024_preset_gives_the_trunk_the_512_feature_maps():
    full, mid = ModelConfig.from_preset("cc-av-1024-cpu"), ModelConfig.from_preset("cc-av-512")
    assert full.input_unshuffle == 2 and full.trunk_stride == 8 and mid.trunk_stride == 4
    assert [v // full.trunk_stride for v in full.input_size] == [v // mid.trunk_stride for v in mid.input_size]
    assert full.density_size == mid.density_size and full.grid == mid.grid


def test_an_input_the_unshuffled_trunk_cannot_split_is_an_error():
    with pytest.raises(ValueError, match="input_unshuffle \\* stem_stride \\* 8 = 64"):
        ModelConfig.from_preset("cc-av-1024-cpu", input_size=(1056, 576))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_to_dict_round_trips_through_json(preset):
    cfg = ModelConfig.from_preset(preset, dropout=0.1)
    restored = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    assert restored.density_size == cfg.density_size


def test_overrides_keep_the_preset_name_and_change_derived_shapes():
    cfg = ModelConfig.from_preset("cc-av-lowres", embed_dim=64, input_size=(256, 144), grid=(2, 2))
    assert cfg.name == "cc-av-lowres"
    # 128 x 72-pixel patches (16:9) of 64 values: of the factor pairs of 64, 8 x 8 (ratio 1) is
    # closer to 16:9 in log ratio than 4 x 16 (ratio 4).
    assert cfg.active_submap_size == (8, 8)
    assert cfg.density_size == (16, 16)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"no_such_field": 1}, "no_such_field"),
        ({"input_size": (130, 72)}, "input_size"),
        ({"use_audio": False}, "use_audio_in_fusion"),
        ({"use_pir_branch": False, "use_pce_branch": False}, "use_avt=False"),
        ({"dropout": 1.5}, "dropout"),
        ({"submap_size": (10, 10)}, "submap_size"),
    ],
)
def test_bad_configs_fail_naming_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_preset("cc-av-lowres", **overrides)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="cc-av-lowres"):
        ModelConfig.from_preset("cc-xx")


@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_every_ablation_is_a_valid_config_with_a_stated_replacement(ablation):
    cfg = ablation_config("cc-av-lowres", ablation)
    assert cfg != ModelConfig.from_preset("cc-av-lowres")
    assert ABLATIONS[ablation]["replacement"]
