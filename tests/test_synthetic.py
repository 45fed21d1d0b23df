"""The procedural B-mode set: determinism, bookkeeping, and the class cues it is meant to carry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from mtlbench.data.cases import Case
from mtlbench.data.synthetic import (
    CLASSES,
    GENERATOR_VERSION,
    generate_case,
    generate_synthetic,
)

N_PER_CLASS = 40
SIZE = 96


@pytest.fixture(scope="module")
def by_class() -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """N_PER_CLASS (image, mask) pairs of each class at SIZE, from independent streams."""
    seeds = np.random.SeedSequence(12345).spawn(2 * N_PER_CLASS)
    return {
        label: [generate_case(np.random.default_rng(seeds[label * N_PER_CLASS + i]), label, SIZE)
                for i in range(N_PER_CLASS)]
        for label in (0, 1)
    }


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max(), xs.min(), xs.max()


def _solidity(mask: np.ndarray) -> float:
    """Mask area over the area of the convex hull of its pixel squares."""
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.column_stack([ys + dy, xs + dx])
                              for dy in (0, 1) for dx in (0, 1)])
    return mask.sum() / ConvexHull(corners).volume


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_constants():
    assert CLASSES == ("benign", "malignant")
    assert isinstance(GENERATOR_VERSION, int) and GENERATOR_VERSION >= 1


@pytest.mark.parametrize("size", [64, 97, 128])
@pytest.mark.parametrize("label", [0, 1])
def test_case_types_and_mask(size, label):
    for seed in range(5):
        image, mask = generate_case(np.random.default_rng(seed), label, size)
        assert image.shape == (size, size) and image.dtype == np.uint8
        assert mask.shape == (size, size) and mask.dtype == bool
        assert 0 < mask.sum() < 0.5 * size * size
        assert image.std() > 10  # textured, not flat


def test_generate_case_is_deterministic_from_the_rng():
    a = generate_case(np.random.default_rng(7), 1, 64)
    b = generate_case(np.random.default_rng(7), 1, 64)
    c = generate_case(np.random.default_rng(8), 1, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        generate_case(np.random.default_rng(0), 2, 64)
    with pytest.raises(ValueError):
        generate_case(np.random.default_rng(0), 0, 64, lesion_size=(0.3, 0.1))
    with pytest.raises(ValueError):
        generate_synthetic(4, size=32, malignant_fraction=1.5)
    with pytest.raises(ValueError):
        generate_synthetic(-1, size=32)


def test_same_seed_identical_other_seed_different():
    a = generate_synthetic(6, size=64, seed=1)
    b = generate_synthetic(6, size=64, seed=1)
    c = generate_synthetic(6, size=64, seed=2)
    assert [x.content_hash for x in a] == [x.content_hash for x in b]
    for x, y in zip(a, b, strict=True):
        assert x.image.tobytes() == y.image.tobytes()
        assert x.mask.tobytes() == y.mask.tobytes()
        assert x.label == y.label
    assert not set(x.content_hash for x in a) & set(x.content_hash for x in c)


def test_ids_groups_source_and_types():
    cases = generate_synthetic(12, size=64, seed=0)
    assert [c.id for c in cases] == [f"syn-{i:03d}" for i in range(12)]
    for c in cases:
        assert isinstance(c, Case)
        assert c.group == c.id and c.source == "synthetic"
        assert c.image.shape == (64, 64) and c.image.dtype == np.uint8
        assert c.mask.dtype == bool and 0 < c.mask.sum() < c.mask.size
        assert c.label in (0, 1)
        assert c.meta["generator_version"] == GENERATOR_VERSION


@pytest.mark.parametrize("n, fraction", [(10, 1 / 3), (20, 1 / 3), (9, 0.5), (7, 0.0), (5, 1.0),
                                         (0, 1 / 3)])
def test_class_counts(n, fraction):
    cases = generate_synthetic(n, size=32, seed=3, malignant_fraction=fraction)
    assert len(cases) == n
    assert sum(c.label for c in cases) == round(n * fraction)


def test_default_count_and_malignant_share():
    labels = [c.label for c in generate_synthetic(size=16, seed=0)]
    assert len(labels) == 160 and sum(labels) == round(160 / 3)


def test_classes_are_shuffled_through_the_ids():
    patterns = set()
    for seed in range(4):
        labels = [c.label for c in generate_synthetic(30, size=16, seed=seed)]
        assert labels != sorted(labels) and labels != sorted(labels, reverse=True)
        patterns.add(tuple(labels))
    assert len(patterns) == 4


def test_case_does_not_depend_on_n_cases():
    # A case's pixels depend only on (seed, index, label). Its label comes from a priority drawn
    # from its own stream, cut at the round(n * fraction) lowest, so a case near the cut can
    # change class with n_cases; every case that keeps its class keeps its pixels.
    small = generate_synthetic(10, size=64, seed=0)
    large = generate_synthetic(20, size=64, seed=0)
    same = [i for i in range(10) if small[i].label == large[i].label]
    assert 3 in same and len(same) >= 7
    for i in same:
        assert small[i].id == large[i].id
        assert small[i].content_hash == large[i].content_hash


def test_benign_wider_than_tall_malignant_taller_than_wide(by_class):
    def aspects(pairs):
        out = []
        for _, mask in pairs:
            y0, y1, x0, x1 = _bbox(mask)
            out.append((x1 - x0 + 1) / (y1 - y0 + 1))
        return np.array(out)

    benign, malignant = aspects(by_class[0]), aspects(by_class[1])
    assert benign.mean() > 1.2
    assert malignant.mean() < 0.95
    assert np.mean(benign > 1.0) > 0.9 and np.mean(malignant < 1.0) > 0.7


def test_benign_masks_more_convex(by_class):
    benign = np.array([_solidity(m) for _, m in by_class[0]])
    malignant = np.array([_solidity(m) for _, m in by_class[1]])
    assert benign.mean() > 0.9
    assert benign.mean() > malignant.mean() + 0.05


def _posterior_contrast(image: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean brightness of the band right below the lesion minus that beside it, same rows."""
    size = mask.shape[0]
    y0, y1, x0, x1 = _bbox(mask)
    rows = slice(y1 + 2, min(y1 + 2 + max((y1 - y0) // 2, 4), size))
    columns = np.zeros(size, dtype=bool)
    inner = slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4 + 1)
    columns[inner] = True
    beside = np.zeros(size, dtype=bool)
    width = x1 - x0 + 1
    beside[max(x0 - 2 * width, 0):max(x0 - 4, 0)] = True
    beside[x1 + 5:x1 + 1 + 2 * width] = True
    band = image[rows].astype(np.float64)
    if band.size == 0 or not beside.any():
        return None
    return band[:, columns].mean() - band[:, beside].mean()


def test_posterior_enhancement_versus_shadowing(by_class):
    def contrasts(pairs):
        values = [_posterior_contrast(image, mask) for image, mask in pairs]
        return np.array([v for v in values if v is not None])

    benign, malignant = contrasts(by_class[0]), contrasts(by_class[1])
    assert len(benign) > 30 and len(malignant) > 30
    assert benign.mean() > 5  # brighter below: enhancement
    assert malignant.mean() < -5  # darker below: shadowing
    assert benign.mean() > malignant.mean() + 15


def test_lesion_darker_than_surroundings(by_class):
    for label in (0, 1):
        differences = []
        for image, mask in by_class[label]:
            ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(
                mask, iterations=2)
            differences.append(image[ring].mean() - image[mask].mean())
        assert np.mean(differences) > 15, CLASSES[label]
        assert np.mean(np.array(differences) > 0) > 0.9, CLASSES[label]


def test_lesion_not_found_by_a_global_threshold(by_class):
    # Speckle, fat and shadows overlap the lesion's grey levels: even the best threshold chosen
    # per image with the answer known segments the lesion poorly.
    best = []
    for label in (0, 1):
        for image, mask in by_class[label][:15]:
            best.append(max(_dice(image < t, mask) for t in range(0, 256, 4)))
    assert np.mean(best) < 0.6


def test_knobs_change_the_image():
    rng_seed = 11
    plain = generate_case(np.random.default_rng(rng_seed), 0, 96)
    smooth = generate_case(np.random.default_rng(rng_seed), 0, 96, speckle=0.0)
    assert np.array_equal(plain[1], smooth[1])  # same lesion, only the texture changes
    local = ndimage.uniform_filter(smooth[0].astype(float), 3)
    assert np.abs(smooth[0] - local).mean() < np.abs(
        plain[0] - ndimage.uniform_filter(plain[0].astype(float), 3)).mean()
    faint = generate_case(np.random.default_rng(rng_seed), 0, 96, contrast=0.0, speckle=0.0)
    image, mask = faint
    ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(mask,
                                                                                  iterations=2)
    assert abs(image[ring].mean() - image[mask].mean()) < abs(
        smooth[0][ring].mean() - smooth[0][mask].mean())


@pytest.mark.parametrize("knob", [{"lobules": 4.0}, {"posterior": 0.0}, {"blur": 2.0},
                                  {"speckle": 2.0}, {"contrast": 0.5}])
def test_each_knob_leaves_the_lesion_in_place(knob):
    # every building block draws from its own stream, so a knob changes only what it is about
    for label in (0, 1):
        base = generate_case(np.random.default_rng(21), label, 64)
        changed = generate_case(np.random.default_rng(21), label, 64, **knob)
        assert np.array_equal(base[1], changed[1])
        assert not np.array_equal(base[0], changed[0])


def test_posterior_knob_controls_the_posterior_cue():
    seeds = np.random.SeedSequence(777).spawn(10)
    for label in (0, 1):
        plain, without = [], []
        for s in seeds:
            plain.append(_posterior_contrast(*generate_case(np.random.default_rng(s), label, 96)))
            without.append(_posterior_contrast(
                *generate_case(np.random.default_rng(s), label, 96, posterior=0.0)))
        assert abs(np.mean(without)) < abs(np.mean(plain))


def test_knobs_pass_through_generate_synthetic():
    a = generate_synthetic(3, size=48, seed=5)
    b = generate_synthetic(3, size=48, seed=5, speckle=0.0)
    assert [c.label for c in a] == [c.label for c in b]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True))
    assert all(not np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
