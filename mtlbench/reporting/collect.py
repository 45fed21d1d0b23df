"""Everything a report shows, read from the store once and grouped by setting (dataset and
protocol): leaderboard rows (from mtlbench.report), per-image values, curves, predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mtlbench.data.prepare import DatasetOptionError, parse_dataset_spec
from mtlbench.identity import DEFAULT_BALANCING, balancing_label
from mtlbench.metric_table import BY_COLUMN, METRICS
from mtlbench.report import LeaderboardRow, entry_name, leaderboard, metric_columns
from mtlbench.store import Store

#: The metrics that are means of per-image values, so per-image statistics apply
#: (mtlbench.metric_table); ACC is per-image correctness (pred_label == label).
STAT_METRICS = tuple(m for m in METRICS if m.per_image)


@dataclass
class Setting:
    """One dataset under one protocol: the unit of every table and figure of a report."""

    dataset: str
    protocol: str
    protocol_hash: str
    image_size: int
    mode: str  # the metric mode of the report, "strict" or "paper"
    rows: list[LeaderboardRow]
    # Keyed by row name (LeaderboardRow.entry: the method, with its non-default knobs and
    # its balancing unless fixed).
    trials: dict[str, list[dict]] = field(default_factory=dict)  # method -> trials by fold
    # method -> seed -> case id -> the image's stored row (metrics, label, pred_label)
    seed_images: dict[str, dict[int, dict[str, dict]]] = field(default_factory=dict)
    # method -> case id -> the row of the method's first seed (captions, empty predictions)
    images: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    curves: dict[str, dict[int, list[dict]]] = field(default_factory=dict)  # method -> fold
    predictions: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> case -> PNG
    case_folds: dict[str, int] = field(default_factory=dict)
    gallery: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    references: dict[str, str] = field(default_factory=dict)  # the Δm references asked for

    @property
    def seeds(self) -> list[int]:
        """Every training seed of the setting's trials."""
        return sorted({seed for by_seed in self.seed_images.values() for seed in by_seed})

    @property
    def methods(self) -> list[str]:
        return [row.entry for row in self.rows]

    @property
    def title(self) -> str:
        return f"{self.dataset} · protocol {self.protocol} ({self.protocol_hash})"

    @property
    def slug(self) -> str:
        """A file-name-safe name of the setting."""
        text = f"{self.dataset}-{self.protocol}-{self.protocol_hash}"
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)

    def per_image(self, column: str) -> dict[str, dict[str, float | None]]:
        """method -> case id -> the per-image value of ``column`` in display units, for the
        methods that have it: the mean over the method's seeds of the finite values (the value
        itself with one seed); None when no seed has a finite one."""
        return seed_means(self.per_image_by_seed(column))

    def per_image_by_seed(self, column: str) -> dict[str, dict[int, dict[str, float | None]]]:
        """method -> seed -> case id -> the per-image value of ``column`` in display units
        (None where it is missing), for the methods that have it."""
        out: dict[str, dict[int, dict[str, float | None]]] = {}
        metric = BY_COLUMN[column]
        scale = metric.scale
        for method, by_seed in self.seed_images.items():
            for seed, cases in by_seed.items():
                values: dict[str, float | None] = {}
                for case_id, row in cases.items():
                    if column == "ACC":
                        if row.get("pred_label") is None or row.get("label") is None:
                            continue
                        values[case_id] = scale * float(row["pred_label"] == row["label"])
                    else:
                        key = metric.store_key(self.mode)
                        if key not in row:
                            continue
                        values[case_id] = None if row[key] is None else scale * row[key]
                if values:
                    out.setdefault(method, {})[seed] = values
        return out

    def fold_values(self, column: str) -> dict[str, list[float]]:
        """method -> the trials' means (every fold of every seed) of a leaderboard ``column`` in
        display units."""
        key, scale = next((k, s) for name, k, s in metric_columns(self.mode) if name == column)
        out = {}
        for method, trials in self.trials.items():
            values = [t["metrics"][key] * scale for t in trials
                      if t["metrics"].get(key) is not None]
            if values:
                out[method] = values
        return out

    def empty_predictions(self) -> dict[str, int]:
        """method -> how many test images it predicted empty (strict mode scores those
        HD95 = ASD = the image diagonal), for the methods with at least one."""
        counts = {m: sum(1 for row in cases.values() if row.get("strict.empty_pred"))
                  for m, cases in self.images.items()}
        return {m: n for m, n in counts.items() if n}


def collect(store: Store, mode: str = "strict", dataset: str | None = None,
            methods_registry=None, datasets_registry=None,
            references: dict[str, str] | None = None) -> list[Setting]:
    """The settings of the store's finished trials (all, or those of ``dataset``, matched on
    the full spec or the dataset's name); the registries, when given, supply the paper's
    numbers (method cards) and class names (dataset cards); ``references``: Δm's
    (mtlbench.multitask_gain)."""
    rows = leaderboard(store, mode, references)
    if dataset is not None:
        rows = [r for r in rows if dataset in (r.dataset, _base_name(r.dataset))]
    groups: dict[tuple[str, str], list[LeaderboardRow]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.protocol_hash), []).append(row)
    # The figures, statistics and grid are of the cross-validation; external tests
    # (`mtlbench evaluate`) are rows of the leaderboard alone.
    trials = [t for t in store.trials("finished") if not t.get("test_dataset")]
    settings = []
    for (ds, phash), group in groups.items():
        mine = [t for t in trials if t["dataset"] == ds and t["protocol_hash"] == phash]
        size = int(mine[0]["protocol"].get("image_size", 0))
        setting = Setting(ds, group[0].protocol, phash, size, mode, group,
                          references=dict(references or {}))
        first_seed = {}
        for trial in sorted(mine, key=lambda t: (t["seed"], t["fold"])):
            method = entry_name(trial["method"], trial.get("variant") or "",
                                balancing_label(trial.get("balancing") or DEFAULT_BALANCING,
                                                trial.get("balancing_knobs") or {}))
            first = first_seed.setdefault(method, trial["seed"]) == trial["seed"]
            setting.trials.setdefault(method, []).append(trial)
            cases = store.image_metrics(trial["trial_id"])
            setting.seed_images.setdefault(method, {}).setdefault(trial["seed"], {}).update(cases)
            if not first:
                continue  # curves, captions and predictions show the method's first seed
            setting.images.setdefault(method, {}).update(cases)
            setting.case_folds.update(dict.fromkeys(cases, trial["fold"]))
            setting.curves.setdefault(method, {})[trial["fold"]] = store.curve(trial["trial_id"])
            predicted = store.predictions(trial["trial_id"])
            if predicted:
                setting.predictions.setdefault(method, {}).update(predicted)
        setting.gallery = store.case_images(ds, size)
        # The paper's numbers are of its own loss: shown beside the fixed rows only.
        setting.published = {row.entry: published_numbers(methods_registry, row.method, ds)
                             if row.balancing == DEFAULT_BALANCING else {} for row in group}
        setting.classes = class_names(datasets_registry, ds)
        settings.append(setting)
    return settings


def published_numbers(methods_registry, method: str, dataset: str
                      ) -> dict[str, tuple[float, float]]:
    """The paper's numbers for ``method`` on ``dataset`` (matched on the dataset's name, options
    aside), metric -> (mean, std); empty when the method is not registered here or its card
    has none for that dataset."""
    if methods_registry is None or method not in methods_registry:
        return {}
    card = methods_registry.get(method)
    numbers = card.published.get(_base_name(dataset), {})
    return {k: v for k, v in numbers.items() if not k.endswith("_paper")}


def class_names(datasets_registry, dataset: str) -> tuple[str, ...]:
    """The dataset's class names from its card; () when the dataset is not registered here."""
    try:
        name, options = parse_dataset_spec(dataset)
    except DatasetOptionError:
        return ()
    if datasets_registry is None or name not in datasets_registry:
        return ()
    return tuple(datasets_registry.get(name).class_names(options))


def class_label(classes: tuple[str, ...], label: float | int | None) -> str:
    """A class index in words ("class 1" when the dataset's classes are unknown here)."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "–"
    index = int(label)
    return classes[index] if 0 <= index < len(classes) else f"class {index}"


def seed_means(by_seed: dict[str, dict[int, dict[str, float | None]]]
               ) -> dict[str, dict[str, float | None]]:
    """method -> case id -> the mean of the case's finite values over the seeds, from
    ``Setting.per_image_by_seed``'s method -> seed -> case id -> value."""
    out: dict[str, dict[str, float | None]] = {}
    for method, seeds in by_seed.items():
        cases: dict[str, list[float | None]] = {}
        for values in seeds.values():
            for case_id, value in values.items():
                cases.setdefault(case_id, []).append(value)
        out[method] = {case_id: _mean_of_finite(values) for case_id, values in cases.items()}
    return out


def _mean_of_finite(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _base_name(dataset: str) -> str:
    return dataset.partition(":")[0]
