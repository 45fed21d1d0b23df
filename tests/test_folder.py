"""The generic folder+CSV dataset, described entirely by options."""

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mtlbench.cli import main
from mtlbench.data.folder import folder_dataset
from mtlbench.data.prepare import DatasetLayoutError, lookup_dataset, prepare_dataset
from mtlbench.data.synthetic import generate_synthetic
from mtlbench.plugins import load_plugins

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
