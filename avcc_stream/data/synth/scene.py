"""A random venue seen by a fixed camera: perspective ground plane, backdrop, light, objects.

Geometry: a pinhole camera `elevation` metres above a flat ground, horizon at image row
`horizon` (above the image for cameras looking down). A point on the ground at depth Z metres
and lateral offset X projects to x = cx + f X / Z, y = horizon + f elevation / Z, and an upright
object of height h metres there is f h / Z pixels tall (times a foreshortening factor for steep
views). So people shrink with distance and pile up towards the horizon, as in real footage.

Everything random is drawn from the generator passed in, and the drawn values are kept in
`SceneSpec.params()` so every sample records what made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from avcc_stream.data.synth.raster import SCENERY, Canvas

PERSON_HEIGHT_M = 1.7


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    horizon: float  # image row of the horizon; negative when above the image
    focal: float  # pixels
    elevation: float  # metres above the ground
    center_x: float

    @classmethod
    def from_params(cls, camera: dict[str, Any], size: tuple[int, int]) -> Camera:
        """The camera of a written sample: its meta's scene.camera (SceneSpec.params) and size."""
        return cls(int(size[0]), int(size[1]), float(camera["horizon"]), float(camera["focal"]),
                   float(camera["elevation_m"]), float(camera["center_x"]))

    def row_of_depth(self, depth: np.ndarray | float) -> np.ndarray | float:
        return self.horizon + self.focal * self.elevation / depth

    def depth_of_row(self, row: np.ndarray | float) -> np.ndarray | float:
        return self.focal * self.elevation / np.maximum(np.asarray(row) - self.horizon, 1e-3)

    def column(self, lateral: np.ndarray | float, depth: np.ndarray | float) -> np.ndarray | float:
        return self.center_x + self.focal * np.asarray(lateral) / depth

    def lateral(self, column: np.ndarray | float, depth: np.ndarray | float) -> np.ndarray | float:
        return (np.asarray(column) - self.center_x) * depth / self.focal

    def pixels_per_metre(self, depth: np.ndarray | float) -> np.ndarray | float:
        return self.focal / np.asarray(depth)

    def foreshortening(self, row: np.ndarray | float) -> np.ndarray | float:
        """How much shorter an upright object looks when the camera looks down on it."""
        angle = np.arctan(np.maximum(np.asarray(row) - self.horizon, 0.0) / self.focal)
        return np.clip(np.cos(angle) ** 0.8, 0.35, 1.0)


def sample_camera(rng: np.random.Generator, width: int, height: int) -> Camera:
    """A camera from eye level to nearly overhead, with people of very different sizes."""
    view = rng.choice(["eye", "elevated", "high", "overhead"], p=[0.2, 0.35, 0.3, 0.15])
    horizon_range = {
        "eye": (0.12, 0.45), "elevated": (-0.3, 0.15), "high": (-1.2, -0.3), "overhead": (-3.0, -1.2)
    }[view]
    horizon = rng.uniform(*horizon_range) * height
    # Height in pixels of a person standing on the bottom row: sets the camera's elevation.
    bottom_person = rng.uniform(0.07, 0.5 if view == "eye" else 0.35) * height
    elevation = float(np.clip(PERSON_HEIGHT_M * (height - horizon) / bottom_person, 2.2, 60.0))
    focal = rng.uniform(0.6, 1.6) * width
    center_x = width / 2 + rng.normal(0, 0.08) * width
    return Camera(width, height, float(horizon), float(focal), elevation, float(center_x))


# ---------------------------------------------------------------------------------------------
# Appearance of the venue


PALETTES = {
    "concrete": ((0.55, 0.55, 0.53), (0.12, 0.12, 0.12)),
    "asphalt": ((0.22, 0.22, 0.23), (0.06, 0.06, 0.06)),
    "grass": ((0.25, 0.42, 0.16), (0.08, 0.12, 0.06)),
    "sand": ((0.72, 0.62, 0.45), (0.08, 0.08, 0.06)),
    "tiles": ((0.70, 0.68, 0.62), (0.20, 0.18, 0.15)),
    "wood": ((0.52, 0.34, 0.18), (0.12, 0.08, 0.05)),
    "carpet": ((0.45, 0.12, 0.12), (0.10, 0.05, 0.05)),
    "stone": ((0.50, 0.46, 0.40), (0.15, 0.13, 0.10)),
}
GROUND_PATTERNS = ("plain", "tiles", "planks", "paving", "lanes")


def random_color(rng: np.random.Generator, base: tuple[float, ...], spread: tuple[float, ...]) -> np.ndarray:
    color = np.asarray(base) + rng.normal(0.0, 1.0, 3) * np.asarray(spread)
    return np.clip(color, 0.02, 0.98).astype(np.float32)


def random_hue_colors(
    rng: np.random.Generator, n: int, saturation: tuple[float, float], value: tuple[float, float]
) -> np.ndarray:
    """n colours from random hue, saturation and value ranges (HSV -> RGB), n x 3 float32."""
    hue, sat, val = rng.uniform(0, 1, (n, 1)), rng.uniform(*saturation, (n, 1)), rng.uniform(*value, (n, 1))
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    rgb = val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def random_hue_color(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """One colour from random hue, saturation and value ranges."""
    return random_hue_colors(rng, 1, saturation, value)[0]


@dataclass
class Lighting:
    exposure: float
    cast: np.ndarray  # per-channel multiplier (colour temperature)
    gradient: tuple[float, float, float]  # (strength, direction x, direction y)
    spots: list[tuple[float, float, float, float]]  # (x, y, radius, strength) in pixels
    vignette: float
    fog_color: np.ndarray
    fog_distance: float  # metres at which 63 % of a colour is fog; inf for none
    shadow: tuple[float, float, float] | None  # (angle, offset, darkness) of a large cast shadow

    def fog(self, depth: np.ndarray | float) -> np.ndarray | float:
        if not math.isfinite(self.fog_distance):
            return np.zeros_like(np.asarray(depth, dtype=np.float32))
        return 1.0 - np.exp(-np.asarray(depth, dtype=np.float32) / self.fog_distance)

    def hazed(self, color: np.ndarray, depth: float) -> np.ndarray:
        amount = float(self.fog(depth))
        return (color * (1.0 - amount) + self.fog_color * amount).astype(np.float32)

    def light_map(self, width: int, height: int) -> np.ndarray:
        """H x W x 3 float32 multiplier applied to the finished picture."""
        small_w, small_h = max(width // 8, 2), max(height // 8, 2)
        ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
        xs, ys = (xs + 0.5) * (width / small_w), (ys + 0.5) * (height / small_h)
        light = np.full((small_h, small_w), self.exposure, dtype=np.float32)
        strength, gx, gy = self.gradient
        light *= 1.0 + strength * ((xs / width - 0.5) * gx + (ys / height - 0.5) * gy)
        for x, y, radius, spot in self.spots:
            light += spot * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2.0 * radius**2))
        if self.shadow is not None:
            angle, offset, darkness = self.shadow
            side = (xs / width - 0.5) * math.cos(angle) + (ys / height - 0.5) * math.sin(angle) - offset
            light *= 1.0 - darkness * np.clip(side * 8.0 + 0.5, 0.0, 1.0)
        radius = np.sqrt(((xs / width - 0.5) * 2) ** 2 + ((ys / height - 0.5) * 2) ** 2) / math.sqrt(2)
        light *= 1.0 - self.vignette * radius**2
        full = np.asarray(Image.fromarray(light, mode="F").resize((width, height), Image.BILINEAR))
        return np.clip(full, 0.02, 3.0)[:, :, None] * self.cast[None, None, :]


def sample_lighting(rng: np.random.Generator, width: int, height: int, indoor: bool) -> Lighting:
    time_of_day = rng.choice(["day", "overcast", "dusk", "night"], p=[0.4, 0.25, 0.15, 0.2])
    exposure = {"day": (0.85, 1.15), "overcast": (0.7, 1.0), "dusk": (0.45, 0.75), "night": (0.2, 0.5)}
    casts = {
        "neutral": (1.0, 1.0, 1.0), "warm": (1.12, 0.98, 0.78), "tungsten": (1.2, 0.95, 0.65),
        "cool": (0.85, 0.97, 1.12), "fluorescent": (0.93, 1.06, 0.92), "magenta": (1.08, 0.9, 1.05),
    }
    cast_name = rng.choice(list(casts), p=[0.35, 0.2, 0.1, 0.15, 0.1, 0.1])
    cast = np.asarray(casts[cast_name]) * rng.uniform(0.95, 1.05, 3)
    n_spots = int(rng.integers(0, 5 if time_of_day in ("night", "dusk") or indoor else 2))
    spot_strength = 0.7 if time_of_day == "night" else 0.3
    spots = [
        (float(rng.uniform(0, width)), float(rng.uniform(-0.2, 1.0) * height),
         float(rng.uniform(0.06, 0.45) * width), float(rng.uniform(0.05, spot_strength)))
        for _ in range(n_spots)
    ]
    angle = rng.uniform(0, 2 * math.pi)
    shadow = None
    if not indoor and time_of_day == "day" and rng.uniform() < 0.3:
        shadow = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(-0.3, 0.3)), float(rng.uniform(0.2, 0.55)))
    fog = float(rng.uniform(30, 400)) if rng.uniform() < 0.25 else math.inf
    return Lighting(
        exposure=float(rng.uniform(*exposure[time_of_day])),
        cast=cast.astype(np.float32),
        gradient=(float(rng.uniform(0, 0.5)), math.cos(angle), math.sin(angle)),
        spots=spots,
        vignette=float(rng.uniform(0.0, 0.45)),
        fog_color=random_color(rng, (0.7, 0.72, 0.75), (0.08, 0.08, 0.08)),
        fog_distance=fog,
        shadow=shadow,
    )


# ---------------------------------------------------------------------------------------------
# Procedural textures (lookup-table noise: gathers, not transcendental functions per pixel)


class NoiseTable:
    """A tileable random grid sampled with bilinear interpolation at arbitrary coordinates."""

    SIZE = 128

    def __init__(self, rng: np.random.Generator) -> None:
        self.values = rng.uniform(-1.0, 1.0, (self.SIZE, self.SIZE)).astype(np.float32)

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32)
        fu, fv = np.floor(u), np.floor(v)
        iu, iv = fu.astype(np.int32), fv.astype(np.int32)
        fu, fv = u - fu, v - fv
        mask = self.SIZE - 1  # SIZE is a power of two: & wraps negative indices too
        flat = self.values.ravel()
        iu0, iu1 = iu & mask, (iu + 1) & mask
        row0, row1 = (iv & mask) * self.SIZE, ((iv + 1) & mask) * self.SIZE
        top = flat[row0 + iu0]
        top += (flat[row0 + iu1] - top) * fu
        bottom = flat[row1 + iu0]
        bottom += (flat[row1 + iu1] - bottom) * fu
        return top + (bottom - top) * fv

    def cell(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """One random value per integer cell (for per-tile colour variation)."""
        mask = self.SIZE - 1
        iu = np.floor(np.asarray(u, dtype=np.float32)).astype(np.int32) & mask
        iv = np.floor(np.asarray(v, dtype=np.float32)).astype(np.int32) & mask
        return self.values.ravel()[iv * self.SIZE + iu]


def smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency screen-space noise in [-1, 1]: a small random grid, upsampled."""
    grid_w = max(2, cells)
    grid_h = max(2, int(round(cells * height / width)))
    grid = rng.uniform(-1, 1, (grid_h, grid_w)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC))


# ---------------------------------------------------------------------------------------------
# The venue


@dataclass
class SceneSpec:
    camera: Camera
    indoor: bool
    ground_palette: str
    ground_pattern: str
    tile_size: float
    back_depth: float  # metres: the back wall / building line
    back_height: float  # metres: its height
    people_depth: tuple[float, float]  # (nearest, farthest) depth people stand at
    lighting: Lighting
    ground_color: np.ndarray
    ground_color2: np.ndarray
    wall_color: np.ndarray
    sky_color: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        cam = self.camera
        return {
            "camera": {"horizon": round(cam.horizon, 2), "focal": round(cam.focal, 2),
                       "elevation_m": round(cam.elevation, 3), "center_x": round(cam.center_x, 2)},
            "indoor": self.indoor,
            "ground": {"palette": self.ground_palette, "pattern": self.ground_pattern,
                       "tile_size_m": round(self.tile_size, 3)},
            "back_depth_m": round(self.back_depth, 2),
            "back_height_m": round(self.back_height, 2),
            "people_depth_m": [round(v, 2) for v in self.people_depth],
            "lighting": {"exposure": round(self.lighting.exposure, 3),
                         "cast": [round(float(c), 3) for c in self.lighting.cast],
                         "spots": len(self.lighting.spots), "vignette": round(self.lighting.vignette, 3),
                         "fog_distance_m": None if not math.isfinite(self.lighting.fog_distance)
                         else round(self.lighting.fog_distance, 1),
                         "cast_shadow": self.lighting.shadow is not None},
            **self.extras,
        }


def sample_scene(rng: np.random.Generator, width: int, height: int) -> SceneSpec:
    camera = sample_camera(rng, width, height)
    indoor = bool(rng.uniform() < 0.45)
    palettes = ["tiles", "carpet", "wood", "concrete", "stone"] if indoor else \
        ["concrete", "asphalt", "grass", "sand", "stone", "tiles"]
    palette = str(rng.choice(palettes))
    base, spread = PALETTES[palette]
    near = float(camera.depth_of_row(height))
    # The smallest person drawn is a few pixels tall: beyond that annotators see no heads.
    min_person_px = rng.uniform(5.0, 10.0) * height / 576
    farthest_visible = camera.focal * PERSON_HEIGHT_M / min_person_px
    if camera.horizon < 0:
        farthest_visible = min(farthest_visible, float(camera.depth_of_row(0.0)) * 1.02)
    back_depth = near + rng.uniform(4.0, 120.0)
    people_far = min(back_depth - 0.5, farthest_visible)
    # Nearest people may stand below the frame with only their heads in it.
    people_near = float(camera.depth_of_row(height * 1.25))
    people_near = min(people_near, people_far * 0.9)
    lighting = sample_lighting(rng, width, height, indoor)
    return SceneSpec(
        camera=camera,
        indoor=indoor,
        ground_palette=palette,
        ground_pattern=str(rng.choice(GROUND_PATTERNS, p=[0.3, 0.25, 0.15, 0.2, 0.1])),
        tile_size=float(np.exp(rng.uniform(np.log(0.25), np.log(1.5)))),
        back_depth=float(back_depth),
        back_height=float(rng.uniform(3.0, 25.0)),
        people_depth=(float(people_near), float(max(people_far, people_near * 1.05))),
        lighting=lighting,
        ground_color=(ground := random_color(rng, base, spread)),
        # A second tone for tiles/planks: usually close to the first, sometimes contrasting.
        ground_color2=np.clip(ground * rng.uniform(0.75, 1.2) + rng.normal(0, 0.03, 3), 0, 1).astype(np.float32)
        if rng.uniform() < 0.75 else random_color(rng, base, spread),
        wall_color=random_hue_color(rng, (0.0, 0.3), (0.25, 0.85)),
        sky_color=random_color(rng, (0.55, 0.7, 0.9), (0.12, 0.1, 0.08)),
    )


def render_background(spec: SceneSpec, rng: np.random.Generator, detail: float = 0.5) -> np.ndarray:
    """The empty venue: ground, back wall or skyline, sky or ceiling. H x W x 3 float32.

    Drawn at `detail` times the resolution through a camera scaled to match, then upsampled:
    the backdrop is smooth, and this is where most of a sample's pixels are computed.
    """
    full = spec.camera
    cam = replace(full, width=max(int(round(full.width * detail)), 1), height=max(int(round(full.height * detail)), 1),
                  horizon=full.horizon * detail, focal=full.focal * detail, center_x=full.center_x * detail)
    small = _render_background(replace(spec, camera=cam), rng)
    if cam.width == full.width and cam.height == full.height:
        return small
    as_bytes = Image.fromarray((np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    resized = as_bytes.resize((full.width, full.height), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32) * np.float32(1.0 / 255.0)


def _render_background(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    cam = spec.camera
    width, height = cam.width, cam.height
    noise = NoiseTable(rng)
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(width, dtype=np.float32)[None, :] + 0.5
    image = np.empty((height, width, 3), dtype=np.float32)

    # Ground: pixels below the back line, textured in ground coordinates (metres).
    back_row = float(cam.row_of_depth(spec.back_depth))
    ground_rows = max(0, min(height, int(math.ceil(back_row - 0.5))))
    if ground_rows < height:
        gy = rows[ground_rows:]
        depth = cam.depth_of_row(gy).astype(np.float32)
        lateral = cam.lateral(cols, depth).astype(np.float32)
        image[ground_rows:] = ground_texture(spec, noise, lateral, np.broadcast_to(depth, lateral.shape))

    # Above the ground: a back wall (indoor) or facades and sky (outdoor).
    if ground_rows > 0:
        upper = image[:ground_rows]
        wy = rows[:ground_rows]
        height_m = spec.camera.elevation - (wy - cam.horizon) * spec.back_depth / cam.focal
        lateral = np.broadcast_to(cam.lateral(cols, spec.back_depth), (ground_rows, width)).astype(np.float32)
        height_m = np.broadcast_to(height_m, (ground_rows, width)).astype(np.float32)
        facade = wall_texture(spec, noise, lateral, height_m, rng)
        top = spec.back_height
        if not spec.indoor:  # a skyline: building heights vary along the street
            top = spec.back_height * (1.0 + 0.6 * noise.cell(lateral / rng.uniform(6, 20) + 31.0, 3.0))
        above = height_m > top
        sky = sky_texture(spec, rng, width, ground_rows) if not spec.indoor else \
            ceiling_texture(spec, rng, width, ground_rows)
        upper[:] = np.where(above[:, :, None], sky, facade)
        fog = spec.lighting.fog(np.float32(spec.back_depth))
        upper[:] = upper * (1 - fog) + spec.lighting.fog_color * fog
    # Low-frequency dirt / uneven light on everything.
    image *= (1.0 + 0.12 * smooth_noise(rng, width, height, int(rng.integers(3, 12))))[:, :, None]
    return np.clip(image, 0.0, 1.0)


def ground_texture(spec: SceneSpec, noise: NoiseTable, lateral: np.ndarray, depth: np.ndarray) -> np.ndarray:
    size = spec.tile_size
    footprint = depth / spec.camera.focal  # metres per pixel: fade patterns finer than a pixel
    fade = np.clip(1.0 - 2.5 * footprint / size, 0.0, 1.0)
    grain = 0.5 * noise.sample(lateral * 3.1, depth * 3.1) + 0.25 * noise.sample(lateral * 11.0 + 7, depth * 11.0)
    grain *= np.clip(1.0 - 6.0 * footprint, 0.0, 1.0)
    base = spec.ground_color[None, None, :] * (1.0 + 0.15 * grain[:, :, None])
    pattern = spec.ground_pattern
    if pattern == "tiles":
        checker = (np.floor(lateral / size) + np.floor(depth / size)) % 2
        mix = (checker * fade)[:, :, None]
        base = base * (1 - mix) + spec.ground_color2[None, None, :] * (1.0 + 0.1 * grain[:, :, None]) * mix
        base *= _grout(lateral, depth, size, footprint)[:, :, None]
    elif pattern == "planks":
        shade = noise.cell(lateral / (size * 0.25), np.floor(depth / (size * 3)) + 0.5)
        base *= (1.0 + 0.18 * shade * fade)[:, :, None]
        base *= _grout(lateral, np.zeros_like(depth) + 0.5, size * 0.25, footprint)[:, :, None]
    elif pattern == "paving":
        shade = noise.cell(lateral / size + 50, depth / size + 50)
        base *= (1.0 + 0.22 * shade * fade)[:, :, None]
        base *= _grout(lateral, depth, size, footprint)[:, :, None]
    elif pattern == "lanes":
        lane = np.abs(((lateral / (size * 3.0)) % 1.0) - 0.5) < 0.03
        base = np.where((lane & (fade > 0.3))[:, :, None], np.float32(0.85), base)
    fog = spec.lighting.fog(depth)[:, :, None]
    return base * (1 - fog) + spec.lighting.fog_color * fog


def _grout(u: np.ndarray, v: np.ndarray, size: float, footprint: np.ndarray) -> np.ndarray:
    """Darker thin lines between tiles, fading out where they would be thinner than a pixel."""
    width = 0.04 * size
    du = np.abs(((u / size) % 1.0) - 0.5) * size
    dv = np.abs(((v / size) % 1.0) - 0.5) * size
    edge = (np.maximum(du, dv) > 0.5 * size - width).astype(np.float32)
    visible = np.clip(width / np.maximum(footprint, 1e-6), 0.0, 1.0)
    return 1.0 - 0.35 * edge * visible


def wall_texture(spec: SceneSpec, noise: NoiseTable, lateral: np.ndarray, height_m: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    color = spec.wall_color[None, None, :]
    wall = color * (1.0 + 0.08 * noise.sample(lateral * 2.0, height_m * 2.0)[:, :, None])
    # Windows / panels / posters: a grid of cells, some lit or coloured.
    cell_w, cell_h = rng.uniform(1.5, 5.0), rng.uniform(2.0, 4.0)
    u, v = lateral / cell_w, height_m / cell_h
    inside = (np.abs((u % 1.0) - 0.5) < 0.32) & (np.abs((v % 1.0) - 0.5) < 0.3) & (height_m > 1.0)
    pick = noise.cell(u + 17.0, v + 5.0)
    window_tone = np.where(pick[:, :, None] > 0.3, np.float32(0.9) * spec.wall_color + 0.25,
                           np.float32(0.35) * spec.wall_color)
    has_windows = rng.uniform() < 0.75
    if has_windows:
        wall = np.where(inside[:, :, None], window_tone, wall)
    return wall


def sky_texture(spec: SceneSpec, rng: np.random.Generator, width: int, rows: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None, None]
    top = spec.sky_color * rng.uniform(0.7, 1.0)
    horizon = np.clip(spec.sky_color + 0.2, 0, 1)
    sky = np.broadcast_to(top * (1 - t) + horizon * t, (rows, width, 3)).copy()
    clouds = np.clip(smooth_noise(rng, width, rows, int(rng.integers(4, 14))), 0, 1)[:, :, None]
    return sky * (1 - 0.6 * clouds) + 0.9 * 0.6 * clouds


def ceiling_texture(spec: SceneSpec, rng: np.random.Generator, width: int, rows: int) -> np.ndarray:
    base = spec.wall_color * rng.uniform(0.25, 0.6)
    ceiling = np.broadcast_to(base, (rows, width, 3)).copy()
    n_lights = int(rng.integers(0, 8))
    for _ in range(n_lights):
        x, y = rng.uniform(0, width), rng.uniform(0, max(rows, 1))
        r = rng.uniform(3, 25)
        ys, xs = np.ogrid[0:rows, 0:width]
        ceiling += 0.8 * np.exp(-((xs - x) ** 2 + ((ys - y) * 2) ** 2) / (2 * r * r))[:, :, None]
    return ceiling


# ---------------------------------------------------------------------------------------------
# Scene objects that stand on the ground and hide people


@dataclass
class SceneObject:
    kind: str
    lateral: float
    depth: float
    size: tuple[float, float]  # (width, height) metres
    color: np.ndarray
    color2: np.ndarray

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "x_m": round(self.lateral, 2), "z_m": round(self.depth, 2),
                "size_m": [round(v, 2) for v in self.size]}

    def draw(self, canvas: Canvas, camera: Camera, lighting: Lighting) -> None:
        base_row = float(camera.row_of_depth(self.depth))
        ppm = float(camera.pixels_per_metre(self.depth)) * 1.0
        squash = float(camera.foreshortening(base_row))
        cx = float(camera.column(self.lateral, self.depth))
        w, h = self.size[0] * ppm, self.size[1] * ppm * squash
        color = lighting.hazed(self.color, self.depth)
        color2 = lighting.hazed(self.color2, self.depth)
        DRAWERS[self.kind](canvas, cx, base_row, w, h, color, color2)


def _draw_pillar(canvas, cx, base, w, h, color, color2):
    canvas.rectangle(cx - w / 2, base - h, cx + w / 2, base, color, SCENERY, shade=1.0)


def _draw_pole(canvas, cx, base, w, h, color, color2):
    pole_w = max(w * 0.12, 0.8)
    canvas.rectangle(cx - pole_w / 2, base - h, cx + pole_w / 2, base, color, SCENERY, shade=0.6)
    canvas.rectangle(cx - w / 2, base - h - 0.25 * w, cx + w / 2, base - h + 0.25 * w, color2, SCENERY)


def _draw_tree(canvas, cx, base, w, h, color, color2):
    trunk = max(w * 0.1, 0.8)
    canvas.rectangle(cx - trunk / 2, base - 0.55 * h, cx + trunk / 2, base, color, SCENERY, shade=0.8)
    for dx, dy, r in ((0.0, 0.72, 0.5), (-0.25, 0.62, 0.35), (0.25, 0.62, 0.35), (0.0, 0.9, 0.35)):
        canvas.ellipse(cx + dx * w, base - dy * h, r * w, r * w * 0.8, color2, SCENERY, shade=0.8)


def _draw_fence(canvas, cx, base, w, h, color, color2):
    bar = max(h * 0.08, 0.7)
    for level in (1.0, 0.55):
        canvas.rectangle(cx - w / 2, base - level * h, cx + w / 2, base - level * h + bar, color, SCENERY)
    posts = max(2, int(w / max(h, 1.0)) + 1)
    for x in np.linspace(cx - w / 2, cx + w / 2, posts):
        canvas.rectangle(x - bar / 2, base - h, x + bar / 2, base, color, SCENERY)


def _draw_booth(canvas, cx, base, w, h, color, color2):
    canvas.rectangle(cx - w / 2, base - 0.75 * h, cx + w / 2, base, color, SCENERY, shade=0.5)
    canvas.polygon(np.array([[cx - 0.55 * w, base - 0.75 * h], [cx + 0.55 * w, base - 0.75 * h],
                             [cx + 0.45 * w, base - h], [cx - 0.45 * w, base - h]], np.float32),
                   color2, SCENERY, shade=0.4)


def _draw_vehicle(canvas, cx, base, w, h, color, color2):
    canvas.rectangle(cx - w / 2, base - 0.6 * h, cx + w / 2, base - 0.12 * h, color, SCENERY, shade=0.7)
    canvas.polygon(np.array([[cx - 0.3 * w, base - 0.6 * h], [cx + 0.3 * w, base - 0.6 * h],
                             [cx + 0.22 * w, base - h], [cx - 0.22 * w, base - h]], np.float32),
                   color * 0.5 + 0.1, SCENERY, shade=0.4)
    for side in (-0.3, 0.3):
        canvas.ellipse(cx + side * w, base - 0.12 * h, 0.1 * w, 0.12 * h, np.full(3, 0.06, np.float32), SCENERY)


def _draw_banner(canvas, cx, base, w, h, color, color2):
    pole = max(w * 0.02, 0.7)
    for side in (-0.5, 0.5):
        canvas.rectangle(cx + side * w - pole / 2, base - h, cx + side * w + pole / 2, base, color2, SCENERY)
    canvas.rectangle(cx - w / 2, base - h, cx + w / 2, base - 0.6 * h, color, SCENERY, shade=0.3)


def _draw_parasol(canvas, cx, base, w, h, color, color2):
    pole = max(w * 0.03, 0.7)
    canvas.rectangle(cx - pole / 2, base - h, cx + pole / 2, base, color2, SCENERY)
    canvas.ellipse(cx, base - h, w / 2, max(0.12 * w, 1.0), color, SCENERY, shade=0.6)


def _draw_block(canvas, cx, base, w, h, color, color2):
    canvas.rectangle(cx - w / 2, base - h, cx + w / 2, base, color, SCENERY, shade=0.6)
    canvas.rectangle(cx - w / 2, base - h, cx + w / 2, base - 0.85 * h, color2, SCENERY)


DRAWERS = {
    "pillar": _draw_pillar, "pole": _draw_pole, "tree": _draw_tree, "fence": _draw_fence,
    "booth": _draw_booth, "vehicle": _draw_vehicle, "banner": _draw_banner,
    "parasol": _draw_parasol, "block": _draw_block,
}
# (width range, height range) in metres, and where each kind is plausible.
OBJECT_SIZES = {
    "pillar": ((0.4, 1.4), (3.0, 12.0)), "pole": ((0.4, 1.2), (2.5, 6.0)),
    "tree": ((2.0, 5.0), (4.0, 9.0)), "fence": ((3.0, 15.0), (0.9, 1.3)),
    "booth": ((2.0, 4.5), (2.4, 3.2)), "vehicle": ((3.8, 5.5), (1.4, 2.2)),
    "banner": ((2.0, 6.0), (2.5, 4.0)), "parasol": ((2.0, 3.5), (2.1, 2.6)),
    "block": ((0.6, 2.5), (0.6, 1.6)),
}
INDOOR_OBJECTS = ("pillar", "booth", "banner", "block", "fence", "pole")
OUTDOOR_OBJECTS = ("pole", "tree", "fence", "booth", "vehicle", "banner", "parasol", "block", "pillar")


def sample_objects(rng: np.random.Generator, spec: SceneSpec) -> list[SceneObject]:
    """0 to ~10 objects on the ground among the people, and sometimes one right by the lens."""
    cam = spec.camera
    kinds = INDOOR_OBJECTS if spec.indoor else OUTDOOR_OBJECTS
    count = int(rng.choice([0, 1, 2, 3, 4, 6, 8, 10], p=[0.18, 0.16, 0.16, 0.14, 0.12, 0.1, 0.08, 0.06]))
    near, far = spec.people_depth
    objects = []
    for index in range(count + int(rng.uniform() < 0.12)):
        kind = str(rng.choice(kinds))
        (w0, w1), (h0, h1) = OBJECT_SIZES[kind]
        if index == count:  # a foreground occluder at the frame's edge, close to the camera
            depth = near * rng.uniform(0.5, 1.0)
            kind = str(rng.choice(["pillar", "pole", "block"]))
            (w0, w1), (h0, h1) = OBJECT_SIZES[kind]
            edge = rng.choice([0.0, cam.width])
            lateral = float(cam.lateral(edge, depth))
        else:
            depth = float(np.exp(rng.uniform(np.log(max(near, 0.5)), np.log(far))))
            lateral = float(cam.lateral(rng.uniform(-0.1, 1.1) * cam.width, depth))
        objects.append(SceneObject(
            kind=kind, lateral=lateral, depth=float(depth),
            size=(float(rng.uniform(w0, w1)), float(rng.uniform(h0, h1))),
            color=random_hue_color(rng, (0.0, 0.7), (0.15, 0.85)),
            color2=random_hue_color(rng, (0.2, 0.9), (0.2, 0.9)) if kind != "tree"
            else random_color(rng, (0.2, 0.35, 0.15), (0.06, 0.08, 0.05)),
        ))
    return objects
