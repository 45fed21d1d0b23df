"""Which stored gallery cases the qualitative grid shows (the paper's Fig. 7 shows benign and
malignant examples): classes take turns, and within a class the folds take turns, each fold's
cases in the fixed order of mtlbench.predictions.case_order. The choice depends only on the
store, so a report shows the same cases every time it is rendered."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest

from mtlbench.predictions import case_order
from mtlbench.reporting.collect import Setting

DEFAULT_GRID_CASES = 4


@dataclass(frozen=True)
class GridCase:
    """One row of the grid: a test case with its input, ground truth, class and fold."""

    case_id: str
    label: int
    fold: int
    image_png: str
    mask_png: str


def grid_cases(setting: Setting, count: int = DEFAULT_GRID_CASES) -> list[GridCase]:
    """Up to ``count`` gallery cases that at least one method predicted, spread over classes
    and folds."""
    predicted = set().union(*setting.predictions.values()) if setting.predictions else set()
    by_class: dict[int, dict[int, list[str]]] = {}
    for case_id, entry in setting.gallery.items():
        if case_id in predicted and case_id in setting.case_folds:
            folds = by_class.setdefault(int(entry["label"]), {})
            folds.setdefault(setting.case_folds[case_id], []).append(case_id)
    per_class = []
    for label in sorted(by_class):
        folds = [sorted(ids, key=case_order) for _, ids in sorted(by_class[label].items())]
        per_class.append(_take_turns(folds))
    order = _take_turns(per_class)[:max(count, 0)]
    return [GridCase(c, int(setting.gallery[c]["label"]), setting.case_folds[c],
                     setting.gallery[c]["image"], setting.gallery[c]["mask"]) for c in order]


def _take_turns(lists: list[list[str]]) -> list[str]:
    """The first of each list, then the second of each, and so on."""
    return [item for layer in zip_longest(*lists) for item in layer if item is not None]
