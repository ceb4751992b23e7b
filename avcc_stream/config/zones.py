"""Zones of a camera's scene with their own alert levels: a polygon in frame pixels, or a
set of model patches ([row, col] of the PIR grid)."""

from __future__ import annotations

from pydantic import Field, model_validator

from avcc_stream.config.alerts import Levels
from avcc_stream.config.common import RuleError, StrictModel
from avcc_stream.security import CAMERA_NAME_PATTERN

Point = tuple[float, float]


def polygon_area(points: list[Point]) -> float:
    """Unsigned area by the shoelace formula."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        total += x0 * y1 - x1 * y0
    return abs(total) / 2.0


def _segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    def orient(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def first_self_crossing(points: list[Point]) -> tuple[int, int] | None:
    """Indices of two non-adjacent edges that cross, or None for a simple polygon."""
    edges = list(zip(points, points[1:] + points[:1]))
    n = len(edges)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing vertex
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


class ZoneSettings(StrictModel):
    polygon: list[Point] | None = Field(
        default=None, title="Polygon vertices [x, y] in the camera frame's pixels"
    )
    patches: list[tuple[int, int]] | None = Field(
        default=None, title="Model patches [row, col] of the PIR grid"
    )
    levels: Levels = Field(default_factory=dict, title="Level name -> people threshold in the zone")
    hysteresis: float | None = Field(
        default=None, ge=0, title="Overrides the camera's alerts.hysteresis for this zone"
    )

    @model_validator(mode="after")
    def _check_shape(self) -> ZoneSettings:
        if (self.polygon is None) == (self.patches is None):
            raise RuleError("a zone needs exactly one of polygon or patches", "polygon")
        if self.polygon is not None:
            self._check_polygon(self.polygon)
        if self.patches is not None:
            if not self.patches:
                raise RuleError("expected at least one [row, col] patch", "patches")
            for index, (row, col) in enumerate(self.patches):
                if row < 0 or col < 0:
                    raise RuleError("patch row and column must be >= 0", "patches", index)
            if len(set(self.patches)) != len(self.patches):
                raise RuleError("a patch is listed twice", "patches")
        return self

    @staticmethod
    def _check_polygon(points: list[Point]) -> None:
        if len(points) < 3:
            raise RuleError(
                f"a polygon needs at least 3 [x, y] points, got {len(points)}", "polygon"
            )
        for index, (x, y) in enumerate(points):
            if x < 0 or y < 0:
                raise RuleError("pixel coordinates must be >= 0", "polygon", index)
        if polygon_area(points) <= 0:
            raise RuleError("the polygon has zero area (its points are on one line)", "polygon")
        crossing = first_self_crossing(points)
        if crossing is not None:
            i, j = crossing
            raise RuleError(
                f"the polygon crosses itself (edge {i}-{i + 1} crosses edge {j}-{(j + 1) % len(points)}); "
                "list the points in order around the zone",
                "polygon",
            )


def check_zone_name(name: str) -> str:
    if not CAMERA_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid zone name {name!r}: use 1-64 letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return name
