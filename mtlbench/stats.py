"""Statistics of a report: paired per-image tests against the best method, Holm's correction,
and percentile-bootstrap confidence intervals of pooled per-image means.

Per-image values are paired by case id: every case sits in exactly one test fold, so a method's
per-image values over all its folds pair with another method's. With several training seeds,
an image's value is its mean over the method's seeds: the tests pair images (n stays the
number of images; an image's seeds are not independent pairs), and the intervals resample
seeds and then images (``bootstrap_ci_seeds``), so they cover both the test set and the
training seed, the two things that change when a benchmark is repeated.

Values that are missing or not finite (NaN is stored as NULL) are left out: pairwise for the
tests (a case counts only when both methods have a finite value), per method for the means and
intervals; each result carries the ``n`` it rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PooledMean:
    """The mean of one method's per-image values over all its folds, with a 95% interval."""

    n: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedTest:
    """A two-sided Wilcoxon signed-rank test of one method against the best, on ``n`` cases
    paired by id; ``p_holm`` is the p-value after Holm's correction over the comparisons of
    one metric. ``mean_difference`` is the mean of (method − best) over the paired cases."""

    method: str
    best: str
    n: int
    mean_difference: float
    p: float
    p_holm: float = math.nan


def finite_values(values: dict[str, float | None]) -> dict[str, float]:
    """``values`` without the cases whose value is missing (None) or not finite."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def bootstrap_ci(values, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (finite floats), reproducible
    for a given seed; (nan, nan) when there are no values.

    Written out rather than scipy.stats.bootstrap: it is four lines of numpy, and scipy renamed
    the seed argument (random_state -> rng, 1.15), which would tie the numbers to a version.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def pooled_mean(values: dict[str, float | None], seed: int = BOOTSTRAP_SEED) -> PooledMean:
    """Pooled mean of the finite per-image values with its 95% percentile-bootstrap interval."""
    x = np.fromiter(finite_values(values).values(), dtype=np.float64)
    if x.size == 0:
        return PooledMean(0, math.nan, math.nan, math.nan)
    low, high = bootstrap_ci(x, seed=seed)
    return PooledMean(int(x.size), float(x.mean()), low, high)


def bootstrap_ci_seeds(matrix, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Two-stage percentile-bootstrap interval of the pooled mean of ``matrix`` (seeds × images,
    NaN where a value is missing): each resample draws the seeds with replacement, then the
    images with replacement, and averages each drawn image over the drawn seeds, then over the
    images. With one seed it is ``bootstrap_ci`` of that seed's finite values."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.shape[0] == 1:
        return bootstrap_ci(x[0][np.isfinite(x[0])], level, resamples, seed)
    keep = np.isfinite(x).any(axis=0)
    x = x[:, keep]
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    k, n = x.shape
    seeds = _counts(rng.integers(0, k, size=(resamples, k)), k)  # resamples × seeds: counts
    images = rng.integers(0, n, size=(resamples, n), dtype=np.int32)  # drawn image indices
    finite = np.isfinite(x)
    values, present = np.where(finite, x, 0.0), finite.astype(np.float64)
    means = np.empty(resamples)
    every = bool(finite.all())  # every seed has every image: no counts to divide by
    # As matrix products, 250 resamples at a time (a gather of resamples × seeds × images took
    # gigabytes at 10 seeds of 3,000 images): with the drawn seeds' counts w, an image's mean
    # over the drawn seeds is (w · values) / (w · present); then the drawn images' mean.
    for start in range(0, resamples, 250):
        w, drawn = seeds[start:start + 250], images[start:start + 250]
        if every:
            means[start:start + 250] = (np.take_along_axis(w @ values, drawn, axis=1)
                                        .sum(axis=1) / (k * n))
            continue
        total, count = w @ values, w @ present
        seen = count > 0  # an image none of the drawn seeds has a value for is left out
        per_image = np.divide(total, count, out=np.zeros_like(total), where=seen)
        kept = np.take_along_axis(seen, drawn, axis=1)
        means[start:start + 250] = (np.take_along_axis(per_image, drawn, axis=1).sum(axis=1)
                                    / kept.sum(axis=1))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """How often each of ``size`` indices occurs in each row of ``draws``, as floats."""
    rows = draws.shape[0]
    flat = (draws + np.arange(rows)[:, None] * size).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(np.float64)


def pooled_mean_over_seeds(by_seed: dict[int, dict[str, float | None]],
                           seed: int = BOOTSTRAP_SEED) -> PooledMean:
    """Pooled mean of per-image values over several training seeds (seed -> case -> value):
    the mean over the images of each image's mean over its finite seeds, with the two-stage
    interval; with one seed exactly ``pooled_mean``."""
    if len(by_seed) == 1:
        return pooled_mean(next(iter(by_seed.values())), seed)
    cases = sorted({c for values in by_seed.values() for c in values})
    nan = math.nan
    matrix = np.array([[nan if (v := values.get(c)) is None else v for c in cases]
                       for _, values in sorted(by_seed.items())], dtype=np.float64)
    finite = np.isfinite(matrix)
    matrix[~finite] = nan
    counts = finite.sum(axis=0)
    if not counts.any():
        return PooledMean(0, math.nan, math.nan, math.nan)
    per_image = np.where(finite, matrix, 0.0).sum(axis=0)[counts > 0] / counts[counts > 0]
    low, high = bootstrap_ci_seeds(matrix, seed=seed)
    return PooledMean(int(per_image.size), float(per_image.mean()), low, high)


def paired(a: dict[str, float | None], b: dict[str, float | None]
           ) -> tuple[np.ndarray, np.ndarray]:
    """The values of the cases both ``a`` and ``b`` have a finite value for, in one order."""
    a, b = finite_values(a), finite_values(b)
    common = sorted(a.keys() & b.keys())
    return (np.array([a[k] for k in common], dtype=np.float64),
            np.array([b[k] for k in common], dtype=np.float64))


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the pairs (x, y); zero differences are dropped
    (Wilcoxon's treatment). 1.0 when every difference is zero (no evidence of a difference;
    scipy warns and older versions return NaN there); NaN without any pair.

    On 0/1 values (per-image correctness) the nonzero differences all have magnitude 1, so the
    ranks tie and the test is the sign test on the discordant pairs.
    """
    if x.size == 0:
        return math.nan
    diff = x - y
    if not np.any(diff):
        return 1.0
    return float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (NaN entries stay NaN and do not
    count as hypotheses).

    Written out: scipy offers only false-discovery-rate control (false_discovery_control), and
    statsmodels' multipletests is not worth a dependency for ten lines.
    """
    adjusted = [math.nan] * len(pvalues)
    tested = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(tested)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))  # adjusted p-values never decrease
        adjusted[i] = running
    return adjusted


def best_method(means: dict[str, float], lower_is_better: bool) -> str | None:
    """The method with the best finite pooled mean (the first one listed on a tie)."""
    finite = {m: v for m, v in means.items() if math.isfinite(v)}
    if not finite:
        return None
    pick = min if lower_is_better else max
    target = pick(finite.values())
    return next(m for m, v in finite.items() if v == target)


def compare_to_best(per_method: dict[str, dict[str, float | None]], lower_is_better: bool
                    ) -> tuple[str | None, list[PairedTest]]:
    """The best method by pooled mean and a paired test of every other method against it,
    Holm-corrected over those tests. ``per_method``: method -> case id -> value."""
    means = {}
    for method, values in per_method.items():
        finite = list(finite_values(values).values())
        means[method] = float(np.mean(finite)) if finite else math.nan
    best = best_method(means, lower_is_better)
    if best is None:
        return None, []
    tests = []
    for method, values in per_method.items():
        if method == best:
            continue
        x, y = paired(values, per_method[best])
        difference = float(np.mean(x - y)) if x.size else math.nan
        tests.append(PairedTest(method, best, int(x.size), difference, wilcoxon_p(x, y)))
    adjusted = holm([t.p for t in tests])
    return best, [PairedTest(t.method, t.best, t.n, t.mean_difference, t.p, a)
                  for t, a in zip(tests, adjusted, strict=True)]
