"""Δm, the multi-task gain: how much a multi-task method gains over single-task methods.

    Δm = 100 % · 1/K · Σ_k (−1)^{l_k} · (M_k − R_k) / R_k

over the K = 7 headline metrics (Dice, Jaccard, HD95, ASD against the segmentation reference;
ACC, PRE, REC against the classification reference), with l_k = 1 for a lower-is-better metric
(HD95, ASD) and 0 otherwise, M_k the method's mean and R_k the reference's, both of one dataset
under one protocol. Positive is better. The definition is Maninis et al., "Attentive
Single-Tasking of Multiple Tasks", CVPR 2019 (Δ_MTL), in the per-metric form the multi-task
literature reports (Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A
Survey", TPAMI 2021; Liu et al., CAGrad, NeurIPS 2021; Navon et al., Nash-MTL, ICML 2022).

The references are single-task methods of the same dataset and protocol, with their default
knobs. Which ones: a method card declares the tasks it is the default reference for
(``MethodCard.reference_for``); each trial records those names (``env.references``), so a
store knows them without the plugins; ``references`` given here (``--delta-ref
seg=NAME,cls=NAME``) override them. Where a reference did not run, Δm is None and the note
names the method to add. This module imports neither torch nor the plugins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtlbench.cards import TASKS
from mtlbench.metric_table import headline

TASK_WORDS = {"seg": "segmentation", "cls": "classification"}


@dataclass(frozen=True)
class Gain:
    """Δm of one row (None when it cannot be computed) and, then, why."""

    value: float | None
    references: dict[str, str]  # task -> the reference row's name
    missing: tuple[str, ...] = ()  # tasks without a reference that ran


def parse_references(text: str | None) -> dict[str, str]:
    """``seg=NAME,cls=NAME`` (either part may be left out) as {task: method}; ValueError with
    what to write otherwise."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        task, sep, name = item.partition("=")
        task = task.strip()
        if not sep or task not in TASKS or not name.strip():
            raise ValueError(f"--delta-ref {text!r}: expected seg=METHOD,cls=METHOD (e.g. "
                             "seg=fcn to take FCN as the segmentation reference)")
        out[task] = name.strip()
    return out


def delta_m(means: dict[str, float], reference_means: dict[str, dict[str, float]]
            ) -> float | None:
    """Δm in percent from a method's ``means`` (column -> mean) and each task's reference means;
    None when a metric's reference mean is missing, zero or not finite (the relative change is
    undefined there) or the method lacks a metric."""
    terms = []
    for metric in headline():
        task = metric.task
        reference = reference_means.get(task, {}).get(metric.column)
        value = means.get(metric.column)
        if reference is None or value is None or not (math.isfinite(reference)
                                                      and math.isfinite(value)) \
                or reference == 0:
            return None
        sign = 1.0 if metric.higher_is_better else -1.0
        terms.append(sign * (value - reference) / reference)
    return 100.0 * sum(terms) / len(terms)


def missing_note(missing: tuple[str, ...], suggested: dict[str, str]) -> str:
    """The note of a table whose Δm could not be computed: which methods to add."""
    parts = []
    for task in missing:
        name = suggested.get(task)
        if name:
            parts.append(f"the {TASK_WORDS[task]} reference {name} did not run under this "
                         f"protocol: add {name} to --methods")
        else:
            parts.append(f"no {TASK_WORDS[task]} reference is known for these trials: name one "
                         f"with --delta-ref {task}=METHOD")
    return "Δm: – because " + "; ".join(parts) + "."


def default_references(cards) -> dict[str, str]:
    """task -> the first registered method (``cards``: (name, MethodCard) pairs) whose card
    declares itself that task's reference: what each trial records as ``env.references``."""
    out: dict[str, str] = {}
    for name, card in cards:
        for task in sorted(getattr(card, "reference_for", ())):
            out.setdefault(task, name)
    return out
