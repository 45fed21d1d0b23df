"""The report's figures as PNG bytes.

matplotlib's object API (``Figure``, rendered by Agg when saved) rather than pyplot: no display,
no global backend switch, no figure registry to leak. A method keeps its colour in every figure
of a setting (its position in the leaderboard)."""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from mtlbench.metric_table import BY_COLUMN
from mtlbench.predictions import decode_png
from mtlbench.report import headline_columns
from mtlbench.reporting.collect import Setting, class_label
from mtlbench.reporting.grid import GridCase

DPI = 110
# Curve keys worth a panel, in order, with their titles; a key no method recorded is skipped.
CURVES = (("loss_total", "training loss (total)"), ("loss_dice", "training Dice loss"),
          ("loss_ce", "training cross-entropy"),
          ("testfold_dice", "test-fold Dice (paper's checkpoint selection)"),
          ("testfold_acc", "test-fold ACC (paper's checkpoint selection)"),
          # What a task balancing weighs each task with (mtlbench.balancing; absent for fixed).
          ("weight_cls", "task weight of L_cls (balancing)"),
          ("weight_seg", "task weight of L_seg (balancing)"))


def colours(methods: list[str]) -> dict[str, tuple]:
    """One colour per method, stable within a setting."""
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def subplots(nrows: int, ncols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A figure of nrows × ncols axes, each about width × height inches."""
    fig = Figure(figsize=(width * ncols, height * nrows))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def metric_title(column: str) -> str:
    metric = BY_COLUMN[column]
    return f"{column} ({metric.unit}, {metric.direction})"


def box_plots(setting: Setting) -> bytes | None:
    """Per metric, a box of each method's fold means with the folds as dots and the paper's
    mean as a red diamond; None when no metric has values."""
    panels = [(c, setting.fold_values(c)) for c in headline_columns()]
    panels = [(c, v) for c, v in panels if v]
    if not panels:
        return None
    labels = {row.entry: row.label for row in setting.rows}
    colour = colours(setting.methods)
    width = max(2.6, 0.55 * len(setting.methods) + 1.2)
    ncols = max(1, min(4, len(panels), int(16 // width)))  # about 16 inches wide at most
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = subplots(nrows, ncols, width, 3.3)
    paper_shown = False
    for ax, (column, values) in zip(axes.flat, panels, strict=False):
        methods = [m for m in setting.methods if m in values]
        positions = np.arange(1, len(methods) + 1)
        boxes = ax.boxplot([values[m] for m in methods], positions=positions, widths=0.55,
                           patch_artist=True, showfliers=False,
                           medianprops={"color": "black"})
        for patch, method in zip(boxes["boxes"], methods, strict=True):
            patch.set_facecolor((*colour[method][:3], 0.35))
            patch.set_edgecolor(colour[method])
        for x, method in zip(positions, methods, strict=True):
            points = values[method]
            offsets = np.linspace(-0.12, 0.12, len(points)) if len(points) > 1 else [0.0]
            ax.scatter(x + np.asarray(offsets), points, s=14, color=colour[method], zorder=3,
                       edgecolors="black", linewidths=0.4)
            paper = setting.published.get(method, {}).get(column)
            if paper is not None:
                ax.scatter([x], [paper[0]], marker="D", s=30, color="red", zorder=4,
                           label="paper (mean)" if not paper_shown else None)
                paper_shown = True
        ax.set_xticks(positions, [labels[m] for m in methods], rotation=30, ha="right")
        ax.set_title(metric_title(column), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if paper_shown:
        fig.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Fold means · {setting.title} · {setting.mode} metrics", fontsize=11)
    fig.tight_layout()
    return to_png(fig)


def curve_panels(setting: Setting) -> list[tuple[str, str]]:
    """(curve key, title) of the training-curve panels: the CURVES any trial recorded."""
    recorded = {key for folds in setting.curves.values() for curve in folds.values()
                for record in curve for key, value in record.items() if value is not None}
    return [(key, title) for key, title in CURVES if key in recorded]


def training_curves(setting: Setting) -> bytes | None:
    """Per curve key, each method's mean over its folds (thick) and each fold (thin), against
    the epoch; None when no curve was recorded."""
    panels = curve_panels(setting)
    if not panels:
        return None
    labels = {row.entry: row.label for row in setting.rows}
    colour = colours(setting.methods)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = subplots(nrows, ncols, 4.6, 3.2)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for method in setting.methods:
            series = {}
            for fold, curve in sorted(setting.curves.get(method, {}).items()):
                points = [(r["epoch"], r[key]) for r in curve if r.get(key) is not None]
                if points:
                    series[fold] = dict(points)
                    epochs, values = zip(*points, strict=True)
                    ax.plot(epochs, values, color=colour[method], alpha=0.3, linewidth=0.8)
            if not series:
                continue
            epochs = sorted({e for s in series.values() for e in s})
            mean = [np.mean([s[e] for s in series.values() if e in s]) for e in epochs]
            ax.plot(epochs, mean, color=colour[method], linewidth=2,
                    label=f"{labels[method]} (mean of {len(series)} fold(s))")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(names) / 4)))
    fig.suptitle(f"Training curves · {setting.title}", fontsize=11)
    fig.tight_layout()
    return to_png(fig)


def qualitative_grid(setting: Setting, cases: list[GridCase], methods: list[str],
                     scores: dict[str, dict[str, str]]) -> bytes | None:
    """Rows: cases; columns: input, ground truth and each method's predicted mask, titled with
    ``scores[method][case id]``; a method without a prediction for a case shows an empty cell."""
    if not cases:
        return None
    labels = {row.entry: row.label for row in setting.rows}
    ncols = 2 + len(methods)
    fig, axes = subplots(len(cases), ncols, 1.9, 2.1)
    for r, case in enumerate(cases):
        cells = [("input", case.image_png), ("ground truth", case.mask_png)]
        cells += [(labels[m], setting.predictions.get(m, {}).get(case.case_id)) for m in methods]
        for c, (name, png) in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if png is not None:
                ax.imshow(decode_png(png), cmap="gray", vmin=0, vmax=1 if c else 255,
                          interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=9, fontweight="bold")
            if c >= 2:
                ax.set_xlabel(scores.get(methods[c - 2], {}).get(case.case_id, ""), fontsize=8)
        axes[r, 0].set_ylabel(f"{case.case_id}\n{class_label(setting.classes, case.label)}, "
                              f"fold {case.fold}", fontsize=8)
    fig.suptitle(f"Qualitative results · {setting.title}", fontsize=11)
    fig.tight_layout()
    return to_png(fig)
