"""The balancings of a run folder as one Markdown file: scores per (method, balancing) and the
learned task weights over the epochs (issue 20's BUSI fold-0 table).

    mtlbench run --methods cunet,acsnet --dataset busi --data-root ../shared/data/busi \\
        --folds 0 --balancing loss,pcgrad,mgda,upgrad,cagrad --out /tmp/busi-bal
    python benchmarks/balancing_table.py /tmp/busi-bal \\
        --out benchmarks/results/balancing-busi-fold0-cpu-2core.md --header header.md

Reads the run's store through the results API (``mtlbench.results``); ``--header`` is a
Markdown file put first (the machine, the date, the commands: what the store cannot know).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mtlbench.results import open_results
from mtlbench.stats import bootstrap_ci, paired

SCORES = [("dice", "Dice"), ("jaccard", "Jaccard"), ("hd95", "HD95"), ("asd", "ASD"),
          ("acc", "ACC"), ("pre", "PRE"), ("rec", "REC"), ("auc", "AUC")]


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a pipe table (pandas' to_markdown needs tabulate, which the project
    does not otherwise use)."""
    rows = [list(frame.columns), ["---"] * len(frame.columns)]
    rows += [["–" if pd.isna(v) else (f"{v:.2f}" if isinstance(v, float) else str(v))
              for v in row] for row in frame.itertuples(index=False)]
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)


def score_table(results, mode: str) -> pd.DataFrame:
    """One row per (method, balancing): the fold's scores, and the Dice difference to the
    method's ``fixed`` row, paired by image, with its 95 % bootstrap interval. (Time per step
    is balancing_cost.py's: trials that share the cores with other work time nothing.)"""
    board = results.leaderboard(mode=mode)
    images = results.images()
    dice = {key: dict(zip(group.case_id, group[f"{mode}.dice"], strict=True))
            for key, group in images.groupby(["method", "balancing"])}
    table = board[["method", "balancing"] + [f"{m}_mean" for m, _ in SCORES]].copy()
    table["ΔDice vs fixed [95 % CI]"] = [
        dice_gain(dice.get((m, b), {}), dice.get((m, "fixed"), {})) if b != "fixed" else "–"
        for m, b in zip(table.method, table.balancing, strict=True)]
    return table.rename(columns={**{f"{m}_mean": name for m, name in SCORES},
                                 "method": "Method", "balancing": "Balancing"})


def dice_gain(values: dict, fixed: dict) -> str:
    """Mean per-image Dice difference (points) to ``fixed`` on the images both have, with its
    percentile-bootstrap interval."""
    x, y = paired(values, fixed)
    if not x.size:
        return "–"
    diff = (x - y) * 100
    low, high = bootstrap_ci(diff)
    return f"{diff.mean():+.2f} [{low:+.2f}, {high:+.2f}]"


def weight_table(results) -> pd.DataFrame:
    """The task weights at each epoch's end, for the balancings whose weights change."""
    curves = results.curves()
    cols = [c for c in curves.columns if c.startswith("weight_")]
    if not cols:
        return pd.DataFrame()
    learned = curves.groupby(["method", "balancing"])[cols].transform("std").sum(axis=1) > 0
    curves = curves[learned]
    wide = curves.pivot_table(index=["method", "balancing"], columns="epoch", values=cols)
    wide.columns = [f"{c.removeprefix('weight_')} e{e}" for c, e in wide.columns]
    ordered = sorted(wide.columns, key=lambda c: (c.split()[0], int(c.split()[1][1:])))
    return wide[ordered].reset_index().rename(columns={"method": "Method",
                                                       "balancing": "Balancing"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--header", type=Path, help="Markdown to put first")
    args = parser.parse_args()
    parts = [args.header.read_text().rstrip()] if args.header else []
    with open_results(args.run) as results:
        for mode in ("strict", "paper"):
            parts += [f"## Scores ({mode} metrics, %; HD95 and ASD in pixels at 64²)",
                      markdown(score_table(results, mode))]
        weights = weight_table(results)
        if not weights.empty:
            parts += ["## Learned task weights at the end of each epoch (cls, seg)",
                      markdown(weights)]
    args.out.write_text("\n\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
