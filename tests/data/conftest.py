"""Tiny fixtures written in each real dataset format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.io.wavfile
from PIL import Image


def write_jpg(path: Path, width: int = 40, height: int = 30, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return pixels


def write_shanghaitech_mat(path: Path, points: np.ndarray) -> None:
    """ShanghaiTech's ground truth: image_info is a 1x1 cell holding a 1x1 struct with fields
    location (N x 2) and number, so points sit at image_info[0,0][0,0][0]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = np.zeros((1, 1), dtype=[("location", "O"), ("number", "O")])
    struct[0, 0]["location"] = np.asarray(points, dtype=np.float64)
    struct[0, 0]["number"] = np.array([[len(points)]], dtype=np.float64)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = struct
    scipy.io.savemat(path, {"image_info": cell})


def write_wav(path: Path, seconds: float, rate: int = 48_000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    data = tone if channels == 1 else np.stack([tone, tone // 2], axis=1)
    scipy.io.wavfile.write(path, rate, data)


@pytest.fixture
def disco_root(tmp_path: Path) -> Path:
    """DISCO: imgs/, auds/, density/{train,val,test}/ with macOS litter; one short wav."""
    root = tmp_path / "DISCO"
    samples = {"train": ["001", "002", "003"], "val": ["004"], "test": ["005", "006"]}
    for split, ids in samples.items():
        for i, sample_id in enumerate(ids):
            write_jpg(root / "imgs" / f"{sample_id}.jpg", seed=int(sample_id))
            short = sample_id == "002"
            write_wav(root / "auds" / f"{sample_id}.wav", 0.5 if short else 1.0,
                      channels=2 if sample_id == "003" else 1)
            density = np.zeros((30, 40), dtype=np.float32)
            density[10, 10 + i] = 1.5 + i  # a map summing to 1.5 + i heads
            (root / "density" / split).mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(root / "density" / split / f"{sample_id}.mat", {"map": density})
    # the reference release's litter: AppleDouble files and .DS_Store everywhere
    for folder in ("imgs", "auds", "density/train", "density/test"):
        (root / folder / "._001.jpg").write_bytes(b"\x00\x05\x16\x07junk")
        (root / folder / ".DS_Store").write_bytes(b"junk")
    (root / "density" / "train" / "._001.mat").write_bytes(b"junk")
    return root


@pytest.fixture
def plain_root(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    points = {"a": [[1, 2], [3, 4]], "b": [], "c": [[39.5, 29.5]]}
    for i, (sample_id, pts) in enumerate(points.items()):
        write_jpg(root / "images" / f"{sample_id}.jpg", seed=i)
        (root / "points").mkdir(parents=True, exist_ok=True)
        (root / "points" / f"{sample_id}.json").write_text(json.dumps(pts))
    write_wav(root / "audio" / "a.wav", 1.0, rate=16_000)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\n# a comment\n\nb\n")
    (root / "splits" / "test.txt").write_text("c\n")
    return root
