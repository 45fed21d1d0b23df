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
from pathlib import Path

import numpy as np

from mtlbench.files import remove_stale_temps, write_text_atomically
from mtlbench.identity import RowKey, knobs_tuple
from mtlbench.metric_table import METRICS, headline
from mtlbench.precision import combined
from mtlbench.store import Store


@dataclass
class LeaderboardRow:
    """One method on one dataset under one protocol."""

    dataset: str
    method: str
    protocol: str
    protocol_hash: str
    folds: list[int]
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)  # column -> (mean, std)
    mparams: float = math.nan
    gflops: float = math.nan
    gmacs: float = math.nan
    pretrained: str = ""
    checkpoint: str = ""
    split: str = ""
    loss: str = ""
    variant: str = ""  # the method's knobs that differ from its defaults (mtlbench.identity)
    knobs: dict = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)  # footnotes its loss terms asked for
    wall_s: float = 0.0
    precision: str = ""  # fp32, bf16, or "mixed" when folds (or a resumed fold) differ

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
        """The row's name within its setting: the method, with its non-default knobs."""
        return entry_name(self.method, self.variant)

    @property
    def label(self) -> str:
        """The row's name in tables, marked † when its trials carry a caveat (footnotes)."""
        return f"{self.entry} †" if self.caveats else self.entry


def entry_name(method: str, variant: str = "") -> str:
    """A method's row name: ``mynet`` or, with knobs away from their defaults,
    ``mynet [aux_weight=0.5]``."""
    return f"{method} [{variant}]" if variant else method


def caveat_notes(rows: list[LeaderboardRow]) -> list[str]:
    """The footnotes of ``rows`` (each once, marked †), in the order the rows have them."""
    notes = dict.fromkeys(f"† {row.entry}: {c}" for row in rows for c in row.caveats)
    return list(notes)


def metric_columns(mode: str = "strict") -> list[tuple[str, str, float]]:
    """(column name, store key, display scale) of the leaderboard in ``mode``
    (``mtlbench.metric_table``)."""
    return [(m.column, m.store_key(mode), m.scale) for m in METRICS]


def leaderboard(store: Store, mode: str = "strict") -> list[LeaderboardRow]:
    """Rows per (dataset, protocol, method and its knobs) over the finished trials (the row key
    of mtlbench.identity), in the order first run."""
    groups: dict[str, list[dict]] = {}
    for trial in store.trials("finished"):
        key = RowKey(trial["dataset"], trial["protocol_hash"], trial["method"],
                     knobs_tuple(trial.get("knobs") or {})).text
        groups.setdefault(key, []).append(trial)
    rows = []
    for trials in groups.values():
        trials.sort(key=lambda t: t["fold"])
        first = trials[0]
        row = LeaderboardRow(first["dataset"], first["method"], first["protocol_name"],
                             first["protocol_hash"], [t["fold"] for t in trials],
                             variant=first.get("variant") or "",
                             knobs=dict(first.get("knobs") or {}))
        for column, key, scale in metric_columns(mode):
            values = [t["metrics"][key] for t in trials
                      if t["metrics"].get(key) is not None]
            if values:
                # population std over fold means (ddof=0), as the paper's numpy.std
                row.metrics[column] = (float(np.mean(values)) * scale,
                                       float(np.std(values)) * scale)
        profile = trials[0]["profile"]
        if profile:
            row.mparams = profile["params"] / 1e6
            row.gflops = profile["flops"] / 1e9
            row.gmacs = profile["macs"] / 1e9
        row.pretrained = trials[0]["env"].get("pretrained", "")
        row.checkpoint = trials[0]["protocol"].get("checkpoint", "")
        row.split = trials[0]["protocol"].get("split", "")
        row.loss = trials[0]["env"].get("loss", "")
        row.caveats = list(dict.fromkeys(c for t in trials for c in t["env"].get("caveats", [])))
        row.wall_s = sum(t["timing"].get("wall_s", 0.0) for t in trials)
        row.precision = combined([trial_precision(t) for t in trials])
        rows.append(row)
    return rows


def trial_precision(trial: dict) -> str:
    """The precision a stored trial computed in (``env.precision.used``); trials stored before
    precision was chosen by the device ran the protocol's own value, fp32 or bf16."""
    recorded = (trial.get("env") or {}).get("precision")
    if isinstance(recorded, dict) and recorded.get("used"):
        return recorded["used"]
    return (trial.get("protocol") or {}).get("precision", "") or "unknown"


def cell(row: LeaderboardRow, column: str, digits: int = 2) -> str:
    """"mean ± std" over the folds; the mean alone when there is one fold (no spread to show)."""
    if column not in row.metrics:
        return "–"
    mean, std = row.metrics[column]
    if len(row.folds) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def headline_columns() -> list[str]:
    return [m.column for m in headline()]


def to_markdown(rows: list[LeaderboardRow], mode: str = "strict") -> str:
    """A Markdown table per dataset and protocol."""
    out = []
    columns = headline_columns()
    for (dataset, protocol, phash), group in _by_setting(rows).items():
        out.append(f"### {dataset} · protocol {protocol} ({phash}) · {mode} metrics · "
                   f"{group[0].selection}\n")
        out.append("| Method | " + " | ".join(columns)
                   + " | Params (M) | GFLOPs | Folds | Precision |")
        out.append("|---" * (len(columns) + 5) + "|")
        for row in group:
            cells = [cell(row, c) for c in columns]
            out.append(f"| {row.label} | " + " | ".join(cells) +
                       f" | {row.mparams:.2f} | {row.gflops:.2f} | {len(row.folds)} | "
                       f"{row.precision} |")
        for note in caveat_notes(group):
            out.append(f"\n{note}")
        out.append("")
    out.append("Dice, Jaccard, ACC, PRE, REC in %; HD95, ASD in pixels at the protocol size; "
               "mean ± std (ddof=0) over the fold means. PRE is weighted, REC macro (as the "
               "paper's code). GFLOPs: 2 per multiply-add of convolutions and matmuls "
               "(torch FlopCounterMode), batch 1 at the protocol size. Precision: the forward "
               "pass's (bf16 autocast or fp32; mixed when folds differ).")
    return "\n".join(out) + "\n"


_HTML_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0}"
               "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
               "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
               "caption{text-align:left;font-weight:bold;margin-bottom:.4em}"
               "p.note{color:#555;max-width:60em}")


def to_html(rows: list[LeaderboardRow], mode: str = "strict") -> str:
    """A self-contained HTML page (no scripts, no external files): a table per dataset and
    protocol, the same cells and notes as the Markdown leaderboard."""
    from html import escape

    columns = [*headline_columns(), "Params (M)", "GFLOPs", "Folds", "Precision"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>mtlbench leaderboard · {mode} metrics</title>",
             f"<style>{_HTML_STYLE}</style></head><body>",
             f"<h1>mtlbench leaderboard · {mode} metrics</h1>"]
    for (dataset, protocol, phash), group in _by_setting(rows).items():
        parts.append(f"<table><caption>{escape(dataset)} · protocol {escape(protocol)} "
                     f"({escape(phash)}) · {escape(group[0].selection)}</caption>")
        parts.append("<tr><th>Method</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns)
                     + "</tr>")
        for row in group:
            cells = [cell(row, c) for c in headline_columns()]
            cells += [f"{row.mparams:.2f}", f"{row.gflops:.2f}", str(len(row.folds)),
                      row.precision]
            parts.append(f"<tr><td>{escape(row.label)}</td>"
                         + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        for note in caveat_notes(group):
            parts.append(f'<p class="note">{escape(note)}</p>')
    if not rows:
        parts.append("<p>No finished trials in this store yet.</p>")
    parts.append('<p class="note">Dice, Jaccard, ACC, PRE, REC in %; HD95, ASD in pixels at the '
                 "protocol size; mean ± std (ddof=0) over the fold means. PRE is weighted, REC "
                 "macro (as the paper's code).</p></body></html>")
    return "\n".join(parts) + "\n"


def to_records(rows: list[LeaderboardRow], mode: str = "strict") -> list[dict]:
    """Flat records (one per row) for CSV and JSON."""
    records = []
    for row in rows:
        rec = {"dataset": row.dataset, "method": row.method, "variant": row.variant,
               "knobs": row.knobs, "protocol": row.protocol,
               "protocol_hash": row.protocol_hash, "mode": mode, "folds": len(row.folds),
               "params_m": _finite(row.mparams), "gflops": _finite(row.gflops),
               "gmacs": _finite(row.gmacs),
               "pretrained": row.pretrained, "checkpoint": row.checkpoint, "split": row.split,
               "loss": row.loss, "precision": row.precision}
        for column, _, _ in metric_columns(mode):
            mean, std = row.metrics.get(column, (None, None))
            rec[f"{column.lower()}_mean"] = _finite(mean)
            rec[f"{column.lower()}_std"] = _finite(std)
        records.append(rec)
    return records


def to_csv(rows: list[LeaderboardRow], mode: str = "strict") -> str:
    records = [{**r, "knobs": json.dumps(r["knobs"], sort_keys=True)}
               for r in to_records(rows, mode)]
    if not records:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def write_leaderboard(store: Store, out_dir: str | Path) -> list[Path]:
    """Write leaderboard.{csv,md,json} (strict and paper modes) next to the store."""
    out_dir = Path(out_dir)
    strict, paper = leaderboard(store, "strict"), leaderboard(store, "paper")
    files = {
        "leaderboard.csv": to_csv(strict, "strict") + to_csv(paper, "paper").partition("\n")[2],
        "leaderboard.md": to_markdown(strict, "strict") + "\n" + to_markdown(paper, "paper"),
        "leaderboard.json": json.dumps(
            {"strict": to_records(strict, "strict"), "paper": to_records(paper, "paper")},
            indent=1, allow_nan=False),
    }
    remove_stale_temps(out_dir, ".leaderboard.*.tmp")  # left by a process killed mid-write
    return [write_text_atomically(out_dir / name, text) for name, text in files.items()]


def _by_setting(rows: list[LeaderboardRow]) -> dict[tuple[str, str, str], list[LeaderboardRow]]:
    out: dict[tuple[str, str, str], list[LeaderboardRow]] = {}
    for row in rows:
        out.setdefault((row.dataset, row.protocol, row.protocol_hash), []).append(row)
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
