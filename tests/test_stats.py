"""Report statistics: Holm's correction, the bootstrap interval, Wilcoxon pairing by case id."""

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from mtlbench.stats import (
    bootstrap_ci,
    compare_to_best,
    holm,
    paired,
    pooled_mean,
    wilcoxon_p,
)


def test_holm_against_hand_computed_values():
    # sorted p: 0.01 (×4), 0.02 (×3), 0.03 (×2), 0.04 (×1) -> 0.04, 0.06, 0.06 (monotone), 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # capped at 1, and a running maximum keeps later adjusted values from decreasing
    assert holm([0.5, 0.001, 0.3]) == pytest.approx([0.6, 0.003, 0.6])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_holm_ignores_nan_and_keeps_order():
    out = holm([math.nan, 0.02, 0.01])
    assert math.isnan(out[0])
    assert out[1:] == pytest.approx([0.02, 0.02])  # m = 2: 0.01·2 = 0.02, 0.02·1 -> max 0.02
    assert holm([]) == []


def test_bootstrap_of_a_constant_is_the_constant():
    assert bootstrap_ci([3.0] * 10) == (3.0, 3.0)


def test_bootstrap_of_two_values_spans_the_possible_means():
    # resampled means of {0, 1} (n = 2) are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the
    # 2.5th and 97.5th percentiles of 2000 draws are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_matches_the_normal_interval_for_many_values():
    x = np.random.default_rng(5).normal(10.0, 2.0, 400)
    low, high = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)  # ≈ 0.196 by hand
    assert low == pytest.approx(x.mean() - half, abs=0.03)
    assert high == pytest.approx(x.mean() + half, abs=0.03)
    assert bootstrap_ci(x) == (low, high)  # fixed seed: reproducible
    assert bootstrap_ci(x, seed=1) != (low, high)


def test_pooled_mean_leaves_out_missing_values():
    result = pooled_mean({"a": 1.0, "b": None, "c": math.nan, "d": 3.0})
    assert result.n == 2 and result.mean == 2.0 and 1.0 <= result.low <= result.high <= 3.0
    assert pooled_mean({"a": None}).n == 0


def test_pairs_follow_case_ids_not_order():
    a = {"c1": 0.9, "c2": 0.5, "c3": 0.7, "c4": None}
    b = {"c3": 0.6, "c1": 0.8, "c4": 0.1, "c5": 0.2}
    x, y = paired(a, b)
    assert x.tolist() == [0.9, 0.7] and y.tolist() == [0.8, 0.6]  # c1, c3: c4 is NaN in a


def test_wilcoxon_on_paired_cases_equals_scipy_on_aligned_arrays():
    rng = np.random.default_rng(0)
    ids = [f"case{i}" for i in range(30)]
    a = dict(zip(ids, rng.normal(0.8, 0.05, 30), strict=True))
    b = {k: v - 0.02 + rng.normal(0, 0.02) for k, v in reversed(list(a.items()))}
    x, y = paired(a, b)
    expected = wilcoxon([a[k] for k in ids], [b[k] for k in ids]).pvalue
    assert wilcoxon_p(x, y) == pytest.approx(expected)
    shuffled = dict(zip(ids, rng.permutation(list(b.values())), strict=True))
    assert wilcoxon_p(*paired(a, shuffled)) != pytest.approx(expected)


def test_wilcoxon_edge_cases():
    same = np.array([1.0, 0.0, 1.0])
    assert wilcoxon_p(same, same) == 1.0
    assert math.isnan(wilcoxon_p(np.array([]), np.array([])))
    # 0/1 correctness: 9 discordant pairs, 8 for one side -> sign test 2·(1 + 9)/2^9
    x = np.array([1] * 8 + [0] + [1, 0], dtype=float)
    y = np.array([0] * 8 + [1] + [1, 0], dtype=float)
    assert wilcoxon_p(x, y) == pytest.approx(2 * 10 / 512)


@pytest.mark.parametrize("lower", [False, True])
def test_compare_to_best_picks_the_best_pooled_mean_and_corrects(lower):
    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(40)]
    base = rng.normal(0.8, 0.05, 40)
    per_method = {
        "a": dict(zip(ids, base, strict=True)),
        "b": dict(zip(ids, base + 0.05 + rng.normal(0, 0.01, 40), strict=True)),
        "c": dict(zip(ids, base + 0.01 + rng.normal(0, 0.05, 40), strict=True)),
    }
    best, tests = compare_to_best(per_method, lower_is_better=lower)
    assert best == ("a" if lower else "b")
    assert {t.method for t in tests} == {"a", "b", "c"} - {best}
    raw = [t.p for t in tests]
    assert [t.p_holm for t in tests] == pytest.approx(holm(raw))
    for t in tests:
        assert t.best == best and t.n == 40
        assert (t.mean_difference > 0) == lower
