"""Assemble a report: read the store, compute, draw, write report.html and figures/*.png."""

from __future__ import annotations

import datetime
import os
import sqlite3
from html import escape
from pathlib import Path

from mtlbench import __version__
from mtlbench.files import write_bytes_atomically, write_text_atomically
from mtlbench.reporting import figures, html
from mtlbench.reporting.collect import Setting, collect
from mtlbench.reporting.grid import DEFAULT_GRID_CASES, grid_cases
from mtlbench.reporting.significance import setting_statistics
from mtlbench.store import STORE_NAME, Store, StoreError


class ReportError(ValueError):
    """The report cannot be made from this input; the message says which file and why."""


def store_path(run: str | Path) -> Path:
    """The store of ``run`` (a run folder or a store file); ReportError when there is none."""
    path = Path(run)
    if path.is_dir():
        path = path / STORE_NAME
    if not path.is_file():
        raise ReportError(f"no store at {path}: point at a run folder (with {STORE_NAME}) or a "
                          "store file, e.g. `mtlbench report mtlbench-runs`")
    if path.stat().st_size == 0:
        raise ReportError(f"store {path} is empty (0 bytes): nothing to report")
    return path


def write_report(run: str | Path, out_dir: str | Path | None = None, mode: str = "strict",
                 dataset: str | None = None, grid: int = DEFAULT_GRID_CASES,
                 methods_registry=None, datasets_registry=None,
                 references: dict[str, str] | None = None) -> Path:
    """Write ``report.html`` and ``figures/*.png`` of the store of ``run`` into ``out_dir``
    (default: ``<run folder>/report``) and return the page's path. ``references``: the Δm
    references (``--delta-ref``; default: what the trials recorded).

    Raises ReportError for a missing, empty or unreadable store and for a store without
    finished trials (of ``dataset``, when given).
    """
    path = store_path(run)
    out = Path(out_dir) if out_dir is not None else path.parent / "report"
    try:
        with Store.read(path) as store:
            settings = collect(store, mode, dataset, methods_registry, datasets_registry,
                               references)
            stored = sorted({t["dataset"] for t in store.trials("finished")})
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"store {path} cannot be read: {exc}") from exc
    except StoreError as exc:
        raise ReportError(str(exc)) from exc
    if not settings:
        if dataset and stored:
            raise ReportError(f"store {path} has no finished trials of dataset {dataset!r}; "
                              f"it has: {', '.join(stored)}")
        raise ReportError(f"store {path} has no finished trials: nothing to report")
    figures_dir = out / "figures"
    try:
        figures_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(figures_dir, os.W_OK):
            raise PermissionError(f"{figures_dir} is not writable")
    except OSError as exc:
        raise ReportError(f"the report cannot be written to {out} ({exc}); give another "
                          "folder with --out") from None
    sections = [(s.slug, s.title, _section(s, grid, figures_dir)) for s in settings]
    meta = (f"Store <code>{escape(str(path.resolve()))}</code> · {escape(mode)} metrics · "
            f"made {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by mtlbench "
            f"{escape(__version__)}. Figures also in <code>figures/</code> next to this page.")
    page = out / "report.html"
    write_text_atomically(page, html.page("mtlbench report", meta, sections))
    return page


def _section(setting: Setting, grid: int, figures_dir: Path) -> str:
    """The HTML of one setting; its figures are written to ``figures_dir`` as well."""
    labels = {row.entry: row.label for row in setting.rows}
    parts = ["<h3>Leaderboard</h3>", html.leaderboard_table(setting),
             html.leaderboard_notes(setting)]

    parts.append("<h3>Per-fold box plots</h3>")
    parts.append(_figure(figures.box_plots(setting), setting, "boxplots", figures_dir,
                         "Box plots of the fold means per metric and method",
                         "No fold metrics to plot."))
    seeds = len(setting.seeds) > 1
    per = "trial's (a fold of one training seed)" if seeds else "fold's"
    first = (" Curves and the qualitative grid show each method's first seed." if seeds
             else "")
    parts.append(f'<p class="note">Each dot is one {per} mean; boxes span the quartiles of '
                 f"the dots; red diamonds: the paper's published mean.{first}</p>")

    parts.append("<h3>Statistics</h3>")
    stats = setting_statistics(setting)
    if stats:
        parts += [html.stats_table(stats, labels), html.stats_notes(setting)]
    else:
        parts.append('<p class="note">No per-image values in the store.</p>')

    parts.append("<h3>Training curves</h3>")
    parts.append(_figure(figures.training_curves(setting), setting, "curves", figures_dir,
                         "Training curves per method, mean over folds",
                         "No training curves in the store."))

    parts.append("<h3>Qualitative results</h3>")
    methods = [m for m in setting.methods if setting.predictions.get(m)]
    cases = grid_cases(setting, grid)
    if cases and methods:
        scores = html.grid_scores(setting, methods)
        png = figures.qualitative_grid(setting, cases, methods, scores)
        write_bytes_atomically(figures_dir / f"{setting.slug}-qualitative.png", png)
        parts.append(html.grid_table(setting, cases, methods, scores))
        skipped = [labels[m] for m in setting.methods if m not in methods]
        note = ("Input, ground truth and each method's binary predicted mask (threshold 0.5) "
                "at the protocol size; captions: the image's Dice and, for methods that "
                "classify, the predicted class. Cases: gallery cases stored with the trials, "
                "classes and folds taking turns (<code>--grid N</code> for more).")
        if skipped:
            note += f" Not shown (no segmentation): {escape(', '.join(skipped))}."
        parts.append(f'<p class="note">{note}</p>')
    else:
        parts.append('<p class="note">No predicted masks in the store (its trials were '
                     "recorded before mtlbench kept them, or no method segments).</p>")
    return "\n".join(parts)


def _figure(png: bytes | None, setting: Setting, kind: str, figures_dir: Path, alt: str,
            absent: str) -> str:
    if png is None:
        return f'<p class="note">{absent}</p>'
    write_bytes_atomically(figures_dir / f"{setting.slug}-{kind}.png", png)
    return html.figure(png, alt, kind)
