"""`mtlbench evaluate`: a run's kept fold models tested on another dataset, stored beside the
cross-validation; class matching, the leak refusal, near duplicates, the cross-dataset audit."""

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_bus import make_udiat

from mtlbench.cli import main
from mtlbench.data.synthetic import generate_synthetic
from mtlbench.results import open_results
from mtlbench.store import Store


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def udiat(tmp_path_factory):
    root = tmp_path_factory.mktemp("udiat") / "udiat"
    make_udiat(root)
    return root


@pytest.fixture(scope="module")
def evaluated(kept_run, udiat, tmp_path_factory):
    """A copy of the kept run, evaluated on the UDIAT-layout fixture (``bus``)."""
    import shutil

    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(kept_run, run)
    result = invoke("evaluate", run, "--dataset", "bus", "--data-root", udiat)
    assert result.exit_code == 0, result.output
    return run, result.output


def test_each_fold_model_and_the_ensemble_are_scored_and_stored(evaluated):
    run, output = evaluated
    words = " ".join(output.split())
    assert "cunet (trained on synthetic) → bus" in words
    assert "fold 0" in words and "fold 1" in words and "ensemble" in words
    with Store.read(run) as store:
        external = [t for t in store.trials() if t["test_dataset"]]
        own = [t for t in store.trials() if not t["test_dataset"]]
    assert sorted(t["fold"] for t in external) == [-1, 0, 1]
    assert {t["test_dataset"] for t in external} == {"bus"}
    assert len(own) == 2  # the cross-validation is untouched
    assert not {t["trial_id"] for t in external} & {t["trial_id"] for t in own}
    with open_results(run) as results:
        images = results.images()
    bus = images[images["test_dataset"] == "bus"]
    assert bus.groupby("fold")["case_id"].nunique().tolist() == [15, 15, 15]  # every case
    by_fold = bus.pivot_table(index="case_id", columns="fold", values="prob_positive")
    # The ensemble averages the fold models' probabilities.
    np.testing.assert_allclose(by_fold[-1], (by_fold[0] + by_fold[1]) / 2, atol=1e-5)
    assert {"strict.dice", "paper.dice", "strict.hd95", "paper.hd95"} <= set(bus.columns)
    assert bus["strict.dice"].notna().all() and bus["paper.dice"].notna().all()


def test_leaderboard_shows_trained_on_a_tested_on_b_beside_the_cross_validation(evaluated):
    run, _ = evaluated
    result = invoke("leaderboard", "--out", run, "--format", "json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    rows = {(r["method"], r["test_dataset"], r["ensemble"]): r for r in records}
    assert set(rows) == {("cunet", "", False), ("cunet", "bus", False), ("cunet", "bus", True)}
    assert all(r["dataset"] == "synthetic" for r in records)
    assert rows[("cunet", "bus", False)]["trials"] == 2
    assert rows[("cunet", "bus", True)]["trials"] == 1
    assert rows[("cunet", "bus", True)]["folds"] == 2  # the folds of its models
    table = invoke("leaderboard", "--out", run, "--format", "markdown").output
    assert "cunet → bus (ensemble)" in table and "cunet → bus " in table
    assert "Not every seed ran every fold" not in table  # one ensemble trial per seed is all
    with open_results(run) as results:
        board = results.leaderboard()
    assert set(board["entry"]) == {"cunet", "cunet → bus", "cunet → bus (ensemble)"}
    # compare matches the external rows to themselves, not to the cross-validation
    assert invoke("compare", run, run).exit_code == 0


def test_report_renders_with_external_rows(evaluated, tmp_path):
    run, _ = evaluated
    result = invoke("report", run, "--out", tmp_path / "report", "--grid", "0")
    assert result.exit_code == 0, result.output
    assert "cunet → bus (ensemble)" in (tmp_path / "report" / "report.html").read_text()


def test_the_training_set_itself_is_refused_as_a_leak(kept_run):
    result = invoke("evaluate", kept_run, "--dataset", "synthetic")
    assert result.exit_code == 2
    assert "leaks" in result.output and "cross-validation" in result.output
    with Store.read(kept_run) as store:
        assert not [t for t in store.trials() if t["test_dataset"]]


def folder_set(root, images, labels, classes="benign;malignant"):
    """A folder dataset of ``images`` (uint8 arrays) with square masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = ["id,label"]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / "images" / f"c{i}.png")
        mask = np.zeros(image.shape, dtype=np.uint8)
        mask[10:30, 10:30] = 255
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
        lines.append(f"c{i},{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_classes_that_differ_by_name_are_refused_with_both_lists(kept_run, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40), dtype=np.uint8) for _ in range(4)]
    root = folder_set(tmp_path / "other", images, ["cyst", "tumour"] * 2)
    result = invoke("evaluate", kept_run, "--dataset", "folder:classes=cyst;tumour",
                    "--data-root", root)
    assert result.exit_code == 2
    words = " ".join(result.output.split())
    assert "cyst, tumour" in words and "benign, malignant" in words


def test_near_duplicates_of_training_images_are_reported(kept_run, tmp_path):
    synthetic = generate_synthetic()  # the built-in set's own cases
    rng = np.random.default_rng(1)
    copies = [synthetic[i].image for i in range(3)]
    fresh = [rng.integers(0, 255, (60, 60), dtype=np.uint8) for _ in range(3)]
    root = folder_set(tmp_path / "mixed", copies + fresh, ["benign", "malignant"] * 3)
    import shutil

    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    result = invoke("evaluate", run, "--dataset", "folder", "--data-root", root)
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "3 image(s) of the test set are near duplicates of training images" in words
    with Store.read(run) as store:
        env = next(t["env"] for t in store.trials() if t["test_dataset"])
    assert env["evaluation"]["near_duplicates"] >= 3
    audit = invoke("data", "audit", "synthetic", "--against", "folder", "--against-root", root,
                   "--json")
    assert audit.exit_code == 0, audit.output
    pairs = json.loads(audit.output)["pairs"]
    assert {a for a, _, _ in pairs} == {"c0", "c1", "c2"}
    assert {b for _, b, _ in pairs} >= {synthetic[i].id for i in range(3)}


def test_a_schema_3_store_is_migrated_and_keeps_its_trial_ids(kept_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    db = sqlite3.connect(run / "mtlbench.sqlite")
    ids = sorted(r[0] for r in db.execute("SELECT trial_id FROM trials"))
    db.execute("ALTER TABLE trials DROP COLUMN test_dataset")  # schema 5's column
    db.execute("ALTER TABLE trials DROP COLUMN balancing_knobs_json")  # schema 4's
    db.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    db.commit()
    db.close()
    with Store.read(run) as store:  # read as it is
        assert all(t["test_dataset"] == "" for t in store.trials())
    with Store.in_run_dir(run) as store:
        assert sorted(t["trial_id"] for t in store.trials()) == ids
    db = sqlite3.connect(run / "mtlbench.sqlite")
    assert {"test_dataset", "balancing_knobs_json"} <= {
        r[1] for r in db.execute("PRAGMA table_info(trials)")}
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "5"
