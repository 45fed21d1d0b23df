"""The one table of the metrics mtlbench reports: name, unit, direction and display scale.

Leaderboards, the CLI, the report's tables and figures, the significance tests and `compare`
read it; nothing else says which metric is a percentage or which is better lower.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    ``column``: its name in tables ("Dice"); ``key``: the store key, without the mode prefix
    for the segmentation metrics, which are computed in both modes ("dice"; "cls.acc");
    ``scale``: display value = stored value × scale; ``unit``: of the display value;
    ``headline``: one of the paper's seven table columns; ``per_image``: a mean over per-image
    values (PRE, REC, AUC, ... are not), so per-image statistics apply.
    """

    column: str
    key: str
    unit: str
    scale: float
    higher_is_better: bool
    per_mode: bool
    headline: bool
    per_image: bool

    @property
    def name(self) -> str:
        """Its name in records, `compare` and options: the column in lower case ("hd95")."""
        return self.column.lower()

    def store_key(self, mode: str) -> str:
        """The fold-metric key in the store for metric ``mode`` (strict or paper)."""
        return f"{mode}.{self.key}" if self.per_mode else self.key

    @property
    def task(self) -> str:
        """The task the metric scores: "seg" (computed in both modes) or "cls"."""
        return "seg" if self.per_mode else "cls"

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


METRICS = (
    Metric("Dice", "dice", "%", 100.0, True, True, True, True),
    Metric("Jaccard", "jaccard", "%", 100.0, True, True, True, True),
    Metric("HD95", "hd95", "px", 1.0, False, True, True, True),
    Metric("ASD", "asd", "px", 1.0, False, True, True, True),
    # ACC is the mean of per-image correctness (pred_label == label)
    Metric("ACC", "cls.acc", "%", 100.0, True, False, True, True),
    Metric("PRE", "cls.pre", "%", 100.0, True, False, True, False),
    Metric("REC", "cls.rec", "%", 100.0, True, False, True, False),
    Metric("Sens", "cls.sensitivity", "%", 100.0, True, False, False, False),
    Metric("Spec", "cls.specificity", "%", 100.0, True, False, False, False),
    Metric("F1", "cls.f1_malignant", "%", 100.0, True, False, False, False),
    Metric("AUC", "cls.auc", "%", 100.0, True, False, False, False),
)

BY_COLUMN = {m.column: m for m in METRICS}
BY_NAME = {m.name: m for m in METRICS}


def headline() -> list[Metric]:
    """The paper's seven columns, in its order: Dice, Jaccard, HD95, ASD, ACC, PRE, REC."""
    return [m for m in METRICS if m.headline]
