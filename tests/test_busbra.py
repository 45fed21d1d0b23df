"""BUS-BRA on a small fixture built in its distributed layout, with its exact file and column
names: patients with one to three images, both CSVs of folds, 1-bit masks, varying sizes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mtlbench.cli import main
from mtlbench.data import busbra
from mtlbench.data.audit import audit_cases
from mtlbench.data.prepare import DatasetLayoutError, lookup_dataset, prepare_dataset
from mtlbench.data.splits import make_folds
from mtlbench.plugins import load_plugins
from mtlbench.store import Store

PATIENTS = 12
MALIGNANT = {1, 4, 6, 9, 12}
DEVICES = ("GE Logiq 7", "GE Logiq 5", "Toshiba Aplio 300")
# Patient 12's first image is a near copy of patient 1's: another patient id, another fold.
COPY_OF = {"bus_0012-l": "bus_0001-l"}
TINY = ["--methods", "clsnet", "--folds", "0", "--set", "epochs=1", "--set", "image_size=32",
        "--set", "precision=fp32", "--device", "cpu"]


def patient_fold(patient: int, k: int = 5) -> int:
    """The fixture's official fold of a patient (1..k)."""
    return (patient - 1) % k + 1


def make_busbra(root: Path) -> dict[str, dict]:
    """BUSBRA/ under ``root`` with 12 patients (1, 2 or 3 images each: 24 images), returned as
    ID -> its row's values."""
    folder = root / busbra.FOLDER
    (folder / "Images").mkdir(parents=True)
    (folder / "Masks").mkdir()
    rng = np.random.default_rng(3)
    table: dict[str, dict] = {}
    pixels: dict[str, np.ndarray] = {}
    index = 0
    for patient in range(1, PATIENTS + 1):
        for side in "lrs"[:1 + patient % 3]:
            case_id = f"bus_{patient:04d}-{side}"
            width, height = 40 + (7 * index) % 25, 40 + (11 * index) % 25
            if case_id in COPY_OF:
                image = np.clip(pixels[COPY_OF[case_id]].astype(int)
                                + rng.integers(-2, 3, pixels[COPY_OF[case_id]].shape), 0, 255)
                image = image.astype(np.uint8)
                height, width = image.shape
            else:
                image = rng.integers(60, 255, (height, width), dtype=np.uint8)
            yy, xx = np.mgrid[:height, :width]
            cy, cx = rng.integers(12, height - 12), rng.integers(12, width - 12)
            mask = ((yy - cy) / 8) ** 2 + ((xx - cx) / 10) ** 2 <= 1
            if case_id not in COPY_OF:
                image[mask] //= 3  # a dark (hypoechoic) lesion
            pixels[case_id] = image
            Image.fromarray(image, mode="L").save(folder / "Images" / f"{case_id}.png")
            Image.fromarray(mask).save(folder / "Masks" / f"mask_{case_id[4:]}.png")  # 1-bit
            ys, xs = np.nonzero(mask)
            malignant = patient in MALIGNANT
            table[case_id] = {
                "ID": case_id, "Case": patient,
                "Histology": "Invasive ductal carcinoma" if malignant else "Fibroadenoma",
                "Pathology": "malignant" if malignant else "benign",
                "BIRADS": 4 + index % 2 if malignant else 2 + index % 3,
                "Device": DEVICES[index % 3], "Width": width, "Height": height,
                "Side": "left" if side == "l" else "right",
                "BBOX": f"[{xs.min()},{ys.min()},{np.ptp(xs) + 1},{np.ptp(ys) + 1}]"}
            index += 1
    write_csv(folder / "bus_data.csv", list(table.values()))
    for k in (5, 10):
        rows = []
        for case_id, row in table.items():
            fold = patient_fold(row["Case"], k)
            rows.append({"ID": case_id, "Pathology": row["Pathology"], "kFold": fold,
                         **{f"valid_{j}": int(j == fold % k + 1) for j in range(1, k + 1)}})
        write_csv(folder / f"{k}-fold-cv.csv", rows)
    return table


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_loads_every_image_with_its_patient_fold_and_fields(tmp_path):
    table = make_busbra(tmp_path)
    cases = busbra.load(tmp_path)  # the folder holding BUSBRA/ ...
    assert [c.id for c in busbra.load(tmp_path / "BUSBRA")] == [c.id for c in cases]  # ... or it
    assert [c.id for c in cases] == list(table) and len(cases) == 24
    assert sum(c.label for c in cases) == sum(r["Pathology"] == "malignant"
                                              for r in table.values())
    assert {(c.image.shape[1], c.image.shape[0]) for c in cases} == {
        (r["Width"], r["Height"]) for r in table.values()}
    by_id = {c.id: c for c in cases}
    assert all(c.mask.any() and c.mask.shape == c.image.shape for c in cases)
    assert by_id["bus_0002-s"].fold == "2" and by_id["bus_0011-l"].fold == "1"
    assert by_id["bus_0005-r"].fields == {
        "patient": "5", "birads": str(table["bus_0005-r"]["BIRADS"]),
        "device": table["bus_0005-r"]["Device"], "histology": "Fibroadenoma"}


def test_a_patients_images_share_a_group_merged_with_near_duplicates(tmp_path):
    table = make_busbra(tmp_path)
    cases = busbra.load(tmp_path)
    group = {c.id: c.group for c in cases}
    for patient in range(1, PATIENTS + 1):
        assert len({group[i] for i, r in table.items() if r["Case"] == patient}) == 1
    # the near copy joins patient 12 to patient 1; no other patients share a group
    assert group["bus_0012-l"] == group["bus_0001-r"]
    assert len(set(group.values())) == PATIENTS - 1
    report = audit_cases(cases)
    assert [sorted(p[:2]) for p in report.near_pairs] == [["bus_0001-l", "bus_0012-l"]]


def test_grouped_splits_never_divide_a_patient(tmp_path):
    make_busbra(tmp_path)
    card, options = lookup_dataset(load_plugins().datasets, "busbra")
    arrays = prepare_dataset(card, tmp_path, 32, tmp_path / "cache", options)
    cached = prepare_dataset(card, tmp_path, 32, tmp_path / "cache", options)  # from the file
    assert len(arrays.folds) == 24 and (cached.folds, cached.fields) == (arrays.folds,
                                                                         arrays.fields)
    for seed in (0, 1, 2):
        folds = make_folds(arrays, 5, "stratified-group", seed)
        fold_of = {i: k for k, fold in enumerate(folds) for i in fold}
        by_group: dict[str, set[int]] = {}
        for i, g in enumerate(arrays.groups):
            by_group.setdefault(g, set()).add(fold_of[i])
        assert all(len(f) == 1 for f in by_group.values())
    official = make_folds(arrays, 5, "official", 0)
    assert [sorted(arrays.ids[i] for i in fold) for fold in official] == [
        sorted(i for i in arrays.ids if patient_fold(int(i[4:8])) == k) for k in range(1, 6)]


def test_data_check_names_a_missing_mask_and_a_row_without_image(tmp_path):
    make_busbra(tmp_path)
    ok = CliRunner().invoke(main, ["data", "check", "busbra", "--data-root", str(tmp_path)])
    text = " ".join(ok.output.split())
    assert ok.exit_code == 0, ok.output
    assert "benign 17, malignant 7, patients 12" in text and "0 error(s)" in text
    folder = tmp_path / "BUSBRA"
    (folder / "Masks" / "mask_0003-l.png").unlink()
    (folder / "Images" / "bus_0007-r.png").unlink()
    Image.new("L", (40, 40)).save(folder / "Images" / "bus_0099-l.png")
    bad = CliRunner().invoke(main, ["data", "check", "busbra", "--data-root", str(tmp_path)])
    text = " ".join(bad.output.split())
    assert bad.exit_code == 1
    assert "mask_0003-l.png: is missing: the mask of bus_0003-l.png (line 7 of bus_data.csv)" \
        in text
    assert "bus_0007-r.png: listed on line 15 of bus_data.csv but missing" in text
    assert "bus_0099-l.png: has no row in bus_data.csv; ignored" in text
    assert "2 error(s), 1 warning(s)" in text
    with pytest.raises(DatasetLayoutError, match="mask .*mask_0003-l.png of bus_data.csv line 7"):
        busbra.load(tmp_path)


def test_tables_that_do_not_fit_are_named_by_line(tmp_path):
    make_busbra(tmp_path)
    folder = tmp_path / "BUSBRA"
    folds = (folder / "5-fold-cv.csv").read_text()
    (folder / "5-fold-cv.csv").write_text(folds.replace("bus_0004-l,malignant",
                                                        "bus_0004-l,benign"))
    with pytest.raises(DatasetLayoutError, match=r"5-fold-cv.csv, line \d+: bus_0004-l is "
                                                 "benign here but malignant in bus_data.csv"):
        busbra.load(tmp_path)
    (folder / "5-fold-cv.csv").write_text("\n".join(folds.splitlines()[:-1]) + "\n")
    with pytest.raises(DatasetLayoutError, match="gives no fold to 1 image"):
        busbra.load(tmp_path)
    data = (folder / "bus_data.csv").read_text()
    (folder / "bus_data.csv").write_text(data.replace(",benign,", ",benign?,", 1))
    with pytest.raises(DatasetLayoutError, match=r"bus_data.csv, line 4: Pathology 'benign\?'"):
        busbra.load(tmp_path)


def test_data_audit_finds_the_near_copy(tmp_path):
    make_busbra(tmp_path)
    result = CliRunner().invoke(main, ["data", "audit", "busbra", "--data-root", str(tmp_path),
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["cases"] == 24 and report["clusters"] == [["bus_0001-l", "bus_0012-l"]]


def test_runs_with_grouped_and_official_folds(tmp_path):
    make_busbra(tmp_path / "data")
    out = tmp_path / "run"
    grouped = CliRunner().invoke(main, ["run", "--dataset", "busbra", "--data-root",
                                        str(tmp_path / "data"), "--out", str(out), *TINY])
    assert grouped.exit_code == 0, grouped.output
    assert "straddle" not in grouped.output
    official = CliRunner().invoke(main, ["run", "--dataset", "busbra", "--data-root",
                                         str(tmp_path / "data"), "--out", str(out), *TINY,
                                         "--set", "split=official"])
    text = " ".join(official.output.split())
    assert official.exit_code == 0, official.output
    assert "1 group(s) of images that belong together" in text
    assert "bus_0001-l, bus_0001-r, bus_0012-l" in text
    saved = json.loads((out / "splits" / "busbra-official-k5-seed42.json").read_text())
    assert [sorted(e["id"] for e in fold) for fold in saved["folds"]] == [
        sorted(i for i in saved_ids(saved) if patient_fold(int(i[4:8])) == k)
        for k in range(1, 6)]
    board = (out / "leaderboard.md").read_text()
    assert "the dataset's own folds (split=official)" in board
    # two protocols, grouped and official folds, each with its own hash
    assert len(set(re.findall(r"### busbra · protocol smoke \((\w+)\)", board))) == 2
    with Store.read(out) as store:
        fields = store.case_fields("busbra")
    assert len(fields) == 24 and {f["device"] for f in fields.values()} == set(DEVICES)
    assert {f["birads"] for f in fields.values()} == {"2", "3", "4", "5"}


def saved_ids(split: dict) -> list[str]:
    return [e["id"] for fold in split["folds"] for e in fold]


def test_official_folds_need_the_partitions_number_of_folds(tmp_path):
    make_busbra(tmp_path / "data")
    result = CliRunner().invoke(main, [
        "run", "--dataset", "busbra", "--data-root", str(tmp_path / "data"), "--out",
        str(tmp_path / "run"), *TINY, "--set", "split=official", "--set", "folds=10"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "own partition has 5 folds (1, 2, 3, 4, 5), the protocol asks for 10" in text
    assert "--set folds=5" in text


@pytest.mark.parametrize("dataset", ["synthetic", "busi"])
def test_official_folds_are_refused_where_none_ship(tmp_path, dataset):
    result = CliRunner().invoke(main, ["run", "--dataset", dataset, "--out", str(tmp_path),
                                       *TINY, "--set", "split=official"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"dataset '{dataset}' ships no partition of its own" in text
    assert "datasets that ship one: folder, busbra" in text and "split=stratified-group" in text


def test_absent_dataset_says_where_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBENCH_DATA", str(tmp_path / "datasets"))
    result = CliRunner().invoke(main, ["data", "check", "busbra"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert f"looked in {tmp_path / 'datasets' / 'busbra'}" in text
    assert "zenodo.7730709" in text and "bus_data.csv" in text and "--data-root" in text
