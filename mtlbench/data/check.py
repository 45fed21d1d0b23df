"""Data checks: every problem of a dataset folder, listed by file, before anything trains.

Errors make the data unusable as it is (unreadable image, missing mask, size mismatch, a label
without an image); warnings are handled by the loader (a mask without an image is ignored, an
anti-aliased mask is thresholded at 127, an empty lesion mask is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtlbench.data.prepare import DatasetLayoutError, read_gray


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    path: str
    message: str


@dataclass
class CheckReport:
    """Counts per class and every problem found."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def error(self, path, message: str) -> None:
        self.problems.append(Problem("error", str(path), message))

    def warn(self, path, message: str) -> None:
        self.problems.append(Problem("warning", str(path), message))


def read_or_report(path: Path, report: CheckReport) -> np.ndarray | None:
    """The file as 8-bit gray, or None after recording why it cannot be read."""
    try:
        return read_gray(path)
    except DatasetLayoutError as exc:
        report.error(path, f"unreadable: {exc}")
        return None


def check_pair(image_path: Path, mask_paths: list[Path], report: CheckReport,
               lesion_expected: bool = True) -> None:
    """Record the problems of one image and its masks (readability, size, binary, empty)."""
    image = read_or_report(image_path, report)
    if not mask_paths:
        report.error(image_path, "has no mask; add its mask file")
        return
    union = None
    for mask_path in mask_paths:
        mask = read_or_report(mask_path, report)
        if mask is None:
            continue
        if image is not None and mask.shape != image.shape:
            report.error(mask_path, f"is {mask.shape[1]}×{mask.shape[0]} but its image "
                                    f"{image_path.name} is {image.shape[1]}×{image.shape[0]}")
            continue
        values = np.unique(mask)
        if not set(values.tolist()) <= {0, 255}:
            report.warn(mask_path, f"is not binary ({len(values)} gray levels); thresholded "
                                   "at 127")
        union = mask > 127 if union is None else union | (mask > 127)
    if union is not None and lesion_expected and not union.any():
        report.warn(image_path, "its mask is empty although its class has a lesion")
