"""The BUS (UDIAT Dataset B) loader on a small fixture built in its distributed layout."""

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import Workbook
from PIL import Image

from mtlbench.cli import main
from mtlbench.data import bus
from mtlbench.data.prepare import DatasetLayoutError
from mtlbench.data.synthetic import generate_synthetic

N_CASES = 15


def make_udiat(root: Path, table: str = "xlsx") -> list[int]:
    """original/, GT/ and DatasetB.xlsx (or .csv) for 15 synthetic cases; returns the labels."""
    (root / "original").mkdir(parents=True)
    (root / "GT").mkdir()
    cases = generate_synthetic(n_cases=N_CASES, size=96, seed=5)
    rows = [["Image", "Type", "Diagnosis", "", "Legend"]]
    for number, case in enumerate(cases, start=1):
        name = f"{number:06d}"
        Image.fromarray(case.image).convert("RGB").save(root / "original" / f"{name}.png")
        Image.fromarray(case.mask.astype("uint8") * 255).save(root / "GT" / f"{name}.png")
        # spreadsheets hold the id as a number or as zero-padded text
        image_cell = number if number % 2 else name
        rows.append([image_cell, "Malignant" if case.label else "Benign",
                     "IDC" if case.label else "FA", None, None])
    rows.append([None, None, None, None, "FA = fibroadenoma"])  # a legend row
    if table == "xlsx":
        book = Workbook()
        for row in rows:
            book.active.append(row)
        book.save(root / "DatasetB.xlsx")
    else:
        with open(root / "DatasetB.csv", "w", newline="") as f:
            csv.writer(f).writerows([[("" if v is None else v) for v in r] for r in rows])
    return [c.label for c in cases]


@pytest.mark.parametrize("table", ["xlsx", "csv"])
def test_fixture_loads_from_xlsx_or_csv(tmp_path, table):
    labels = make_udiat(tmp_path, table)
    cases = bus.load(tmp_path)
    assert [c.id for c in cases] == [f"{i:06d}" for i in range(1, N_CASES + 1)]
    assert [c.label for c in cases] == labels
    assert {c.meta["diagnosis"] for c in cases} == {"FA", "IDC"}
    assert all(c.mask.any() and c.image.ndim == 2 for c in cases)
    assert len(bus.fingerprint(tmp_path)) == 16


def test_bad_type_names_row_and_value(tmp_path):
    make_udiat(tmp_path, "csv")
    text = (tmp_path / "DatasetB.csv").read_text().replace("Benign", "Bening", 1)
    (tmp_path / "DatasetB.csv").write_text(text)
    with pytest.raises(DatasetLayoutError, match=r"row \d+: Type 'Bening' is neither"):
        bus.load(tmp_path)


def test_row_without_image_and_image_without_row_are_named(tmp_path):
    make_udiat(tmp_path, "csv")
    (tmp_path / "original" / "000003.png").rename(tmp_path / "original" / "000099.png")
    with pytest.raises(DatasetLayoutError) as info:
        bus.load(tmp_path)
    assert "rows without an image in original/: ['000003']" in str(info.value)
    assert "images without a row in the table: ['000099']" in str(info.value)


def test_missing_table_shows_the_layout(tmp_path):
    make_udiat(tmp_path, "csv")
    (tmp_path / "DatasetB.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="(?s)no label table .*original/000001.png"):
        bus.load(tmp_path)


def test_absent_dataset_says_where_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBENCH_DATA", str(tmp_path / "datasets"))
    result = CliRunner().invoke(main, ["run", "--dataset", "bus", "--out", str(tmp_path / "r")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert f"looked in {tmp_path / 'datasets' / 'bus'}" in text
    assert "on request" in text and "--data-root" in text and "DatasetB.xlsx" in text


def test_a_run_on_the_fixture_completes_from_the_cli(tmp_path):
    make_udiat(tmp_path / "udiat")
    result = CliRunner().invoke(main, [
        "run", "--dataset", "bus", "--data-root", str(tmp_path / "udiat"), "--methods",
        "clsnet", "--folds", "0", "--set", "epochs=1", "--set", "image_size=32",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "Leaderboard · bus" in " ".join(result.output.split())


def test_data_check_on_the_fixture(tmp_path):
    make_udiat(tmp_path, "csv")
    ok = CliRunner().invoke(main, ["data", "check", "bus", "--data-root", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "original" / "000003.png").rename(tmp_path / "original" / "000099.png")
    (tmp_path / "GT" / "000004.png").unlink()
    bad = CliRunner().invoke(main, ["data", "check", "bus", "--data-root", str(tmp_path)])
    text = " ".join(bad.output.split())
    assert bad.exit_code == 1
    assert "000003.png: listed in the table but missing" in text
    assert "000099.png: has no row in the label table" in text
    assert "000004.png: has no mask" in text
