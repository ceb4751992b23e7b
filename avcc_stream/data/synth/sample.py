"""One synthetic audio-visual sample: a picture of a crowd, its head points and its sound.

Each part of a sample draws from its own random stream spawned from the sample's seed, so the
picture, the crowd, the camera effects and the sound are each reproducible on their own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from avcc_stream.data.synth.audio import sample_audio_scene, scene_audio
from avcc_stream.data.synth.people import draw_scene, sample_crowd
from avcc_stream.data.synth.raster import Canvas
from avcc_stream.data.synth.scene import render_background, sample_objects, sample_scene

GENERATOR_VERSION = 1
MAX_PEOPLE = 650  # DISCO's densest image has 709 heads at 1920x1080


@dataclass(frozen=True, eq=False)
class SynthSample:
    image: np.ndarray  # H x W x 3 uint8 RGB
    points: np.ndarray  # (N, 2) float32 (x, y): the heads an annotator would mark
    audio: np.ndarray  # (channels, n) float32
    sample_rate: int
    params: dict[str, Any]  # everything drawn to make it, JSON-safe
    # (N,) pixels of each annotated head left visible (not written to disk; for error analyses)
    head_visible_pixels: np.ndarray

    @property
    def count(self) -> int:
        return int(len(self.points))


def sample_people_count(rng: np.random.Generator, max_people: int = MAX_PEOPLE) -> int:
    """Empty scenes sometimes; otherwise log-uniform from 2 to max_people (mean ~110 placed, of
    whom ~80 % end up annotated: close to DISCO's mean of 88 heads, with every size well covered)."""
    if rng.uniform() < 0.04 or max_people < 2:
        return 0
    return int(round(np.exp(rng.uniform(np.log(2.0), np.log(max_people)))))


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """A fixed block of standard normal noise; sensor noise is a random slice of it (much
    cheaper than drawing millions of normals per image, and just as reproducible)."""
    return np.random.default_rng(20240517).standard_normal(1 << 22, dtype=np.float32)


def sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    table = _noise_table()
    size = int(np.prod(shape))
    if size > len(table):
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, len(table) - size + 1))
    return table[start : start + size].reshape(shape)


def camera_effects(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Lens blur, sensor noise, contrast and saturation of a real camera; float -> uint8."""
    effects: dict[str, Any] = {}
    contrast = rng.uniform(0.85, 1.15)
    saturation = rng.uniform(0.7, 1.2)
    grey = rgb.mean(axis=2, keepdims=True)
    # saturation then contrast, folded into one affine mix of colour and grey
    rgb = rgb * np.float32(saturation * contrast) + (grey * np.float32((1 - saturation) * contrast)
                                                      + np.float32(0.5 * (1 - contrast)))
    if rng.uniform() < 0.5:
        sigma = rng.uniform(0.005, 0.025)
        rgb += sensor_noise(rng, rgb.shape) * np.float32(sigma)
        effects["sensor_noise"] = round(float(sigma), 4)
    image = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if rng.uniform() < 0.3:
        radius = rng.uniform(0.4, 1.3)
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
        effects["blur"] = round(float(radius), 3)
    effects.update(contrast=round(float(contrast), 3), saturation=round(float(saturation), 3))
    return image, effects


def generate_sample(seed: int, size: tuple[int, int] = (1024, 576), max_people: int = MAX_PEOPLE) -> SynthSample:
    """Make one sample, a pure function of (seed, size, max_people)."""
    width, height = size
    scene_rng, background_rng, crowd_rng, camera_rng, audio_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    spec = sample_scene(scene_rng, width, height)
    objects = sample_objects(scene_rng, spec)
    crowd = sample_crowd(crowd_rng, spec, sample_people_count(crowd_rng, max_people))

    canvas = Canvas(render_background(spec, background_rng))
    heads, annotated, visible_pixels = draw_scene(canvas, spec, objects, crowd)
    rgb = canvas.rgb * spec.lighting.light_map(width, height)
    image, effects = camera_effects(rgb, camera_rng)

    sound = sample_audio_scene(audio_rng, spec.indoor)
    offscreen = int(audio_rng.poisson(sound.offscreen_share * len(crowd)))
    walkers = int(crowd.moving.sum()) + int(audio_rng.binomial(offscreen, crowd.extras["moving_share"]))
    audio = scene_audio(len(crowd) + offscreen, walkers, sound, audio_rng)

    points = heads[annotated].astype(np.float32)
    params = {
        "generator_version": GENERATOR_VERSION,
        "size": [width, height],
        "count": int(len(points)),
        "people_placed": int(len(crowd)),
        "people_hidden_or_cut": int(len(crowd) - len(points)),
        "people_offscreen_heard": offscreen,
        "walkers_heard": walkers,
        "scene": spec.params(),
        "crowd": crowd.extras,
        "objects": [obj.params() for obj in objects],
        "camera_effects": effects,
        "jpeg_quality": int(camera_rng.integers(70, 96)),
        "audio": sound.params(),
    }
    return SynthSample(image, points, audio, sound.sample_rate, params, visible_pixels[annotated])
