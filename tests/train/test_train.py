"""Training end to end on a tiny synthetic dataset: outputs, exact resume, budget stop, half storage."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from avcc_stream.data.training import split_key
from avcc_stream.model.checkpoint import load_checkpoint, read_checkpoint_header
from avcc_stream.train.config import TrainConfig
from avcc_stream.train.trainer import TrainingError, train
from tests.train.conftest import small_config_dict


def config(root: Path, **train_fields: object) -> TrainConfig:
    return TrainConfig.model_validate(small_config_dict(root, **train_fields))


def test_two_steps_write_checkpoint_csv_and_plot(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(config(tiny_dataset), out, progress=False)  # 8 training samples, batch 4: 2 steps
    assert (result.global_step, result.epochs_done, result.stopped_early) == (2, 1, False)
    for name in ("best.safetensors", "last.safetensors", "state.pt", "metrics.csv", "steps.csv", "curves.png",
                 "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1 and float(rows[0]["val_mae"]) >= 0 and rows[0]["global_step"] == "2"
    assert len(list(csv.DictReader((out / "steps.csv").open()))) == 2
    loaded = load_checkpoint(out / "best.safetensors")
    provenance = loaded.header["provenance"]
    assert provenance["data_seed"] == 11 and provenance["epochs"] == 1 and provenance["global_step"] == 2
    assert provenance["val_mae"] == pytest.approx(float(rows[0]["val_mae"]), rel=1e-5)
    assert provenance["config"]["model"]["preset"] == "cc-av-lowres" and provenance["machine"]
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config(tiny_dataset), out, progress=False)


def test_best_checkpoint_is_chosen_on_the_mean_over_validation_settings(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    data = small_config_dict(tiny_dataset, epochs=2)
    data["data"]["val_settings"] = ["regular", "occlusion:1"]
    train(TrainConfig.model_validate(data), out, progress=False)
    epochs = list(csv.DictReader((out / "metrics.csv").open()))
    per_setting = list(csv.DictReader((out / "val.csv").open()))
    assert [(r["global_step"], r["setting"]) for r in per_setting] == [
        ("2", "regular"), ("2", "occlusion:1"), ("4", "regular"), ("4", "occlusion:1")
    ]
    # A black frame and the clear picture are counted differently, so the two MAEs differ.
    assert per_setting[0]["mae"] != per_setting[1]["mae"]
    for row in epochs:
        maes = [float(r["mae"]) for r in per_setting if r["global_step"] == row["global_step"]]
        assert float(row["val_mae"]) == pytest.approx(sum(maes) / 2, rel=1e-4)  # the CSV keeps 6 digits
    best = min(float(r["val_mae"]) for r in epochs)
    provenance = load_checkpoint(out / "best.safetensors").header["provenance"]
    assert provenance["val_mae"] == pytest.approx(best, rel=1e-5)
    assert provenance["val_settings"] == ["regular", "occlusion:1"]
    assert (out / "curves.png").stat().st_size > 0  # drawn with one line per setting


@pytest.mark.parametrize("val_amp", [True, False], ids=["validated-in-bf16", "validated-in-float32"])
def test_validation_runs_in_the_training_dtype_or_in_float32(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, val_amp: bool
) -> None:
    import avcc_stream.train.trainer as trainer_module

    seen: list[torch.dtype | None] = []
    real_count_errors = trainer_module.count_errors

    def recording_count_errors(*args, **kwargs):
        seen.append(args[4])  # (model, loader, device, uses_audio, dtype, channels_last)
        return real_count_errors(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "count_errors", recording_count_errors)
    out = tmp_path / "run"
    train(config(tiny_dataset, amp="bf16", val_amp=val_amp), out, progress=False)
    assert seen == [torch.bfloat16 if val_amp else None]
    provenance = load_checkpoint(out / "best.safetensors").header["provenance"]
    assert provenance["val_dtype"] == ("bfloat16" if val_amp else "float32")


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "state.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("count_weighting", [0.0, 0.5], ids=["shuffled", "count-weighted"])
def test_resume_after_interruption_matches_a_straight_run(
    tiny_dataset: Path, tmp_path: Path, count_weighting: float
) -> None:
    # Two epochs of two steps with augmentation, black frames and dropout: interrupted after
    # step 3 (mid-epoch), then resumed, the run must end where the straight run ends.
    def two_epochs() -> TrainConfig:
        data = small_config_dict(tiny_dataset, epochs=2)
        data["data"]["count_weighting"] = count_weighting
        return TrainConfig.model_validate(data)

    straight = train(two_epochs(), tmp_path / "straight", progress=False)
    first = train(two_epochs(), tmp_path / "resumed", progress=False, stop_after_steps=3)
    assert first.stopped_early and first.global_step == 3
    partial = _weights(tmp_path / "resumed")
    assert (partial["epoch"], partial["step_in_epoch"]) == (1, 1)
    second = train(two_epochs(), tmp_path / "resumed", resume=True, progress=False)
    assert (second.global_step, second.stopped_early) == (straight.global_step, False) == (4, False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][field]), (key, field)
    assert a["scheduler"] == b["scheduler"]
    assert a["best_mae"] == b["best_mae"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    steps = list(csv.DictReader((tmp_path / "resumed" / "steps.csv").open()))
    assert [int(r["global_step"]) for r in steps] == [1, 2, 3, 4]


def test_zero_budget_stops_after_one_step_with_a_resumable_state(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(config(tiny_dataset), tmp_path / "run", progress=False, max_minutes=0)
    assert result.stopped_early and result.global_step == 1
    state = _weights(tmp_path / "run")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 1, 1)
    # The budget stop validates what it has, so a best checkpoint exists even mid-epoch.
    assert (tmp_path / "run" / "best.safetensors").exists()
    resumed = train(config(tiny_dataset), tmp_path / "run", resume=True, progress=False)
    assert (resumed.global_step, resumed.stopped_early) == (2, False)


def test_ema_checkpoints_hold_the_moving_average_and_resume_continues_it(tiny_dataset: Path, tmp_path: Path) -> None:
    # decay 0.5 over two steps: the average is W1 (the first update copies) then 0.5 W1 + 0.5 W2,
    # for the parameters and the batch-norm statistics alike.
    straight = train(config(tiny_dataset, ema_decay=0.5), tmp_path / "straight", progress=False)
    first = train(config(tiny_dataset, ema_decay=0.5), tmp_path / "resumed", progress=False, stop_after_steps=1)
    assert straight.global_step == 2 and first.stopped_early and first.global_step == 1
    w1 = _weights(tmp_path / "resumed")["model"]
    train(config(tiny_dataset, ema_decay=0.5), tmp_path / "resumed", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    w2 = a["model"]
    saved = load_checkpoint(tmp_path / "straight" / "last.safetensors").model.state_dict()
    averaged = [name for name, tensor in w2.items() if tensor.is_floating_point() and not torch.equal(w1[name], tensor)]
    assert any("running_mean" in name for name in averaged) and len(averaged) > 10
    for name in averaged:
        torch.testing.assert_close(saved[name], 0.5 * w1[name] + 0.5 * w2[name], rtol=1e-5, atol=1e-6, msg=name)
    # The best checkpoint was chosen on the average too: its recorded MAE is the one validated.
    header = read_checkpoint_header(tmp_path / "straight" / "best.safetensors")
    rows = list(csv.DictReader((tmp_path / "straight" / "metrics.csv").open()))
    assert header["provenance"]["val_mae"] == pytest.approx(float(rows[0]["val_mae"]), rel=1e-5)


def test_ema_switched_on_for_a_resumed_run_starts_from_the_resumed_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    train(config(tiny_dataset), tmp_path / "run", progress=False, stop_after_steps=1)
    w1 = _weights(tmp_path / "run")["model"]
    train(config(tiny_dataset, ema_decay=0.25), tmp_path / "run", resume=True, progress=False)
    state = _weights(tmp_path / "run")
    w2, ema = state["model"], state["ema"]
    name = next(n for n, t in w2.items() if t.is_floating_point() and not torch.equal(w1[n], t))
    torch.testing.assert_close(ema[f"module.{name}"], 0.25 * w1[name] + 0.75 * w2[name], rtol=1e-5, atol=1e-6)


def test_half_precision_checkpoints_round_trip(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(config(tiny_dataset, checkpoint_dtype="float16"), tmp_path / "run", progress=False)
    assert result.global_step == 2
    full = _weights(tmp_path / "run")["model"]
    path = tmp_path / "run" / "best.safetensors"
    assert read_checkpoint_header(path)["storage_dtype"] == "float16"
    model = load_checkpoint(path).model
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, full[name].to(torch.float16).float()), name
        else:
            assert torch.equal(tensor, full[name]), name


def test_init_from_starts_cc_av_from_a_trained_cc_v(tiny_dataset: Path, tmp_path: Path) -> None:
    """The warm start copies every tensor whose name and shape match (the visual path), and the
    audio parts start fresh; the run then trains on from there."""
    from avcc_stream.model.checkpoint import warm_start
    from avcc_stream.model.config import ModelConfig
    from avcc_stream.model.network import build_model
    from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

    source = make_random_checkpoint(tmp_path, "cc-v-lowres", seed=4, **SMALL_WIDTHS)
    cc_v = load_checkpoint(source).model.state_dict()
    torch.manual_seed(9)
    cc_av = build_model(ModelConfig.from_preset("cc-av-lowres", **SMALL_WIDTHS))
    started = warm_start(cc_av, source)
    weights = cc_av.state_dict()
    assert "vfe.stem.layers.0.0.weight" in started.copied and torch.equal(
        weights["vfe.stem.layers.0.0.weight"], cc_v["vfe.stem.layers.0.0.weight"]
    )
    assert any(name.startswith("afe.") for name in started.kept)
    assert not any(name.startswith("afe.") for name in started.copied)
    assert started.adapted == []  # only a model that unshuffles its input gets an adapted stem

    # Through the trainer: one step of Adam (lr 1e-3) moves a weight by about 1e-3, while fresh
    # Kaiming weights of the stem differ by ~0.3, so a stem this close is the source's.
    # Resuming needs no source any more.
    data = small_config_dict(tiny_dataset, epochs=2)
    data["model"]["init_from"] = str(source)
    out = tmp_path / "warm"
    train(TrainConfig.model_validate(data), out, progress=False, stop_after_steps=1)
    stem = _weights(out)["model"]["vfe.stem.layers.0.0.weight"]
    assert torch.allclose(stem, cc_v["vfe.stem.layers.0.0.weight"], atol=3e-3)
    source.unlink()
    # ... nor the same source: a finished run's sources get pinned to other files.
    data["model"]["init_from"] = [str(tmp_path / "pinned-copy.safetensors")]
    result = train(TrainConfig.model_validate(data), out, progress=False, resume=True)
    assert result.global_step == 4 and (out / "best.safetensors").is_file()
    # A different model, though, is refused.
    data["model"]["overrides"]["ccm_residual"] = not data["model"]["overrides"].get("ccm_residual", False)
    with pytest.raises(TrainingError, match="saved for model"):
        train(TrainConfig.model_validate(data), out, progress=False, resume=True)


def test_init_from_several_checkpoints_applies_them_in_order(tiny_dataset: Path, tmp_path: Path) -> None:
    """The audio parts come from the first (a CC-AV), everything the second (a CC-V) has from it."""
    from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

    cc_av = make_random_checkpoint(tmp_path / "av", "cc-av-lowres", seed=3, **SMALL_WIDTHS)
    cc_v = make_random_checkpoint(tmp_path / "v", "cc-v-lowres", seed=4, **SMALL_WIDTHS)
    first, second = load_checkpoint(cc_av).model.state_dict(), load_checkpoint(cc_v).model.state_dict()
    audio_weight = next(name for name in first if name.startswith("afe.") and name.endswith(".weight"))
    stem = "vfe.stem.layers.0.0.weight"
    assert not torch.allclose(first[stem], second[stem], atol=0.1)

    data = small_config_dict(tiny_dataset, epochs=1)
    data["model"]["init_from"] = [str(cc_av), str(cc_v)]
    out = tmp_path / "warm"
    train(TrainConfig.model_validate(data), out, progress=False, stop_after_steps=1)
    weights = _weights(out)["model"]
    assert torch.allclose(weights[stem], second[stem], atol=3e-3)  # one Adam step moves ~1e-3
    assert torch.allclose(weights[audio_weight], first[audio_weight], atol=3e-3)


def test_init_from_a_512_model_into_the_unshuffled_1024_preset_starts_where_it_was(tmp_path: Path) -> None:
    """cc-av-1024-cpu from a cc-av-512 checkpoint: every tensor carries over, the stem's first conv
    is spread over the 12 unshuffled channels, and the new model on a 1024x576 image gives what
    the old one gives on that image area-averaged to 512x288 (so training starts from there)."""
    from avcc_stream.model.checkpoint import STEM_INPUT_CONV, warm_start
    from avcc_stream.model.config import ModelConfig
    from avcc_stream.model.network import build_model
    from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint, random_batch

    widths = {**SMALL_WIDTHS, "patch_embedding": "pixels", "ccm_residual": True, "audio_fill": "blend"}
    source = make_random_checkpoint(tmp_path, "cc-av-512", seed=5, **widths)
    old = load_checkpoint(source).model.eval()
    new = build_model(ModelConfig.from_preset("cc-av-1024-cpu", **widths))
    started = warm_start(new, source)
    assert started.adapted == [STEM_INPUT_CONV] and started.kept == []
    assert new.state_dict()[STEM_INPUT_CONV].shape[1] == 12

    images, audio = random_batch(new.config, 2, seed=3)
    assert images.shape[-2:] == (576, 1024)
    with torch.no_grad():
        expected = old(torch.nn.functional.avg_pool2d(images, 2), audio)
        got = new.eval()(images, audio)
    assert got.density.shape == expected.density.shape
    assert torch.allclose(got.density, expected.density, atol=1e-5)
    assert torch.allclose(got.count, expected.count, rtol=1e-5, atol=1e-4)


def test_stem_units_added_to_a_trained_model_start_as_the_identity_and_then_learn(tmp_path: Path) -> None:
    """model.stem_units: a checkpoint without the units warm-starts the model with them exactly (the
    units are all it keeps fresh), and one training step moves the units' weights."""
    from avcc_stream.model.checkpoint import warm_start
    from avcc_stream.model.config import ModelConfig
    from avcc_stream.model.network import build_model
    from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint, random_batch

    widths = {**SMALL_WIDTHS, "patch_embedding": "pixels", "ccm_residual": True, "audio_fill": "blend"}
    source = make_random_checkpoint(tmp_path, "cc-av-1024-cpu", seed=6, **widths)
    old = load_checkpoint(source).model.eval()
    new = build_model(ModelConfig.from_preset("cc-av-1024-cpu", stem_units=2, **widths))
    started = warm_start(new, source)
    assert started.kept and all(name.startswith("vfe.stem.refine.") for name in started.kept)

    images, audio = random_batch(new.config, 2, seed=4)
    with torch.no_grad():
        expected, got = old(images, audio), new.eval()(images, audio)
    assert torch.equal(got.density, expected.density)

    new.train()
    before = {n: p.detach().clone() for n, p in new.named_parameters() if n.startswith("vfe.stem.refine.")}
    new.zero_grad()
    new(images, audio).count.sum().backward()
    torch.optim.SGD([p for n, p in new.named_parameters() if n in before], lr=0.1).step()
    moved = [n for n, p in new.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert any(n.endswith("body.2.1.weight") for n in moved)  # the zeroed scale is what opens each unit

def test_init_from_a_checkpoint_that_shares_nothing_is_an_error(tmp_path: Path) -> None:
    from avcc_stream.model.checkpoint import CheckpointError, warm_start
    from avcc_stream.model.config import ModelConfig
    from avcc_stream.model.network import build_model
    from tests.model.helpers import make_random_checkpoint

    source = make_random_checkpoint(tmp_path, "csrnet-lowres")
    with pytest.raises(CheckpointError, match="no tensor matches this model"):
        warm_start(build_model(ModelConfig.from_preset("cc-v-lowres")), source)


def test_lr_multipliers_give_each_parameter_the_longest_matching_prefix() -> None:
    from avcc_stream.model.config import ModelConfig
    from avcc_stream.model.network import build_model
    from avcc_stream.train.trainer import parameter_groups
    from tests.model.helpers import SMALL_WIDTHS

    model = build_model(ModelConfig.from_preset("cc-av-lowres", **SMALL_WIDTHS))
    groups = parameter_groups(model, 1e-3, {"afe.": 10.0, "afe.projection.": 2.0})
    assert [g["lr"] for g in groups] == [1e-3, 1e-2, 2e-3]
    names = {id(p): n for n, p in model.named_parameters()}
    base, audio, projection = ([names[id(p)] for p in g["params"]] for g in groups)
    assert projection and all(n.startswith("afe.projection.") for n in projection)
    assert audio and all(n.startswith("afe.") and not n.startswith("afe.projection.") for n in audio)
    assert base and not any(n.startswith("afe.") for n in base)
    assert len(base) + len(audio) + len(projection) == len(names)
    with pytest.raises(TrainingError, match="no parameter goes to 'audio_fill.'"):
        parameter_groups(model, 1e-3, {"audio_fill.": 25.0})
    with pytest.raises(TrainingError, match="no parameter goes to 'af'"):  # "afe." takes every "af..." name
        parameter_groups(model, 1e-3, {"af": 3.0, "afe.": 10.0})


def test_count_weighted_epochs_draw_dense_samples_more_often_and_deal_ranks_disjoint_shares() -> None:
    from avcc_stream.train.distributed import DistContext
    from avcc_stream.train.trainer import ResumableSampler

    dataset = list(range(4))
    weights = torch.tensor([1.0, 1.0, 1.0, 97.0])
    sampler = ResumableSampler(dataset, DistContext(), seed=7, weights=weights)
    sampler.set_epoch(0)
    first = list(sampler)
    assert len(first) == 4 and first == list(sampler)  # a resumed epoch repeats its draw
    draws = []
    for epoch in range(50):
        sampler.set_epoch(epoch)
        draws += [split_key(key)[0] for key in sampler]
    assert draws.count(3) / len(draws) > 0.9  # 97 % expected; a plain shuffle gives 25 %
    ranks = [ResumableSampler(dataset, DistContext(rank=r, world_size=2), seed=7, weights=weights) for r in (0, 1)]
    single = ResumableSampler(dataset, DistContext(), seed=7, weights=weights, samples_per_epoch=4)
    for s in (*ranks, single):
        s.set_epoch(3)
    shares = [list(s) for s in ranks]
    assert [len(share) for share in shares] == [2, 2]
    assert sorted(shares[0] + shares[1], key=split_key) == sorted(single, key=split_key)  # the ranks split one draw
    with pytest.raises(ValueError, match="3 sampling weights for 4 samples"):
        ResumableSampler(dataset, DistContext(), seed=7, weights=torch.ones(3))


def test_repeats_within_an_epoch_are_numbered_draws_with_their_own_augmentation(tiny_dataset: Path) -> None:
    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.training import Augmentation, CrowdTrainingDataset
    from avcc_stream.model import ModelConfig
    from avcc_stream.train.distributed import DistContext
    from avcc_stream.train.trainer import BlackoutDataset, ResumableSampler, numbered_repeats

    assert numbered_repeats([2, 0, 2, 2, 1, 0]) == [2, 0, (2, 1), (2, 2), 1, (0, 1)]
    sampler = ResumableSampler(list(range(4)), DistContext(), seed=7, weights=torch.tensor([1.0, 1.0, 1.0, 97.0]))
    sampler.set_epoch(0)
    dense = [split_key(key) for key in sampler if split_key(key)[0] == 3]
    assert len(dense) > 1 and dense == [(3, draw) for draw in range(len(dense))]
    # Each draw of one sample gets its own crop, flip and degradation; draw 0 is the plain index.
    base = CrowdTrainingDataset(open_dataset(tiny_dataset, "train"), ModelConfig.from_preset("cc-av-lowres"),
                                augment=True, seed=4, augmentation=Augmentation(
                                    crop_probability=1.0, min_crop_scale=0.5, degrade_probability=0.5))
    assert torch.equal(base[0]["image"], base[(0, 0)]["image"])
    images = [base[(0, draw)]["image"] for draw in range(4)]
    assert all(not torch.equal(images[0], other) for other in images[1:])
    assert [base[(0, draw)]["draw"] for draw in range(3)] == [0, 1, 2]
    blacked = BlackoutDataset(base, probability=0.5, seed=4)
    hidden = [torch.equal(blacked[(0, draw)]["image"], blacked.black) for draw in range(12)]
    assert any(hidden) and not all(hidden)


def test_count_weights_follow_the_counts_of_a_split_or_a_subset(tiny_dataset: Path) -> None:
    from torch.utils.data import Subset

    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.train.trainer import count_weights

    source = open_dataset(tiny_dataset, "train")
    counts = torch.tensor([sample.count for sample in source], dtype=torch.float64)
    assert count_weights(source, 0.0) is None
    torch.testing.assert_close(count_weights(source, 0.5), (1 + counts).sqrt())
    torch.testing.assert_close(count_weights(Subset(source, [2, 0]), 1.0), 1 + counts[[2, 0]])


def test_extra_training_folders_are_trained_on_with_distinct_ids_and_their_own_counts(
    tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.synth.writer import write_dataset
    from avcc_stream.train.trainer import build_datasets

    fresh = tmp_path_factory.mktemp("fresh") / "synth"
    write_dataset(fresh, count=4, seed=12, size=(256, 144), splits=(1.0, 0.0, 0.0), workers=1, max_people=30)
    data = small_config_dict(tiny_dataset)
    data["data"].update(extra_train_roots=str(fresh), count_weighting=1.0, blackout_probability=0.0)
    cfg = TrainConfig.model_validate(data)
    train_set, val_sets, weights = build_datasets(cfg, cfg.model_config_object())
    first, second = open_dataset(tiny_dataset, "train"), open_dataset(fresh, "train")
    assert len(train_set) == len(first) + len(second) == 12 and len(val_sets["regular"]) == 4  # val: root's only
    ids = [train_set[i]["id"] for i in range(len(train_set))]
    assert ids == first.ids + [f"1:{sample_id}" for sample_id in second.ids] and len(set(ids)) == 12
    counts = [s.count for s in first] + [s.count for s in second]
    torch.testing.assert_close(weights, 1 + torch.tensor(counts, dtype=torch.float64))
    assert float(train_set[8]["count"]) == pytest.approx(counts[8])  # the fresh folder's own sample and count

    out = tmp_path_factory.mktemp("run") / "run"
    result = train(cfg, out, progress=False)  # 12 samples, batch 4: 3 steps
    assert result.global_step == 3
    provenance = load_checkpoint(out / "best.safetensors").header["provenance"]
    assert (provenance["data_seed"], provenance["extra_train_data_seeds"]) == (11, [12])


def test_validation_images_are_corrupted_alike_whatever_the_augmentation_seed(tiny_dataset: Path) -> None:
    """Checks of runs with different augmentation seeds must be comparable (session 23 compared runs
    whose occluding rectangles fell elsewhere), and show what `avcc-stream evaluate --seed` shows."""
    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.degrade import setting
    from avcc_stream.data.training import CrowdTrainingDataset
    from avcc_stream.train.trainer import build_datasets

    settings = ["regular", "occlusion:0.5", "lowlight25"]

    def val_images(seed: int, val_seed: int = 0) -> dict[str, torch.Tensor]:
        data = small_config_dict(tiny_dataset)
        data["data"].update(seed=seed, val_seed=val_seed, val_settings=settings)
        cfg = TrainConfig.model_validate(data)
        _, val_sets, _ = build_datasets(cfg, cfg.model_config_object())
        return {name: torch.stack([sample["image"] for sample in val_set]) for name, val_set in val_sets.items()}

    first, other_augmentation, other_val_seed = val_images(5), val_images(6), val_images(5, val_seed=1)
    for name in settings:
        torch.testing.assert_close(first[name], other_augmentation[name], rtol=0, atol=0)
    assert not torch.equal(first["occlusion:0.5"], other_val_seed["occlusion:0.5"])
    assert not torch.equal(first["lowlight25"], other_val_seed["lowlight25"])
    model_cfg = TrainConfig.model_validate(small_config_dict(tiny_dataset)).model_config_object()
    evaluated = CrowdTrainingDataset(open_dataset(tiny_dataset, "val"), model_cfg, augment=False,
                                     degradation=setting("occlusion:0.5"), seed=0)  # as evaluate --seed 0 builds it
    torch.testing.assert_close(first["occlusion:0.5"], torch.stack([s["image"] for s in evaluated]), rtol=0, atol=0)


def test_blacked_out_frames_are_black_and_not_clear(tiny_dataset: Path) -> None:
    """The picture-count loss must never ask the picture to count a frame the blackout hid."""
    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.training import Augmentation, CrowdTrainingDataset
    from avcc_stream.model import ModelConfig
    from avcc_stream.train.trainer import BlackoutDataset

    base = CrowdTrainingDataset(open_dataset(tiny_dataset, "train"), ModelConfig.from_preset("cc-av-lowres"),
                                augment=True, augmentation=Augmentation(degrade_probability=0.0))
    assert all(base[i]["clear"] for i in range(len(base)))
    blacked = BlackoutDataset(base, probability=1.0, seed=0)
    items = [blacked[i] for i in range(len(blacked))]
    assert all(item["clear"] is False and torch.equal(item["image"], blacked.black) for item in items)
    assert [item["count"] for item in items] == [base[i]["count"] for i in range(len(base))]


@pytest.mark.parametrize(("weight", "column"), [("loss_weight_picture_count", "picture"),
                                               ("loss_weight_sound_count", "sound")])
def test_a_run_with_a_fill_count_term_trains_and_saves(tiny_dataset: Path, tmp_path: Path, weight: str,
                                                       column: str) -> None:
    data = small_config_dict(tiny_dataset)
    data["model"]["overrides"].update({"patch_embedding": "pixels", "ccm_residual": True, "audio_fill": "blend",
                                       weight: 1.0})
    result = train(TrainConfig.model_validate(data), tmp_path / "run", progress=False)
    assert result.global_step == 2
    header = read_checkpoint_header(tmp_path / "run" / "best.safetensors")
    assert header["model_config"][weight] == 1.0
    # steps.csv logs the term on its own: positive, since the tiny set's frames are clear and counted.
    steps = list(csv.DictReader((tmp_path / "run" / "steps.csv").open()))
    assert len(steps) == 2 and all(float(row[column]) > 0 for row in steps)


def test_bf16_on_a_cpu_without_bf16_instructions_gets_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from avcc_stream.train import trainer

    assert isinstance(trainer.cpu_has_bf16(), bool)  # what oneDNN says of this machine's CPU
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: False)
    assert "set train.amp" in trainer.amp_warning(torch.bfloat16, cpu)
    assert trainer.amp_warning(None, cpu) is None  # float32
    assert trainer.amp_warning(torch.bfloat16, cuda) is None
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: True)
    assert trainer.amp_warning(torch.bfloat16, cpu) is None


def test_hard_example_weights_come_from_an_evaluate_report_of_the_training_split(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """`avcc-stream evaluate --split train` of a trained model -> each training scene drawn with
    1 + strength * error / mean error times its count weight; a report of another folder, or of
    two checkpoints, is refused by name."""
    import json

    from avcc_stream.cli import main
    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.train.trainer import build_datasets
    from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

    from avcc_stream.data.synth.writer import write_dataset

    fresh = tmp_path / "fresh"  # a second training folder, whose ids repeat the first's
    write_dataset(fresh, count=4, seed=12, size=(256, 144), splits=(1.0, 0.0, 0.0), workers=1, max_people=30)
    (tmp_path / "ckpt").mkdir()
    checkpoint = make_random_checkpoint(tmp_path / "ckpt", "cc-av-lowres", seed=1, **SMALL_WIDTHS)
    errors = []
    for folder in (tiny_dataset, fresh):
        out = tmp_path / "hard" / folder.name
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(folder), "--split", "train",
                     "--settings", "regular", "--occlusion-rates", "", "--worst", "0", "--out", str(out),
                     "--no-progress"]) == 0
        report = json.loads((out / "report.json").read_text())
        (predicted,) = report["predictions"].values()
        errors += [abs(predicted["regular"][i] - report["true_counts"][i]) for i in open_dataset(folder, "train").ids]
    errors = torch.tensor(errors, dtype=torch.float64)
    assert errors.max() > errors.min()  # a random model miscounts some scenes more than others

    data = small_config_dict(tiny_dataset)
    report_paths = [str(tmp_path / "hard" / folder.name / "report.json") for folder in (fresh, tiny_dataset)]
    data["data"].update(hard_example_reports=report_paths, hard_example_weighting=2.0, count_weighting=0.5,
                        extra_train_roots=str(fresh))
    cfg = TrainConfig.model_validate(data)
    _, _, weights = build_datasets(cfg, cfg.model_config_object())
    samples = [*open_dataset(tiny_dataset, "train"), *open_dataset(fresh, "train")]
    counts = torch.tensor([s.count for s in samples], dtype=torch.float64)
    hardness = weights / (1 + counts).sqrt()
    torch.testing.assert_close(hardness, 1 + 2.0 * errors / errors.mean())  # each folder's scenes by its report
    assert hardness.mean().item() == pytest.approx(3.0)  # 1 + strength on average, at least 1 each
    assert int(hardness.argmax()) == int(errors.argmax())
    data["data"]["extra_train_roots"] = []
    report = json.loads(Path(report_paths[1]).read_text())
    (predicted,) = report["predictions"].values()

    other = dict(report, dataset=str(tmp_path / "elsewhere"))
    (tmp_path / "other.json").write_text(json.dumps(other))
    data["data"]["hard_example_reports"] = str(tmp_path / "other.json")
    cfg = TrainConfig.model_validate(data)
    with pytest.raises(ValueError, match=f"no hard-example report covers training folder {tiny_dataset}"):
        build_datasets(cfg, cfg.model_config_object())
    two = dict(report, predictions={"a": predicted, "b": predicted})
    (tmp_path / "two.json").write_text(json.dumps(two))
    data["data"]["hard_example_reports"] = str(tmp_path / "two.json")
    cfg = TrainConfig.model_validate(data)
    with pytest.raises(ValueError, match="holds 2 checkpoints"):
        build_datasets(cfg, cfg.model_config_object())


def test_frozen_parts_keep_their_weights_and_batch_norm_statistics_while_the_rest_trains(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """optim.frozen: [vfe.] retrains the sound path under a fixed picture path; batch norm in the
    frozen part must not move its running statistics either (requires_grad alone would)."""
    from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint

    (tmp_path / "init").mkdir()
    start = make_random_checkpoint(tmp_path / "init", "cc-av-lowres", seed=4, **SMALL_WIDTHS)
    data = small_config_dict(tiny_dataset, ema_decay=0.9)
    data["model"]["init_from"] = str(start)
    data["optim"].update(frozen="vfe.", lr_multipliers={"vfe.stem.": 5.0, "afe.": 2.0})
    out = tmp_path / "run"
    result = train(TrainConfig.model_validate(data), out, progress=False)
    assert result.global_step == 2
    before = load_checkpoint(start).model.state_dict()
    for name in ("last.safetensors", "best.safetensors"):  # the raw weights and the moving average
        after = load_checkpoint(out / name).model.state_dict()
        frozen = [k for k in after if k.startswith("vfe.")]
        assert any(k.endswith("running_mean") for k in frozen) and len(frozen) > 20
        for key in frozen:
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=f"{name}: {key} moved")
        trained = [k for k in after if k.startswith("afe.") and after[k].is_floating_point()]
        assert any(not torch.equal(after[k], before[k]) for k in trained), name

    data["optim"]["frozen"] = ["vfe.", "no_such_part."]
    with pytest.raises(TrainingError, match="optim.frozen: no parameter name starts with 'no_such_part.'"):
        train(TrainConfig.model_validate(data), tmp_path / "bad", progress=False)
