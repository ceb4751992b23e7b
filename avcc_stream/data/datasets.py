"""Readers for the crowd-counting datasets as they lie on disk, and layout autodetection.

Every reader is a sequence of `CrowdSample`s for one split, loaded lazily (a sample is read
when it is indexed), with the pairing of files checked when the reader is opened so that a
missing image fails at once with its path, not hours into a training run.

Layouts (see docs/data.md):
- DISCO: imgs/<id>.jpg, auds/<id>.wav, density/<split>/<id>.mat (key 'map'); the split is the
  folder that holds the id. Optional raw dot annotations in points/<id>.json or .txt.
- ShanghaiTech A/B (one part): {train,test}_data/images/IMG_<n>.jpg and
  {train,test}_data/ground-truth/GT_IMG_<n>.mat (points at image_info[0,0][0,0][0]).
- UCF-QNRF: {Train,Test}/img_<n>.jpg and img_<n>_ann.mat (key annPoints).
- plain: images/<id>.jpg (or imgs/), optional audio/<id>.wav (or auds/), points/<id>.json,
  splits/{train,val,test}.txt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.io
import scipy.io.wavfile
from PIL import Image

from avcc_stream.data.density import as_points

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# One 96-frame VGGish patch needs 0.975 s (96 hops of 10 ms plus one 25 ms window).
MIN_AUDIO_SECONDS = 0.975


class DatasetLayoutError(ValueError):
    """A dataset folder, split or file is not what its layout requires."""


@dataclass(frozen=True, eq=False)
class CrowdSample:
    """One annotated image, with its second of sound where the dataset has one.

    `points` is None only for datasets that ship density maps without head points (the real
    DISCO release); `density` then holds that map at the image's resolution.
    """

    id: str
    image: np.ndarray  # H x W x 3 uint8 RGB, original resolution
    points: np.ndarray | None  # (N, 2) float32 (x, y) pixels
    audio: np.ndarray | None = None  # (channels, n) float32 in [-1, 1]
    sample_rate: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    density: np.ndarray | None = None  # H x W float32, only when points is None

    @property
    def count(self) -> float:
        """The ground-truth count: annotated heads, or the shipped density map's sum."""
        if self.points is not None:
            return float(len(self.points))
        if self.density is not None:
            return float(self.density.sum(dtype=np.float64))
        raise DatasetLayoutError(f"sample {self.id} has neither head points nor a density map")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        return int(self.image.shape[1]), int(self.image.shape[0])


# ---------------------------------------------------------------------------------------------
# File readers: each error names the file and what was expected.


def visible_files(folder: Path) -> list[Path]:
    """Files in `folder`, skipping hidden ones (`._*` AppleDouble, `.DS_Store`), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_image(path: Path) -> np.ndarray:
    """An image file -> H x W x 3 uint8 RGB (grayscale and palette images are converted)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(f"{path}: cannot read image: {exc}") from exc


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A wav file -> ((channels, n) float32 in [-1, 1], sample rate)."""
    try:
        rate, data = scipy.io.wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(f"{path}: cannot read wav: {exc}") from exc
    samples = np.asarray(data)
    if samples.dtype == np.uint8:  # 8-bit wav is unsigned, centred on 128
        samples = (samples.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32, copy=False)
    channels_first = samples[None, :] if samples.ndim == 1 else samples.T
    return np.ascontiguousarray(channels_first), int(rate)


def read_points_json(path: Path) -> np.ndarray:
    """`[[x, y], ...]` or `{"points": [[x, y], ...]}` -> (N, 2) float32."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(f"{path}: cannot read JSON points: {exc}") from exc
    if isinstance(data, dict):
        if "points" not in data:
            raise DatasetLayoutError(f"{path}: expected a list of [x, y] or a 'points' key")
        data = data["points"]
    try:
        return as_points(data).astype(np.float32)
    except (ValueError, TypeError) as exc:
        raise DatasetLayoutError(f"{path}: expected a list of [x, y] pairs: {exc}") from exc


def read_points_txt(path: Path) -> np.ndarray:
    """One `x y` (or `x,y`) per line; blank lines and `#` comments ignored -> (N, 2) float32."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        if len(text) != 2:
            raise DatasetLayoutError(f"{path}:{number}: expected 'x y', got {line.strip()!r}")
        try:
            rows.append((float(text[0]), float(text[1])))
        except ValueError as exc:
            raise DatasetLayoutError(f"{path}:{number}: expected two numbers: {exc}") from exc
    return as_points(rows).astype(np.float32)


def read_points_file(path: Path) -> np.ndarray:
    """Dot annotations from .json or .txt, by suffix."""
    return read_points_json(path) if path.suffix == ".json" else read_points_txt(path)


def load_mat(path: Path) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DatasetLayoutError(f"{path}: cannot read .mat file: {exc}") from exc


def mat_keys(mat: dict[str, Any]) -> list[str]:
    return sorted(key for key in mat if not key.startswith("__"))


def read_shanghaitech_points(path: Path) -> np.ndarray:
    """ShanghaiTech ground truth: points at image_info[0,0][0,0][0] (struct field 'location')."""
    mat = load_mat(path)
    if "image_info" not in mat:
        raise DatasetLayoutError(f"{path}: expected key 'image_info', found {mat_keys(mat)}")
    try:
        points = mat["image_info"][0, 0][0, 0][0]
    except (IndexError, TypeError, ValueError) as exc:
        raise DatasetLayoutError(
            f"{path}: expected points at image_info[0,0][0,0][0] (ShanghaiTech's nested struct)"
        ) from exc
    return _mat_points(points, path, "image_info[0,0][0,0][0]")


def read_qnrf_points(path: Path) -> np.ndarray:
    """UCF-QNRF ground truth: key annPoints, N x 2 (x, y)."""
    mat = load_mat(path)
    if "annPoints" not in mat:
        raise DatasetLayoutError(f"{path}: expected key 'annPoints', found {mat_keys(mat)}")
    return _mat_points(mat["annPoints"], path, "annPoints")


def _mat_points(value: Any, path: Path, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 2:
        raise DatasetLayoutError(f"{path}: {where} must be N x 2 (x, y), got shape {array.shape}")
    return array.astype(np.float32)


def read_density_mat(path: Path) -> np.ndarray:
    """DISCO density map: key 'map', H x W."""
    mat = load_mat(path)
    if "map" not in mat:
        raise DatasetLayoutError(f"{path}: expected key 'map', found {mat_keys(mat)}")
    density = np.asarray(mat["map"], dtype=np.float32)
    if density.ndim != 2:
        raise DatasetLayoutError(f"{path}: 'map' must be 2-D, got shape {density.shape}")
    return density


def read_split_list(path: Path) -> list[str]:
    """One id per line; blank lines and `#` comments ignored."""
    ids = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [sample_id for sample_id in ids if sample_id]


def files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem -> path for visible files in `folder` with one of `suffixes` (case-insensitive)."""
    return {p.stem: p for p in visible_files(folder) if p.suffix.lower() in suffixes}


# ---------------------------------------------------------------------------------------------
# Readers


class CrowdDataset:
    """A split of a dataset on disk: `len()`, indexing and iteration give `CrowdSample`s."""

    layout: ClassVar[str] = ""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.ids: list[str] = []
        self.audio_padded: set[str] = set()  # ids whose wav was too short and got padded

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> CrowdSample:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"sample index {index} out of range for {len(self.ids)} samples")
        return self.load(self.ids[index])

    def __iter__(self) -> Iterator[CrowdSample]:
        for sample_id in self.ids:
            yield self.load(sample_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

    def load(self, sample_id: str) -> CrowdSample:
        raise NotImplementedError

    def count_of(self, sample_id: str) -> float:
        """The ground-truth count of one sample; readers with separate point files read only those."""
        return self.load(sample_id).count

    def _read_audio(self, path: Path | None, sample_id: str) -> tuple[np.ndarray | None, int | None]:
        """Read a wav; pad one shorter than MIN_AUDIO_SECONDS to 1 s and remember that."""
        if path is None:
            return None, None
        audio, rate = read_wav(path)
        needed = int(round(rate * 1.0))
        if audio.shape[1] < MIN_AUDIO_SECONDS * rate:
            if sample_id not in self.audio_padded:
                log.warning("%s: %.3f s of audio, padded to 1 s", path, audio.shape[1] / rate)
            self.audio_padded.add(sample_id)
            audio = np.pad(audio, ((0, 0), (0, needed - audio.shape[1])))
        return audio, rate

    def _check_split(self, available: list[str]) -> None:
        if self.split not in available:
            raise DatasetLayoutError(
                f"{self.root}: {self.layout} layout has no split {self.split!r}; "
                f"available: {', '.join(available) or 'none'}"
            )

    def _require_pairs(self, what: str, missing: list[str]) -> None:
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DatasetLayoutError(
                f"{self.root}: {len(missing)} {self.split} sample(s) have no {what}: {shown}"
            )


class DiscoDataset(CrowdDataset):
    """DISCO: imgs/, auds/, density/<split>/<id>.mat; the split is the folder holding the id."""

    layout = "DISCO"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        density_root = self.root / "density"
        available = [s for s in SPLITS if (density_root / s).is_dir()]
        self._check_split(available)
        self.density_files = files_by_stem(density_root / split, (".mat",))
        self.ids = sorted(self.density_files)
        self.images = files_by_stem(self.root / "imgs", IMAGE_SUFFIXES)
        self.audio = files_by_stem(self.root / "auds", (".wav",))
        self.point_files = files_by_stem(self.root / "points", (".json", ".txt"))
        self._require_pairs("image in imgs/", [i for i in self.ids if i not in self.images])

    def load(self, sample_id: str) -> CrowdSample:
        image = read_image(self.images[sample_id])
        audio, rate = self._read_audio(self.audio.get(sample_id), sample_id)
        meta: dict[str, Any] = {"layout": self.layout, "split": self.split}
        if sample_id in self.audio_padded:
            meta["audio_padded"] = True
        if sample_id in self.point_files:
            points = read_points_file(self.point_files[sample_id])
            return CrowdSample(sample_id, image, points, audio, rate, meta)
        density = read_density_mat(self.density_files[sample_id])
        if density.shape != image.shape[:2]:
            raise DatasetLayoutError(
                f"{self.density_files[sample_id]}: density map is {density.shape[1]}x"
                f"{density.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}"
            )
        return CrowdSample(sample_id, image, None, audio, rate, meta, density=density)

    def count_of(self, sample_id: str) -> float:
        if sample_id in self.point_files:
            return float(len(read_points_file(self.point_files[sample_id])))
        return float(read_density_mat(self.density_files[sample_id]).sum(dtype=np.float64))


class PlainDataset(CrowdDataset):
    """Our layout: images/ (or imgs/), optional audio/ (or auds/), points/, splits/<split>.txt."""

    layout = "plain"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        splits_dir = self.root / "splits"
        available = [s for s in SPLITS if (splits_dir / f"{s}.txt").is_file()]
        self._check_split(available)
        self.ids = read_split_list(splits_dir / f"{split}.txt")
        image_dir = self.root / ("images" if (self.root / "images").is_dir() else "imgs")
        audio_dir = self.root / ("audio" if (self.root / "audio").is_dir() else "auds")
        self.images = files_by_stem(image_dir, IMAGE_SUFFIXES)
        self.audio = files_by_stem(audio_dir, (".wav",))
        self.point_files = files_by_stem(self.root / "points", (".json", ".txt"))
        self._require_pairs(f"image in {image_dir.name}/", [i for i in self.ids if i not in self.images])
        self._require_pairs("points file in points/", [i for i in self.ids if i not in self.point_files])

    def load(self, sample_id: str) -> CrowdSample:
        image = read_image(self.images[sample_id])
        points = read_points_file(self.point_files[sample_id])
        audio, rate = self._read_audio(self.audio.get(sample_id), sample_id)
        meta: dict[str, Any] = {"layout": self.layout, "split": self.split}
        if sample_id in self.audio_padded:
            meta["audio_padded"] = True
        return CrowdSample(sample_id, image, points, audio, rate, meta)

    def count_of(self, sample_id: str) -> float:
        return float(len(read_points_file(self.point_files[sample_id])))


class ShanghaiTechDataset(CrowdDataset):
    """One ShanghaiTech part (A or B): {train,test}_data/images and ground-truth/GT_<id>.mat."""

    layout = "ShanghaiTech"

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        available = [s for s in ("train", "test") if (self.root / f"{s}_data").is_dir()]
        self._check_split(available)
        split_dir = self.root / f"{split}_data"
        self.images = files_by_stem(split_dir / "images", IMAGE_SUFFIXES)
        self.ground_truth = files_by_stem(split_dir / "ground-truth", (".mat",))
        self.ids = sorted(self.images)
        if not self.ids:
            raise DatasetLayoutError(f"{split_dir / 'images'}: no images (expected IMG_<n>.jpg)")
        self._require_pairs(
            "ground-truth/GT_<id>.mat", [i for i in self.ids if f"GT_{i}" not in self.ground_truth]
        )

    def load(self, sample_id: str) -> CrowdSample:
        image = read_image(self.images[sample_id])
        points = read_shanghaitech_points(self.ground_truth[f"GT_{sample_id}"])
        return CrowdSample(sample_id, image, points, meta={"layout": self.layout, "split": self.split})


class QnrfDataset(CrowdDataset):
    """UCF-QNRF: {Train,Test}/img_<n>.jpg with img_<n>_ann.mat beside it."""

    layout = "UCF-QNRF"
    FOLDERS: ClassVar[dict[str, str]] = {"train": "Train", "test": "Test"}

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        available = [s for s, folder in self.FOLDERS.items() if (self.root / folder).is_dir()]
        self._check_split(available)
        split_dir = self.root / self.FOLDERS[split]
        self.images = files_by_stem(split_dir, IMAGE_SUFFIXES)
        self.annotations = files_by_stem(split_dir, (".mat",))
        self.ids = sorted(self.images)
        if not self.ids:
            raise DatasetLayoutError(f"{split_dir}: no images (expected img_<n>.jpg)")
        self._require_pairs(
            "<id>_ann.mat", [i for i in self.ids if f"{i}_ann" not in self.annotations]
        )

    def load(self, sample_id: str) -> CrowdSample:
        image = read_image(self.images[sample_id])
        points = read_qnrf_points(self.annotations[f"{sample_id}_ann"])
        return CrowdSample(sample_id, image, points, meta={"layout": self.layout, "split": self.split})


READERS: dict[str, type[CrowdDataset]] = {
    "disco": DiscoDataset,
    "plain": PlainDataset,
    "shanghaitech": ShanghaiTechDataset,
    "qnrf": QnrfDataset,
}

EXPECTED_LAYOUTS = (
    "DISCO (imgs/, auds/, density/{train,val,test}/<id>.mat); "
    "plain (images/ or imgs/, points/<id>.json, splits/{train,val,test}.txt); "
    "one ShanghaiTech part (train_data/, test_data/ with images/ and ground-truth/); "
    "UCF-QNRF (Train/, Test/ with img_<n>.jpg and img_<n>_ann.mat)"
)


def detect_layout(root: str | Path) -> str:
    """Name the layout of the dataset folder `root` (a key of READERS), or raise saying why not."""
    folder = Path(root)
    if not folder.exists():
        raise DatasetLayoutError(f"{folder}: no such dataset folder")
    if not folder.is_dir():
        raise DatasetLayoutError(f"{folder}: expected a dataset folder, found a file")
    names = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if {"imgs", "density"} <= names:
        return "disco"
    if {"points", "splits"} <= names and names & {"images", "imgs"}:
        return "plain"
    if names & {"train_data", "test_data"}:
        return "shanghaitech"
    if names & {"Train", "Test"}:
        return "qnrf"
    if names & {"part_A", "part_B"}:
        parts = " or ".join(str(folder / part) for part in sorted(names & {"part_A", "part_B"}))
        raise DatasetLayoutError(f"{folder}: a ShanghaiTech root; open one part: {parts}")
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(entries[:12]) + (" ..." if len(entries) > 12 else "") if entries else "nothing"
    raise DatasetLayoutError(
        f"{folder}: not a dataset layout avcc-stream reads. Expected one of: {EXPECTED_LAYOUTS}. "
        f"Found: {shown}"
    )


def open_dataset(root: str | Path, split: str, layout: str | None = None) -> CrowdDataset:
    """Open one split of the dataset at `root`, detecting its layout unless `layout` is given."""
    name = (layout or detect_layout(root)).lower()
    if name not in READERS:
        raise DatasetLayoutError(f"unknown layout {layout!r}; expected one of {', '.join(READERS)}")
    return READERS[name](root, split)


class CombinedDataset:
    """Several readers (splits of different dataset folders) as one sequence of samples, e.g. a
    synthetic training split plus a freshly generated one.

    The ids of the second and later readers get the prefix "<k>:" so that two folders' sample
    000001 stay distinct: augmentation and degradation draws are seeded by the id.
    """

    def __init__(self, readers: list[CrowdDataset]) -> None:
        if not readers:
            raise ValueError("combine at least one dataset reader")
        self.readers = list(readers)
        places = [(k, i) for k, reader in enumerate(self.readers) for i in range(len(reader))]
        self.ids = [self._prefixed(k, self.readers[k].ids[i]) for k, i in places]
        self._place = dict(zip(self.ids, places, strict=True))  # id -> (reader, index in it)

    @staticmethod
    def _prefixed(reader_index: int, sample_id: str) -> str:
        return sample_id if reader_index == 0 else f"{reader_index}:{sample_id}"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> CrowdSample:
        k, i = self._place[self.ids[index]]  # a list index: IndexError out of range
        sample = self.readers[k][i]
        return sample if k == 0 else replace(sample, id=self.ids[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.readers))})"

    def count_of(self, sample_id: str) -> float:
        k, own_id = self.origin(sample_id)
        return self.readers[k].count_of(own_id)

    def origin(self, sample_id: str) -> tuple[int, str]:
        """(index of the reader, that reader's own id) of a combined id."""
        k, i = self._place[sample_id]
        return k, self.readers[k].ids[i]
