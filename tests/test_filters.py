"""The fixed Wang et al. 2018 features (a reconstruction): shapes, ranges and filter behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from mtlbench_methods import wang_filters as filters
from mtlbench_methods.wang_filters import (
    local_energy,
    phase_symmetry,
    shadow_map,
    wang_features,
    wang_features_batch,
)

SINGLE = (phase_symmetry, local_energy, shadow_map)


def _noisy(image: np.ndarray, seed: int = 0, sigma: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def _line(line_value: float, background: float, size: int = 64) -> np.ndarray:
    """A 3-px horizontal line centred on row size // 2, with mild noise."""
    image = np.full((size, size), background, dtype=np.float64)
    image[size // 2 - 1 : size // 2 + 2] = line_value
    return _noisy(image)


def _far_rows(values: np.ndarray, centre: int, distance: int = 10) -> np.ndarray:
    rows = np.arange(values.shape[0])
    return values[np.abs(rows - centre) >= distance]


def _check_map(out: np.ndarray, shape: tuple[int, ...]) -> None:
    assert out.shape == shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (81, 37)])
def test_shapes_dtype_range_uint8_float_and_non_square(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    for fn in SINGLE:
        from_uint8 = fn(image)
        _check_map(from_uint8, shape)
        # Floats are intensities on [0, 1]: x and x / 255 give the same features.
        np.testing.assert_array_equal(fn(image / 255.0), from_uint8)
        _check_map(fn(image.astype(np.float32) / 255.0), shape)
    feats = wang_features(image)
    _check_map(feats, (3, *shape))
    for channel, fn in zip(feats, SINGLE, strict=True):
        np.testing.assert_array_equal(channel, fn(image))


def test_constant_image_gives_zero_symmetry_and_finite_energy():
    image = np.full((64, 64), 123, dtype=np.uint8)
    ps = phase_symmetry(image)
    assert np.isfinite(ps).all()
    assert ps.max() < 1e-6
    le = local_energy(image)
    assert np.isfinite(le).all()
    assert le.max() < 1e-6  # no structure: no energy (the eps keeps the max-normalisation finite)
    sm = shadow_map(image)
    np.testing.assert_allclose(sm[:, 0], (64 - np.arange(64)) / 64, rtol=1e-6)
    zeros = np.zeros((32, 40), dtype=np.uint8)
    for out in wang_features(zeros):
        assert np.isfinite(out).all() and out.max() == 0.0


def test_bright_line_has_high_symmetry_on_it_and_low_far_from_it():
    image = _line(200, 30)
    rows = phase_symmetry(image).mean(axis=1)
    on_line = rows[31:34].max()
    far = _far_rows(rows, 32).mean()
    assert on_line > 0.5
    assert on_line > 5 * far
    assert far < 0.05


def test_dark_line_has_low_symmetry_polarity():
    bright_on_line = phase_symmetry(_line(200, 30)).mean(axis=1)[31:34].max()
    dark = phase_symmetry(_line(30, 200))
    dark_on_line = dark.mean(axis=1)[31:34].max()
    assert dark_on_line < 0.05
    assert dark_on_line < 0.1 * bright_on_line
    assert dark.max() < 0.5


def test_local_energy_peaks_at_edge_and_line_and_is_small_in_flat_regions():
    image = np.full((64, 64), 30.0)
    image[:, 32:] = 200.0  # vertical step edge between columns 31 and 32
    cols = local_energy(_noisy(image)).mean(axis=0)
    assert 30 <= int(np.argmax(cols)) <= 33
    flat = np.r_[cols[:20], cols[44:]]  # includes the image borders: no wrap-around edge
    assert cols[30:34].max() > 0.8
    assert flat.max() < 0.15
    assert cols[30:34].max() > 5 * flat.mean()

    rows = local_energy(_line(200, 30)).mean(axis=1)
    assert 30 <= int(np.argmax(rows)) <= 34
    assert _far_rows(rows, 32, distance=12).max() < 0.15


def test_shadow_map_decreases_below_a_bright_band():
    image = np.full((64, 48), 20.0)
    image[:32] = 200.0  # bright top half, dark bottom half
    sm = shadow_map(_noisy(image))
    assert np.all(np.diff(sm, axis=0) <= 0)  # non-increasing down every column
    np.testing.assert_array_equal(sm[0], np.ones(48, dtype=np.float32))  # skin line: all remains
    above, below = sm[:30].mean(axis=0), sm[34:].mean(axis=0)
    assert np.all(below < above)
    assert sm[34:].max() < 0.15  # the bright band holds most of each column's signal
    assert sm[:16].min() > 0.5


def test_shadow_map_all_zero_column_is_zero():
    image = np.full((32, 16), 90, dtype=np.uint8)
    image[:, 5] = 0
    sm = shadow_map(image)
    assert np.all(sm[:, 5] == 0.0)
    assert np.all(sm[0, np.arange(16) != 5] == 1.0)
    # Negative float intensities are clipped to 0: an all-negative column is also 0.
    floats = np.full((8, 3), 0.5)
    floats[:, 1] = -1.0
    assert np.all(shadow_map(floats)[:, 1] == 0.0)


def test_deterministic_and_batch_equals_stacking():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, 37, 41), dtype=np.uint8)  # a shape no other test uses
    filters._filter_bank.cache_clear()
    batch = wang_features_batch(images)
    assert filters._filter_bank.cache_info().misses == 1  # one filter bank for the whole batch
    assert batch.shape == (3, 3, 37, 41) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.stack([wang_features(im) for im in images]))
    np.testing.assert_array_equal(wang_features(images[0]), wang_features(images[0]))
    for fn in SINGLE:
        np.testing.assert_array_equal(fn(images[1]), fn(images[1]))
    assert wang_features_batch(images[:0]).shape == (0, 3, 37, 41)


def test_non_2d_input_raises_naming_the_shape():
    cube = np.zeros((2, 8, 8), dtype=np.uint8)
    for fn in (*SINGLE, wang_features):
        with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
            fn(cube)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        wang_features_batch(cube[0])
