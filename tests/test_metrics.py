"""Tests for mtlbench.metrics: MedPy equivalence of both distance modes, empty policies, counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from mtlbench.metrics import (
    SEG_KEYS,
    classification_metrics,
    paper_seg_metrics,
    seg_metrics,
    strict_seg_metrics,
)

DIAG_256 = math.hypot(256, 256)


# ---------------------------------------------------------------------------- fixtures / helpers


def ellipse(shape, center, axes, angle=0.0):
    """Filled ellipse mask (axes are semi-axes in pixels, angle in radians)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / axes[1]) ** 2 + (v / axes[0]) ** 2 <= 1.0


def random_ellipse(rng, shape):
    h, w = shape
    center = (rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w)
    axes = (rng.uniform(1.5, h / 3), rng.uniform(1.5, w / 3))
    mask = ellipse(shape, center, axes, rng.uniform(0, math.pi))
    if not mask.any():
        mask[h // 2, w // 2] = True
    return mask


def random_noise_blob(rng, shape):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(2.0, 6.0))
    mask = field > np.quantile(field, rng.uniform(0.6, 0.95))
    return mask


def perturbed(rng, mask):
    """A plausible prediction for ``mask``: shifted by a few pixels, then dilated or eroded."""
    shift = tuple(int(v) for v in rng.integers(-4, 5, size=2))
    out = np.roll(mask, shift, axis=(0, 1))
    steps = int(rng.integers(1, 4))
    if rng.random() < 0.5:
        out = ndimage.binary_dilation(out, iterations=steps)
    else:
        eroded = ndimage.binary_erosion(out, iterations=steps)
        out = eroded if eroded.any() else out
    return out if out.any() else mask.copy()


def soft_from_binary(gt):
    """uint8 0..255 GT with a fractional band around the boundary, like a bilinear resize."""
    soft = ndimage.uniform_filter(gt.astype(np.float64), size=3, mode="constant")
    return np.rint(soft * 255).astype(np.uint8)


def single_pixel(shape, pos):
    mask = np.zeros(shape, dtype=bool)
    mask[pos] = True
    return mask


def _mask_pairs():
    rng = np.random.default_rng(1234)
    pairs = []
    for i in range(21):
        shape = (int(rng.integers(32, 129)), int(rng.integers(32, 129)))
        make = random_ellipse if i % 2 == 0 else random_noise_blob
        gt = make(rng, shape)
        pred = make(rng, shape) if i % 3 == 0 else perturbed(rng, gt)
        pairs.append((f"random{i}", pred, gt))
    shape = (64, 80)
    big = ellipse(shape, (32, 40), (20, 25))
    small = ellipse(shape, (30, 42), (6, 9))
    edge_a = np.zeros(shape, dtype=bool)
    edge_a[:20, :] = True
    edge_b = np.zeros(shape, dtype=bool)
    edge_b[:, 60:] = True
    edge_b[10:30, :5] = True
    pairs += [
        ("touching_border", edge_a, edge_b),
        ("corner_blobs", ellipse(shape, (0, 0), (10, 14)), ellipse(shape, (63, 79), (9, 7))),
        ("full_vs_blob", np.ones(shape, dtype=bool), big),
        ("one_pixel_pred", single_pixel(shape, (5, 7)), big),
        ("one_pixel_both", single_pixel(shape, (0, 0)), single_pixel(shape, (40, 70))),
        ("pred_inside_gt", small, big),
        ("gt_inside_pred", big, small),
        ("disjoint", ellipse(shape, (15, 15), (8, 10)), ellipse(shape, (50, 65), (10, 8))),
        ("identical", big, big.copy()),
        ("two_components", ellipse(shape, (15, 15), (8, 8)) | small, big),
    ]
    return pairs


PAIRS = _mask_pairs()
PAIR_IDS = [name for name, _, _ in PAIRS]


@pytest.fixture(scope="module")
def mb():
    return pytest.importorskip(
        "medpy.metric.binary", reason="MedPy (test-only reference) is not importable"
    )


# ---------------------------------------------------------------------------- MedPy equivalence


@pytest.mark.parametrize(("name", "pred", "gt"), PAIRS, ids=PAIR_IDS)
def test_strict_distances_match_medpy_2d(mb, name, pred, gt):
    got = strict_seg_metrics(pred, gt)
    assert got["hd95"] == pytest.approx(mb.hd95(pred, gt), abs=1e-6)
    assert got["asd"] == pytest.approx(mb.asd(pred, gt), abs=1e-6)
    assert got["dice"] == pytest.approx(mb.dc(pred, gt), abs=1e-12)
    assert got["jaccard"] == pytest.approx(mb.jc(pred, gt), abs=1e-12)


@pytest.mark.parametrize(("name", "pred", "gt"), PAIRS, ids=PAIR_IDS)
def test_paper_distances_match_medpy_1hw(mb, name, pred, gt):
    gt_soft = soft_from_binary(gt)
    gt_bool = gt_soft > 0
    got = paper_seg_metrics(pred, gt_soft)
    assert got["hd95"] == pytest.approx(mb.hd95(pred[None], gt_bool[None]), abs=1e-6)
    assert got["asd"] == pytest.approx(mb.asd(pred[None], gt_bool[None]), abs=1e-6)


def test_identical_masks_have_zero_distance():
    mask = ellipse((50, 60), (25, 30), (10, 20))
    got = strict_seg_metrics(mask, mask)
    assert got == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}


# ---------------------------------------------------------------------------- empty policies


def test_strict_empty_policy():
    shape = (256, 256)
    empty = np.zeros(shape, dtype=bool)
    blob = ellipse(shape, (128, 128), (30, 40))
    for pred, gt in ((empty, blob), (blob, empty)):
        got = strict_seg_metrics(pred, gt)
        assert got["dice"] == 0.0 and got["jaccard"] == 0.0
        assert got["hd95"] == pytest.approx(DIAG_256) and got["asd"] == pytest.approx(DIAG_256)
    assert DIAG_256 == pytest.approx(362.0387, abs=1e-4)
    got = strict_seg_metrics(empty, empty)
    assert got == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    assert strict_seg_metrics(np.zeros((30, 40), bool), np.ones((30, 40), bool))["hd95"] == 50.0


def test_medpy_raises_on_empty(mb):
    empty = np.zeros((16, 16), dtype=bool)
    with pytest.raises(RuntimeError):
        mb.hd95(empty, single_pixel((16, 16), (3, 3)))


def test_paper_empty_policy():
    shape = (64, 64)
    empty = np.zeros(shape, dtype=bool)
    blob = ellipse(shape, (32, 32), (10, 12))
    soft = soft_from_binary(blob)
    got = paper_seg_metrics(empty, soft)
    assert got["hd95"] == 0.0 and got["asd"] == 0.0 and got["dice"] == 0.0
    got = paper_seg_metrics(blob, np.zeros(shape, np.uint8))
    assert got["hd95"] == 0.0 and got["asd"] == 0.0 and got["dice"] == 0.0
    got = paper_seg_metrics(empty, np.zeros(shape, np.uint8))
    assert got == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}


# ---------------------------------------------------------------------------- paper-mode quirks


def test_paper_mode_is_region_to_region():
    shape = (128, 128)
    gt = ellipse(shape, (64, 64), (30, 30))
    pred = ellipse(shape, (64, 72), (24, 24))
    strict = strict_seg_metrics(pred, gt)
    paper = paper_seg_metrics(pred, gt.astype(np.uint8) * 255)
    # Pred lies almost inside GT: its pixels are mostly at distance 0 from the GT region.
    assert paper["asd"] < 0.5 < 2.0 < strict["asd"]
    assert paper["hd95"] < 0.75 * strict["hd95"]


def test_paper_mode_ignores_boundary_band():
    shape = (64, 64)
    gt = ellipse(shape, (32, 32), (14, 18))
    soft = soft_from_binary(gt)
    band = (soft > 0) & (soft < 255)
    assert band.any()
    pred = gt ^ band  # differs from the binary GT only inside the fractional band
    paper = paper_seg_metrics(pred, soft)
    strict = strict_seg_metrics(pred, gt)
    assert paper["dice"] == pytest.approx(1.0, abs=1e-6)
    assert paper["jaccard"] == pytest.approx(1.0, abs=1e-6)
    assert strict["dice"] < 0.9


def test_paper_bool_gt_soft_reads_as_0_255():
    gt = ellipse((40, 40), (20, 20), (8, 10))
    pred = ellipse((40, 40), (22, 20), (8, 9))
    assert paper_seg_metrics(pred, gt) == paper_seg_metrics(pred, gt.astype(np.uint8) * 255)
    with pytest.raises(TypeError):
        paper_seg_metrics(pred, gt.astype(np.float32))


# ------------------------------------------------------------------------ dice / jaccard by hand


def test_dice_jaccard_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    gt = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=bool)
    # |P| = 3, |G| = 4, |P & G| = 2, |P | G| = 5
    got = strict_seg_metrics(pred, gt)
    assert got["dice"] == pytest.approx(4 / 7)
    assert got["jaccard"] == pytest.approx(2 / 5)

    gt_soft = np.array([[255, 128, 0], [0, 255, 40], [0, 0, 255]], dtype=np.uint8)
    # TP: (0,0), (1,1) -> 2; FP: pred on GT == 0 -> none ((0,1) is in the band);
    # FN: GT == 255 and not pred -> (2,2) -> 1.
    got = paper_seg_metrics(pred, gt_soft)
    assert got["dice"] == pytest.approx(4 / (4 + 0 + 1 + 1e-5), abs=1e-12)
    assert got["jaccard"] == pytest.approx(2 / (2 + 0 + 1 + 1e-5), abs=1e-12)


def test_shape_checks():
    with pytest.raises(ValueError):
        strict_seg_metrics(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        strict_seg_metrics(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))


# ---------------------------------------------------------------------------- batch


def test_seg_metrics_batch_equals_per_image():
    rng = np.random.default_rng(7)
    shape = (48, 56)
    preds, gts = [], []
    for _ in range(6):
        preds.append(random_ellipse(rng, shape))
        gts.append(random_ellipse(rng, shape))
    preds += [np.zeros(shape, bool), np.zeros(shape, bool), gts[0]]
    gts += [gts[1], np.zeros(shape, bool), np.zeros(shape, bool)]
    pred, gt = np.stack(preds), np.stack(gts)
    gt_soft = np.stack([soft_from_binary(g) for g in gt])
    out = seg_metrics(pred, gt, gt_soft)
    assert tuple(out) == SEG_KEYS
    for i in range(len(pred)):
        strict = strict_seg_metrics(pred[i], gt[i])
        paper = paper_seg_metrics(pred[i], gt_soft[i])
        for key, value in strict.items():
            assert out[f"strict.{key}"][i] == value
        for key, value in paper.items():
            assert out[f"paper.{key}"][i] == value
    np.testing.assert_array_equal(out["strict.empty_pred"], [0] * 6 + [1, 0, 0])
    assert all(v.dtype == np.float64 and v.shape == (9,) for v in out.values())


# ---------------------------------------------------------------------------- classification


def test_classification_by_hand():
    y_true = [0, 0, 0, 1, 1]
    y_pred = [0, 0, 1, 1, 0]
    prob = [0.1, 0.2, 0.6, 0.8, 0.3]
    # Class 0: 3 true, 3 predicted, 2 correct. Class 1: 2 true, 2 predicted, 1 correct.
    prec = {0: 2 / 3, 1: 1 / 2}
    rec = {0: 2 / 3, 1: 1 / 2}
    support = {0: 3, 1: 2}
    f1 = {c: 2 * prec[c] * rec[c] / (prec[c] + rec[c]) for c in (0, 1)}
    weighted = lambda d: sum(support[c] * d[c] for c in (0, 1)) / 5  # noqa: E731
    # AUC: positive scores 0.8 and 0.3 against negatives 0.1, 0.2, 0.6 -> 5 of 6 pairs ordered.
    got = classification_metrics(y_true, y_pred, prob)
    expected = {
        "acc": 3 / 5,
        "pre": weighted(prec),
        "rec": (rec[0] + rec[1]) / 2,
        "f1": weighted(f1),
        "sensitivity": 1 / 2,
        "specificity": 2 / 3,
        "f1_malignant": f1[1],
        "auc": 5 / 6,
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
        assert isinstance(got[key], float)


def test_classification_single_class_fold_auc_nan():
    got = classification_metrics([0, 0, 0], [0, 1, 0], [0.2, 0.7, 0.1])
    assert math.isnan(got["auc"])
    assert got["sensitivity"] == 0.0 and got["specificity"] == pytest.approx(2 / 3)
    got = classification_metrics([1, 1], [1, 1], [0.9, 0.8])
    assert math.isnan(got["auc"]) and got["sensitivity"] == 1.0


def test_classification_three_classes_one_vs_rest():
    y_true = [0, 1, 2, 2, 1, 0]
    y_pred = [0, 2, 2, 1, 1, 0]
    prob = [0.1, 0.7, 0.2, 0.3, 0.6, 0.05]
    got = classification_metrics(y_true, y_pred, prob)
    assert got["acc"] == pytest.approx(4 / 6)
    # class 1 vs rest: true 1 at {1, 4}, predicted 1 at {3, 4}
    assert got["sensitivity"] == pytest.approx(1 / 2)
    assert got["specificity"] == pytest.approx(3 / 4)
    assert got["f1_malignant"] == pytest.approx(1 / 2)
    assert got["auc"] == 1.0
    # macro recall over classes 0, 1, 2: 1, 1/2, 1/2
    assert got["rec"] == pytest.approx(2 / 3)
