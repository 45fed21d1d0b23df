"""The report's HTML: one self-contained page (inline CSS, images as data URIs, no scripts)."""

from __future__ import annotations

import base64
import math
from html import escape

from mtlbench.leaderboard_table import LEGEND, Section
from mtlbench.leaderboard_table import build as build_table
from mtlbench.predictions import decode_png
from mtlbench.report import headline_columns
from mtlbench.reporting.collect import Setting, class_label
from mtlbench.reporting.grid import GridCase
from mtlbench.reporting.significance import MetricStatistics
from mtlbench.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.5em 2em;
  max-width:1500px;color:#1d1d1d;font-size:14px;line-height:1.45}
h1{margin:.2em 0}h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:3px 6px;text-align:right;white-space:nowrap}
table.leaderboard{font-size:13px}table.leaderboard td,table.leaderboard th{padding:2px 5px}
th{background:#f1f3f5;text-align:center}td.method,th.method{text-align:left}
div.wide{overflow-x:auto;max-width:100%}tr.first td{border-top:2px solid #999}
td.paper{color:#6a4c93;font-style:italic;background:#faf7fd}
tr.best td{font-weight:600;background:#eef7ee}
p.note,li.note{color:#555;max-width:75em}p.meta{color:#555}
img.figure{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
table.qualitative td{vertical-align:top;text-align:center;padding:4px}
table.qualitative img{width:128px;height:128px;image-rendering:pixelated;display:block;
  margin:0 auto;background:#000}
table.qualitative td.case{text-align:left;font-size:12px}
span.caption{display:block;font-size:11px;color:#333;margin-top:2px}
span.wrong{color:#b00020}span.right{color:#1b7f3b}
nav ul{columns:2;max-width:60em}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, alt: str, css_class: str) -> str:
    """An <img> holding ``png`` inline."""
    return (f'<img class="figure {css_class}" alt="{escape(alt)}" '
            f'src="{data_uri(png)}">')


def format_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def leaderboard_table(setting: Setting) -> str:
    """The leaderboard's table of the setting (mtlbench.leaderboard_table) with the paper's
    published numbers beside ours, per headline metric."""
    section = setting_section(setting)
    metrics = set(headline_columns())
    head1, head2 = [], []
    for i, column in enumerate(section.columns):
        if column in metrics:
            head1.append(f'<th colspan="2">{escape(column)}</th>')
            head2.append("<th>ours</th><th>paper</th>")
        else:
            css = ' class="method"' if i == 0 else ""
            head1.append(f'<th{css} rowspan="2">{escape(column)}</th>')
    parts = ['<div class="wide"><table class="leaderboard">', "<tr>" + "".join(head1) + "</tr>",
             "<tr>" + "".join(head2) + "</tr>"]
    for row, texts in zip(section.rows, section.cells, strict=True):
        paper = setting.published.get(row.entry, {})
        cells = [f'<td class="method">{escape(texts[0])}</td>']
        for column, text in zip(section.columns[1:], texts[1:], strict=True):
            cells.append(f"<td>{escape(text)}</td>")
            if column not in metrics:
                continue
            if column in paper:
                mean, std = paper[column]
                cells.append(f'<td class="paper">{mean:.2f} ± {std:.2f}</td>')
            else:
                cells.append('<td class="paper">–</td>')
        parts.append(f'<tr data-method="{escape(row.entry)}">' + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def setting_section(setting: Setting) -> Section:
    """The setting's section of the leaderboard's table model: the same columns, cells and
    notes as `mtlbench leaderboard`."""
    return build_table(setting.rows, setting.mode, setting.references).sections[0]


def leaderboard_notes(setting: Setting) -> str:
    notes = [f"Ours: {setting.mode} metrics; {escape(setting.rows[0].selection)}. "
             + escape(LEGEND)]
    if any(setting.published.values()):
        notes.append(
            "<i>Paper</i>: the numbers the paper published for this dataset (from the method "
            "cards), computed by the paper's own metric code (compare with <code>--mode "
            "paper</code>; strict HD95/ASD are contour-to-contour and not comparable), on its "
            "own non-grouped split, with the checkpoint chosen on the test fold.")
    else:
        notes.append(f"The paper published no numbers for dataset {escape(setting.dataset)!r} "
                     "(or its methods are not registered here): the paper columns are empty.")
    notes.extend(escape(note) for note in setting_section(setting).notes)
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def stats_table(stats: list[MetricStatistics], labels: dict[str, str]) -> str:
    """Per metric and method: n, pooled mean, 95% CI, Δ to the best, raw and Holm p."""
    parts = ['<table class="stats">',
             '<tr><th class="method">Metric</th><th class="method">Method</th><th>n images</th>'
             "<th>pooled mean</th><th>95% CI</th><th>Δ vs best</th><th>p (Wilcoxon)</th>"
             "<th>p (Holm)</th></tr>"]
    for metric in stats:
        first = True
        for method, mean in metric.means.items():
            best = method == metric.best
            test = metric.tests.get(method)
            name = f"{metric.column} ({'↓' if metric.lower_is_better else '↑'})" if first else ""
            classes = " ".join(c for c, on in (("best", best), ("first", first)) if on)
            first = False
            ci = "–" if math.isnan(mean.low) else f"[{mean.low:.2f}, {mean.high:.2f}]"
            if best:
                delta, p, p_holm = "best", "–", "–"
            elif test is None or test.n == 0:
                delta, p, p_holm = "no common images", "–", "–"
            else:
                delta = f"{test.mean_difference:+.2f} (n={test.n})"
                p, p_holm = format_p(test.p), format_p(test.p_holm)
            parts.append(f'<tr class="{classes}" data-metric="{metric.column}" '
                         f'data-method="{escape(method)}"><td class="method">{escape(name)}</td>'
                         f'<td class="method">{escape(labels.get(method, method))}</td>'
                         f"<td>{mean.n}</td><td>{mean.mean:.2f}</td><td>{ci}</td>"
                         f"<td>{delta}</td><td>{p}</td><td>{p_holm}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def stats_notes(setting: Setting) -> str:
    seeds = setting.seeds
    if len(seeds) > 1:
        pooled = (
            f"Pooled mean: over the {len(seeds)} training seeds ({', '.join(map(str, seeds))}), "
            "each image's value is its mean over the seeds; the pooled mean is the mean of those "
            "over all test folds (every case is in one test fold), with a 95% two-stage "
            f"percentile-bootstrap interval ({BOOTSTRAP_RESAMPLES} resamples, seed "
            f"{BOOTSTRAP_SEED}: the seeds are drawn with replacement, then the images), so the "
            "interval covers both the training seed and the test images.")
        unit = ("The tests pair each image's mean over the seeds (an image's seeds are not "
                "independent pairs, so n counts images).")
    else:
        pooled = (
            "Pooled mean: the mean of the per-image values over all test folds (every case is "
            f"in one test fold), with a 95% percentile-bootstrap interval "
            f"({BOOTSTRAP_RESAMPLES} resamples of the images, seed {BOOTSTRAP_SEED}).")
        unit = ("The tests treat images as the unit and one training run per fold: with one "
                "training seed they do not include the variation between seeds (run --seeds "
                "3 for that).")
    notes = [
        pooled,
        "Best: the best pooled mean of the metric. Every other method is tested against it "
        "with a two-sided Wilcoxon signed-rank test on the images both have a value for, "
        "paired by case id (zero differences dropped); Δ is the mean paired difference "
        "(method − best). The p-values are Holm-corrected over the comparisons of each metric.",
        "ACC is tested on per-image correctness (predicted class = label, 0/1): there the "
        "Wilcoxon test is the sign test on the images where exactly one of the two is right. "
        "PRE and REC are not means of per-image values and are not tested; their fold values "
        "are in the box plots.",
        "An image whose value is undefined (NaN, stored as NULL) is left out of that metric: "
        "of its method's mean, and of every test that involves the method; n counts the images "
        "used. " + unit,
    ]
    empty = setting.empty_predictions()
    if empty and setting.mode == "strict":
        counts = ", ".join(f"{m}: {n}" for m, n in empty.items())
        notes.append(f"Empty predictions (strict mode scores them HD95 = ASD = the image "
                     f"diagonal, Dice = 0): {escape(counts)}.")
    return "<ul>" + "".join(f'<li class="note">{n}</li>' for n in notes) + "</ul>"


def grid_scores(setting: Setting, methods: list[str]) -> dict[str, dict[str, str]]:
    """method -> case id -> caption under its prediction: Dice (of the report's mode) and, for
    methods that classify, the predicted class with ✓ or ✗."""
    out: dict[str, dict[str, str]] = {}
    for method in methods:
        for case_id, row in setting.images.get(method, {}).items():
            words = []
            dice = row.get(f"{setting.mode}.dice")
            if dice is not None:
                words.append(f"Dice {100 * dice:.1f}")
            if row.get("pred_label") is not None:
                mark = "✓" if row["pred_label"] == row.get("label") else "✗"
                words.append(f"{class_label(setting.classes, row['pred_label'])} {mark}")
            out.setdefault(method, {})[case_id] = " · ".join(words)
    return out


def grid_table(setting: Setting, cases: list[GridCase], methods: list[str],
               scores: dict[str, dict[str, str]]) -> str:
    """The qualitative grid: a row per case; input, ground truth, then each method's mask."""
    labels = {row.entry: row.label for row in setting.rows}
    header = ('<tr><th class="method">case</th><th>input</th><th>ground truth</th>'
              + "".join(f'<th data-method="{escape(m)}">{escape(labels[m])}</th>'
                        for m in methods) + "</tr>")
    parts = ['<div class="wide"><table class="qualitative">', header]
    for case in cases:
        size = decode_png(case.image_png).shape
        cells = [f'<td class="case"><b>{escape(case.case_id)}</b><br>'
                 f"{escape(class_label(setting.classes, case.label))}<br>fold {case.fold}<br>"
                 f"{size[1]}×{size[0]} px</td>",
                 _image_cell(case.image_png, f"input {case.case_id}", "", "input"),
                 _image_cell(case.mask_png, f"ground truth {case.case_id}", "", "truth")]
        for method in methods:
            png = setting.predictions.get(method, {}).get(case.case_id)
            caption = scores.get(method, {}).get(case.case_id, "")
            if png is None:
                cells.append('<td class="prediction missing">not predicted</td>')
            else:
                cells.append(_image_cell(png, f"{method} prediction {case.case_id}", caption,
                                         "prediction"))
        parts.append(f'<tr data-case="{escape(case.case_id)}">' + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def _image_cell(png_b64: str, alt: str, caption: str, css_class: str) -> str:
    text = escape(caption).replace("✗", '<span class="wrong">✗</span>').replace(
        "✓", '<span class="right">✓</span>')
    return (f'<td class="{css_class}"><img alt="{escape(alt)}" '
            f'src="data:image/png;base64,{png_b64}">'
            + (f'<span class="caption">{text}</span>' if caption else "") + "</td>")


def page(title: str, meta: str, settings_html: list[tuple[str, str, str]]) -> str:
    """The whole page: a header, a table of contents and one section per setting
    (anchor, title, body)."""
    toc = "".join(f'<li><a href="#{escape(anchor)}">{escape(name)}</a></li>'
                  for anchor, name, _ in settings_html)
    body = "\n".join(f'<section id="{escape(anchor)}"><h2>{escape(name)}</h2>\n{html}</section>'
                     for anchor, name, html in settings_html)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<style>{STYLE}</style></head><body>\n<h1>{escape(title)}</h1>\n"
            f'<p class="meta">{meta}</p>\n<nav><ul>{toc}</ul></nav>\n{body}\n</body></html>\n')
