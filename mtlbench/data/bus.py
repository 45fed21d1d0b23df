"""BUS, i.e. UDIAT Dataset B (Yap et al. 2018), in the layout its authors distribute:

    original/000001.png ...   the images
    GT/000001.png ...         the lesion masks, same names
    DatasetB.xlsx             one row per image: Image (000001, or the number 1), Type
                              (Benign / Malignant), Diagnosis (CYST, FA, IDC, ...), and legend
                              columns beside them, which are ignored

The table may also be given as CSV with the same columns (DatasetB.csv).
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from mtlbench.data.audit import AUDIT_VERSION, with_duplicate_groups
from mtlbench.data.cases import Case
from mtlbench.data.check import CheckReport, check_pair
from mtlbench.data.prepare import DatasetLayoutError, read_gray

CLASSES = ("benign", "malignant")
CITATION = ("M. H. Yap et al., Automated breast ultrasound lesions detection using "
            "convolutional neural networks, IEEE JBHI 22(4) (2018) 1218-1226.")
LAYOUT = ("  original/000001.png ...\n  GT/000001.png ...\n"
          "  DatasetB.xlsx (or DatasetB.csv): columns Image, Type (Benign/Malignant), Diagnosis")
OBTAIN = ("distributed by its authors on request (UDIAT Diagnostic Centre, Sabadell; Yap et "
          "al. 2018): ask them for 'Dataset B' and unpack it so that DIR/original, DIR/GT and "
          "DIR/DatasetB.xlsx exist")
TABLE_NAMES = ("DatasetB.xlsx", "DatasetB.csv")


def find_table(root: Path) -> Path:
    """The label table: DatasetB.xlsx or DatasetB.csv (any case) in ``root``."""
    by_lower = {p.name.lower(): p for p in Path(root).iterdir() if p.is_file()}
    for name in TABLE_NAMES:
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    raise DatasetLayoutError(f"BUS at {root}: no label table ({' or '.join(TABLE_NAMES)}); "
                             f"expected layout:\n{LAYOUT}")


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of the label table as {column: text}, header names stripped; blank rows dropped."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [list(r) for r in csv.reader(f)]
    else:
        from openpyxl import load_workbook

        try:
            book = load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
            raise DatasetLayoutError(f"cannot read the label table {path}: {exc}") from None
        rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
        book.close()
    if not rows:
        raise DatasetLayoutError(f"label table {path} is empty")
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    out = []
    for row in rows[1:]:
        record = {h: _text(v) for h, v in zip(header, row, strict=False) if h}
        if any(record.values()):
            out.append(record)
    return out


def image_id(value: str) -> str:
    """'000001', '1' and '1.0' all name image 000001."""
    text = value.strip()
    try:
        return f"{int(float(text)):06d}"
    except ValueError:
        return text


def labelled_ids(root: Path) -> dict[str, tuple[int, str]]:
    """image id -> (label, diagnosis) from the table; errors name the table, row and value."""
    table = find_table(root)
    rows = read_table(table)
    columns = {k.lower(): k for k in (rows[0] if rows else {})}
    for needed in ("image", "type"):
        if needed not in columns:
            raise DatasetLayoutError(f"label table {table} has no '{needed.title()}' column "
                                     f"(columns: {', '.join(columns.values())})")
    out: dict[str, tuple[int, str]] = {}
    for number, row in enumerate(rows, start=2):
        raw_id, raw_type = row.get(columns["image"], ""), row.get(columns["type"], "")
        if not raw_id:
            continue  # legend rows beside the table
        kind = raw_type.strip().lower()
        if kind not in CLASSES:
            raise DatasetLayoutError(f"label table {table}, row {number}: Type {raw_type!r} is "
                                     "neither Benign nor Malignant")
        case_id = image_id(raw_id)
        if case_id in out:
            raise DatasetLayoutError(f"label table {table}, row {number}: image {case_id} is "
                                     "listed twice")
        out[case_id] = (CLASSES.index(kind), row.get(columns.get("diagnosis", ""), ""))
    return out


def check(root: Path) -> CheckReport:
    """Every problem of a BUS folder, by file (see mtlbench.data.check)."""
    root = Path(root)
    report = CheckReport()
    for sub in ("original", "GT"):
        if not (root / sub).is_dir():
            report.error(root / sub, f"folder is missing; expected layout:\n{LAYOUT}")
    try:
        labels = labelled_ids(root)
    except DatasetLayoutError as exc:
        report.error(root, str(exc))
        return report
    images = {p.stem: p for p in (root / "original").glob("*.png")}
    for cls_index, cls in enumerate(CLASSES):
        report.counts[cls] = sum(1 for label, _ in labels.values() if label == cls_index)
    for case_id in sorted(set(labels) - set(images)):
        report.error(root / "original" / f"{case_id}.png", "listed in the table but missing")
    for case_id in sorted(set(images) - set(labels)):
        report.error(images[case_id], "has no row in the label table; add one or remove it")
    for case_id in sorted(set(labels) & set(images)):
        mask = root / "GT" / f"{case_id}.png"
        check_pair(images[case_id], [mask] if mask.exists() else [], report)
    return report


def fingerprint(root: Path) -> str:
    """A hash of the file names, sizes and modification times (no pixel is read)."""
    h = hashlib.sha256(f"bus-audit{AUDIT_VERSION}".encode())
    paths = [find_table(root)] + sorted((Path(root) / "original").glob("*.png")) + \
        sorted((Path(root) / "GT").glob("*.png"))
    for path in paths:
        st = os.stat(path)
        h.update(f"{path.parent.name}/{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load(root: Path) -> list[Case]:
    """The labelled cases, in image-id order; group = near-duplicate cluster."""
    root = Path(root)
    for sub in ("original", "GT"):
        if not (root / sub).is_dir():
            raise DatasetLayoutError(f"BUS at {root}: folder {root / sub} is missing; expected "
                                     f"layout:\n{LAYOUT}")
    labels = labelled_ids(root)
    images = {p.stem: p for p in (root / "original").glob("*.png")}
    unlabelled = sorted(set(images) - set(labels))
    missing = sorted(set(labels) - set(images))
    if unlabelled or missing:
        raise DatasetLayoutError(
            f"BUS at {root}: "
            + (f"rows without an image in original/: {missing[:5]}; " if missing else "")
            + (f"images without a row in the table: {unlabelled[:5]}; " if unlabelled else "")
            + "every image needs one row and every row one image")
    cases = []
    for case_id in sorted(labels):
        image_path, mask_path = images[case_id], root / "GT" / f"{case_id}.png"
        if not mask_path.exists():
            raise DatasetLayoutError(f"mask {mask_path} is missing for image {image_path}")
        image, mask = read_gray(image_path), read_gray(mask_path) > 127
        if mask.shape != image.shape:
            raise DatasetLayoutError(f"mask {mask_path} is {mask.shape[1]}×{mask.shape[0]} but "
                                     f"its image is {image.shape[1]}×{image.shape[0]}")
        label, diagnosis = labels[case_id]
        cases.append(Case(case_id, image, mask, label, source=str(image_path),
                          meta={"diagnosis": diagnosis}))
    return with_duplicate_groups(cases)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
