"""Training configs: defaults are the paper's, and every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from avcc_stream.train.config import ConfigError, load_config
from tests.train.conftest import small_config_dict, write_config


def _assert_rejected(path: Path, text: str, pattern: str) -> None:
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_paper_defaults(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", {"model": {"preset": "cc-av"}, "data": {"root": "x"}}))
    assert (cfg.optim.lr, cfg.optim.gamma, cfg.optim.weight_decay, cfg.optim.schedule) == (1e-5, 0.99, 1e-4, "exponential")
    assert cfg.train.batch_size == 4
    assert cfg.model_config_object().dropout == 0.3


def test_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    data = small_config_dict(tmp_path)
    data["optim"]["learning_rate"] = 0.1
    path = write_config(tmp_path / "typo.yaml", data)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "learning_rate" in text)
    with pytest.raises(ConfigError, match=rf"typo\.yaml:{line}:\d+: optim\.learning_rate: Extra inputs are not permitted"):
        load_config(path)


def test_every_problem_is_one_line_naming_where_its_value_was_set(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "model:\n  preset: cc-v-lowres\ndata:\n  root: x\ntrain:\n  amp: bf17\n  epochs: 3\n")
    (tmp_path / "run.yaml").write_text("extends: base.yaml\noptim:\n  lr: -1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "run.yaml", ["data.seed=x"])
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert any(line.startswith("--set data.seed: data.seed: Input should be a valid integer") for line in lines)
    assert any(line.startswith(f"{tmp_path / 'run.yaml'}:3:7: optim.lr: Input should be greater than 0") for line in lines)
    # A value from the parent is blamed on the parent's line, with the file that extended it.
    assert any(line.startswith(f"{tmp_path / 'base.yaml'}:6:8 (extended by {tmp_path / 'run.yaml'}): train.amp:")
               for line in lines)
    # An empty section is blamed on its own line; a missing one has no line, so the file is named.
    _assert_rejected(tmp_path / "bare.yaml", "extends: base.yaml\ndata: null\n",
                     r"bare\.yaml:2:\d+: data: Input should be a valid dictionary")
    _assert_rejected(tmp_path / "nodata.yaml", "model:\n  preset: cc-v-lowres\n", r"nodata\.yaml: data: Field required")


def test_bad_value_and_bad_preset(tmp_path: Path) -> None:
    data = small_config_dict(tmp_path)
    data["train"]["batch_size"] = 0
    with pytest.raises(ConfigError, match=r"train\.batch_size: .*greater than or equal to 1"):
        load_config(write_config(tmp_path / "a.yaml", data))
    data = small_config_dict(tmp_path, preset="cc-xl")
    with pytest.raises(ConfigError, match=r"unknown model preset 'cc-xl'"):
        load_config(write_config(tmp_path / "b.yaml", data))
    data = small_config_dict(tmp_path)
    data["model"]["overrides"]["embed_dims"] = 3
    with pytest.raises(ConfigError, match=r"embed_dims"):
        load_config(write_config(tmp_path / "c.yaml", data))
    data = small_config_dict(tmp_path)
    data["data"]["hard_example_weighting"] = 1.0  # without the reports it would weight by guess
    with pytest.raises(ConfigError, match=r"data: .*hard_example_weighting > 0 needs hard_example_reports"):
        load_config(write_config(tmp_path / "d.yaml", data))


def test_missing_file_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_set_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", small_config_dict(tmp_path))
    cfg = load_config(path, ["train.epochs=7", "optim.lr=2e-4", "data.augment=false"])
    assert (cfg.train.epochs, cfg.optim.lr, cfg.data.augment) == (7, 2e-4, False)
    # YAML reads a bare `off` as false; amp's `off` still means off, in the file and in --set.
    assert load_config(path, ["train.amp=off"]).train.amp == "off"
    (tmp_path / "amp.yaml").write_text(path.read_text().replace("train:\n", "train:\n  amp: off\n", 1))
    assert load_config(tmp_path / "amp.yaml").train.amp == "off"
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        load_config(path, ["train.epochz=3"])


def test_extends_lays_a_file_over_its_parent(tmp_path: Path) -> None:
    data = small_config_dict(tmp_path)
    data["optim"]["lr_multipliers"] = {"vfe.": 3.0}
    write_config(tmp_path / "base.yaml", data)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "child.yaml").write_text(
        "extends: ../base.yaml\noptim:\n  lr: 2.0e-6\n  lr_multipliers: {afe.: 4.0}\n"
        "data:\n  val_settings: [lowres]\n"
    )
    child = load_config(tmp_path / "runs" / "child.yaml")
    base = load_config(tmp_path / "base.yaml")
    # Mappings merge key by key; lists and values replace; what the child leaves out is the parent's.
    assert child.optim.lr == 2e-6 and base.optim.lr != 2e-6
    assert child.optim.lr_multipliers == {"vfe.": 3.0, "afe.": 4.0}
    assert child.data.val_settings == ["lowres"]
    assert (child.model, child.train) == (base.model, base.train)
    # --set still has the last word, and a grandchild sees both layers.
    (tmp_path / "grandchild.yaml").write_text("extends: runs/child.yaml\ntrain:\n  epochs: 9\n")
    grand = load_config(tmp_path / "grandchild.yaml", ["optim.lr=3e-6"])
    assert (grand.train.epochs, grand.optim.lr, grand.data.val_settings) == (9, 3e-6, ["lowres"])


def test_extends_errors_name_the_files(tmp_path: Path) -> None:
    _assert_rejected(tmp_path / "orphan.yaml", "extends: gone.yaml\n",
                     r"gone\.yaml: no such config file \(extended by .*orphan\.yaml\)")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a cycle"):
        load_config(tmp_path / "a.yaml")
    _assert_rejected(tmp_path / "num.yaml", "extends: 3\n", r"num\.yaml: extends: expected the path")
    # A bad key in the parent: the message names the child and the parent it came through.
    data = small_config_dict(tmp_path)
    data["optim"]["learning_rate"] = 0.1
    write_config(tmp_path / "typo.yaml", data)
    (tmp_path / "kid.yaml").write_text("extends: typo.yaml\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml:\d+:\d+ \(extended by .*kid\.yaml\): optim\.learning_rate"):
        load_config(tmp_path / "kid.yaml")


def test_shipped_and_paper_configs_are_valid() -> None:
    configs = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "train").glob("*.yaml"))
    names = {p.stem for p in configs}
    for preset in ("cc-av", "cc-v", "cc-av-lowres", "cc-v-lowres", "csrnet", "csrnet-lowres",
                   "audiocsrnet", "audiocsrnet-lowres"):
        assert preset in names
    for path in configs:
        cfg = load_config(path)
        assert cfg.model_config_object().name == cfg.model.preset


def test_session_13_config_is_the_run_as_launched() -> None:
    """The run was launched as its parent plus --set flags (docs/results.md); the file must match."""
    train_dir = Path(__file__).resolve().parents[2] / "configs" / "train"
    as_file = load_config(train_dir / "shipped-cc-av-1024-cpu-decay.yaml")
    as_run = load_config(train_dir / "shipped-cc-av-1024-cpu-sound-lr.yaml", [
        "model.init_from=data/init/cc-av-1024-cpu-session12.safetensors", "optim.gamma=0.85",
        "data.seed=25", "train.seed=25", "train.epochs=13",
    ])
    assert as_file == as_run


def test_validation_settings_are_checked_by_name(tmp_path: Path) -> None:
    data = small_config_dict(tmp_path)
    data["data"]["val_settings"] = "lowlight25"
    assert load_config(write_config(tmp_path / "one.yaml", data)).data.val_settings == ["lowlight25"]
    data["data"]["val_settings"] = ["regular", "darkness"]
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: data\.val_settings: .*unknown degradation setting 'darkness'"):
        load_config(write_config(tmp_path / "bad.yaml", data))
    data["data"]["val_settings"] = ["regular", "regular"]
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(write_config(tmp_path / "twice.yaml", data))


def test_check_config_reads_training_configs_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from avcc_stream.cli import main

    shipped = Path(__file__).resolve().parents[2] / "configs" / "train" / "shipped-cc-av-1024-cpu-from-cc-v16.yaml"
    assert main(["check-config", str(shipped), "--set", "train.epochs=2", "--print"]) == 0
    out = capsys.readouterr().out
    assert f"{shipped}: valid training config" in out
    assert "preset cc-av-1024-cpu" in out and "2 epoch(s), batch 8" in out and "EMA 0.995" in out
    assert '"epochs": 2' in out  # --print shows the config as it would run, --set applied
    (tmp_path / "base.yaml").write_text("model:\n  preset: cc-v-lowres\ndata:\n  root: x\n")
    (tmp_path / "run.yaml").write_text("extends: base.yaml\ntrain:\n  batch_size: 0\n")
    assert main(["check-config", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"invalid training config (1 problem(s)):\n{tmp_path / 'run.yaml'}:3:15: train.batch_size:" in err
