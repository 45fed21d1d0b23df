"""BUSI (Al-Dhabyani et al. 2020): the public layout read as it is distributed.

    Dataset_BUSI_with_GT/{benign,malignant,normal}/NAME.png
                                                  NAME_mask.png [NAME_mask_1.png ...]

Images come as L, RGB or RGBA PNGs of varying size; they are read as 8-bit gray. Masks (1-bit,
L, RGB or RGBA) are read as foreground = value > 127. By default the normal cases are left out
(as in the paper) and the masks of one image are united; ``multimask="first"`` keeps only
``NAME_mask.png`` (the paper's code) and ``include_normal=True`` keeps normal as a third class.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from mtlbench.data.audit import AUDIT_VERSION, with_duplicate_groups
from mtlbench.data.cases import Case
from mtlbench.data.check import CheckReport, check_pair
from mtlbench.data.prepare import DatasetLayoutError, DatasetOptionError, as_bool, read_gray

FOLDER = "Dataset_BUSI_with_GT"
CLASSES = ("benign", "malignant")
NORMAL = "normal"
MULTIMASK = ("union", "first")
CITATION = ("W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, Dataset of breast ultrasound "
            "images, Data in Brief 28 (2020) 104863.")
LAYOUT = ("  Dataset_BUSI_with_GT/benign/benign (1).png, benign (1)_mask.png, ...\n"
          "  Dataset_BUSI_with_GT/malignant/...\n  Dataset_BUSI_with_GT/normal/...")
OBTAIN = ("public: Kaggle 'Breast Ultrasound Images Dataset' (Dataset_BUSI_with_GT); "
          "unpack it so that DIR/Dataset_BUSI_with_GT exists")
_MASK = re.compile(r"^(?P<name>.+)_mask(?:_(?P<index>\d+))?\.png$", re.IGNORECASE)


def dataset_folder(root: Path) -> Path:
    """``root/Dataset_BUSI_with_GT`` when it exists, else ``root`` itself."""
    inner = Path(root) / FOLDER
    return inner if inner.is_dir() else Path(root)


OPTIONS = ("include_normal", "multimask")


def class_names(include_normal: bool | str) -> tuple[str, ...]:
    return CLASSES + ((NORMAL,) if as_bool(include_normal, "include_normal") else ())


def classes_for(options: dict[str, str]) -> tuple[str, ...]:
    return class_names(options.get("include_normal", False))


def list_files(root: Path, include_normal: bool = False) -> dict[str, dict[str, list[Path]]]:
    """class -> image name -> [image path, mask paths in index order] (image path first)."""
    folder = dataset_folder(root)
    out: dict[str, dict[str, list[Path]]] = {}
    for cls in class_names(include_normal):
        class_dir = folder / cls
        if not class_dir.is_dir():
            raise DatasetLayoutError(f"BUSI at {folder}: class folder {class_dir} is missing; "
                                     f"expected layout:\n{LAYOUT}")
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() != ".png":
                continue
            match = _MASK.match(path.name)
            if match:
                index = int(match["index"]) if match["index"] else 0
                masks.setdefault(match["name"], []).append((index, path))
            else:
                images[path.stem] = path
        orphans = sorted(set(masks) - set(images))
        missing = sorted(set(images) - set(masks))
        if orphans or missing:
            raise DatasetLayoutError(
                f"BUSI class folder {class_dir}: "
                + (f"images without a mask: {missing[:5]}; " if missing else "")
                + (f"masks without an image: {orphans[:5]}; " if orphans else "")
                + "every NAME.png needs NAME_mask.png beside it")
        out[cls] = {name: [images[name]] + [p for _, p in sorted(masks[name])]
                    for name in images}
    return out


def check(root: Path, include_normal: bool | str = False, multimask: str = "union"
          ) -> CheckReport:
    """Every problem of a BUSI folder, by file (see mtlbench.data.check)."""
    include_normal = as_bool(include_normal, "include_normal")
    report = CheckReport()
    folder = dataset_folder(root)
    for cls in class_names(include_normal) + (() if include_normal else (NORMAL,)):
        class_dir = folder / cls
        if not class_dir.is_dir():
            if cls != NORMAL:
                report.error(class_dir, f"class folder is missing; expected layout:\n{LAYOUT}")
            continue
        images, masks = {}, {}
        for path in sorted(class_dir.iterdir()):
            match = _MASK.match(path.name)
            if match:
                masks.setdefault(match["name"], []).append(path)
            elif path.suffix.lower() == ".png":
                images[path.stem] = path
            else:
                report.warn(path, "is not a PNG of the layout; ignored")
        if cls == NORMAL and not include_normal:
            report.counts[f"{cls} (left out)"] = len(images)
            continue
        report.counts[cls] = len(images)
        for name in sorted(set(masks) - set(images)):
            for path in masks[name]:
                report.warn(path, f"mask without an image {name}.png; ignored")
        for name, image_path in images.items():
            check_pair(image_path, sorted(masks.get(name, [])), report,
                       lesion_expected=cls != NORMAL)
    if not report.errors and not any(report.counts.get(c) for c in class_names(include_normal)):
        report.error(folder, f"no images in the class folders; expected layout:\n{LAYOUT}")
    return report


def fingerprint(root: Path, include_normal: bool | str = False, multimask: str = "union") -> str:
    """A hash of every file's name, size and modification time (cheap: no pixel is read)."""
    include_normal = as_bool(include_normal, "include_normal")
    h = hashlib.sha256(f"busi-{include_normal}-{multimask}-audit{AUDIT_VERSION}".encode())
    for cls, items in list_files(root, include_normal).items():
        for paths in items.values():
            for path in paths:
                st = os.stat(path)
                h.update(f"{cls}/{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load(root: Path, include_normal: bool | str = False, multimask: str = "union") -> list[Case]:
    """The BUSI cases, classes in folder order (benign 0, malignant 1[, normal 2]).

    Each case's group is its near-duplicate cluster (mtlbench.data.audit), so a split never puts
    two copies of one scan on both sides.
    """
    include_normal = as_bool(include_normal, "include_normal")
    if multimask not in MULTIMASK:
        raise DatasetOptionError(f"dataset option multimask={multimask!r}: choose one of "
                                 f"{', '.join(MULTIMASK)}")
    cases = []
    for label, (cls, items) in enumerate(list_files(root, include_normal).items()):
        for name, (image_path, *mask_paths) in items.items():
            image = read_gray(image_path)
            if multimask == "first":
                mask_paths = mask_paths[:1]
            mask = np.zeros(image.shape, dtype=bool)
            for mask_path in mask_paths:
                part = read_gray(mask_path) > 127
                if part.shape != image.shape:
                    raise DatasetLayoutError(
                        f"mask {mask_path} is {part.shape[1]}×{part.shape[0]} but its image "
                        f"{image_path} is {image.shape[1]}×{image.shape[0]}")
                mask |= part
            cases.append(Case(name, image, mask, label, source=str(image_path),
                              meta={"masks": len(mask_paths), "class": cls}))
    return with_duplicate_groups(cases)
