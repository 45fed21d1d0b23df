"""The SQLite store: atomic trial records, skip-finished, leaderboard files."""

import json
import sqlite3

import pytest

from mtlbench.leaderboard_table import write_leaderboard
from mtlbench.report import leaderboard
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


def leaderboard_files(folder, *results) -> tuple[str, list[dict]]:
    """Record ``results`` in a new store in ``folder`` and write its leaderboard files: the
    Markdown text and the strict JSON records."""
    with Store(folder / "s.sqlite") as store:
        for r in results:
            store.record(r)
        write_leaderboard(store, folder)
    return ((folder / "leaderboard.md").read_text(),
            json.loads((folder / "leaderboard.json").read_text())["strict"])


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
                  "caveats": []}
    random_vgg.env = {"loss": "0.3·CE + 0.7·(Dice + 0.2·LossNet (RANDOM VGG-16, not the "
                              "paper's LossNet))",
                      "caveats": ["trained with LossNet on a RANDOM VGG-16: not the paper's "
                                  "LossNet"]}
    text, records = leaderboard_files(tmp_path, honest, random_vgg)
    assert "| acsnet † |" in text and "| cunet |" in text
    assert "† acsnet: trained with LossNet on a RANDOM VGG-16: not the paper's LossNet" in text
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


#: The trials table as mtlbench 0.1 (store schema 1) created it.
SCHEMA_1_TRIALS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE trials (
    trial_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, method TEXT NOT NULL, fold INTEGER NOT NULL, seed INTEGER NOT NULL,
    protocol_name TEXT NOT NULL, protocol_hash TEXT NOT NULL, protocol_json TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '',
    selected_epoch INTEGER, resumed_from_epoch INTEGER,
    profile_json TEXT, timing_json TEXT, env_json TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE fold_metrics (trial_id TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
                           PRIMARY KEY (trial_id, metric));
"""


def test_a_store_of_mtlbench_0_1_is_migrated_and_reads_as_key_version_1(tmp_path):
    """Trials stored before trial keys had a version and methods had knobs: the store gains
    the new columns when opened, its trials read as key version 1 without knobs (their old
    protocol, which held a method's loss weight, still parses), and new trials sit beside them
    as rows of their own."""
    from mtlbench.protocol import Protocol, get_protocol

    path = tmp_path / "old.sqlite"
    old_protocol = {**get_protocol("smoke").to_dict(), "lossnet_weight": 0.0,
                    "lossnet_vgg": "imagenet", "perceptual_weight": 0.0,
                    "overrides": [["lossnet_weight", 0.0]]}
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1_TRIALS)
    db.execute("INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
               ("old-0", "ds", "cunet", 0, 2, "smoke", "0ldhash", json.dumps(old_protocol),
                "finished", "", 3, -1, "{}", '{"wall_s": 1.0}', '{"loss": "Dice"}', 1.0))
    db.execute("INSERT INTO fold_metrics VALUES ('old-0', 'strict.dice', 0.75)")
    db.commit()
    db.close()

    with Store(path) as store:
        (old,) = store.trials()
        assert old["key_version"] == 1 and old["knobs"] == {} and old["variant"] == ""
        assert Protocol.from_dict(old["protocol"]).knobs() == get_protocol("smoke").knobs()
        new = result("cunet")
        new.knobs, new.variant = {"lossnet_weight": 0.0, "lossnet_vgg": "imagenet"}, ""
        store.record(new)
        rows = leaderboard(store)
    assert [(r.method, r.protocol_hash) for r in rows] == [("cunet", "0ldhash"), ("cunet", "abc")]
    assert rows[0].metrics["Dice"][0] == pytest.approx(75.0)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == \
            ("5",)


def test_rows_are_told_apart_by_their_knobs(tmp_path):
    plain, tuned = result("acsnet", fold=0), result("acsnet", fold=0)
    tuned.trial_id = "acsnet-tuned-0"
    plain.knobs, tuned.knobs = {"lossnet_weight": 0.2}, {"lossnet_weight": 0.5}
    tuned.variant = "lossnet_weight=0.5"
    text, records = leaderboard_files(tmp_path, plain, tuned)
    assert "| acsnet |" in text and "| acsnet [lossnet_weight=0.5] |" in text
    assert [(r["variant"], r["knobs"]) for r in records] == [
        ("", {"lossnet_weight": 0.2}), ("lossnet_weight=0.5", {"lossnet_weight": 0.5})]
