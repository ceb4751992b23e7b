"""`avcc-stream evaluate` on a tiny dataset: a complete Table-1 report, the curve and overlays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avcc_stream.cli import main
from avcc_stream.data.datasets import open_dataset
from avcc_stream.train.evaluate import TABLE_COLUMNS, evaluate_setting, load_candidates, run_evaluation
from tests.model.helpers import SMALL_WIDTHS, make_random_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("ckpt")
    (base / "a").mkdir()
    (base / "v").mkdir()
    return [
        make_random_checkpoint(base / "a", "cc-av-lowres", seed=1, **SMALL_WIDTHS),
        make_random_checkpoint(base / "v", "cc-v-lowres", seed=2, **SMALL_WIDTHS),
    ]


def test_evaluate_command_writes_a_complete_report(tiny_dataset: Path, checkpoints: list[Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    args = ["evaluate", "--dataset", str(tiny_dataset), "--out", str(out), "--occlusion-rates", "0,0.5,1",
            "--worst", "2", "--seed", "4", "--no-progress"]
    for path in checkpoints:
        args += ["--checkpoint", str(path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    assert markdown in printed
    for _, title in TABLE_COLUMNS:
        assert title in markdown
    assert "Average" in markdown and "Low-light mode: random" in markdown
    report = json.loads((out / "report.json").read_text())
    assert report["samples"] == 4 and report["low_light_mode"] == "random" and report["seed"] == 4
    assert set(report["table"]) == {"cc-av-lowres", "cc-v-lowres"}
    for row in report["table"].values():
        assert set(row) == {name for name, _ in TABLE_COLUMNS} | {"average"}
        for cell in row.values():
            assert cell["mae"] >= 0 and cell["rmse"] >= cell["mae"]
    assert report["occlusion_curve"]["rates"] == [0.0, 0.5, 1.0]
    assert all(len(v) == 3 for v in report["occlusion_curve"]["mae"].values())
    # Occlusion rate 0 is the regular setting: same images, same counts.
    for label, row in report["table"].items():
        assert report["occlusion_curve"]["mae"][label][0] == pytest.approx(row["regular"]["mae"], abs=1e-4)
    # The regular setting per crowd size covers every image once, and its MAE is the table's.
    assert "Regular setting by crowd size" in markdown
    for label, bins in report["regular_by_count"].items():
        assert sum(b["n"] for b in bins) == 4
        weighted = sum(b["n"] * b["mae"] for b in bins) / 4
        assert weighted == pytest.approx(report["table"][label]["regular"]["mae"], abs=1e-3)
    assert (out / "occlusion.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["cc-av-lowres.png", "cc-v-lowres.png"]


def test_same_corruption_for_every_checkpoint_and_every_run(tiny_dataset: Path, checkpoints: list[Path]) -> None:
    first = load_candidates([str(checkpoints[0])], device=__import__("torch").device("cpu"))
    both = load_candidates([str(p) for p in checkpoints], device=__import__("torch").device("cpu"))
    alone = run_evaluation(first, tiny_dataset, "test", seed=9, low_light_mode="fixed", limit=2)
    together = run_evaluation(both, tiny_dataset, "test", seed=9, low_light_mode="fixed", limit=2)
    assert [name for name, _ in together.columns][-1] == "lowlight50-fixed"
    for name, _ in together.columns:
        # CC-AV counts the same whether or not another checkpoint shares its batches.
        assert together.table[name]["cc-av-lowres"].predictions == pytest.approx(
            alone.table[name]["cc-av-lowres"].predictions, abs=1e-4)


def test_bad_occlusion_rates_and_missing_checkpoint(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", "x.safetensors", "--dataset", str(tiny_dataset),
                 "--occlusion-rates", "0,2"]) == 2
    assert "every rate must be in [0, 1]" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "builtin:nope", "--dataset", str(tiny_dataset)]) == 2
    assert "no built-in checkpoint 'nope'" in capsys.readouterr().err


def test_report_says_how_much_of_a_fill_models_count_the_picture_supplies(
    tiny_dataset: Path, checkpoints: list[Path], tmp_path: Path
) -> None:
    from avcc_stream.model import ModelConfig, build_model
    from avcc_stream.model.checkpoint import save_checkpoint
    from avcc_stream.train.report import markdown_report

    torch.manual_seed(5)
    cfg = ModelConfig.from_preset("cc-av-lowres", patch_embedding="pixels", ccm_residual=True, audio_fill="add",
                                  **SMALL_WIDTHS)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.vfe.merge_head.head[1].bias.fill_(1.0)  # a random head's map is all zeros: give the picture a count
        model.audio_fill.beta.fill_(2.0)  # the sound adds to every patch: the picture's share < 1
    fill_path = save_checkpoint(tmp_path / "fill.safetensors", model, provenance={"source": "test"})
    device = torch.device("cpu")
    candidates = load_candidates([str(fill_path), str(checkpoints[1])], device)
    evaluation = run_evaluation(candidates, tiny_dataset, "test", seed=1, occlusion_rates=[1.0], limit=3)
    label = candidates[0].label
    assert evaluation.fill_labels() == [label]  # CC-V has no fill and no such row

    # By hand, at the regular setting: the picture's own counts against the truth and the model's counts.
    from avcc_stream.data.datasets import open_dataset
    from avcc_stream.data.training import CrowdTrainingDataset

    items = [CrowdTrainingDataset(open_dataset(tiny_dataset, "test"), cfg, augment=False, seed=1)[i] for i in range(3)]
    with torch.no_grad():
        out = model(torch.stack([i["image"] for i in items]), torch.stack([i["audio"] for i in items]))
    truth = torch.stack([i["count"] for i in items])
    regular = evaluation.table["regular"][label]
    assert regular.picture.mae == pytest.approx(float((out.picture_count - truth).abs().mean()), rel=1e-4)
    assert regular.picture_share == pytest.approx(float(out.picture_count.sum() / out.count.sum()), rel=1e-4)
    assert 0 < regular.picture_share < 1
    assert regular.sound.mae == pytest.approx(float((out.sound_count - truth).abs().mean()), rel=1e-4)

    markdown = markdown_report(evaluation)
    assert "MAE of the sound's own count of the whole frame" in markdown and f"{label} {regular.sound.mae:.2f}." in markdown
    assert "Where the count comes from" in markdown and f"| {label} | {regular.picture.mae:.2f} (" in markdown
    assert "Occlusion 1 |" in markdown
    assert not any(line.startswith(f"| {candidates[1].label} |") for line in markdown.split("Where the count")[1].splitlines())


def test_evaluate_on_chosen_settings_in_bf16(tiny_dataset: Path, checkpoints: list[Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--settings narrows Table 1 (the average says over how many columns); --precision bf16
    counts under autocast, as a deployment with model.amp does, and the report says so."""
    out = tmp_path / "bf16"
    args = ["evaluate", "--dataset", str(tiny_dataset), "--out", str(out), "--occlusion-rates", "",
            "--worst", "0", "--settings", "regular,noise50", "--precision", "bf16", "--no-progress"]
    for path in checkpoints:
        args += ["--checkpoint", str(path)]
    assert main(args) == 0
    markdown = (out / "report.md").read_text()
    assert "Precision: bf16 autocast" in markdown and "| Average (2 of 6) |" in markdown
    assert "Low resolution" not in markdown and "Noise B=50" in markdown
    report = json.loads((out / "report.json").read_text())
    assert report["precision"] == "bf16"
    for row in report["table"].values():
        assert set(row) == {"regular", "noise50", "average"}
        assert row["average"]["mae"] == pytest.approx((row["regular"]["mae"] + row["noise50"]["mae"]) / 2, abs=1e-3)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(checkpoints[0]), "--dataset", str(tiny_dataset),
                 "--settings", "regular,dark"]) == 2
    assert "unknown setting(s) dark: expected some of regular, lowres" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(checkpoints[0]), "--dataset", str(tiny_dataset),
                 "--settings", "noise25"]) == 2
    assert "must include regular" in capsys.readouterr().err



def test_flip_average_counts_the_mean_of_a_frame_and_its_mirror_image(tiny_dataset: Path, checkpoints: list[Path],
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--flip-average: every count is the mean of the plain pass and the mirrored one, and the
    report says so."""
    cpu = torch.device("cpu")
    candidates = load_candidates([str(checkpoints[0])], cpu)
    source = open_dataset(tiny_dataset, "test")
    label, model = candidates[0].label, candidates[0].model

    def counts(flip_average: bool = False) -> dict[str, float]:
        return evaluate_setting(candidates, source, "regular", 0, 4, cpu, flip_average=flip_average)[label].predictions

    plain, averaged = counts(), counts(flip_average=True)
    plain_forward = model.forward
    monkeypatch.setattr(model, "forward", lambda images, audio: plain_forward(images.flip(-1), audio))
    mirrored = counts()
    monkeypatch.undo()
    assert set(averaged) == set(plain) and len(plain) == len(source)
    for sample_id, count in averaged.items():
        assert count == pytest.approx((plain[sample_id] + mirrored[sample_id]) / 2, rel=1e-4, abs=1e-5)
    assert any(abs(averaged[i] - plain[i]) > 1e-6 for i in plain)

    out = tmp_path / "flip"
    assert main(["evaluate", "--checkpoint", str(checkpoints[0]), "--dataset", str(tiny_dataset), "--out", str(out),
                 "--occlusion-rates", "", "--settings", "regular", "--worst", "1", "--flip-average",
                 "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["flip_average"] is True
    assert "mirror image's (--flip-average)" in (out / "report.md").read_text()
    assert report["table"][label]["regular"]["mae"] == pytest.approx(
        sum(abs(averaged[i] - report["true_counts"][i]) for i in averaged) / len(averaged), abs=1e-3)
