"""Evaluate a run's kept fold models on another dataset: every case of it, no training.

Each fold model is scored alone and the ensemble of the fold models (their probabilities
averaged, as `mtlbench predict` does) is scored beside them, with the metrics of both modes
(mtlbench.evaluation.score). Each becomes a result in the run's store, keyed by the trained
trial's key plus the test dataset (``TrialKey.test_dataset``; the ensemble with fold -1), so
the leaderboards show "mynet → bus" beside the cross-validation on the training set.

Refused: a test set whose classes are not the training set's by name (both lists are named),
and the training dataset itself, whose every case trained four of the five fold models (its
honest scores are the cross-validation's). Near duplicates of training images in the test set
are found (mtlbench.data.audit.cross_duplicates) and reported with the results.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from mtlbench import __version__
from mtlbench.data.audit import NEAR_THRESHOLD, cross_duplicates
from mtlbench.data.fold import load_arrays
from mtlbench.data.prepare import (
    DataNotFoundError,
    DatasetArrays,
    dataset_identity,
    lookup_dataset,
    parse_dataset_spec,
)
from mtlbench.evaluation import score
from mtlbench.fold_models import FoldModel
from mtlbench.identity import ENSEMBLE_FOLD, TrialKey, knobs_tuple
from mtlbench.predict import Ensemble
from mtlbench.predictions import mask_pngs
from mtlbench.trial import TrialResult


class EvaluationError(ValueError):
    """An external evaluation that cannot be done as asked; the message says why."""


@dataclass
class Evaluation:
    """One setting's external evaluation: a result per fold model and one for the ensemble,
    the near duplicates of training images found in the test set, and notes to show."""

    test_dataset: str
    results: list[TrialResult] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def class_order(trained: tuple[str, ...], tested: tuple[str, ...], test_dataset: str
                ) -> np.ndarray:
    """For each class index of the test set, the index of the same class name among the
    trained classes; EvaluationError with both lists when the names differ."""
    if sorted(trained) != sorted(tested):
        raise EvaluationError(f"the test dataset {test_dataset!r} has the classes "
                              f"{', '.join(tested)}, the models were trained on "
                              f"{', '.join(trained)}; classes are matched by name, so these "
                              "cannot be compared (choose a dataset option that gives the "
                              "same classes, e.g. leave out busi's include_normal)")
    return np.array([trained.index(name) for name in tested], dtype=np.int64)


def check_not_training_set(trained_on: str, test_card: str) -> None:
    """EvaluationError when the test set is the training set (any options of it): each of
    its cases trained all fold models but one, so the ensemble's scores would leak."""
    if parse_dataset_spec(trained_on)[0] == test_card:
        raise EvaluationError(
            f"the models were trained on {trained_on!r}: every case of {test_card!r} was in "
            "the training folds of all fold models but one, so testing them on it (above all "
            "their ensemble) leaks; its honest scores are the run's own cross-validation "
            "(`mtlbench leaderboard`). Evaluate on another dataset")


def evaluation_groups(models: list[FoldModel], methods: str | None = None,
                      balancing: str | None = None) -> list[list[FoldModel]]:
    """The fold models of each (setting, seed) of ``methods`` (a comma list; default all) and
    ``balancing`` (default all), each sorted by fold: what one evaluation scores."""
    from mtlbench.predict import PredictError

    wanted = {m.strip() for m in methods.split(",")} if methods else None
    groups: dict[tuple, list[FoldModel]] = {}
    for model in models:
        if (wanted is None or model.method in wanted) and balancing in (None, model.balancing):
            groups.setdefault((*model.group_key, model.seed), []).append(model)
    if not groups:
        raise PredictError(f"no kept models of {methods or 'any method'}"
                           + (f" with balancing {balancing!r}" if balancing else ""))
    return [sorted(g, key=lambda m: m.fold) for g in groups.values()]


def evaluate_external(plugins, models: list[FoldModel], test_spec: str,
                      data_root: str | None = None, train_root: str | None = None,
                      trained: dict[str, dict] | None = None, device: str = "cpu",
                      threshold: float = NEAR_THRESHOLD) -> Evaluation:
    """Score ``models`` (one setting's fold models of one seed) on every case of the dataset
    ``test_spec``: one result per model and one for their ensemble. ``trained``: the stored
    training trials by id (their size, environment and caveats carry over to the results).
    ``train_root``: the training dataset's folder, for the near-duplicate audit (skipped with
    a note when it cannot be found)."""
    meta = models[0].meta
    card, options = lookup_dataset(plugins.datasets, test_spec)
    test_dataset = dataset_identity(card, options)
    check_not_training_set(meta["dataset"], card.name)
    trained_classes = tuple(meta["classes"])
    order = class_order(trained_classes, card.class_names(options), test_dataset)
    size = int(meta["protocol"]["image_size"])
    arrays = load_arrays(card, data_root, size, None, tuple(sorted(options.items())))
    arrays = dataclasses.replace(arrays, labels=order[arrays.labels], classes=trained_classes)
    evaluation = Evaluation(test_dataset)
    evaluation.near_duplicates, note = _training_duplicates(plugins, meta["dataset"], train_root,
                                                            size, arrays, threshold)
    if note:
        evaluation.notes.append(note)
    started = time.perf_counter()
    ensemble = Ensemble(plugins, models, device)
    segs, clss = ensemble.probabilities(arrays.images, each=True)
    seconds = time.perf_counter() - started
    indices = list(range(len(arrays)))
    trained = trained or {}
    for i, model in enumerate(models):
        evaluation.results.append(_result(
            ensemble, [model], test_dataset, arrays, indices, segs[i] if segs else None,
            clss[i] if clss else None, trained, seconds / len(models), evaluation))
    if len(models) > 1:
        evaluation.results.append(_result(
            ensemble, models, test_dataset, arrays, indices,
            np.mean(segs, 0) if segs else None, np.mean(clss, 0) if clss else None, trained,
            seconds, evaluation))
    return evaluation


def _result(ensemble: Ensemble, models: list[FoldModel], test_dataset: str,
            arrays: DatasetArrays, indices: list[int], seg, cls, trained: dict,
            seconds: float, evaluation: Evaluation) -> TrialResult:
    """The stored record of one model's (or, with several, their ensemble's) scores."""
    meta = models[0].meta
    fold = models[0].fold if len(models) == 1 else ENSEMBLE_FOLD
    key = TrialKey(meta["dataset"], meta["method"], fold, int(meta["seed"]),
                   meta["protocol_hash"], knobs_tuple(meta.get("knobs", {})),
                   balancing=meta.get("balancing", "fixed"),
                   balancing_knobs=knobs_tuple(meta.get("balancing_knobs") or {}),
                   test_dataset=test_dataset)
    rows, metrics, masks = score(ensemble.card, seg, cls, arrays, indices)
    source = trained.get(meta["trial_id"], {})
    env = dict(source.get("env") or {})
    env.update({
        "mtlbench": __version__, "reference_for": [], "tasks": meta.get("tasks", []),
        "precision": {"asked": "fp32", "used": "fp32", "why": "evaluation of kept models"},
        "evaluation": {"test_dataset": test_dataset, "cases": len(indices),
                       "trained_trials": [m.meta["trial_id"] for m in models],
                       "folds": [m.fold for m in models], "kept_dtype": meta.get("dtype"),
                       "near_duplicates": len(evaluation.near_duplicates),
                       "ensemble": len(models) > 1}})
    ids = [arrays.ids[i] for i in indices]
    return TrialResult(
        trial_id=key.trial_id, dataset=meta["dataset"], method=meta["method"], fold=fold,
        seed=int(meta["seed"]), protocol=meta["protocol"], protocol_hash=meta["protocol_hash"],
        status="finished", image_rows=rows, fold_metrics=metrics,
        profile=dict(source.get("profile") or {}),
        timing={"eval_s": seconds, "wall_s": seconds,
                "eval_images_per_s": len(indices) * len(models) / max(seconds, 1e-9)},
        env=env, selected_epoch=int(meta.get("selected_epoch", -1)),
        predictions={} if masks is None else mask_pngs(ids, masks),
        knobs=dict(meta.get("knobs", {})), variant=meta.get("variant", ""),
        balancing=meta.get("balancing", "fixed"),
        balancing_knobs=dict(meta.get("balancing_knobs") or {}), test_dataset=test_dataset)


def _training_duplicates(plugins, trained_on: str, train_root: str | None, size: int,
                         test: DatasetArrays, threshold: float):
    """(near duplicates between the training set and the test set, a note or "")."""
    try:
        card, options = lookup_dataset(plugins.datasets, trained_on)
        train = load_arrays(card, train_root, size, None, tuple(sorted(options.items())))
    except (DataNotFoundError, KeyError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        return [], (f"the training set {trained_on!r} was not found ({first}), so the test set "
                    "was not checked for near duplicates of its images; give --train-data-root")
    pairs = cross_duplicates(test.ids, test.images, train.ids, train.images, threshold)
    if not pairs:
        return [], ""
    shown = ", ".join(f"{a} ~ {b} (r = {r:.3f})" for a, b, r in pairs[:3])
    copies = len({a for a, _, _ in pairs})
    return pairs, (f"{copies} image(s) of the test set are near duplicates of training images "
                   f"of {trained_on!r} (thumbnail correlation ≥ {threshold}: {shown}"
                   f"{' …' if len(pairs) > 3 else ''}); their scores flatter the models "
                   "(`mtlbench data audit` with --against lists them all)")
