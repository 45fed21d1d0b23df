"""One table of metrics: every leaderboard, the report and `compare` read their names, units,
directions and scales from it."""

import pytest

from mtlbench.compare import DEFAULT_METRICS, Difference
from mtlbench.metric_table import BY_NAME, METRICS, headline
from mtlbench.report import LeaderboardRow, headline_columns, metric_columns, to_records
from mtlbench.reporting.collect import STAT_METRICS
from mtlbench.reporting.figures import metric_title


def test_the_paper_columns_in_its_order_everywhere():
    paper = ["Dice", "Jaccard", "HD95", "ASD", "ACC", "PRE", "REC"]
    assert [m.column for m in headline()] == paper == headline_columns()
    assert list(DEFAULT_METRICS) == [c.lower() for c in paper]


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_compare_and_figures_follow_the_direction_and_unit(metric):
    worse = -1.0 if metric.higher_is_better else 1.0
    diff = Difference("d", "m", "h", metric.name, 50.0, 50.0 + worse * 3, tolerance=2.0)
    assert diff.worse_by == pytest.approx(3.0) and diff.regression
    assert metric_title(metric.column) == f"{metric.column} ({metric.unit}, {metric.direction})"


def test_records_and_columns_carry_every_metric_with_its_scale_and_mode():
    row = LeaderboardRow("d", "m", "smoke", "h", [0], {m.column: (1.0, 0.0) for m in METRICS})
    record = to_records([row], "paper")[0]
    assert {f"{name}_mean" for name in BY_NAME} <= set(record)
    columns = {name: (key, scale) for name, key, scale in metric_columns("paper")}
    assert columns["HD95"] == ("paper.hd95", 1.0) and columns["ACC"] == ("cls.acc", 100.0)
    assert [m.column for m in STAT_METRICS] == ["Dice", "Jaccard", "HD95", "ASD", "ACC"]
