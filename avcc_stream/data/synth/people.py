"""People: where a crowd stands, what each person looks like, and drawing them in depth order.

Positions are drawn on the ground plane in metres (uniformly over the visible area, in
clusters whose size follows a plausible density, and in queues), then projected by the
camera, so crowds thin out near the camera and pack towards the horizon. People and scene
objects are drawn far to near; the label buffer then tells which heads are still visible.
A head is annotated when its centre is in the frame and enough of it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from avcc_stream.data.synth.raster import Canvas
from avcc_stream.data.synth.scene import PERSON_HEIGHT_M, Camera, SceneObject, SceneSpec, random_hue_colors

HEAD_VISIBLE_FRACTION = 0.35  # annotators mark a head when about a third of it shows
HEAD_CENTRE_SHARE = 0.935  # the head centre's height above the feet, as a share of the person's
HEAD_RADII_SHARE = (0.052, 0.064)  # a head's half-width and half-height, as shares of the person's height
BLOB_MAX_PIXELS = 16.0  # people shorter than this are drawn as three blobs
DETAIL_MIN_PIXELS = 40.0  # people this tall get arms, hands, a neck and a shadow

SKIN_TONES = np.array([
    [0.98, 0.84, 0.72], [0.92, 0.74, 0.60], [0.80, 0.60, 0.45], [0.66, 0.46, 0.32],
    [0.50, 0.34, 0.22], [0.36, 0.24, 0.16], [0.26, 0.17, 0.12],
], dtype=np.float32)
HAIR_COLORS = np.array([
    [0.05, 0.04, 0.03], [0.15, 0.10, 0.06], [0.30, 0.20, 0.12], [0.55, 0.42, 0.25],
    [0.80, 0.68, 0.45], [0.60, 0.60, 0.60], [0.45, 0.18, 0.10],
], dtype=np.float32)


@dataclass
class Crowd:
    """n people: ground position and appearance, one array entry per person."""

    lateral: np.ndarray  # metres
    depth: np.ndarray  # metres
    scale: np.ndarray  # height / 1.7 m
    build: np.ndarray  # width multiplier
    facing: np.ndarray  # 0 front, 1 back, 2 left, 3 right
    shirt: np.ndarray  # n x 3
    legs: np.ndarray  # n x 3
    skin: np.ndarray  # n x 3
    hair: np.ndarray  # n x 3
    hat: np.ndarray  # n x 3 (colour), used where has_hat
    has_hat: np.ndarray
    dress: np.ndarray
    bag: np.ndarray
    phase: np.ndarray  # walk cycle phase (radians)
    moving: np.ndarray  # bool: walking (for footsteps, and animated in video)
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.depth)

    def take(self, index: np.ndarray) -> "Crowd":
        fields = {name: getattr(self, name)[index] for name in self.__dataclass_fields__ if name != "extras"}
        return Crowd(**fields, extras=dict(self.extras))

    def moved(self, lateral: np.ndarray, depth: np.ndarray, phase: np.ndarray) -> "Crowd":
        return replace(self, lateral=lateral, depth=depth, phase=phase)


def visible_area(spec: SceneSpec) -> float:
    """Ground area (m^2) in view between the nearest and farthest standing depth."""
    near, far = spec.people_depth
    return float(spec.camera.width / (2.0 * spec.camera.focal) * (far**2 - near**2))


def sample_ground_uniform(rng: np.random.Generator, spec: SceneSpec, n: int, margin: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """n positions uniform over the visible ground (density per m^2 constant)."""
    near, far = spec.people_depth
    depth = np.sqrt(rng.uniform(0, 1, n) * (far**2 - near**2) + near**2)
    column = rng.uniform(-margin, 1 + margin, n) * spec.camera.width
    return spec.camera.lateral(column, depth), depth


def sample_positions(rng: np.random.Generator, spec: SceneSpec, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Ground positions for n people: a mix of scattered people, clusters and queues."""
    if n == 0:
        return np.zeros(0), np.zeros(0), {"layout": "empty"}
    style = rng.choice(["scattered", "mixed", "clustered"], p=[0.25, 0.5, 0.25])
    clustered_share = {"scattered": 0.0, "mixed": rng.uniform(0.3, 0.8), "clustered": 1.0}[style]
    n_clustered = int(round(n * clustered_share))
    lateral, depth = sample_ground_uniform(rng, spec, n - n_clustered)
    info: dict[str, Any] = {"layout": str(style), "clusters": 0, "queues": 0}
    if n_clustered:
        n_groups = int(rng.integers(1, 9))
        sizes = rng.multinomial(n_clustered, rng.dirichlet(np.ones(n_groups) * 0.8))
        centre_x, centre_z = sample_ground_uniform(rng, spec, n_groups, margin=-0.05)
        parts_x, parts_z = [lateral], [depth]
        for size, cx, cz in zip(sizes, centre_x, centre_z):
            if size == 0:
                continue
            if rng.uniform() < 0.2 and size >= 4:  # a queue: a line of people
                angle = rng.uniform(0, np.pi)
                along = np.arange(size) * rng.uniform(0.5, 0.9) - size * 0.35
                across = rng.normal(0, 0.15, size)
                dx = along * np.cos(angle) - across * np.sin(angle)
                dz = along * np.sin(angle) + across * np.cos(angle)
                info["queues"] += 1
            else:  # a group whose spread matches a density between loose and packed
                density = rng.uniform(0.4, 4.0)  # people per m^2
                radius = np.sqrt(size / (np.pi * density))
                aspect = rng.uniform(0.5, 2.0)
                dx = rng.normal(0, radius * np.sqrt(aspect) / 1.4, size)
                dz = rng.normal(0, radius / np.sqrt(aspect) / 1.4, size)
                info["clusters"] += 1
            parts_x.append(cx + dx)
            parts_z.append(cz + dz)
        lateral, depth = np.concatenate(parts_x), np.concatenate(parts_z)
    near, far = spec.people_depth
    # Whoever a cluster pushed out of the standable band moves back into it.
    depth = np.clip(depth, near, far)
    return lateral, depth, info


def sample_appearance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Clothes, skin, hair, height, build: a mix of dark and bright outfits."""
    def outfit(count: int) -> np.ndarray:
        dark = rng.uniform(0, 1, count) < 0.45
        colors = random_hue_colors(rng, count, (0.1, 0.9), (0.25, 0.95))
        colors[dark] *= rng.uniform(0.15, 0.45, (int(dark.sum()), 1)).astype(np.float32)
        return colors

    child = rng.uniform(0, 1, n) < 0.08
    scale = np.where(child, rng.uniform(0.55, 0.8, n), rng.normal(1.0, 0.06, n))
    skin = SKIN_TONES[rng.integers(0, len(SKIN_TONES), n)] * rng.uniform(0.9, 1.08, (n, 1))
    hair = HAIR_COLORS[rng.choice(len(HAIR_COLORS), n, p=[0.35, 0.25, 0.15, 0.08, 0.07, 0.06, 0.04])]
    return {
        "scale": scale.astype(np.float32),
        "build": rng.uniform(0.85, 1.2, n).astype(np.float32),
        "facing": rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15]),
        "shirt": outfit(n),
        "legs": outfit(n) * 0.8,
        "skin": np.clip(skin, 0, 1).astype(np.float32),
        "hair": hair.astype(np.float32),
        "hat": outfit(n),
        "has_hat": rng.uniform(0, 1, n) < 0.12,
        "dress": rng.uniform(0, 1, n) < 0.1,
        "bag": rng.uniform(0, 1, n) < 0.15,
    }


def sample_crowd(rng: np.random.Generator, spec: SceneSpec, n: int) -> Crowd:
    lateral, depth, info = sample_positions(rng, spec, n)
    n = len(depth)
    moving_share = float(rng.choice([0.0, rng.uniform(0.05, 0.4), rng.uniform(0.4, 0.9)], p=[0.2, 0.5, 0.3]))
    info["moving_share"] = round(moving_share, 3)
    return Crowd(
        lateral=lateral.astype(np.float64),
        depth=depth.astype(np.float64),
        phase=rng.uniform(0, 2 * np.pi, n),
        moving=rng.uniform(0, 1, n) < moving_share,
        extras=info,
        **sample_appearance(rng, n),
    )


# ---------------------------------------------------------------------------------------------
# Drawing


def head_label(index: int) -> int:
    return 2 * index


def body_label(index: int) -> int:
    return 2 * index + 1


@dataclass
class Figure:
    """A person's image-space geometry (pixels)."""

    foot_x: float
    foot_y: float
    height: float  # unforeshortened height in pixels
    squash: float

    @property
    def head(self) -> tuple[float, float]:
        return self.foot_x, self.foot_y - self.height * self.squash * HEAD_CENTRE_SHARE


def figure_of(crowd: Crowd, index: int, spec: SceneSpec) -> Figure:
    cam = spec.camera
    depth = float(crowd.depth[index])
    foot_y = float(cam.row_of_depth(depth))
    return Figure(
        foot_x=float(cam.column(crowd.lateral[index], depth)),
        foot_y=foot_y,
        height=float(PERSON_HEIGHT_M * crowd.scale[index] * cam.pixels_per_metre(depth)),
        squash=float(cam.foreshortening(foot_y)),
    )


def head_row(cam: Camera, depth: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Image row of the head centre of a person `depth` metres away, `scale` x 1.7 m tall."""
    foot_y = cam.row_of_depth(depth)
    height = PERSON_HEIGHT_M * scale * cam.pixels_per_metre(depth)
    return foot_y - height * cam.foreshortening(foot_y) * HEAD_CENTRE_SHARE


def head_points(crowd: Crowd, spec: SceneSpec) -> np.ndarray:
    """(n, 2) head centres (x, y) in pixels: the generator's exact annotation."""
    cam = spec.camera
    return np.stack([cam.column(crowd.lateral, crowd.depth), head_row(cam, crowd.depth, crowd.scale)], axis=1)


def head_heights_from_points(cam: Camera, points: np.ndarray) -> np.ndarray:
    """How tall in pixels the generator drew the heads annotated at `points` ((n, 2) x, y), from the
    camera alone: a sample's points and meta do not keep each person's depth, so this inverts
    head_points for an adult of 1.7 m (within ~12 % for 9 adults in 10; a child's head comes out up
    to ~1.9x too large). head_row falls monotonically with depth, so a bisection on log depth finds
    it."""
    rows = np.asarray(points, dtype=np.float64).reshape(-1, 2)[:, 1]
    near, far = np.full(len(rows), np.log(0.05)), np.full(len(rows), np.log(1e5))
    for _ in range(60):
        mid = 0.5 * (near + far)
        below = head_row(cam, np.exp(mid)) > rows  # drawn lower in the frame: the person is farther
        near, far = np.where(below, mid, near), np.where(below, far, mid)
    return 2.0 * HEAD_RADII_SHARE[1] * PERSON_HEIGHT_M * cam.pixels_per_metre(np.exp(0.5 * (near + far)))


def draw_person(canvas: Canvas, crowd: Crowd, index: int, spec: SceneSpec) -> int:
    """Draw person `index`; returns how many pixels its head covers (at least 1 if in frame)."""
    fig = figure_of(crowd, index, spec)
    h, sq, x, y = fig.height, fig.squash, fig.foot_x, fig.foot_y
    haze = spec.lighting.hazed
    depth = float(crowd.depth[index])
    shirt, legs = haze(crowd.shirt[index], depth), haze(crowd.legs[index], depth)
    skin, hair = haze(crowd.skin[index], depth), haze(crowd.hair[index], depth)
    build = float(crowd.build[index])
    body = body_label(index)
    v = h * sq  # vertical extent on screen
    head_x, head_y = fig.head
    head_rx, head_ry = HEAD_RADII_SHARE[0] * h, HEAD_RADII_SHARE[1] * h

    if h < BLOB_MAX_PIXELS:
        # Few pixels tall: legs and torso as two blobs are indistinguishable from more detail.
        canvas.ellipse(x, y - 0.27 * v, 0.07 * h * build, 0.27 * v, legs, body)
        canvas.ellipse(x, y - 0.65 * v, 0.125 * h * build, 0.2 * v, shirt, body)
        tone = hair if crowd.facing[index] == 1 else 0.5 * (hair + skin)
        canvas.ellipse(head_x, head_y, head_rx, head_ry, tone, head_label(index))
        return _head_area(canvas, index, head_x, head_y, head_rx, head_ry)

    stride = 0.07 * h * np.sin(crowd.phase[index]) if crowd.moving[index] else 0.0
    hip_y, shoulder_y = y - 0.5 * v, y - 0.82 * v
    label = head_label(index)
    facing = int(crowd.facing[index])
    if h < DETAIL_MIN_PIXELS:
        # Small: legs as one shape, arms within the torso's outline, head with its hair.
        canvas.polygon(_trapezoid(x + 0.5 * stride, hip_y, y, 0.17 * h * build, 0.15 * h * build + abs(stride)),
                       legs, body, shade=0.8)
        canvas.polygon(_trapezoid(x, shoulder_y, hip_y + 0.04 * v, 0.3 * h * build, 0.24 * h * build),
                       shirt, body, shade=1.0)
        canvas.ellipse(head_x, head_y, head_rx, head_ry, hair if facing == 1 else skin, label)
        if facing != 1:
            canvas.ellipse(head_x, head_y - 0.5 * head_ry, head_rx, head_ry * 0.55, hair, label)
        return _head_area(canvas, index, head_x, head_y, head_rx, head_ry)

    canvas.ellipse(x, y, 0.2 * h * build, max(0.05 * h * (1.2 - sq), 1.0), np.zeros(3, np.float32),
                   -1, opacity=0.3)
    leg_w = 0.075 * h * build
    for side in (-1, 1):
        foot_x = x + side * 0.04 * h + side * stride
        canvas.polygon(np.array([[x + side * 0.05 * h - leg_w / 2, hip_y], [x + side * 0.05 * h + leg_w / 2, hip_y],
                                 [foot_x + leg_w * 0.4, y], [foot_x - leg_w * 0.4, y]], np.float32),
                       legs, body, shade=0.8)
    torso_bottom = y - 0.22 * v if crowd.dress[index] else hip_y + 0.03 * v
    torso_low_w = (0.3 if crowd.dress[index] else 0.2) * h * build
    canvas.polygon(_trapezoid(x, shoulder_y, torso_bottom, 0.27 * h * build, torso_low_w), shirt, body, shade=1.0)
    if crowd.bag[index]:
        canvas.rectangle(x - 0.11 * h * build, shoulder_y + 0.04 * v, x + 0.11 * h * build, hip_y,
                         crowd.hat[index] * 0.6, body, shade=0.6)
    arm_w = 0.055 * h * build
    for side in (-1, 1):
        top_x = x + side * 0.135 * h * build
        hand_x = top_x + side * 0.02 * h - side * stride * 0.6
        canvas.polygon(np.array([[top_x - arm_w / 2, shoulder_y], [top_x + arm_w / 2, shoulder_y],
                                 [hand_x + arm_w * 0.4, hip_y + 0.02 * v], [hand_x - arm_w * 0.4, hip_y + 0.02 * v]],
                                np.float32), shirt, body, shade=0.9)
        canvas.ellipse(hand_x, hip_y + 0.04 * v, arm_w * 0.45, arm_w * 0.5, skin, body)
    canvas.rectangle(x - 0.025 * h, head_y, x + 0.025 * h, shoulder_y + 0.01 * v, skin * 0.9, body)

    canvas.ellipse(head_x, head_y, head_rx, head_ry, hair if facing == 1 else skin, label, shade=0.7)
    if facing == 0:  # hair on top, face below
        canvas.ellipse(head_x, head_y - 0.55 * head_ry, head_rx * 1.02, head_ry * 0.55, hair, label, shade=0.5)
    elif facing == 1:
        pass
    else:  # profile: hair at the back of the head
        side = -1 if facing == 2 else 1
        canvas.ellipse(head_x + side * 0.35 * head_rx, head_y - 0.25 * head_ry, head_rx * 0.8, head_ry * 0.85,
                       hair, label, shade=0.5)
    if crowd.has_hat[index]:
        hat = haze(crowd.hat[index], depth)
        canvas.ellipse(head_x, head_y - 0.6 * head_ry, head_rx * 1.15, head_ry * 0.5, hat, label, shade=0.6)
    return _head_area(canvas, index, head_x, head_y, head_rx, head_ry)


def _trapezoid(x: float, top: float, bottom: float, top_w: float, bottom_w: float) -> np.ndarray:
    return np.array([[x - top_w / 2, top], [x + top_w / 2, top], [x + bottom_w / 2, bottom],
                     [x - bottom_w / 2, bottom]], dtype=np.float32)


def _head_area(canvas: Canvas, index: int, x: float, y: float, rx: float, ry: float) -> int:
    label = head_label(index)
    canvas.mark(x, y, label)  # a head smaller than a pixel still owns the pixel at its centre
    top, bottom = max(int(y - ry - 2), 0), min(int(y + ry + 3), canvas.height)
    left, right = max(int(x - rx - 2), 0), min(int(x + rx + 3), canvas.width)
    if bottom <= top or right <= left:
        return 0
    return int(np.count_nonzero(canvas.labels[top:bottom, left:right] == label))


def _visible_head_pixels(canvas: Canvas, people: int) -> np.ndarray:
    """(people,) how many pixels of each person's head the label buffer still shows (nearer things
    drawn over it take theirs away); head labels are the even ones (`head_label`)."""
    if not people:
        return np.zeros(0, np.int64)
    labels = canvas.labels[canvas.labels >= 0]
    return np.bincount(labels, minlength=2 * people)[0 : 2 * people : 2]


def draw_scene(
    canvas: Canvas, spec: SceneSpec, objects: list[SceneObject], crowd: Crowd
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw objects and people far to near. Returns (head points (n, 2), annotated (n,) bool, pixels
    of each head left visible (n,))."""
    n = len(crowd)
    drawables = [(float(obj.depth), 1, i) for i, obj in enumerate(objects)]
    drawables += [(float(crowd.depth[i]), 0, i) for i in range(n)]
    drawables.sort(key=lambda item: -item[0])
    head_area = np.zeros(n, dtype=np.int64)
    for _, kind, index in drawables:
        if kind == 1:
            objects[index].draw(canvas, spec.camera, spec.lighting)
        else:
            head_area[index] = draw_person(canvas, crowd, index, spec)
    points = head_points(crowd, spec)
    remaining = _visible_head_pixels(canvas, n)
    in_frame = (
        (points[:, 0] >= 0) & (points[:, 0] < canvas.width) & (points[:, 1] >= 0) & (points[:, 1] < canvas.height)
    )
    visible = remaining >= np.maximum(HEAD_VISIBLE_FRACTION * head_area, 1)
    return points, in_frame & visible, remaining
