"""Any other dataset: an images folder, a masks folder and a CSV of labels, described by options.

    DIR/images/<id>.png      (image_pattern, or a column naming each image: image_column)
    DIR/masks/<id>.png       (mask_pattern, e.g. {id}_mask.png, or a column: mask_column)
    DIR/labels.csv           columns id, label[, group][, fold]
                             (id_column, label_column, group_column, fold_column)

Labels are class names (``classes``, default benign,malignant) or class indices. A group column
(patient id) keeps a patient's images on one side of every split; near-duplicate images are
grouped too. File columns name each case's image and mask relative to the images and masks
folders, for any naming no pattern fits. A fold column is the set's own partition, which
``split=official`` follows. ``folder_dataset`` builds a named dataset on top of this for a
plugin.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import string
from pathlib import Path
from typing import NamedTuple

from mtlbench.cards import DatasetCard
from mtlbench.data.audit import AUDIT_VERSION, with_duplicate_groups
from mtlbench.data.cases import Case
from mtlbench.data.check import CheckReport, check_pair
from mtlbench.data.prepare import DatasetLayoutError, DatasetOptionError, read_gray

DEFAULTS = {"images": "images", "masks": "masks", "csv": "labels.csv", "id_column": "id",
            "label_column": "label", "group_column": "group", "image_pattern": "{id}.png",
            "mask_pattern": "{id}.png", "classes": "benign,malignant", "image_column": "",
            "mask_column": "", "fold_column": "fold"}
OPTIONS = tuple(DEFAULTS)
PATH_OPTIONS = ("images", "masks", "csv")
PARTITION = "the fold column of its CSV (option fold_column, default fold), where it has one"


class Row(NamedTuple):
    """One case as its CSV row gives it: the image and mask file names are relative to the
    images and masks folders (from their columns, else from the patterns)."""

    id: str
    label: int
    group: str
    line: int
    image: str
    mask: str
    fold: str


PATTERNS = ("image_pattern", "mask_pattern")


def settings(options: dict[str, str]) -> dict[str, str]:
    """The defaults overridden by ``options``, the file-name patterns checked."""
    s = {**DEFAULTS, **{k: v for k, v in options.items() if v != ""}}
    for key in PATTERNS:
        check_pattern(key, s[key])
    return s


def validate(options: dict[str, str]) -> None:
    """The options' values are usable (checked when the dataset spec is parsed)."""
    settings(options)
    if not classes_for(options):
        raise DatasetOptionError("dataset option classes: names no class; give them as "
                                 "classes=benign;malignant")


def check_pattern(option: str, pattern: str) -> str:
    """A file-name pattern is literal text with the one field ``{id}`` (``{{``/``}}`` for a
    brace), at least once: no other field, index, attribute, conversion or format. Patterns are
    not handed to ``str.format`` as given, so ``{id.__class__}`` or ``{0}`` cannot run."""
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise DatasetOptionError(f"dataset option {option}={pattern!r}: {exc}; a pattern is "
                                 "a file name with {id} where the case id goes, e.g. "
                                 "{id}_mask.png") from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts
              if name is not None]
    bad = [f for f in fields if f != ("id", "", None)]
    if bad or not fields:
        if bad:
            name, spec, conversion = bad[0]
            shown = ("{" + (name or "") + (f"!{conversion}" if conversion else "")
                     + (f":{spec}" if spec else "") + "}")
            problem = f"the field {shown} is not allowed"
        else:
            problem = "it has no {id}"
        raise DatasetOptionError(
            f"dataset option {option}={pattern!r}: {problem}; a pattern is a file name with "
            "the one field {id} where the case id goes (e.g. {id}_mask.png)")
    return pattern


def fill(pattern: str, case_id: str) -> str:
    """``pattern`` (checked by check_pattern) with the case id in place of every ``{id}``."""
    return "".join(text + (case_id if name is not None else "")
                   for text, name, _, _ in string.Formatter().parse(pattern))


def inside(folder: Path, relative: str, what: str, where: str) -> Path:
    """``folder / relative``, refused (DatasetLayoutError naming ``where``) unless it stays
    inside ``folder``: no absolute path, no ``..`` out of it, no link inside it leading out.
    ``folder`` itself may be a link to data elsewhere."""
    path = folder / relative
    if "\x00" in relative:
        raise DatasetLayoutError(f"{where}: the {what} path {relative!r} holds a NUL byte; "
                                 "case ids and patterns name files")
    if Path(relative).is_absolute() or os.path.normpath(relative).startswith(".."):
        raise DatasetLayoutError(f"{where}: the {what} path {relative!r} leaves the folder "
                                 f"{folder}; case ids and patterns name files inside it")
    try:
        real, base = path.resolve(), folder.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise DatasetLayoutError(f"{where}: the {what} path {path} cannot be resolved "
                                 f"({exc})") from None
    if real != base and base not in real.parents:
        raise DatasetLayoutError(f"{where}: the {what} {path} is a link to {real}, outside "
                                 f"{folder}; copy the file into the folder instead")
    return path


def classes_for(options: dict[str, str]) -> tuple[str, ...]:
    """Class names in label order; separated by ';' (or ',' or '|' outside a --dataset spec)."""
    return tuple(c.strip() for c in re.split(r"[;,|]", settings(options)["classes"]) if c.strip())


def read_labels(root: Path, **options: str) -> list[Row]:
    """Each row of the CSV; errors name the file, line and value."""
    s = settings(options)
    path = Path(root) / s["csv"]
    if not path.exists():
        raise DatasetLayoutError(f"label file {path} is missing; give its name with the "
                                 "option csv=FILE (relative to the data root)")
    classes = classes_for(options)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        needed = ["id_column", "label_column"] + [k for k in ("image_column", "mask_column")
                                                  if s[k]]
        for key in needed:
            if s[key] not in columns:
                raise DatasetLayoutError(f"{path} has no column {s[key]!r} (columns: "
                                         f"{', '.join(columns)}); set the option {key}=NAME")
        rows = []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if None in row.values() or None in row:
                raise DatasetLayoutError(f"{path}, line {line}: {len(columns)} columns expected "
                                         f"({', '.join(columns)}), the row has "
                                         f"{'fewer' if None in row.values() else 'more'}; "
                                         "check its commas and quotes")
            case_id, raw = row[s["id_column"]].strip(), row[s["label_column"]].strip()
            if not case_id:
                raise DatasetLayoutError(f"{path}, line {line}: the id ({s['id_column']}) is "
                                         "empty")
            if any(ord(c) < 32 or ord(c) == 127 for c in case_id):
                raise DatasetLayoutError(f"{path}, line {line}: the id {case_id!r} holds a "
                                         "control character (such as a NUL byte), which no "
                                         "file name can; fix the row")
            if case_id in seen:
                raise DatasetLayoutError(f"{path}, lines {seen[case_id]} and {line}: the id "
                                         f"{case_id!r} is listed twice; each image needs one "
                                         "row (merge or rename the rows)")
            seen[case_id] = line
            if raw in classes:
                label = classes.index(raw)
            elif raw.isdigit() and int(raw) < len(classes):
                label = int(raw)
            else:
                raise DatasetLayoutError(f"{path}, line {line}: label {raw!r} is not one of "
                                         f"the classes {', '.join(classes)} (option classes=...)")
            group = (row.get(s["group_column"]) or "").strip()
            image, mask = (_file_cell(row, s, what, path, line, case_id)
                           for what in ("image", "mask"))
            fold = (row.get(s["fold_column"]) or "").strip()
            rows.append(Row(case_id, label, group, line, image, mask, fold))
    return rows


def _file_cell(row: dict[str, str], s: dict[str, str], what: str, path: Path, line: int,
               case_id: str) -> str:
    """The case's image or mask file name: its column's cell, else its pattern filled in."""
    column = s[f"{what}_column"]
    if not column:
        return fill(s[f"{what}_pattern"], case_id)
    name = row[column].strip()
    if not name:
        raise DatasetLayoutError(f"{path}, line {line}: the {what} file ({column}) of id "
                                 f"{case_id!r} is empty; name the file, relative to the "
                                 f"{s[what + 's']} folder")
    return name


def _paths(root: Path, row: Row, s: dict[str, str], where: str) -> tuple[Path, Path]:
    """The image and mask of a case, inside their folders (or DatasetLayoutError)."""
    return (inside(Path(root) / s["images"], row.image, "image", where),
            inside(Path(root) / s["masks"], row.mask, "mask", where))


def _shown_name(s: dict[str, str], what: str) -> str:
    """A case's image or mask file name in the layout: its pattern, or its column."""
    column = s[f"{what}_column"]
    return f"<the file in column {column}>" if column else s[f"{what}_pattern"]


def _named_by(s: dict[str, str], what: str) -> str:
    """Where the name of a case's image or mask comes from, for messages."""
    column = s[f"{what}_column"]
    return (f"its column {column!r} (option {what}_column)" if column
            else f"the option {what}_pattern (now {s[what + '_pattern']!r})")


def load(root: Path, **options: str) -> list[Case]:
    """The cases of the CSV, in its order; groups from the group column and duplicates."""
    s = settings(options)
    cases = []
    rows = read_labels(root, **options)
    if not rows:
        raise DatasetLayoutError(f"{Path(root) / s['csv']} lists no cases; add a row per image "
                                 f"(columns {s['id_column']}, {s['label_column']})")
    for row in rows:
        case_id, label, group, line = row.id, row.label, row.group, row.line
        image_path, mask_path = _paths(root, row, s, f"{s['csv']} line {line} (id "
                                                     f"{case_id!r})")
        for path, what in ((image_path, "image"), (mask_path, "mask")):
            if not path.exists():
                raise DatasetLayoutError(f"{what} {path} of {s['csv']} line {line} (id "
                                         f"{case_id!r}) is missing; check "
                                         f"{_named_by(s, what)}")
        image, mask = read_gray(image_path), read_gray(mask_path) > 127
        if mask.shape != image.shape:
            raise DatasetLayoutError(f"mask {mask_path} is {mask.shape[1]}×{mask.shape[0]} but "
                                     f"its image is {image.shape[1]}×{image.shape[0]}")
        cases.append(Case(case_id, image, mask, label, group=f"group:{group}" if group else "",
                          source=str(image_path), fold=row.fold))
    return with_duplicate_groups(cases)


def check(root: Path, **options: str) -> CheckReport:
    """Every problem of the folder, by file."""
    s = settings(options)
    report = CheckReport()
    try:
        rows = read_labels(root, **options)
    except DatasetLayoutError as exc:
        report.error(Path(root) / s["csv"], str(exc))
        return report
    classes = classes_for(options)
    for index, name in enumerate(classes):
        report.counts[name] = sum(1 for r in rows if r.label == index)
    if not rows:
        report.error(Path(root) / s["csv"], "lists no cases; add a row per image (columns "
                                           f"{s['id_column']}, {s['label_column']})")
    listed = set()
    for row in rows:
        try:
            image_path, mask_path = _paths(root, row, s, f"line {row.line} (id {row.id!r})")
        except DatasetLayoutError as exc:
            report.error(Path(root) / s["csv"], str(exc))
            continue
        listed.add(Path(row.image).parts[0] if Path(row.image).parts else row.image)
        if not image_path.exists():
            report.error(image_path, f"listed on line {row.line} of {s['csv']} but missing")
            continue
        check_pair(image_path, [mask_path] if mask_path.exists() else [], report)
    image_dir = Path(root) / s["images"]
    for path in sorted(image_dir.iterdir()) if image_dir.is_dir() else []:
        if path.name not in listed:
            report.warn(path, f"has no row in {s['csv']}; ignored")
    return report


def fingerprint(root: Path, **options: str) -> str:
    """A hash of the options and the files' names, sizes and modification times."""
    s = settings(options)
    h = hashlib.sha256(repr(sorted(s.items())).encode() + f"audit{AUDIT_VERSION}".encode())
    for sub in (s["csv"], s["images"], s["masks"]):
        path = Path(root) / sub
        for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if item.exists():  # file columns may name files in subfolders: all are seen
                st = os.stat(item)
                name = item.relative_to(path) if item != path else item.name
                h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def folder_dataset(name: str, description: str = "", citation: str = "", obtain: str = "",
                   **preset: str) -> DatasetCard:
    """A named dataset in the folder+CSV format with some options fixed (for plugins)."""
    fixed = {**preset}

    def merged(options: dict[str, str]) -> dict[str, str]:
        return {**fixed, **options}

    s = settings(fixed)
    return DatasetCard(
        name=name, classes=classes_for(fixed),
        load=lambda root, **o: load(root, **merged(o)),
        fingerprint=lambda root, **o: fingerprint(root, **merged(o)),
        check=lambda root, **o: check(root, **merged(o)),
        options=OPTIONS, classes_for=lambda o: classes_for(merged(o)),
        validate=lambda o: validate(merged(o)),
        description=description or "folder+CSV dataset",
        citation=citation, obtain=obtain, partition=PARTITION, path_options=PATH_OPTIONS,
        layout=(f"  {s['images']}/{_shown_name(s, 'image')}\n"
                f"  {s['masks']}/{_shown_name(s, 'mask')}\n"
                f"  {s['csv']} (columns {s['id_column']}, {s['label_column']}"
                f"[, {s['group_column']}][, {s['fold_column']}])"),
    )
