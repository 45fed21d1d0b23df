"""mtlbench.results: a run's numbers as DataFrames, read-only, consistent with the tables."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_run
from mtlbench.results import KEY_COLUMNS, open_results
from mtlbench.store import STORE_NAME

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """unet and cunet, folds 0 and 1, two epochs; a failed trial is not among them."""
    return tiny_run(tmp_path_factory.mktemp("results") / "mtlbench-runs", "unet,cunet", "0,1",
                    epochs=2)


def test_every_frame_has_the_trial_key_and_one_row_per_unit(run_dir):
    with open_results(run_dir) as run:
        trials, folds, images, curves = run.trials(), run.folds(), run.images(), run.curves()
    for frame in (trials, folds, images, curves):
        assert list(frame.columns[:len(KEY_COLUMNS)]) == KEY_COLUMNS
    assert len(trials) == len(folds) == 4 and set(trials["status"]) == {"finished"}
    assert len(images) == images.groupby("trial_id")["case_id"].count().sum()
    assert not images.duplicated(["trial_id", "case_id"]).any()
    assert sorted(curves.groupby("trial_id")["epoch"].apply(list).tolist()) == [[0, 1]] * 4
    assert {"strict.dice", "paper.dice", "strict.hd95", "label"} <= set(images.columns)
    assert images.loc[images.method == "unet", "pred_label"].isna().all()
    assert trials["knobs"].iloc[0] == {"lossnet_vgg": "imagenet", "lossnet_weight": 0.0}


def test_the_frames_agree_with_each_other_and_with_the_leaderboard(run_dir):
    with open_results(run_dir) as run:
        folds, images, board = run.folds(), run.images(), run.leaderboard()
    per_fold = images.groupby("trial_id")["strict.dice"].mean()
    assert per_fold.to_numpy() == pytest.approx(
        folds.set_index("trial_id").loc[per_fold.index, "strict.dice"].to_numpy())
    for _, row in board.iterrows():
        values = folds.loc[folds.method == row["method"], "strict.dice"] * 100
        assert row["dice_mean"] == pytest.approx(values.mean())
        assert row["dice_std"] == pytest.approx(values.std(ddof=0))
    assert board["entry"].tolist() == ["unet", "cunet"]


def test_results_are_read_only(run_dir, tmp_path):
    """Nothing changes but SQLite's shared-memory index (-shm), which every WAL reader maps."""
    def files():
        return {p.name: p.read_bytes() for p in run_dir.iterdir()
                if p.is_file() and not p.name.endswith("-shm")}

    before = files()
    with open_results(run_dir / STORE_NAME) as run:
        assert len(run.trials()) == 4
    assert files() == before


def test_the_readme_example_runs(run_dir):
    text = README.read_text()
    block = re.search(r"<!-- results-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README's results example is missing"
    output = io.StringIO()
    cwd = os.getcwd()
    os.chdir(run_dir.parent)  # the example opens "mtlbench-runs", the default --out
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(block.group(1), "README.md", "exec"), {})  # noqa: S102
    finally:
        os.chdir(cwd)
    assert "dice_mean" in output.getvalue() and "cunet" in output.getvalue()


def test_an_empty_store_gives_empty_frames_with_their_columns(tmp_path):
    from mtlbench.store import Store

    with Store(tmp_path / STORE_NAME):
        pass
    with open_results(tmp_path) as run:
        assert run.trials().empty and list(run.trials().columns[:len(KEY_COLUMNS)]) == KEY_COLUMNS
        assert run.images().empty and run.leaderboard().empty
        assert isinstance(run.folds(), pd.DataFrame)
