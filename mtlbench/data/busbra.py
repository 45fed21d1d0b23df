"""BUS-BRA (Gómez-Flores et al. 2024) in the layout its authors distribute:

    BUSBRA/Images/bus_0001-l.png ...   8-bit gray images; several of one patient (sides l, r, s)
    BUSBRA/Masks/mask_0001-l.png ...   1-bit lesion masks, the same size as their image
    BUSBRA/bus_data.csv                one row per image: ID (bus_0001-l), Case (the patient),
                                       Histology, Pathology (benign/malignant), BIRADS, Device
                                       (the scanner), Width, Height, Side, BBOX
    BUSBRA/5-fold-cv.csv               the authors' partition: ID, Pathology, kFold (1-5),
                                       valid_1 ... valid_5 (not needed)
    BUSBRA/10-fold-cv.csv              the same in 10 folds (not used)

A case's group is its patient (``Case``), merged with any near-duplicate cluster; its fold is
its ``kFold`` (``split=official``); its BI-RADS, scanner and histology are kept as its fields.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from mtlbench.data.audit import AUDIT_VERSION, with_duplicate_groups
from mtlbench.data.cases import Case
from mtlbench.data.check import CheckReport, check_pair, read_or_report
from mtlbench.data.prepare import DatasetLayoutError, read_gray

FOLDER = "BUSBRA"
CLASSES = ("benign", "malignant")
TABLE = "bus_data.csv"
FOLDS = "5-fold-cv.csv"
TEN_FOLDS = "10-fold-cv.csv"
IMAGES, MASKS = "Images", "Masks"
#: bus_data.csv's columns kept as case fields (field name -> column).
FIELDS = {"birads": "BIRADS", "device": "Device", "histology": "Histology"}
CITATION = ("W. Gómez-Flores, M. J. Gregorio-Calas, W. C. de Albuquerque Pereira, BUS-BRA: a "
            "breast ultrasound dataset for assessing computer-aided diagnosis systems, Medical "
            "Physics 51(4) (2024) 3110-3123; data: Zenodo, doi:10.5281/zenodo.7730709.")
LICENCE = "MIT-style (permissive); cite the article"
LAYOUT = (f"  {FOLDER}/{IMAGES}/bus_0001-l.png ...\n  {FOLDER}/{MASKS}/mask_0001-l.png ...\n"
          f"  {FOLDER}/{TABLE} (columns ID, Case, Pathology, BIRADS, Device, ...)\n"
          f"  {FOLDER}/{FOLDS} (columns ID, kFold, ...) and {TEN_FOLDS}")
OBTAIN = ("public: Zenodo, doi:10.5281/zenodo.7730709 (BUS-BRA, 1,875 images of 1,064 "
          f"patients); unpack it so that DIR/{FOLDER} holds {IMAGES}/, {MASKS}/ and {TABLE} "
          f"(DIR may also be the {FOLDER} folder itself)")
PARTITION = f"the authors' 5 patient folds: kFold of {FOLDS} (kFold 1 is fold 0)"


class Row(NamedTuple):
    """One image as bus_data.csv lists it."""

    id: str
    label: int
    patient: str
    line: int
    fields: dict[str, str]


def dataset_folder(root: Path) -> Path:
    """``root/BUSBRA`` when it exists, else ``root`` itself."""
    inner = Path(root) / FOLDER
    return inner if inner.is_dir() else Path(root)


def mask_name(case_id: str) -> str:
    """The mask file of an image: ``bus_0001-l`` -> ``mask_0001-l.png``."""
    return "mask_" + case_id.removeprefix("bus_") + ".png"


def _read_csv(path: Path, needed: tuple[str, ...]) -> tuple[list[tuple[int, dict[str, str]]],
                                                            dict[str, str]]:
    """(line, {column: text}) of each row of ``path`` and its columns by lower-case name;
    DatasetLayoutError names the file and the column or line that does not fit."""
    if not path.is_file():
        raise DatasetLayoutError(f"BUS-BRA: {path} is missing; it comes with the dataset. "
                                 f"Expected layout:\n{LAYOUT}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        columns = {h.lower(): h for h in header if h}
        absent = [name for name in needed if name.lower() not in columns]
        if absent:
            raise DatasetLayoutError(f"{path} has no column {absent[0]!r} (columns: "
                                     f"{', '.join(header)}); is it BUS-BRA's {path.name}?")
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise DatasetLayoutError(f"{path}, line {line}: {len(header)} columns expected, "
                                         f"the row has {len(cells)}; check its commas and quotes")
            rows.append((line, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    return rows, columns


def read_table(folder: Path) -> list[Row]:
    """The images bus_data.csv lists, in its order; errors name the line and value."""
    path = folder / TABLE
    records, columns = _read_csv(path, ("ID", "Case", "Pathology"))
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for line, record in records:
        case_id = record[columns["id"]]
        pathology = record[columns["pathology"]].lower()
        patient = record[columns["case"]]
        if not case_id.startswith("bus_") or "/" in case_id or "\\" in case_id:
            raise DatasetLayoutError(f"{path}, line {line}: ID {case_id!r} is not an image "
                                     "name of the layout (bus_NNNN-s)")
        if case_id in seen:
            raise DatasetLayoutError(f"{path}, lines {seen[case_id]} and {line}: ID {case_id!r} "
                                     "is listed twice")
        seen[case_id] = line
        if pathology not in CLASSES:
            raise DatasetLayoutError(f"{path}, line {line}: Pathology {pathology!r} of "
                                     f"{case_id} is neither benign nor malignant")
        if not patient:
            raise DatasetLayoutError(f"{path}, line {line}: the Case (patient) of {case_id} is "
                                     "empty")
        fields = {name: record[columns[column.lower()]] for name, column in FIELDS.items()
                  if column.lower() in columns}
        rows.append(Row(case_id, CLASSES.index(pathology), patient, line,
                        {"patient": patient, **fields}))
    if not rows:
        raise DatasetLayoutError(f"{path} lists no images")
    return rows


def read_folds(folder: Path, rows: list[Row]) -> dict[str, str]:
    """ID -> kFold from 5-fold-cv.csv: every image of the table once, no other, with the
    table's pathology; errors name the file, line and ID."""
    path = folder / FOLDS
    records, columns = _read_csv(path, ("ID", "kFold"))
    label = {row.id: row.label for row in rows}
    folds: dict[str, str] = {}
    for line, record in records:
        case_id, fold = record[columns["id"]], record[columns["kfold"]]
        if case_id not in label:
            raise DatasetLayoutError(f"{path}, line {line}: ID {case_id!r} is not in {TABLE}; "
                                     "do the two files come from one download?")
        if case_id in folds:
            raise DatasetLayoutError(f"{path}, line {line}: ID {case_id!r} is listed twice")
        if not fold:
            raise DatasetLayoutError(f"{path}, line {line}: the kFold of {case_id} is empty")
        pathology = record.get(columns.get("pathology", ""), "").lower()
        if pathology and pathology != CLASSES[label[case_id]]:
            raise DatasetLayoutError(f"{path}, line {line}: {case_id} is {pathology} here but "
                                     f"{CLASSES[label[case_id]]} in {TABLE}; do the two files "
                                     "come from one download?")
        folds[case_id] = fold
    missing = [row.id for row in rows if row.id not in folds]
    if missing:
        raise DatasetLayoutError(f"{path} gives no fold to {len(missing)} image(s) of {TABLE}, "
                                 f"e.g. {missing[:3]}")
    return folds


def load(root: Path) -> list[Case]:
    """The images of bus_data.csv in its order: group = patient merged with near-duplicate
    clusters, fold = kFold, fields = patient, BI-RADS, scanner, histology."""
    folder = dataset_folder(root)
    for sub in (IMAGES, MASKS):
        if not (folder / sub).is_dir():
            raise DatasetLayoutError(f"BUS-BRA at {folder}: folder {folder / sub} is missing; "
                                     f"expected layout:\n{LAYOUT}")
    rows = read_table(folder)
    folds = read_folds(folder, rows)
    cases = []
    for row in rows:
        image_path, mask_path = folder / IMAGES / f"{row.id}.png", folder / MASKS / mask_name(
            row.id)
        for path, what in ((image_path, "image"), (mask_path, "mask")):
            if not path.is_file():
                raise DatasetLayoutError(f"{what} {path} of {TABLE} line {row.line} ({row.id}) "
                                         "is missing; `mtlbench data check busbra` lists every "
                                         "problem")
        image, mask = read_gray(image_path), read_gray(mask_path) > 127
        if mask.shape != image.shape:
            raise DatasetLayoutError(f"mask {mask_path} is {mask.shape[1]}×{mask.shape[0]} but "
                                     f"its image is {image.shape[1]}×{image.shape[0]}")
        cases.append(Case(row.id, image, mask, row.label, group=f"patient:{row.patient}",
                          source=str(image_path), fold=folds[row.id], fields=row.fields))
    return with_duplicate_groups(cases)


def check(root: Path) -> CheckReport:
    """Every problem of a BUS-BRA folder, by file (see mtlbench.data.check)."""
    folder = dataset_folder(root)
    report = CheckReport()
    for sub in (IMAGES, MASKS):
        if not (folder / sub).is_dir():
            report.error(folder / sub, f"folder is missing; expected layout:\n{LAYOUT}")
    try:
        rows = read_table(folder)
    except DatasetLayoutError as exc:
        report.error(folder / TABLE, str(exc))
        return report
    for index, name in enumerate(CLASSES):
        report.counts[name] = sum(1 for row in rows if row.label == index)
    report.counts["patients"] = len({row.patient for row in rows})
    try:
        read_folds(folder, rows)
    except DatasetLayoutError as exc:
        report.error(folder / FOLDS, str(exc))
    if not (folder / TEN_FOLDS).is_file():
        report.warn(folder / TEN_FOLDS, "is missing (not used: split=official follows "
                                        f"{FOLDS})")
    for row in rows:
        image_path, mask_path = folder / IMAGES / f"{row.id}.png", folder / MASKS / mask_name(
            row.id)
        if not image_path.is_file():
            report.error(image_path, f"listed on line {row.line} of {TABLE} but missing")
        elif mask_path.is_file():
            check_pair(image_path, [mask_path], report)
        else:
            read_or_report(image_path, report)
            report.error(mask_path, f"is missing: the mask of {image_path.name} (line "
                                    f"{row.line} of {TABLE})")
    listed = {row.id for row in rows}
    for sub, name_of in ((IMAGES, lambda i: f"{i}.png"), (MASKS, mask_name)):
        expected = {name_of(i) for i in listed}
        for path in sorted((folder / sub).glob("*.png")) if (folder / sub).is_dir() else []:
            if path.name not in expected:
                report.warn(path, f"has no row in {TABLE}; ignored")
    return report


def fingerprint(root: Path) -> str:
    """A hash of the tables' and images' names, sizes and modification times (no pixel read)."""
    folder = dataset_folder(root)
    h = hashlib.sha256(f"busbra-audit{AUDIT_VERSION}".encode())
    paths = [folder / TABLE, folder / FOLDS] + sorted((folder / IMAGES).glob("*.png")) + \
        sorted((folder / MASKS).glob("*.png"))
    for path in paths:
        if path.exists():
            st = os.stat(path)
            h.update(f"{path.parent.name}/{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
