"""The generic folder+CSV dataset, described entirely by options."""

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mtlbench.cli import main
from mtlbench.data.folder import folder_dataset
from mtlbench.data.prepare import (
    DatasetLayoutError,
    canonical_dataset_spec,
    dataset_identity,
    lookup_dataset,
    parse_dataset_spec,
    prepare_dataset,
)
from mtlbench.data.splits import split_path
from mtlbench.data.synthetic import generate_synthetic
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.runner import plan_run
from mtlbench.store import Store
from mtlbench.train import run_trial
from mtlbench.trial import TrialSpec

SPEC = ("folder:mask_pattern={id}_mask.png,label_column=diagnosis,classes=b;m,"
        "group_column=patient,csv=meta.csv")


def make_folder(root: Path, n: int = 15) -> list:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cases = generate_synthetic(n_cases=n, size=64, seed=9)
    with open(root / "meta.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "diagnosis", "patient"])
        for i, case in enumerate(cases):
            Image.fromarray(case.image).save(root / "images" / f"{case.id}.png")
            Image.fromarray(case.mask.astype("uint8") * 255).save(
                root / "masks" / f"{case.id}_mask.png")
            writer.writerow([case.id, "m" if case.label else "b", f"p{i // 2}"])
    return cases


def test_options_describe_the_set(tmp_path):
    cases = make_folder(tmp_path)
    card, options = lookup_dataset(load_plugins().datasets, SPEC)
    arrays = prepare_dataset(card, tmp_path, 32, tmp_path / "cache", options)
    assert arrays.classes == ("b", "m")
    assert list(arrays.labels) == [c.label for c in cases]
    groups = dict(zip(arrays.ids, arrays.groups, strict=True))
    assert groups["syn-000"] == groups["syn-001"] != groups["syn-002"]


def test_bad_label_and_missing_mask_are_named(tmp_path):
    make_folder(tmp_path)
    card, options = lookup_dataset(load_plugins().datasets, SPEC)
    (tmp_path / "masks" / "syn-004_mask.png").unlink()
    with pytest.raises(DatasetLayoutError, match="syn-004_mask.png .*line 6.*mask_pattern"):
        card.load(tmp_path, **options)
    text = (tmp_path / "meta.csv").read_text().replace(",b,", ",x,", 1)
    (tmp_path / "meta.csv").write_text(text)
    with pytest.raises(DatasetLayoutError, match="line 2: label 'x' is not one of the classes"):
        card.load(tmp_path, **options)


def test_check_lists_problems(tmp_path):
    make_folder(tmp_path)
    Image.new("L", (64, 64)).save(tmp_path / "images" / "extra.png")
    (tmp_path / "masks" / "syn-002_mask.png").unlink()
    result = CliRunner().invoke(main, ["data", "check", SPEC, "--data-root", str(tmp_path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "syn-002.png: has no mask" in text and "extra.png: has no row in meta.csv" in text


def test_a_plugin_can_name_a_folder_dataset(tmp_path):
    make_folder(tmp_path)
    card = folder_dataset("mine", mask_pattern="{id}_mask.png", label_column="diagnosis",
                          classes="b,m", csv="meta.csv")
    assert card.classes == ("b", "m") and "meta.csv" in card.layout
    assert len(card.load(tmp_path)) == 15


def test_a_run_on_a_folder_dataset(tmp_path):
    make_folder(tmp_path / "data")
    result = CliRunner().invoke(main, [
        "run", "--dataset", SPEC, "--data-root", str(tmp_path / "data"), "--methods", "clsnet",
        "--folds", "0", "--set", "epochs=1", "--set", "image_size=32",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "Leaderboard · folder:" in " ".join(result.output.split())


CANONICAL = canonical_dataset_spec(*parse_dataset_spec(SPEC))  # as trial ids name SPEC
NAMED = "folder:image_column=image_file,mask_column=mask_file,group_column=patient"


def make_named_folder(root: Path, n: int = 12, fold_column: str = "fold") -> list:
    """A folder set whose files follow no {id} pattern (subfolders, spaces, another prefix and
    case), named per case by the CSV's file columns, with a fold column of 3 folds."""
    cases = generate_synthetic(n_cases=n, size=48, seed=4)
    rows = []
    for i, case in enumerate(cases):
        image, mask = f"set{i % 2}/scan {i}.png", f"lesion-{i:03d}.PNG"
        (root / "images" / f"set{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(case.image).save(root / "images" / image)
        Image.fromarray(case.mask.astype("uint8") * 255).save(root / "masks" / mask)
        rows.append({"id": f"case{i}", "label": "malignant" if case.label else "benign",
                     "image_file": image, "mask_file": mask, fold_column: str(i % 3 + 1),
                     "patient": f"p{i}"})
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return cases


def test_file_columns_name_any_files(tmp_path):
    made = make_named_folder(tmp_path)
    card, options = lookup_dataset(load_plugins().datasets, NAMED)
    cases = card.load(tmp_path, **options)
    assert [c.id for c in cases] == [f"case{i}" for i in range(12)]
    assert all((c.image == m.image).all() and (c.mask == m.mask).all()
               for c, m in zip(cases, made, strict=True))
    assert [c.fold for c in cases] == [str(i % 3 + 1) for i in range(12)]
    check = CliRunner().invoke(main, ["data", "check", NAMED, "--data-root", str(tmp_path)])
    assert check.exit_code == 0 and "0 error(s), 0 warning(s)" in check.output, check.output


def test_a_named_file_that_is_missing_empty_or_outside_is_named_by_line(tmp_path):
    make_named_folder(tmp_path)
    card, options = lookup_dataset(load_plugins().datasets, NAMED)
    (tmp_path / "masks" / "lesion-004.PNG").unlink()
    with pytest.raises(DatasetLayoutError, match="lesion-004.PNG of labels.csv line 6 .*column "
                                                 "'mask_file' \\(option mask_column\\)"):
        card.load(tmp_path, **options)
    result = CliRunner().invoke(main, ["data", "check", NAMED, "--data-root", str(tmp_path)])
    assert result.exit_code == 1 and "scan 4.png: has no mask" in " ".join(result.output.split())
    text = (tmp_path / "labels.csv").read_text()
    (tmp_path / "labels.csv").write_text(text.replace("lesion-002.PNG", "../labels.csv"))
    with pytest.raises(DatasetLayoutError, match="line 4 .*the mask path '../labels.csv' leaves"):
        card.load(tmp_path, **options)
    (tmp_path / "labels.csv").write_text(text.replace("set1/scan 3.png", ""))
    with pytest.raises(DatasetLayoutError, match="line 5: the image file \\(image_file\\) of id "
                                                 "'case3' is empty"):
        card.load(tmp_path, **options)
    with pytest.raises(DatasetLayoutError, match="no column 'file' .*image_column=NAME"):
        card.load(tmp_path, **{**options, "image_column": "file"})


def run_cli(*args: str):
    return CliRunner().invoke(main, ["run", "--methods", "clsnet", "--set", "epochs=1",
                                     "--set", "image_size=32", "--set", "precision=fp32",
                                     "--device", "cpu", *args])


def test_a_fold_column_is_the_sets_own_partition(tmp_path):
    make_named_folder(tmp_path / "data")
    out = tmp_path / "run"
    result = run_cli("--dataset", NAMED, "--data-root", str(tmp_path / "data"), "--folds", "0",
                     "--set", "split=official", "--set", "folds=3", "--out", str(out))
    assert result.exit_code == 0, result.output
    split = json.loads(next((out / "splits").glob("*-official-k3-*.json")).read_text())
    assert [[e["id"] for e in fold] for fold in split["folds"]] == [
        [f"case{i}" for i in range(12) if i % 3 == k] for k in range(3)]
    (tmp_path / "data" / "labels.csv").write_text(
        (tmp_path / "data" / "labels.csv").read_text().replace(",fold,", ",kfold,"))
    absent = run_cli("--dataset", NAMED, "--data-root", str(tmp_path / "data"), "--folds", "0",
                     "--set", "split=official", "--set", "folds=3", "--out", str(out) + "2")
    text = " ".join(absent.output.split())
    assert absent.exit_code == 2 and "Traceback" not in absent.output
    assert "its files give no partition of their own" in text and "fold_column" in text


def test_an_absolute_path_enters_the_identity_by_its_name_alone():
    card, options = lookup_dataset(load_plugins().datasets,
                                   "folder:csv=/data/tables/meta.csv,images=/mnt/x/Images/,"
                                   "masks=masks,mask_pattern={id}_m.png")
    assert dataset_identity(card, options) == ("folder:csv=meta.csv,images=Images,"
                                               "mask_pattern={id}_m.png,masks=masks")
    for spec in (SPEC, NAMED, "folder", "folder:csv=../t/meta.csv"):  # as before: ids stay
        card, options = lookup_dataset(load_plugins().datasets, spec)
        assert dataset_identity(card, options) == canonical_dataset_spec(card.name, options)


def test_a_relocated_folder_dataset_and_its_table_resume(tmp_path):
    make_folder(tmp_path / "a" / "data")
    (tmp_path / "a" / "tables").mkdir()
    (tmp_path / "a" / "data" / "meta.csv").rename(tmp_path / "a" / "tables" / "meta.csv")
    out = tmp_path / "run"

    def spec(base: Path) -> str:
        return SPEC.replace("csv=meta.csv", f"csv={base / 'tables' / 'meta.csv'}")

    first = run_cli("--dataset", spec(tmp_path / "a"), "--data-root",
                    str(tmp_path / "a" / "data"), "--folds", "0,1", "--out", str(out))
    assert first.exit_code == 0, first.output
    (tmp_path / "a").rename(tmp_path / "b")
    again = run_cli("--dataset", spec(tmp_path / "b"), "--data-root",
                    str(tmp_path / "b" / "data"), "--folds", "0,1", "--out", str(out))
    text = " ".join(again.output.split())
    assert again.exit_code == 0, again.output
    assert "0 trial(s) to run, 2 already finished" in text
    with Store.read(out) as store:
        assert {t["dataset"] for t in store.trials()} == {CANONICAL}  # no path in the name
    assert [p.name for p in (out / "splits").iterdir()] == [
        split_path(Path(), CANONICAL, "stratified-group", 5, 42).name]


def test_trials_stored_under_an_older_absolute_path_id_are_taken_over(tmp_path):
    """A run folder as mtlbench wrote it before: the dataset spec with its absolute path was
    the trial's dataset, in its id, its split file's name and its store row."""
    make_folder(tmp_path / "data")
    (tmp_path / "data" / "meta.csv").rename(tmp_path / "meta.csv")
    given = SPEC.replace("csv=meta.csv", f"csv={tmp_path / 'meta.csv'}")
    plugins = load_plugins()
    card, options = lookup_dataset(plugins.datasets, given)
    older_name = canonical_dataset_spec(card.name, options)
    protocol = get_protocol("smoke", overrides={"epochs": "1", "image_size": "32",
                                                "precision": "fp32"})
    out = tmp_path / "run"
    older = TrialSpec(older_name, "clsnet", 0, protocol, str(out), str(tmp_path / "data"))
    result = run_trial(older, plugins)
    with Store.in_run_dir(out) as store:
        store.record(result)
    older.checkpoint_path.unlink()  # as the older run did once the trial was stored
    interrupted = dataclasses.replace(older, fold=1)
    interrupted.checkpoint_path.write_bytes(b"an older trial's checkpoint")

    plan = plan_run(plugins, ["clsnet"], given, protocol, out, folds=[0, 1],
                    data_root=str(tmp_path / "data"))
    assert [s.fold for s in plan.done] == [0] and [s.fold for s in plan.specs] == [1]
    assert plan.done[0].trial_id != older.trial_id and plan.done[0].dataset == CANONICAL
    notes = " ".join(plan.warnings)
    assert "1 stored trial(s) of this dataset were recorded under the id an older" in notes
    assert "start again from their first epoch: clsnet · " in notes
    with Store.read(out) as store:
        assert [t["trial_id"] for t in store.trials()] == [plan.done[0].trial_id]
        assert store.image_metrics(plan.done[0].trial_id) == \
            {r["case_id"]: {k: v for k, v in r.items() if k != "case_id" and v == v}
             for r in result.image_rows}
        assert store.image_metrics(older.trial_id) == {}
    assert [p.name for p in (out / "splits").iterdir()] == [
        split_path(Path(), CANONICAL, "stratified-group", 5, 42).name]
