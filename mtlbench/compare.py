"""Compare two leaderboards metric by metric and name the regressions (the CI gate).

A leaderboard comes from a run folder (its store), a store file, or a leaderboard JSON file
(``leaderboard.json`` of a run folder, or ``mtlbench leaderboard --format json``), so a
baseline can be a small committed file. Rows are matched on (dataset, method, protocol hash):
numbers from different protocols are not comparable, and a baseline row without a current
row is itself a regression (a method that stopped running).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mtlbench.identity import balancing_label
from mtlbench.metric_table import BY_NAME, headline
from mtlbench.report import entry_name, leaderboard, to_records
from mtlbench.store import STORE_NAME, Store

#: Metrics compared by default: the paper's headline ones (directions: mtlbench.metric_table).
DEFAULT_METRICS = tuple(m.name for m in headline())


class CompareError(ValueError):
    """A leaderboard that cannot be read or compared; the message says which and why."""


@dataclass
class Difference:
    """One metric of one row: baseline, current, current − baseline, and the verdict."""

    dataset: str
    method: str
    protocol_hash: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    # With --seed-sigma K: a regression must also be worse than K × the seed spread (the
    # current row's std of its seeds' means; the baseline's where the current has one seed).
    seed_sigma: float | None = None
    seed_std: float | None = None

    @property
    def within_seed_spread(self) -> bool:
        """Worse than the tolerance but not beyond ``seed_sigma`` seed standard deviations."""
        if self.seed_sigma is None or self.seed_std is None or self.worse_by is None:
            return False
        return self.tolerance < self.worse_by <= self.seed_sigma * self.seed_std

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def worse_by(self) -> float | None:
        """How much worse the current value is (positive = worse), in the metric's unit."""
        if self.delta is None:
            return None
        return -self.delta if BY_NAME[self.metric].higher_is_better else self.delta

    @property
    def not_finite(self) -> bool:
        """The current value is NaN or infinite (a broken run, never a pass)."""
        return self.current is not None and not math.isfinite(self.current)

    @property
    def regression(self) -> bool:
        """Worse by more than the tolerance, not finite, or missing from the current
        leaderboard."""
        if self.not_finite or (self.baseline is not None and self.current is None):
            return True
        return (self.worse_by is not None and self.worse_by > self.tolerance
                and not self.within_seed_spread)

    @property
    def verdict(self) -> str:
        if self.not_finite:
            return "REGRESSION (not finite)"
        if self.baseline is not None and self.current is None:
            return "REGRESSION (missing)"
        if self.regression:
            return "REGRESSION"
        if self.baseline is None:
            return "new"
        if self.within_seed_spread:
            return f"ok (within {self.seed_sigma:g} seed std)"
        return "ok"


def load_records(source: str | Path, mode: str = "strict") -> list[dict]:
    """The leaderboard records (``report.to_records``) of a run folder, store or JSON file."""
    path = Path(source)
    if path.is_dir():
        path = path / STORE_NAME
    if not path.exists():
        raise CompareError(f"{source}: no such run folder, store or leaderboard JSON file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CompareError(f"{path}: not a readable leaderboard JSON ({exc})") from None
        records = data.get(mode) if isinstance(data, dict) else data
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise CompareError(f"{path}: expected the JSON of `mtlbench leaderboard --format "
                               f"json` or a run folder's leaderboard.json ({mode!r} records)")
        return [checked_record(path, i, r) for i, r in enumerate(records)
                if r.get("mode", mode) == mode]
    with Store.read(path) as store:  # never creates or changes what it was given to read
        return to_records(leaderboard(store, mode), mode)


def checked_record(path: Path, index: int, record: dict) -> dict:
    """A leaderboard record whose keys and values can be compared, metrics as floats (NaN and
    infinity kept: the comparison decides); CompareError names the file, record and key."""
    where = f"{path}, record {index + 1}"
    for key in ("dataset", "method", "protocol_hash"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise CompareError(f"{where}: {key!r} is missing or not a string (got "
                               f"{record.get(key)!r}); is this a leaderboard JSON?")
    if not isinstance(record.get("variant", ""), str):
        raise CompareError(f"{where}: 'variant' must be a string")
    out = dict(record)
    for key, value in record.items():
        if not key.endswith(("_mean", "_std", "_seed_std")) or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CompareError(f"{where} ({record['method']}): {key} = {value!r} is not a "
                               "number")
        try:
            out[key] = float(value)
        except OverflowError:
            raise CompareError(f"{where} ({record['method']}): {key} = {str(value)[:20]}... "
                               "is too large to be a metric") from None
    return out


def check_tolerance(option: str, value: float) -> float:
    """A tolerance is a finite number >= 0 (NaN would disable the gate, a negative one would
    fail equal runs); CompareError otherwise."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0:
        raise CompareError(f"{option}={value}: a tolerance is a finite number >= 0, in the "
                           "metric's unit (points for Dice, ACC, ...; pixels for HD95, ASD)")
    return float(value)


def compare(current: list[dict], baseline: list[dict], metrics: tuple[str, ...] = DEFAULT_METRICS,
            tolerance: float = 1.0, tolerances: dict[str, float] | None = None,
            seed_sigma: float | None = None) -> list[Difference]:
    """Every (row, metric) of either leaderboard, baseline rows first, in their order.

    ``tolerance`` is in the metric's display unit (percentage points for Dice, Jaccard, ACC,
    PRE, REC, …; pixels for HD95 and ASD); ``tolerances`` overrides it per metric.
    ``seed_sigma``: a row worse than its tolerance is a regression only when it is also worse
    than this many standard deviations of its seeds' means (rows with one seed: the tolerance
    alone decides).
    """
    if seed_sigma is not None:
        check_tolerance("--seed-sigma", seed_sigma)
    unknown = sorted(set(metrics) - set(BY_NAME))
    if unknown:
        raise CompareError(f"unknown metric(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(BY_NAME)}")
    check_tolerance("--tolerance", tolerance)
    tolerances = {name: check_tolerance(f"--tolerance-for {name}", value)
                  for name, value in (tolerances or {}).items()}
    unknown = sorted(set(tolerances) - set(BY_NAME))
    if unknown:
        raise CompareError(f"--tolerance-for {unknown[0]}: no such metric; choose from "
                           f"{', '.join(BY_NAME)}")
    if not baseline:
        raise CompareError("the baseline has no leaderboard rows: there is nothing to compare "
                           "against (commit a run's leaderboard.json as the baseline)")
    for record in baseline:
        for metric in metrics:
            value = record.get(f"{metric}_mean")
            if value is not None and not math.isfinite(value):
                raise CompareError(f"the baseline's {metric} of {record['method']} on "
                                   f"{record['dataset']} is {value}: a baseline must be "
                                   "finite; re-commit it from a healthy run")

    now = {row_key(r): r for r in current}
    before = {row_key(r): r for r in baseline}
    out = []
    for matched in [*before, *(k for k in now if k not in before)]:
        old, new = before.get(matched), now.get(matched)
        for metric in metrics:
            column = f"{metric}_mean"
            if (old or {}).get(column) is None and (new or {}).get(column) is None:
                continue  # a metric this method does not produce (e.g. ACC of a seg method)
            spread = (new or {}).get(f"{metric}_seed_std")
            if spread is None:
                spread = (old or {}).get(f"{metric}_seed_std")
            out.append(Difference(*matched, metric, (old or {}).get(column),
                                  (new or {}).get(column),
                                  tolerances.get(metric, tolerance), seed_sigma, spread))
    return out


def row_key(record: dict) -> tuple[str, str, str]:
    """(dataset, row name, protocol hash) of a leaderboard record: the method with its
    non-default knobs (``variant``; records written before knobs existed have none) and its
    balancing with its non-default knobs (records written before balancings have none:
    ``fixed``)."""
    balancing = balancing_label(record.get("balancing") or "fixed",
                                record.get("balancing_knobs") or {})
    return (record["dataset"], entry_name(record["method"], record.get("variant") or "",
                                          balancing, record.get("test_dataset") or "",
                                          bool(record.get("ensemble"))),
            record["protocol_hash"])


def unmatched_protocols(current: list[dict], baseline: list[dict]) -> list[str]:
    """Baseline (dataset, method) pairs that the current leaderboard has only under another
    protocol hash: the usual reason for a 'missing' verdict, said plainly."""
    now = {row_key(r)[:2]: r["protocol_hash"] for r in current}
    notes = []
    for r in baseline:
        other = now.get(row_key(r)[:2])
        if other is not None and other != r["protocol_hash"]:
            notes.append(f"{row_key(r)[1]} on {r['dataset']}: baseline protocol "
                         f"{r['protocol_hash']}, current {other}")
    return notes


def to_markdown(differences: list[Difference]) -> str:
    """A Markdown table of the differences, regressions in bold."""
    lines = ["| dataset | method | metric | baseline | current | Δ | verdict |",
             "|---|---|---|---|---|---|---|"]
    for d in differences:
        verdict = f"**{d.verdict}**" if d.regression else d.verdict
        lines.append(f"| {d.dataset} | {d.method} | {d.metric} | {format_number(d.baseline)} | "
                     f"{format_number(d.current)} | {format_number(d.delta, sign=True)} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def format_number(value: float | None, sign: bool = False) -> str:
    """Two decimals, '+' for a difference, '–' for a value that is missing."""
    if value is None:
        return "–"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def precision_differences(current: list[dict], baseline: list[dict]) -> list[str]:
    """Matched rows whose forward precision differs (e.g. a bf16 baseline from an AMX CPU and an
    fp32 run on an AVX2 one): comparable, since precision is chosen by the hardware and not part
    of the protocol, but said, because the tolerance must then also cover the rounding."""
    before = {row_key(r): r.get("precision") for r in baseline}
    notes = []
    for r in current:
        old, new = before.get(row_key(r)), r.get("precision")
        if old and new and old != new:  # leaderboards written before issue 16 have none
            notes.append(f"{row_key(r)[1]} on {r['dataset']}: baseline {old}, current {new}")
    return notes

