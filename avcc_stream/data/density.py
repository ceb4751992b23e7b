"""Ground truth: head points -> density maps and per-patch counts.

The DISCO reference code stamps a fixed 15x15 Gaussian (sigma 4) at each head and truncates it
at the image border, so heads near the border lose part of their mass. Here every head's
kernel is renormalised over the pixels that remain, so a map always sums to its head count.
Points are (x, y) in pixels; a head at (x, y) belongs to pixel (floor(x), floor(y)), and
points just outside the image (annotation tools put some exactly on the border) are clipped
onto it rather than dropped, so the count never silently changes.
"""

from __future__ import annotations

import functools

import numpy as np

DEFAULT_SIGMA = 4.0
DEFAULT_KERNEL = 15


def as_points(points: np.ndarray | list | None) -> np.ndarray:
    """Any (N, 2) array-like of (x, y) -> float64 (N, 2); None or empty -> (0, 2)."""
    if points is None:
        return np.zeros((0, 2), dtype=np.float64)
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"head points must be an (N, 2) array of (x, y), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("head points contain NaN or infinite coordinates")
    return array


@functools.lru_cache(maxsize=8)
def gaussian_kernel(size: int = DEFAULT_KERNEL, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """A size x size Gaussian kernel that sums to 1 (read-only, cached)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    offsets = np.arange(size, dtype=np.float64) - size // 2
    profile = np.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = np.outer(profile, profile)
    kernel /= kernel.sum()
    kernel.setflags(write=False)
    return kernel


def head_pixels(points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 of the pixel each head belongs to, clipped into the image."""
    pts = as_points(points)
    cols = np.clip(np.floor(pts[:, 0]), 0, width - 1).astype(np.int64)
    rows = np.clip(np.floor(pts[:, 1]), 0, height - 1).astype(np.int64)
    return rows, cols


def density_map(
    points: np.ndarray,
    height: int,
    width: int,
    sigma: float = DEFAULT_SIGMA,
    kernel: int = DEFAULT_KERNEL,
) -> np.ndarray:
    """A float32 height x width density map that sums to len(points).

    Each head stamps `gaussian_kernel(kernel, sigma)`; the part of a kernel that falls outside
    the image is dropped and the rest rescaled to sum 1. Vectorised: one bincount for all heads.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"density map size must be positive, got {height} x {width}")
    pts = as_points(points)
    if len(pts) == 0:
        return np.zeros((height, width), dtype=np.float32)
    rows, cols = head_pixels(pts, height, width)
    weights = gaussian_kernel(kernel, sigma)
    offsets = np.arange(kernel) - kernel // 2
    stamp_rows = rows[:, None, None] + offsets[None, :, None]  # N x K x 1
    stamp_cols = cols[:, None, None] + offsets[None, None, :]  # N x 1 x K
    inside = (stamp_rows >= 0) & (stamp_rows < height) & (stamp_cols >= 0) & (stamp_cols < width)
    mass = np.where(inside, weights[None], 0.0)
    mass /= mass.sum(axis=(1, 2), keepdims=True)  # renormalise what the border cut off
    flat_index = np.broadcast_to(stamp_rows * width + stamp_cols, inside.shape)[inside]
    flat = np.bincount(flat_index, weights=mass[inside], minlength=height * width)
    return flat.reshape(height, width).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """size_out x size_in matrix: the share of each input cell that lands in each output cell.

    Output cell i covers [i, i+1) * size_in / size_out in input coordinates; input cell j is
    [j, j+1). Every column sums to 1, so multiplying by it moves mass without creating or
    losing any, whether the map shrinks (an integer factor gives plain sum-pooling) or grows.
    """
    edges = np.arange(size_out + 1, dtype=np.float64) * (size_in / size_out)
    cells = np.arange(size_in, dtype=np.float64)
    low = np.maximum(edges[:-1, None], cells[None, :])
    high = np.minimum(edges[1:, None], cells[None, :] + 1.0)
    weights = np.clip(high - low, 0.0, None)
    weights.setflags(write=False)
    return weights


def resize_density(density: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D density map to `size` = (height, width), preserving its sum exactly.

    Mass is redistributed by area overlap, so counts in any region stay where they were.
    """
    array = np.asarray(density)
    if array.ndim != 2:
        raise ValueError(f"a density map must be 2-D, got shape {array.shape}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    if array.shape == (out_h, out_w):
        return array.astype(np.float32, copy=True)
    rows = _area_weights(array.shape[0], out_h)
    cols = _area_weights(array.shape[1], out_w)
    return (rows @ array.astype(np.float64) @ cols.T).astype(np.float32)


def patch_counts(
    points: np.ndarray, size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """Heads per patch: a float32 grid_h x grid_w array for an image of `size` = (width, height).

    The image is cut into grid_h x grid_w equal patches (the model's PIR/PCE patches); a head
    belongs to the patch holding its pixel, so the grid sums to len(points).
    """
    width, height = int(size[0]), int(size[1])
    grid_h, grid_w = int(grid[0]), int(grid[1])
    if width <= 0 or height <= 0 or grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"image size {size} and grid {grid} must be positive")
    rows, cols = head_pixels(points, height, width)
    patch_rows = rows * grid_h // height
    patch_cols = cols * grid_w // width
    counts = np.bincount(patch_rows * grid_w + patch_cols, minlength=grid_h * grid_w)
    return counts.reshape(grid_h, grid_w).astype(np.float32)
