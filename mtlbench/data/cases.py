"""The unit every dataset loader produces: one image, its lesion mask, its class and its group."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Case:
    """One labelled ultrasound image.

    ``image`` is a 2-D uint8 grayscale array (H, W); ``mask`` a 2-D bool array of the same shape
    (the union of all lesion masks of the image); ``label`` the class index into the dataset's
    classes; ``group`` the id of the patient or near-duplicate cluster the case belongs to (a
    split never puts one group on both sides); ``fold`` its fold in the partition the dataset
    ships, if any (``split=official`` follows it); ``fields`` facts about the case the dataset
    records (e.g. BI-RADS, scanner), kept in the results store so that results can be broken
    down by them.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    label: int
    group: str = ""
    source: str = ""  # where it came from (a file path, or "synthetic"), for error messages
    meta: dict = field(default_factory=dict, compare=False)
    fold: str = ""
    fields: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or self.image.dtype != np.uint8:
            raise ValueError(
                f"case {self.id!r} ({self.source or 'no source'}): image must be a 2-D uint8 "
                f"array, got shape {self.image.shape} dtype {self.image.dtype}"
            )
        if self.mask.shape != self.image.shape:
            raise ValueError(
                f"case {self.id!r} ({self.source or 'no source'}): mask shape {self.mask.shape} "
                f"differs from image shape {self.image.shape}"
            )
        if not self.group:
            object.__setattr__(self, "group", self.id)

    @property
    def content_hash(self) -> str:
        """A short hash of the pixels, mask and label: changes whenever the case's data changes."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.image).tobytes())
        h.update(np.ascontiguousarray(self.mask.astype(bool)).tobytes())
        h.update(str(self.image.shape).encode())
        h.update(str(int(self.label)).encode())
        return h.hexdigest()[:16]
