"""Ground truth: density maps sum to head counts (border heads included), resizing keeps sums."""

from __future__ import annotations

import numpy as np
import pytest

from avcc_stream.data.density import density_map, gaussian_kernel, patch_counts, resize_density


def test_kernel_is_the_fixed_15x15_sigma4_gaussian_summing_to_one():
    kernel = gaussian_kernel()
    assert kernel.shape == (15, 15)
    assert kernel.sum() == pytest.approx(1.0)
    assert kernel[7, 7] == kernel.max()
    # sigma 4: the value one sigma away is exp(-1/2) of the centre along an axis
    assert kernel[7, 11] / kernel[7, 7] == pytest.approx(np.exp(-0.5))


def test_interior_head_stamps_the_kernel_itself():
    density = density_map(np.array([[20.5, 30.2]]), 60, 50)
    np.testing.assert_allclose(density[23:38, 13:28], gaussian_kernel(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "points",
    [
        [[0.0, 0.0]],  # a corner: three quarters of the kernel falls outside
        [[49.9, 29.9], [0.2, 29.0], [25.0, 0.0]],  # every border
        [[50.0, 30.0], [-1.0, 5.0]],  # exactly on / just outside the border: clipped in
        np.random.default_rng(0).uniform([0, 0], [50, 30], (300, 2)),
    ],
)
def test_density_sums_to_the_head_count_including_border_heads(points):
    density = density_map(np.asarray(points), 30, 50)
    assert density.dtype == np.float32 and density.shape == (30, 50)
    assert float(density.sum(dtype=np.float64)) == pytest.approx(len(points), abs=1e-4)
    assert density.min() >= 0


def test_no_heads_gives_an_all_zero_map():
    assert not density_map(np.zeros((0, 2)), 10, 12).any()
    assert not density_map(None, 10, 12).any()


def test_bad_points_are_rejected_with_the_shape_found():
    with pytest.raises(ValueError, match=r"\(N, 2\).*\(3,\)"):
        density_map(np.array([1.0, 2.0, 3.0]), 10, 10)


@pytest.mark.parametrize("size", [(15, 25), (7, 13), (60, 100), (90, 150), (1, 1)])
def test_resize_preserves_the_sum_down_and_up(size):
    density = density_map(np.random.default_rng(1).uniform([0, 0], [100, 60], (40, 2)), 60, 100)
    resized = resize_density(density, size)
    assert resized.shape == size
    assert float(resized.sum(dtype=np.float64)) == pytest.approx(40.0, abs=1e-3)


def test_resize_by_an_integer_factor_is_sum_pooling():
    density = np.random.default_rng(2).uniform(0, 1, (8, 12)).astype(np.float32)
    pooled = resize_density(density, (2, 3))
    expected = density.reshape(2, 4, 3, 4).sum(axis=(1, 3))
    np.testing.assert_allclose(pooled, expected, rtol=1e-5)


def test_resize_keeps_mass_where_it_was():
    density = np.zeros((40, 40), dtype=np.float32)
    density[5, 35] = 1.0  # top-right quadrant
    small = resize_density(density, (2, 2))
    np.testing.assert_allclose(small, [[0, 1], [0, 0]], atol=1e-6)


def test_patch_counts_count_heads_per_patch_and_sum_to_the_count():
    points = np.array([[1, 1], [99, 1], [99, 59], [50, 30], [49.9, 29.9], [100, 60]])
    counts = patch_counts(points, (100, 60), (2, 2))
    # (100, 60) is on the border: clipped into the bottom-right patch, as density_map does
    np.testing.assert_array_equal(counts, [[2, 1], [0, 3]])
    assert counts.dtype == np.float32


def test_patch_counts_agree_with_the_density_map_summed_per_patch_for_interior_heads():
    points = np.array([[20.0, 20.0], [100.0, 20.0], [60.0, 60.0], [140.0, 60.0]])
    density = density_map(points, 80, 160)
    np.testing.assert_allclose(resize_density(density, (2, 4)), patch_counts(points, (160, 80), (2, 4)), atol=1e-4)
