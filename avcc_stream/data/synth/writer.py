"""Write a synthetic dataset to disk in DISCO's layout, plus the plain layout's points and splits.

    OUT/imgs/<id>.jpg                  the picture
    OUT/auds/<id>.wav                  one second of sound, 16-bit PCM, native rate and channels
    OUT/density/<split>/<id>.mat       key 'map': density at the image's resolution (DISCO)
    OUT/points/<id>.json               [[x, y], ...] head points (plain layout; exact)
    OUT/splits/{train,val,test}.txt    ids per split (plain layout)
    OUT/meta/<id>.json                 seed and every parameter that made the sample
    OUT/synth.json                     the command's arguments, counts and timing

Sample i is a pure function of (seed, i, size): the output does not depend on the number of
worker processes or on which samples were made before it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.io.wavfile
from PIL import Image

from avcc_stream.data.density import density_map
from avcc_stream.data.seeding import derive_seed
from avcc_stream.data.synth.sample import GENERATOR_VERSION, MAX_PEOPLE, generate_sample

SPLIT_NAMES = ("train", "val", "test")
LAYOUT_FOLDERS = ("imgs", "auds", "density", "points", "splits", "meta")


@dataclass(frozen=True)
class SynthJob:
    out: str
    index: int
    sample_id: str
    split: str
    seed: int
    size: tuple[int, int]
    max_people: int


def sample_seed(run_seed: int, index: int) -> int:
    return derive_seed("synth", run_seed, index)


def assign_splits(count: int, fractions: Sequence[float], seed: int) -> list[str]:
    """A split name per sample index: a seeded shuffle cut by `fractions` (train, val, test)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    total = float(sum(fractions))
    n_train = int(round(count * fractions[0] / total))
    n_val = min(int(round(count * fractions[1] / total)), count - n_train)
    order = np.random.default_rng(derive_seed("splits", seed)).permutation(count)
    names = np.empty(count, dtype=object)
    names[order[:n_train]] = "train"
    names[order[n_train : n_train + n_val]] = "val"
    names[order[n_train + n_val :]] = "test"
    return [str(name) for name in names]


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """(channels, n) float in [-1, 1] -> 16-bit PCM wav."""
    pcm = np.clip(np.rint(audio.T * 32767.0), -32768, 32767).astype(np.int16)
    scipy.io.wavfile.write(path, rate, pcm[:, 0] if pcm.shape[1] == 1 else pcm)


def write_sample(job: SynthJob) -> dict[str, Any]:
    """Generate and write one sample; returns a small summary for the run's report."""
    out = Path(job.out)
    sample = generate_sample(job.seed, job.size, job.max_people)
    # Points are stored rounded; the density map is built from exactly what is stored.
    points = np.round(sample.points.astype(np.float64), 3)
    width, height = job.size
    Image.fromarray(sample.image).save(out / "imgs" / f"{job.sample_id}.jpg",
                                       quality=sample.params["jpeg_quality"])
    write_wav(out / "auds" / f"{job.sample_id}.wav", sample.audio, sample.sample_rate)
    scipy.io.savemat(out / "density" / job.split / f"{job.sample_id}.mat",
                     {"map": density_map(points, height, width)}, do_compression=True)
    (out / "points" / f"{job.sample_id}.json").write_text(json.dumps(points.tolist()))
    meta = {"id": job.sample_id, "index": job.index, "seed": job.seed, "split": job.split,
            "generator_version": GENERATOR_VERSION, **sample.params}
    (out / "meta" / f"{job.sample_id}.json").write_text(json.dumps(meta, indent=1))
    return {"id": job.sample_id, "split": job.split, "count": sample.count}


def prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (--overwrite writes into it anyway)")
    for folder in LAYOUT_FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    for split in SPLIT_NAMES:
        (out / "density" / split).mkdir(exist_ok=True)


def write_dataset(
    out: str | Path,
    count: int,
    seed: int,
    size: tuple[int, int] = (1024, 576),
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    workers: int = 1,
    max_people: int = MAX_PEOPLE,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Generate `count` samples into `out`; returns (and writes as synth.json) a run summary."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if size[0] < 32 or size[1] < 32:
        raise ValueError(f"size must be at least 32x32, got {size[0]}x{size[1]}")
    root = Path(out)
    prepare_output(root, overwrite)
    digits = max(6, len(str(count - 1)))
    split_of = assign_splits(count, splits, seed)
    jobs = [SynthJob(str(root), i, f"{i:0{digits}d}", split_of[i], sample_seed(seed, i), tuple(size), max_people)
            for i in range(count)]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for job in jobs:
            results.append(write_sample(job))
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(write_sample, jobs, chunksize=4):
                results.append(result)
                if progress:
                    progress(1)
    elapsed = time.perf_counter() - started

    for split in SPLIT_NAMES:
        ids = [r["id"] for r in results if r["split"] == split]
        (root / "splits" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    counts = np.array([r["count"] for r in results])
    summary = {
        "generator": "avcc-stream synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "count": count,
        "size": list(size),
        "split_fractions": list(splits),
        "split_sizes": {s: sum(r["split"] == s for r in results) for s in SPLIT_NAMES},
        "max_people": max_people,
        "people_per_image": {"mean": round(float(counts.mean()), 2), "median": float(np.median(counts)),
                             "min": int(counts.min()), "max": int(counts.max()), "total": int(counts.sum())},
        "workers": workers,
        "seconds": round(elapsed, 2),
        "samples_per_second": round(count / elapsed, 3),
    }
    (root / "synth.json").write_text(json.dumps(summary, indent=1))
    return summary

