"""The leaderboard as one table model, and its renderings.

``build`` turns leaderboard rows (mtlbench.report) into a ``Table``: a section per setting
(dataset and protocol) with its caption, columns, cells and footnotes (the selection, the
loss terms' caveats †, seeds, Δm), and one legend. The terminal table (``mtlbench
leaderboard``), Markdown, the HTML page and the report's tables render that object and
nothing else, so every format shows the same columns, captions and notes; CSV and JSON are the
same rows as numbers (``mtlbench.report.to_records``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from mtlbench.files import remove_stale_temps, write_text_atomically
from mtlbench.metric_table import headline
from mtlbench.report import (
    LeaderboardRow,
    caveat_notes,
    cell,
    delta_m_notes,
    group_by_setting,
    leaderboard,
    to_csv,
    to_records,
)
from mtlbench.store import Store

LEGEND = ("Dice, Jaccard, ACC, PRE, REC in %; HD95, ASD in pixels at the protocol size; "
          "mean ± std (ddof=0) over the trials (every fold of every training seed). PRE is "
          "weighted, REC macro (as the paper's code). GFLOPs: 2 per multiply-add of "
          "convolutions and matmuls (torch FlopCounterMode), batch 1 at the protocol size. "
          "Precision: the forward pass's (bf16 autocast or fp32; mixed when trials differ).")


@dataclass
class Section:
    """The table of one setting: ``cells`` holds a row of text per method, in ``columns``'
    order (the first is the method's label); ``rows`` are the leaderboard rows behind them."""

    caption: str
    columns: list[str]
    cells: list[list[str]]
    rows: list[LeaderboardRow]
    notes: list[str] = field(default_factory=list)


@dataclass
class Table:
    title: str
    sections: list[Section]
    legend: str = LEGEND


def build(rows: list[LeaderboardRow], mode: str = "strict",
          references: dict[str, str] | None = None) -> Table:
    """The table of ``rows``: a Δm column where a setting has a multi-task method."""
    sections = []
    for (dataset, protocol, phash), group in group_by_setting(rows).items():
        with_gain = any(r.multitask for r in group)
        metrics = [m.column for m in headline()]
        columns = ["Method", *metrics, *(["Δm (%)"] if with_gain else []), "Params (M)",
                   "GFLOPs", "Folds", "Seeds", "Precision"]
        cells = []
        for row in group:
            gain = [] if not with_gain else [
                "" if not row.multitask else "–" if row.delta_m is None
                else f"{row.delta_m:+.2f}"]
            cells.append([row.label, *(cell(row, c) for c in metrics), *gain,
                          f"{row.mparams:.2f}", f"{row.gflops:.2f}", str(len(row.folds)),
                          str(len(row.seeds)), row.precision])
        notes = [*caveat_notes(group), *seed_notes(group),
                 *delta_m_notes(group, references), *external_notes(group)]
        caption = (f"{dataset} · protocol {protocol} ({phash}) · {mode} metrics · "
                   f"{group[0].selection}")
        sections.append(Section(caption, columns, cells, group, notes))
    return Table(f"mtlbench leaderboard · {mode} metrics", sections)


def external_notes(rows: list[LeaderboardRow]) -> list[str]:
    """What the rows "method → B" are: trained on this setting's dataset, tested on all of B."""
    tests = sorted({row.test_dataset for row in rows if row.test_dataset})
    if not tests:
        return []
    return [f"→ {', '.join(tests)}: trained on {rows[0].dataset} (the cross-validation's fold "
            "models), tested on every case of that dataset (`mtlbench evaluate`): mean ± std "
            "over the fold models, and (ensemble) their averaged probabilities."]


def seed_notes(rows: list[LeaderboardRow]) -> list[str]:
    """A note where the rows' seeds differ or not every seed ran every fold."""
    seeds = {tuple(r.seeds) for r in rows}
    notes = []
    if len(seeds) > 1:
        notes.append("Seeds differ between rows: " + "; ".join(
            f"{r.entry}: {', '.join(map(str, r.seeds))}" for r in rows) + ".")
    # An ensemble row has one trial per seed, whatever the folds of its models.
    uneven = [r.entry for r in rows
              if r.trials != (1 if r.ensemble else len(r.folds)) * len(r.seeds)]
    if uneven:
        notes.append("Not every seed ran every fold for " + ", ".join(uneven)
                     + ": their means weigh the folds unevenly.")
    return notes


def markdown(table: Table) -> str:
    out = []
    for section in table.sections:
        out.append(f"### {section.caption}\n")
        out.append("| " + " | ".join(section.columns) + " |")
        out.append("|---" * len(section.columns) + "|")
        out.extend("| " + " | ".join(row) + " |" for row in section.cells)
        out.extend(f"\n{note}" for note in section.notes)
        out.append("")
    out.append(table.legend)
    return "\n".join(out) + "\n"


HTML_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
              "table{border-collapse:collapse;margin:1em 0}"
              "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
              "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
              "caption{text-align:left;font-weight:bold;margin-bottom:.4em}"
              "p.note{color:#555;max-width:60em}")


def html_page(table: Table) -> str:
    """A self-contained HTML page (no scripts, no external files)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(table.title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{escape(table.title)}</h1>"]
    for section in table.sections:
        parts.append(f"<table><caption>{escape(section.caption)}</caption>")
        parts.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in section.columns)
                     + "</tr>")
        parts.extend("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                     for row in section.cells)
        parts.append("</table>")
        parts.extend(f'<p class="note">{escape(note)}</p>' for note in section.notes)
    if not table.sections:
        parts.append("<p>No finished trials in this store yet.</p>")
    parts.append(f'<p class="note">{escape(table.legend)}</p></body></html>')
    return "\n".join(parts) + "\n"


def rich_tables(table: Table) -> list:
    """The sections as rich Tables for the terminal, each followed by its notes (text)."""
    from rich.markup import escape as rich_escape
    from rich.table import Table as RichTable

    out = []
    for section in table.sections:
        shown = RichTable(title=f"Leaderboard · {section.caption}", caption=table.legend)
        for i, column in enumerate(section.columns):
            if i == 0:
                shown.add_column(column, style="bold")
            else:
                shown.add_column(column, justify="left" if column == "Precision" else "right")
        for row in section.cells:
            shown.add_row(*(rich_escape(c) for c in row))
        out.append((shown, section.notes))
    return out


def write_leaderboard(store: Store, out_dir: str | Path) -> list[Path]:
    """Write leaderboard.{csv,md,json} (strict and paper modes) next to the store."""
    out_dir = Path(out_dir)
    strict, paper = leaderboard(store, "strict"), leaderboard(store, "paper")
    files = {
        "leaderboard.csv": to_csv(strict, "strict") + to_csv(paper, "paper").partition("\n")[2],
        "leaderboard.md": markdown(build(strict, "strict")) + "\n"
                          + markdown(build(paper, "paper")),
        "leaderboard.json": json.dumps(
            {"strict": to_records(strict, "strict"), "paper": to_records(paper, "paper")},
            indent=1, allow_nan=False),
    }
    remove_stale_temps(out_dir, ".leaderboard.*.tmp")  # left by a process killed mid-write
    return [write_text_atomically(out_dir / name, text) for name, text in files.items()]
