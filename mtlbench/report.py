"""Leaderboards derived from the store: mean ± std over the fold means (as the paper reports).

Dice, Jaccard, ACC, PRE and REC are shown in percent, HD95 and ASD in pixels at the protocol
size. ``strict`` metrics are the headline; ``paper`` mode reproduces the paper's computation.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np

from mtlbench.identity import DEFAULT_BALANCING, RowKey, balancing_label, knobs_tuple
from mtlbench.metric_table import METRICS, headline
from mtlbench.multitask_gain import TASK_WORDS, TASKS, delta_m, missing_note
from mtlbench.precision import combined
from mtlbench.store import Store


@dataclass
class LeaderboardRow:
    """One method on one dataset under one protocol, over its folds and training seeds."""

    dataset: str
    method: str
    protocol: str
    protocol_hash: str
    folds: list[int]
    # column -> (mean, std) over every trial (fold × seed), population std (ddof=0)
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    mparams: float = math.nan
    gflops: float = math.nan
    gmacs: float = math.nan
    pretrained: str = ""
    checkpoint: str = ""
    split: str = ""
    loss: str = ""
    variant: str = ""  # the method's knobs that differ from its defaults (mtlbench.identity)
    knobs: dict = field(default_factory=dict)
    balancing: str = DEFAULT_BALANCING  # how the task losses were combined (mtlbench.balancing)
    balancing_knobs: dict = field(default_factory=dict)  # its knobs away from their defaults
    caveats: list[str] = field(default_factory=list)  # footnotes its loss terms asked for
    wall_s: float = 0.0
    precision: str = ""  # fp32, bf16, or "mixed" when folds (or a resumed fold) differ
    seeds: list[int] = field(default_factory=list)
    trials: int = 0  # finished trials: folds × seeds where every seed ran every fold
    # column -> std over the seeds of each seed's mean over the folds (ddof=0); only with
    # two or more seeds: the spread `compare --seed-sigma` measures regressions against
    seed_std: dict[str, float] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()  # the tasks the method scores ("cls", "seg")
    reference_for: tuple[str, ...] = ()  # the tasks it is the default Δm reference of
    references: dict[str, str] = field(default_factory=dict)  # task -> default Δm reference
    delta_m: float | None = None  # the multi-task gain in % (mtlbench.multitask_gain)
    delta_m_missing: tuple[str, ...] = ()  # multi-task rows: tasks whose reference is absent
    # Trained on ``dataset``, tested on this other dataset (mtlbench.external_eval): each fold
    # model alone (mean ± std over them), or their ensemble (``ensemble``); "": the
    # cross-validation on ``dataset`` itself.
    test_dataset: str = ""
    ensemble: bool = False

    @property
    def multitask(self) -> bool:
        return len(self.tasks) > 1

    @property
    def selection(self) -> str:
        """How the folds and the evaluated checkpoint were chosen, in words; the paper's
        choices are labelled as such because both make the numbers optimistic."""
        words = []
        if self.split == "paper":
            words.append("paper's split (not grouped: near-duplicates may leak)")
        if self.split == "official":
            words.append("the dataset's own folds (split=official)")
        if self.checkpoint == "paper":
            words.append("checkpoint chosen on the test fold (paper's selection, optimistic)")
        else:
            words.append("last-epoch checkpoint")
        return ", ".join(words)

    @property
    def entry(self) -> str:
        """The row's name within its setting: the method, with its non-default knobs and its
        balancing (with its non-default knobs) unless ``fixed``, and the external test set."""
        return entry_name(self.method, self.variant,
                          balancing_label(self.balancing, self.balancing_knobs),
                          self.test_dataset, self.ensemble)

    @property
    def label(self) -> str:
        """The row's name in tables, marked † when its trials carry a caveat (footnotes)."""
        return f"{self.entry} †" if self.caveats else self.entry


def entry_name(method: str, variant: str = "", balancing: str = DEFAULT_BALANCING,
               test_dataset: str = "", ensemble: bool = False) -> str:
    """A method's row name: ``mynet`` or, with knobs away from their defaults,
    ``mynet [aux_weight=0.5]``, and with a balancing other than ``fixed``, ``mynet · dwa``
    (``balancing``: the balancing's label, ``mtlbench.identity.balancing_label``, e.g.
    ``dwa [temperature=3.0]``); tested on another dataset, ``mynet → bus`` (each fold model)
    or ``mynet → bus (ensemble)``."""
    name = f"{method} [{variant}]" if variant else method
    if balancing not in (DEFAULT_BALANCING, ""):
        name = f"{name} · {balancing}"
    if test_dataset:
        name = f"{name} → {test_dataset}" + (" (ensemble)" if ensemble else "")
    return name


def caveat_notes(rows: list[LeaderboardRow]) -> list[str]:
    """The footnotes of ``rows`` (each once, marked †), in the order the rows have them."""
    notes = dict.fromkeys(f"† {row.entry}: {c}" for row in rows for c in row.caveats)
    return list(notes)


def metric_columns(mode: str = "strict") -> list[tuple[str, str, float]]:
    """(column name, store key, display scale) of the leaderboard in ``mode``
    (``mtlbench.metric_table``)."""
    return [(m.column, m.store_key(mode), m.scale) for m in METRICS]


def leaderboard(store: Store, mode: str = "strict",
                references: dict[str, str] | None = None) -> list[LeaderboardRow]:
    """Rows per (dataset, protocol, method and its knobs, balancing) over the finished trials
    (the row key
    of mtlbench.identity: folds and seeds are its replicates), in the order first run, with
    the multi-task gain Δm against ``references`` (task -> method; default: the references
    the trials recorded)."""
    return rows_from_trials(store.trials("finished"), mode, references)


def rows_from_trials(trials: list[dict], mode: str = "strict",
                     references: dict[str, str] | None = None) -> list[LeaderboardRow]:
    """The leaderboard of stored trials (``Store.trials`` records)."""
    groups: dict[str, list[dict]] = {}
    for trial in trials:
        key = RowKey(trial["dataset"], trial["protocol_hash"], trial["method"],
                     knobs_tuple(trial.get("knobs") or {}),
                     trial.get("balancing") or DEFAULT_BALANCING,
                     knobs_tuple(trial.get("balancing_knobs") or {}),
                     trial.get("test_dataset") or "", trial["fold"] < 0).text
        groups.setdefault(key, []).append(trial)
    rows = [_row(group, mode) for group in groups.values()]
    assign_delta_m(rows, references or {})
    return rows


def _row(trials: list[dict], mode: str) -> LeaderboardRow:
    trials.sort(key=lambda t: (t["fold"], t["seed"]))
    first = trials[0]
    # An ensemble's row counts the folds of its models (its trials are fold -1).
    folds = {f for t in trials for f in ((t.get("env") or {}).get("evaluation") or {}).get(
        "folds", [])} if first["fold"] < 0 else {t["fold"] for t in trials}
    row = LeaderboardRow(first["dataset"], first["method"], first["protocol_name"],
                         first["protocol_hash"], sorted(folds),
                         variant=first.get("variant") or "",
                         knobs=dict(first.get("knobs") or {}),
                         balancing=first.get("balancing") or DEFAULT_BALANCING,
                         balancing_knobs=dict(first.get("balancing_knobs") or {}),
                         seeds=sorted({t["seed"] for t in trials}), trials=len(trials),
                         test_dataset=first.get("test_dataset") or "",
                         ensemble=first["fold"] < 0)
    for column, key, scale in metric_columns(mode):
        values = [(t["seed"], t["metrics"][key]) for t in trials
                  if t["metrics"].get(key) is not None]
        if values:
            # population std over the trials' means (ddof=0), as the paper's numpy.std
            x = np.array([v for _, v in values], dtype=np.float64)
            row.metrics[column] = (float(x.mean()) * scale, float(x.std()) * scale)
            by_seed: dict[int, list[float]] = {}
            for seed, v in values:
                by_seed.setdefault(seed, []).append(v)
            if len(by_seed) > 1:
                row.seed_std[column] = float(np.std([np.mean(v) for v in by_seed.values()])
                                             ) * scale
    profile = first["profile"]
    if profile:
        row.mparams = profile["params"] / 1e6
        row.gflops = profile["flops"] / 1e9
        row.gmacs = profile["macs"] / 1e9
    env = first["env"]
    row.pretrained = env.get("pretrained", "")
    row.checkpoint = first["protocol"].get("checkpoint", "")
    row.split = first["protocol"].get("split", "")
    row.loss = env.get("loss", "")
    row.caveats = list(dict.fromkeys(c for t in trials for c in t["env"].get("caveats", [])))
    row.wall_s = sum(t["timing"].get("wall_s", 0.0) for t in trials)
    row.precision = combined([trial_precision(t) for t in trials])
    row.tasks = tuple(env["tasks"]) if "tasks" in env else _scored_tasks(row)
    row.reference_for = tuple(env.get("reference_for", ()))
    row.references = dict(env.get("references", {}))
    return row


def _scored_tasks(row: LeaderboardRow) -> tuple[str, ...]:
    """The tasks a row has metrics of: what a trial stored before it recorded its tasks."""
    return tuple(task for task, column in (("cls", "ACC"), ("seg", "Dice"))
                 if column in row.metrics)


def assign_delta_m(rows: list[LeaderboardRow], references: dict[str, str]) -> None:
    """Set Δm on the multi-task rows, per setting (dataset and protocol): the references are
    rows of that setting with default knobs and balancing, named by ``references`` or else
    by what the trials recorded (mtlbench.multitask_gain)."""
    for group in group_by_setting(rows).values():
        plain = {row.method: row for row in group
                 if not row.variant and row.balancing == DEFAULT_BALANCING
                 and not row.test_dataset}
        for row in group:
            if not row.multitask or row.test_dataset:  # Δm: of the cross-validation only
                continue
            reference_means, missing = {}, []
            for task in TASKS:
                name = references.get(task) or row.references.get(task) or next(
                    (r.method for r in plain.values() if task in r.reference_for), "")
                ref = plain.get(name)
                if ref is None or ref is row or task not in ref.tasks:
                    missing.append(task)
                    continue
                reference_means[task] = {c: mean for c, (mean, _) in ref.metrics.items()}
            means = {c: mean for c, (mean, _) in row.metrics.items()}
            row.delta_m = None if missing else delta_m(means, reference_means)
            row.delta_m_missing = tuple(missing)


def delta_m_notes(rows: list[LeaderboardRow], references: dict[str, str] | None = None
                  ) -> list[str]:
    """The note of one setting's table on Δm: its definition, and which methods to add where
    a reference did not run."""
    multitask = [r for r in rows if r.multitask]
    if not multitask:
        return []
    missing = tuple(dict.fromkeys(t for r in multitask for t in r.delta_m_missing))
    suggested = {**multitask[0].references, **(references or {})}
    notes = ["Δm: the multi-task gain in %, the mean relative change of the seven metrics "
             "against the single-task references of this protocol (HD95, ASD with their sign "
             "turned; Maninis et al. 2019): " + (", ".join(
                 f"{TASK_WORDS[t]} {suggested[t]}" for t in TASKS if t in suggested)
                 or "none recorded") + "."]
    if missing:
        notes.append(missing_note(missing, suggested))
    return notes


def trial_precision(trial: dict) -> str:
    """The precision a stored trial computed in (``env.precision.used``); trials stored before
    precision was chosen by the device ran the protocol's own value, fp32 or bf16."""
    recorded = (trial.get("env") or {}).get("precision")
    if isinstance(recorded, dict) and recorded.get("used"):
        return recorded["used"]
    return (trial.get("protocol") or {}).get("precision", "") or "unknown"


def cell(row: LeaderboardRow, column: str, digits: int = 2) -> str:
    """"mean ± std" over the trials; the mean alone when there is one (no spread to show)."""
    if column not in row.metrics:
        return "–"
    mean, std = row.metrics[column]
    if row.trials <= 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def headline_columns() -> list[str]:
    return [m.column for m in headline()]


def to_records(rows: list[LeaderboardRow], mode: str = "strict") -> list[dict]:
    """Flat records (one per row) for CSV and JSON."""
    records = []
    for row in rows:
        rec = {"dataset": row.dataset, "method": row.method, "variant": row.variant,
               "knobs": row.knobs, "balancing": row.balancing,
               "balancing_knobs": row.balancing_knobs, "protocol": row.protocol,
               "protocol_hash": row.protocol_hash, "mode": mode, "folds": len(row.folds),
               "params_m": _finite(row.mparams), "gflops": _finite(row.gflops),
               "gmacs": _finite(row.gmacs),
               "pretrained": row.pretrained, "checkpoint": row.checkpoint, "split": row.split,
               "loss": row.loss, "precision": row.precision, "seeds": len(row.seeds),
               "seed_list": list(row.seeds), "trials": row.trials,
               "delta_m": _finite(row.delta_m), "test_dataset": row.test_dataset,
               "ensemble": row.ensemble}
        for column, _, _ in metric_columns(mode):
            mean, std = row.metrics.get(column, (None, None))
            rec[f"{column.lower()}_mean"] = _finite(mean)
            rec[f"{column.lower()}_std"] = _finite(std)
            rec[f"{column.lower()}_seed_std"] = _finite(row.seed_std.get(column))
        records.append(rec)
    return records


def to_csv(rows: list[LeaderboardRow], mode: str = "strict") -> str:
    records = [{**r, "knobs": json.dumps(r["knobs"], sort_keys=True),
                "seed_list": ",".join(map(str, r["seed_list"]))}
               for r in to_records(rows, mode)]
    if not records:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def group_by_setting(rows: list[LeaderboardRow]
                     ) -> dict[tuple[str, str, str], list[LeaderboardRow]]:
    """Rows by (dataset, protocol name, protocol hash), in the order first seen."""
    out: dict[tuple[str, str, str], list[LeaderboardRow]] = {}
    for row in rows:
        out.setdefault((row.dataset, row.protocol, row.protocol_hash), []).append(row)
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
