"""The SQLite store: atomic trial records, skip-finished, leaderboard files."""

import json
import sqlite3

import pytest

from mtlbench.report import leaderboard, write_leaderboard
from mtlbench.store import Store, StoreError
from mtlbench.trial import TrialResult


def result(method="m", fold=0, dice=0.8, acc=0.9, status="finished") -> TrialResult:
    return TrialResult(
        trial_id=f"{method}-{fold}", dataset="ds", method=method, fold=fold, seed=2,
        protocol={"name": "smoke"}, protocol_hash="abc", status=status,
        image_rows=[{"case_id": f"c{i}", "label": i % 2, "strict.dice": dice} for i in range(3)],
        fold_metrics={"strict.dice": dice, "cls.acc": acc, "cls.auc": float("nan")},
        curve=[{"epoch": 0, "loss_total": 1.0}, {"epoch": 1, "loss_total": 0.5}],
        profile={"params": 2_000_000, "flops": 4e9, "macs": 2e9}, timing={"wall_s": 1.0},
        env={"pretrained": "none"},
    )


def test_record_and_read_back(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.record(result())
        assert store.finished_ids() == {"m-0"}
        trial = store.trials()[0]
        assert trial["metrics"]["strict.dice"] == 0.8 and trial["metrics"]["cls.auc"] is None
        assert store.image_metrics("m-0")["c1"] == {"label": 1.0, "strict.dice": 0.8}
        assert [r["loss_total"] for r in store.curve("m-0")] == [1.0, 0.5]


def test_a_failing_write_leaves_nothing_behind(tmp_path):
    bad = result()
    bad.image_rows.append({"case_id": "c0", "label": 0, "strict.dice": 0.1})  # duplicate key
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.record(bad)
        assert store.finished_ids() == set()
        assert store.trials(status=None) == []


def test_rerecording_a_trial_replaces_it(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.record(result(status="failed"))
        store.record(result(dice=0.5))
        trials = store.trials(status=None)
        assert len(trials) == 1 and trials[0]["metrics"]["strict.dice"] == 0.5


def test_newer_store_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer mtlbench"):
        Store(path)


def test_leaderboard_is_mean_and_population_std_over_folds(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        for fold, dice in enumerate([0.7, 0.8, 0.9]):
            store.record(result(fold=fold, dice=dice))
        store.record(result(method="other", fold=0, status="failed"))
        rows = leaderboard(store)
        assert [r.method for r in rows] == ["m"]
        mean, std = rows[0].metrics["Dice"]
        assert mean == pytest.approx(80.0) and std == pytest.approx(8.16496, rel=1e-4)
        assert rows[0].mparams == 2.0 and rows[0].gflops == 4.0 and rows[0].folds == [0, 1, 2]
        files = write_leaderboard(store, tmp_path)
    names = {p.name for p in files}
    assert names == {"leaderboard.csv", "leaderboard.md", "leaderboard.json"}
    doc = json.loads((tmp_path / "leaderboard.json").read_text())
    assert doc["strict"][0]["dice_mean"] == pytest.approx(80.0)
    assert doc["strict"][0]["auc_mean"] is None
    assert "80.00 ± 8.16" in (tmp_path / "leaderboard.md").read_text()


def test_paper_checkpoint_selection_is_labelled_in_the_tables(tmp_path):
    leaky = result()
    leaky.protocol = {"name": "paper", "checkpoint": "paper", "split": "paper"}
    with Store(tmp_path / "s.sqlite") as store:
        store.record(leaky)
        write_leaderboard(store, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "checkpoint chosen on the test fold" in text
    assert "paper's split (not grouped" in text
    assert json.loads((tmp_path / "leaderboard.json").read_text())["strict"][0]["checkpoint"] \
        == "paper"


def test_random_vgg_lossnet_is_marked_in_every_table(tmp_path):
    honest, random_vgg = result("cunet"), result("acsnet")
    honest.env = {"loss": "0.3·CE + 0.7·(Dice + 0.2·LossNet (ImageNet VGG-16))",
                  "lossnet_vgg": "imagenet"}
    random_vgg.env = {"loss": "0.3·CE + 0.7·(Dice + 0.2·LossNet (RANDOM VGG-16, not the "
                              "paper's LossNet))", "lossnet_vgg": "random"}
    with Store(tmp_path / "s.sqlite") as store:
        store.record(honest)
        store.record(random_vgg)
        write_leaderboard(store, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| acsnet † |" in text and "| cunet |" in text
    assert "not the paper's LossNet" in text
    records = json.loads((tmp_path / "leaderboard.json").read_text())["strict"]
    assert "RANDOM VGG-16" in next(r["loss"] for r in records if r["method"] == "acsnet")


def test_a_single_fold_shows_no_spread(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.record(result("one", fold=0, dice=0.8))
        store.record(result("two", fold=0, dice=0.8))
        store.record(result("two", fold=1, dice=0.6))
        write_leaderboard(store, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| one | 80.00 |" in text  # one fold: the mean alone, not "± 0.00"
    assert "| two | 70.00 ± 10.00 |" in text


def test_a_file_that_is_not_a_store_is_named(tmp_path):
    path = tmp_path / "mtlbench.sqlite"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=f"{path} is not a readable mtlbench store"):
        Store(path)
