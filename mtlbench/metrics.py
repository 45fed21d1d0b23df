"""Per-image segmentation metrics and per-fold classification metrics.

Two segmentation modes are computed for every image (spec section 6):

``strict``
    Standard Dice/Jaccard on binary masks and MedPy-equivalent HD95/ASD on 2-D arrays with
    connectivity 1, i.e. distances between the inner 1-pixel contours. Empty masks follow an
    explicit policy (see :func:`strict_seg_metrics`).

``paper``
    Reproduces the reference paper's released test code: Dice/Jaccard from counts against the
    bilinear-resized GT with exact comparisons (the fractional boundary band is ignored,
    epsilon 1e-5), and MedPy's HD95/ASD as called on ``(1, H, W)`` arrays, which makes the
    distances region-to-region. An empty prediction or GT scores HD95 = ASD = 0.

All distances are in pixels on the grid they are given (256x256 in the benchmark). HD95 is MedPy's
pooled 95th percentile of both directed distance sets (``numpy.percentile``, linear interpolation);
ASD is MedPy's ``asd(pred, gt)``: the mean of the directed pred -> GT distances only.

Classification metrics follow the official code (weighted precision, macro recall) with binary
malignant-class extras (class 1 = malignant).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "strict_seg_metrics",
    "paper_seg_metrics",
    "seg_metrics",
    "classification_metrics",
    "image_diagonal",
    "SEG_KEYS",
]

PAPER_EPS = 1e-5
"""Smoothing term of the official Dice/Jaccard formulas."""

GT_SOFT_ONE = 255
"""Value of ``gt_soft`` that stands for the paper's GT == 1.0."""

# Why the distances are hand-written rather than calling MedPy: MedPy raises RuntimeError on an
# empty mask, it runs two erosions and a full-image EDT per direction and per metric (so HD95 + ASD
# costs three EDTs on the whole image), and we need both the 2-D contour mode and the (1, H, W)
# region mode. Below, the contour mode queries k-d trees of the two contours (a few hundred
# points) and the region mode runs one EDT per direction on a small crop; the values are identical
# to MedPy's (checked in tests/test_metrics.py; benchmarks/metrics_vs_medpy.py measures both).


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"expected 2-D masks, got shapes {pred.shape} and {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs gt {gt.shape}")


def image_diagonal(shape: tuple[int, ...]) -> float:
    """Return the diagonal length ``sqrt(H^2 + W^2)`` in pixels of a 2-D ``shape``."""
    h, w = shape[-2:]
    return math.hypot(h, w)


def _union_crop(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of ``a | b`` grown by one pixel and clipped to the image.

    Every border pixel of either mask lies inside it, and where the box touches the image edge the
    crop edge is the image edge, so erosion (border value 0) and EDT give the same values as on the
    full image. At least one of the masks must be non-empty.
    """
    union = a | b
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    h, w = union.shape
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
    return slice(r0, r1), slice(c0, c1)


def _inner_border(mask: np.ndarray) -> np.ndarray:
    """MedPy's surface: ``mask XOR erosion(mask)`` with a 2-D cross and border value 0.

    Written as four shifted ANDs rather than ``ndimage.binary_erosion``: the same pixels
    (tested against MedPy), several times faster on the small crops used here.
    """
    padded = np.pad(mask, 1)
    eroded = (mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
              & padded[1:-1, 2:])
    return mask & ~eroded


def _directed_between(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every ``src`` pixel to the nearest ``dst`` pixel and back (float64).

    For contours (a few hundred pixels) nearest-neighbour queries on k-d trees are faster than
    the distance transform of the whole crop, and exact in the same Euclidean metric.
    """
    a, b = np.argwhere(src), np.argwhere(dst)
    return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]


def _directed(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Distances (float64) from every pixel of ``src`` to the nearest pixel of ``dst``."""
    return ndimage.distance_transform_edt(~dst)[src].astype(np.float64, copy=False)


def _hd95_asd(d_pred_to_gt: np.ndarray, d_gt_to_pred: np.ndarray) -> tuple[float, float]:
    """MedPy's hd95 (pooled percentile) and asd (mean of pred -> GT)."""
    hd95 = float(np.percentile(np.concatenate((d_pred_to_gt, d_gt_to_pred)), 95))
    return hd95, float(d_pred_to_gt.mean())


def _strict_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Contour-to-contour HD95 and ASD of two non-empty 2-D masks."""
    crop = _union_crop(pred, gt)
    return _hd95_asd(*_directed_between(_inner_border(pred[crop]), _inner_border(gt[crop])))


def _paper_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Region-to-region HD95 and ASD of two non-empty 2-D masks.

    On a ``(1, H, W)`` array the 3-D connectivity-1 erosion removes every pixel (both neighbours
    along the singleton axis are outside, border value 0), so MedPy's "border" is the whole mask and
    the EDT of ``~gt`` is the distance to the nearest GT pixel.
    """
    crop = _union_crop(pred, gt)
    p, g = pred[crop], gt[crop]
    return _hd95_asd(_directed(p, g), _directed(g, p))


def strict_seg_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Strict-mode metrics of one 2-D prediction against a binary GT.

    Returns ``dice``, ``jaccard``, ``hd95`` and ``asd`` (pixels). Dice/Jaccard are the standard
    formulas on binary masks, 1.0 when both masks are empty. HD95/ASD equal MedPy's
    ``hd95(pred, gt)`` and ``asd(pred, gt)`` on 2-D arrays (connectivity 1, inner contours)
    whenever both masks are non-empty. Empty policy (MedPy raises there): both empty ->
    HD95 = ASD = 0; exactly one empty -> HD95 = ASD = the image diagonal ``sqrt(H^2 + W^2)``
    (about 362.04 at 256x256).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    _check_pair(pred, gt)
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    inter = int(np.count_nonzero(pred & gt))
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    dice = 2.0 * inter / (n_pred + n_gt)
    jaccard = inter / (n_pred + n_gt - inter)
    if n_pred == 0 or n_gt == 0:
        hd95 = asd = image_diagonal(pred.shape)
    else:
        hd95, asd = _strict_distances(pred, gt)
    return {"dice": dice, "jaccard": jaccard, "hd95": hd95, "asd": asd}


def _as_gt_soft(gt_soft: np.ndarray) -> np.ndarray:
    gt_soft = np.asarray(gt_soft)
    if gt_soft.dtype == bool:
        return gt_soft.astype(np.uint8) * GT_SOFT_ONE
    if not np.issubdtype(gt_soft.dtype, np.integer):
        raise TypeError(f"gt_soft must hold integers 0..255 (uint8), got dtype {gt_soft.dtype}")
    return gt_soft


def paper_seg_metrics(pred: np.ndarray, gt_soft: np.ndarray) -> dict[str, float]:
    """Paper-mode metrics, reproducing the reference paper's released test code on one image.

    ``gt_soft`` is the bilinear-resized mask as uint8 0..255 (255 is the paper's GT == 1.0, 0 is
    GT == 0; a bool array is read as 0/255). Dice = 2TP/(2TP+FP+FN+1e-5) and
    Jaccard = TP/(TP+FP+FN+1e-5) with TP/FP/FN from exact comparisons, so fractional GT pixels are
    ignored. HD95/ASD equal MedPy's ``hd95``/``asd(pred[None], (gt_soft > 0)[None])``:
    region-to-region distances. If either mask is empty, HD95 = ASD = 0 (the paper's quirk).
    """
    pred = np.asarray(pred, dtype=bool)
    gt_soft = _as_gt_soft(gt_soft)
    _check_pair(pred, gt_soft)
    gt_one, gt_zero = gt_soft == GT_SOFT_ONE, gt_soft == 0
    tp = int(np.count_nonzero(pred & gt_one))
    fp = int(np.count_nonzero(pred & gt_zero))
    fn = int(np.count_nonzero(~pred & gt_one))
    dice = 2.0 * tp / (2.0 * tp + fp + fn + PAPER_EPS)
    jaccard = tp / (tp + fp + fn + PAPER_EPS)
    gt_any = ~gt_zero
    if pred.any() and gt_any.any():
        hd95, asd = _paper_distances(pred, gt_any)
    else:
        hd95 = asd = 0.0
    return {"dice": dice, "jaccard": jaccard, "hd95": hd95, "asd": asd}


SEG_KEYS = (
    "strict.dice",
    "strict.jaccard",
    "strict.hd95",
    "strict.asd",
    "strict.empty_pred",
    "paper.dice",
    "paper.jaccard",
    "paper.hd95",
    "paper.asd",
)
"""Keys returned by :func:`seg_metrics`, in a stable order."""


def seg_metrics(pred: np.ndarray, gt: np.ndarray, gt_soft: np.ndarray) -> dict[str, np.ndarray]:
    """Both modes for a batch of ``N`` images.

    ``pred`` and ``gt`` are ``(N, H, W)`` binary masks (strict mode), ``gt_soft`` the ``(N, H, W)``
    uint8 0..255 bilinear GT (paper mode). Returns float64 arrays of length ``N`` under
    :data:`SEG_KEYS`; ``strict.empty_pred`` is 1.0 where the prediction is empty and the GT is not.
    Each entry equals :func:`strict_seg_metrics` / :func:`paper_seg_metrics` on that image.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    gt_soft = _as_gt_soft(gt_soft)
    if pred.ndim != 3 or pred.shape != gt.shape or pred.shape != gt_soft.shape:
        raise ValueError(
            f"expected (N, H, W) arrays of equal shape, got {pred.shape}, {gt.shape}, "
            f"{gt_soft.shape}"
        )
    out = {key: np.zeros(pred.shape[0], dtype=np.float64) for key in SEG_KEYS}
    for i in range(pred.shape[0]):
        for mode, values in (
            ("strict", strict_seg_metrics(pred[i], gt[i])),
            ("paper", paper_seg_metrics(pred[i], gt_soft[i])),
        ):
            for name, value in values.items():
                out[f"{mode}.{name}"][i] = value
        out["strict.empty_pred"][i] = float(not pred[i].any() and gt[i].any())
    return out


def mean_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean strict Dice of (N, H, W) binary masks (1 where both are empty, as strict mode):
    the fold mean of ``seg_metrics``'s ``strict.dice`` without its distances, for the paper's
    per-epoch checkpoint score."""
    inter = np.count_nonzero(pred & gt, axis=(1, 2))
    total = np.count_nonzero(pred, axis=(1, 2)) + np.count_nonzero(gt, axis=(1, 2))
    return float(np.mean(np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))))


def classification_metrics(y_true, y_pred, prob_malignant) -> dict[str, float]:
    """Per-fold classification metrics over all test images (labels 0..K-1, class 1 = malignant).

    ``acc``: accuracy; ``pre``: precision, weighted average; ``rec``: recall, macro average (the
    balanced accuracy); ``f1``: weighted F1 -- the averaging choices of the official code.
    Extras, class 1 against the rest (also for K > 2): ``sensitivity`` (recall of class 1),
    ``specificity`` (recall of the rest), ``f1_malignant`` (binary F1) and ``auc`` (ROC AUC from
    ``prob_malignant``; NaN when the fold holds only one of the two groups). zero_division=0
    everywhere.
    """
    y_true = np.asarray(y_true).astype(int).ravel()
    y_pred = np.asarray(y_pred).astype(int).ravel()
    prob = np.asarray(prob_malignant, dtype=np.float64).ravel()
    if not len(y_true) == len(y_pred) == len(prob):
        raise ValueError("y_true, y_pred and prob_malignant must have the same length")
    pos_true, pos_pred = (y_true == 1).astype(int), (y_pred == 1).astype(int)
    return {
        "acc": float(accuracy_score(y_true, y_pred)),
        "pre": float(precision_score(y_true, y_pred, average="weighted", zero_division=0)),
        "rec": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "sensitivity": float(recall_score(pos_true, pos_pred, zero_division=0)),
        "specificity": float(recall_score(1 - pos_true, 1 - pos_pred, zero_division=0)),
        "f1_malignant": float(f1_score(pos_true, pos_pred, zero_division=0)),
        "auc": _binary_auc(pos_true, prob),
    }


def _binary_auc(pos_true: np.ndarray, prob: np.ndarray) -> float:
    if np.unique(pos_true).size < 2:
        return float("nan")
    return float(roc_auc_score(pos_true, prob))
