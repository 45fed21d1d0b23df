"""The statistics table of a setting: per metric, each method's pooled per-image mean with its
bootstrap interval, and its paired test against the best method (mtlbench.stats)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mtlbench.reporting.collect import STAT_METRICS, Setting, seed_means
from mtlbench.stats import PairedTest, PooledMean, compare_to_best, pooled_mean_over_seeds


@dataclass
class MetricStatistics:
    """One metric of one setting: the best method, pooled means and tests against the best."""

    column: str
    lower_is_better: bool
    best: str | None
    means: dict[str, PooledMean] = field(default_factory=dict)
    tests: dict[str, PairedTest] = field(default_factory=dict)


def setting_statistics(setting: Setting) -> list[MetricStatistics]:
    """The statistics of every per-image metric some method of ``setting`` has."""
    out = []
    for metric in STAT_METRICS:
        column, lower = metric.column, not metric.higher_is_better
        by_seed = setting.per_image_by_seed(column)
        per_method = seed_means(by_seed)  # each image's mean over the seeds
        if not per_method:
            continue
        best, tests = compare_to_best(per_method, lower)
        out.append(MetricStatistics(column, lower, best,
                                    {m: pooled_mean_over_seeds(by_seed[m]) for m in per_method},
                                    {t.method: t for t in tests}))
    return out
