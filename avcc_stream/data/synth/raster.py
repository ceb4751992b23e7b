"""Anti-aliased drawing of small convex shapes into a float image, with a label buffer.

Shapes are drawn back to front (painter's algorithm). Each draw touches only its bounding box,
so the cost is per shape and per covered pixel, never a Python loop over pixels. Every pixel a
shape covers by more than half takes the shape's label, so after a scene is drawn the label
buffer says who is visible where: that is how the generator knows which heads are hidden.
"""

from __future__ import annotations

import math

import numpy as np

BACKGROUND = -1  # label of pixels no shape covers
SCENERY = -2  # label of scene objects (pillars, fences, ...)


class Canvas:
    """An H x W x 3 float32 image in [0, 1] plus an H x W int32 label buffer."""

    def __init__(self, background: np.ndarray) -> None:
        self.rgb = np.array(background, dtype=np.float32, copy=True)
        self.height, self.width = self.rgb.shape[:2]
        self.labels = np.full((self.height, self.width), BACKGROUND, dtype=np.int32)

    def _window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int] | None:
        left, top = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        right, bottom = min(int(np.ceil(x1)) + 1, self.width), min(int(np.ceil(y1)) + 1, self.height)
        if right <= left or bottom <= top:
            return None
        return left, top, right, bottom

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        color: np.ndarray,
        label: int,
        *,
        opacity: float = 1.0,
        shade: float = 0.0,
    ) -> int:
        """Fill an axis-aligned ellipse; returns the number of pixels that took `label`."""
        rx, ry = max(rx, 0.35), max(ry, 0.35)
        window = self._window(cx - rx - 1, cy - ry - 1, cx + rx + 1, cy + ry + 1)
        if window is None:
            return 0
        left, top, right, bottom = window
        dx = (np.arange(left, right, dtype=np.float32) + (0.5 - cx)) * (1.0 / rx)
        dy = (np.arange(top, bottom, dtype=np.float32) + (0.5 - cy)) * (1.0 / ry)
        radius = np.sqrt(np.add.outer(dy * dy, dx * dx))
        alpha = np.clip((1.0 - radius) * min(rx, ry) + 0.5, 0.0, 1.0)
        return self._composite(window, alpha, color, label, opacity, shade, dx, dy)

    def polygon(
        self,
        vertices: np.ndarray,
        color: np.ndarray,
        label: int,
        *,
        opacity: float = 1.0,
        shade: float = 0.0,
    ) -> int:
        """Fill a convex polygon (k x 2 vertices (x, y), either winding)."""
        points = [(float(x), float(y)) for x, y in vertices]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        window = self._window(min(xs) - 1, min(ys) - 1, max(xs) + 1, max(ys) + 1)
        if window is None:
            return 0
        left, top, right, bottom = window
        px = np.arange(left, right, dtype=np.float32) + 0.5
        py = np.arange(top, bottom, dtype=np.float32) + 0.5
        count = len(points)
        area2 = sum(xs[i] * ys[(i + 1) % count] - xs[(i + 1) % count] * ys[i] for i in range(count))
        sign = 1.0 if area2 > 0 else -1.0
        # Signed distance to each edge, positive inside; the minimum is the polygon's.
        inside = None
        for i in range(count):
            vx, vy = points[i]
            ex, ey = points[(i + 1) % count][0] - vx, points[(i + 1) % count][1] - vy
            length = math.hypot(ex, ey)
            if length < 1e-6:
                continue
            nx, ny = -ey * sign / length, ex * sign / length
            distance = np.add.outer(py * ny, px * nx - (vx * nx + vy * ny))
            inside = distance if inside is None else np.minimum(inside, distance, out=inside)
        if inside is None:
            return 0
        alpha = np.clip(inside + 0.5, 0.0, 1.0)
        dx = dy = None
        if shade:
            half_w = max(0.5 * (max(xs) - min(xs)), 0.5)
            half_h = max(0.5 * (max(ys) - min(ys)), 0.5)
            dx = (px - 0.5 * (max(xs) + min(xs))) / half_w
            dy = (py - 0.5 * (max(ys) + min(ys))) / half_h
        return self._composite(window, alpha, color, label, opacity, shade, dx, dy)

    def rectangle(self, x0: float, y0: float, x1: float, y1: float, color: np.ndarray, label: int,
                  **kwargs: float) -> int:
        return self.polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32),
                            color, label, **kwargs)

    def _composite(
        self,
        window: tuple[int, int, int, int],
        alpha: np.ndarray,
        color: np.ndarray,
        label: int,
        opacity: float,
        shade: float,
        dx: np.ndarray | None,
        dy: np.ndarray | None,
    ) -> int:
        left, top, right, bottom = window
        if opacity != 1.0:
            alpha = alpha * opacity
        region = self.rgb[top:bottom, left:right]
        paint = np.asarray(color, dtype=np.float32)[None, None, :]
        if shade:
            # Light from above and the front: brighter top centre, darker sides and bottom.
            lit = 1.0 + shade * (-0.35 * dy[:, None] - 0.25 * dx[None, :] ** 2)
            paint = paint * np.clip(lit, 0.2, 1.6)[:, :, None]
        region += alpha[:, :, None] * (paint - region)
        if label == BACKGROUND or opacity < 0.5:
            return 0
        covered = alpha > 0.5
        self.labels[top:bottom, left:right][covered] = label
        return int(np.count_nonzero(covered))

    def mark(self, x: float, y: float, label: int) -> bool:
        """Give the pixel holding (x, y) `label` (tiny heads cover no pixel by half)."""
        col, row = int(np.floor(x)), int(np.floor(y))
        if 0 <= row < self.height and 0 <= col < self.width:
            self.labels[row, col] = label
            return True
        return False
