"""Readers on tiny fixtures written in each real on-disk format, and layout detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from avcc_stream.data.datasets import (
    DatasetLayoutError,
    DiscoDataset,
    PlainDataset,
    QnrfDataset,
    ShanghaiTechDataset,
    detect_layout,
    open_dataset,
)

from .conftest import write_jpg, write_shanghaitech_mat, write_wav


def test_disco_split_is_the_density_folder_and_hidden_files_are_skipped(disco_root: Path):
    train = open_dataset(disco_root, "train")
    assert isinstance(train, DiscoDataset)
    assert train.ids == ["001", "002", "003"]  # no '._001', no '.DS_Store'
    assert open_dataset(disco_root, "val").ids == ["004"]
    assert open_dataset(disco_root, "test").ids == ["005", "006"]


def test_disco_sample_has_image_audio_and_the_density_maps_count(disco_root: Path):
    sample = open_dataset(disco_root, "train")[0]
    assert sample.id == "001"
    assert sample.image.shape == (30, 40, 3) and sample.image.dtype == np.uint8
    assert sample.points is None  # the release ships density maps, not points
    assert sample.density.shape == (30, 40)
    assert sample.count == pytest.approx(1.5)
    assert sample.audio.shape == (1, 48_000) and sample.audio.dtype == np.float32
    assert sample.sample_rate == 48_000
    assert np.abs(sample.audio).max() == pytest.approx(0.3, abs=0.01)  # int16 scaled to [-1, 1]


def test_disco_stereo_wav_keeps_its_channels(disco_root: Path):
    sample = open_dataset(disco_root, "train")[2]
    assert sample.audio.shape == (2, 48_000)


def test_disco_short_wav_is_padded_to_one_second_and_counted(disco_root: Path):
    train = open_dataset(disco_root, "train")
    samples = list(train)
    short = samples[1]
    assert short.audio.shape == (1, 48_000)
    assert short.meta["audio_padded"] is True
    assert not short.audio[0, 24_000:].any()  # the padding is silence
    assert train.audio_padded == {"002"}


def test_disco_uses_raw_dot_annotations_when_present(disco_root: Path):
    (disco_root / "points").mkdir()
    (disco_root / "points" / "004.json").write_text(json.dumps([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    (disco_root / "points" / "005.txt").write_text("# x y\n1 2\n3,4\n\n")
    assert open_dataset(disco_root, "val")[0].points.tolist() == [[1, 2], [3, 4], [5, 6]]
    test_sample = open_dataset(disco_root, "test")[0]
    assert test_sample.count == 2.0 and test_sample.density is None


def test_count_of_reads_only_the_annotation_and_agrees_with_the_sample(disco_root: Path, plain_root: Path):
    (disco_root / "points").mkdir()
    (disco_root / "points" / "005.json").write_text(json.dumps([[1.0, 2.0], [3.0, 4.0]]))
    for dataset in (open_dataset(disco_root, "test"), open_dataset(disco_root, "train"), open_dataset(plain_root, "train")):
        for sample_id, sample in zip(dataset.ids, dataset, strict=True):
            assert dataset.count_of(sample_id) == pytest.approx(sample.count), (dataset, sample_id)
    assert open_dataset(disco_root, "test").count_of("005") == 2.0


def test_disco_missing_split_names_the_splits_found(disco_root: Path):
    import shutil

    shutil.rmtree(disco_root / "density" / "val")
    with pytest.raises(DatasetLayoutError, match=r"no split 'val'; available: train, test"):
        open_dataset(disco_root, "val")


def test_disco_missing_image_names_the_sample(disco_root: Path):
    (disco_root / "imgs" / "005.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 test sample\(s\) have no image in imgs/: 005"):
        open_dataset(disco_root, "test")


def test_disco_density_without_the_map_key_names_the_file_and_keys(disco_root: Path):
    scipy.io.savemat(disco_root / "density" / "val" / "004.mat", {"density": np.zeros((30, 40))})
    with pytest.raises(DatasetLayoutError, match=r"004\.mat: expected key 'map', found \['density'\]"):
        open_dataset(disco_root, "val")[0]


def test_shanghaitech_reads_points_from_the_nested_image_info_struct(tmp_path: Path):
    part = tmp_path / "part_A"
    points = np.array([[1.5, 2.5], [30.0, 20.0], [39.9, 29.9]])
    for split, n in (("train", 2), ("test", 1)):
        for i in range(1, n + 1):
            write_jpg(part / f"{split}_data" / "images" / f"IMG_{i}.jpg")
            write_shanghaitech_mat(part / f"{split}_data" / "ground-truth" / f"GT_IMG_{i}.mat", points[: i + 1])
    train = open_dataset(part, "train")
    assert isinstance(train, ShanghaiTechDataset)
    assert train.ids == ["IMG_1", "IMG_2"]
    np.testing.assert_allclose(train[1].points, points[:3])
    assert train[1].audio is None and train[1].sample_rate is None
    assert len(open_dataset(part, "test")) == 1
    with pytest.raises(DatasetLayoutError, match="no split 'val'; available: train, test"):
        open_dataset(part, "val")
    with pytest.raises(DatasetLayoutError, match="a ShanghaiTech root; open one part"):
        open_dataset(tmp_path, "train")


def test_shanghaitech_missing_ground_truth_names_the_image(tmp_path: Path):
    write_jpg(tmp_path / "train_data" / "images" / "IMG_7.jpg")
    (tmp_path / "train_data" / "ground-truth").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"ground-truth/GT_<id>\.mat: IMG_7"):
        open_dataset(tmp_path, "train")


def test_qnrf_reads_ann_points(tmp_path: Path):
    for folder in ("Train", "Test"):
        write_jpg(tmp_path / folder / "img_0001.jpg")
        scipy.io.savemat(tmp_path / folder / "img_0001_ann.mat", {"annPoints": np.array([[3.0, 4.0], [5.0, 6.0]])})
    (tmp_path / "Train" / "._img_0001.jpg").write_bytes(b"junk")
    dataset = open_dataset(tmp_path, "train")
    assert isinstance(dataset, QnrfDataset)
    assert dataset.ids == ["img_0001"]
    assert dataset[0].points.tolist() == [[3, 4], [5, 6]]


def test_qnrf_wrong_key_names_the_keys_found(tmp_path: Path):
    write_jpg(tmp_path / "Test" / "img_0002.jpg")
    scipy.io.savemat(tmp_path / "Test" / "img_0002_ann.mat", {"points": np.zeros((1, 2))})
    with pytest.raises(DatasetLayoutError, match=r"expected key 'annPoints', found \['points'\]"):
        open_dataset(tmp_path, "test")[0]


def test_plain_layout_reads_points_optional_audio_and_split_lists(plain_root: Path):
    train = open_dataset(plain_root, "train")
    assert isinstance(train, PlainDataset)
    assert train.ids == ["a", "b"]
    a, b = train[0], train[1]
    assert a.points.tolist() == [[1, 2], [3, 4]] and a.sample_rate == 16_000
    assert b.count == 0 and b.points.shape == (0, 2) and b.audio is None
    assert open_dataset(plain_root, "test")[0].count == 1


def test_plain_layout_bad_points_file_names_it(plain_root: Path):
    (plain_root / "points" / "a.json").write_text('[[1, 2, 3]]')
    with pytest.raises(DatasetLayoutError, match=r"a\.json: expected a list of \[x, y\] pairs"):
        open_dataset(plain_root, "train")[0]


def test_dot_annotations_txt_errors_name_the_line(tmp_path: Path, disco_root: Path):
    (disco_root / "points").mkdir()
    (disco_root / "points" / "004.txt").write_text("1 2\n3 4 5\n")
    with pytest.raises(DatasetLayoutError, match=r"004\.txt:2: expected 'x y'"):
        open_dataset(disco_root, "val")[0]


def test_wrong_layout_error_says_what_was_expected_and_what_was_found(tmp_path: Path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "labels.csv").write_text("x")
    with pytest.raises(DatasetLayoutError) as error:
        open_dataset(tmp_path, "train")
    message = str(error.value)
    assert "Expected one of: DISCO (imgs/, auds/, density/" in message
    assert "UCF-QNRF" in message and "ShanghaiTech" in message and "plain" in message
    assert "Found: labels.csv, pictures/" in message


def test_missing_folder_and_unknown_layout_are_clear(tmp_path: Path, plain_root: Path):
    with pytest.raises(DatasetLayoutError, match="no such dataset folder"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(DatasetLayoutError, match="unknown layout 'coco'"):
        open_dataset(plain_root, "train", layout="coco")


def test_indexing_out_of_range_raises_index_error(plain_root: Path):
    dataset = open_dataset(plain_root, "train")
    assert dataset[-1].id == "b"
    with pytest.raises(IndexError):
        dataset[2]


def test_short_wav_in_plain_layout_is_padded_not_fatal(plain_root: Path):
    write_wav(plain_root / "audio" / "b.wav", 0.25, rate=22_050, channels=2)
    sample = open_dataset(plain_root, "train")[1]
    assert sample.audio.shape == (2, 22_050) and sample.meta["audio_padded"]
