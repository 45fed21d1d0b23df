"""What a trial keeps of its test images for the report's qualitative grid (the paper's Fig. 7).

Every trial returns the binary predicted mask of each of its test cases, at the protocol size,
as a base64 PNG (``TrialResult.predictions``: case id -> PNG; about 0.2–1 KB a mask at 256²,
so all of BUSI for ten methods is a few MB). Besides, it returns the input image and the ground
truth of a few *gallery* cases of its fold (``TrialResult.gallery``), so that a run folder copied
elsewhere renders its report without the dataset. Gallery cases depend only on the fold's test
cases, never on the method: each class's test cases in the order of the SHA-256 of their id,
the first ``GALLERY_PER_CLASS``. Every method's trial of a fold thus names the same cases, and
the store keeps one copy per (dataset, size, case).

Everything here is plain str/int data, so a TrialResult stays JSON-serialisable.
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
from PIL import Image

GALLERY_PER_CLASS = 4
"""Gallery cases per class and fold: 40 cases for BUSI's two classes and five folds."""


def encode_png(array: np.ndarray, binary: bool = False) -> str:
    """A 2-D uint8 array as a base64 PNG: 8-bit gray, or 1-bit when ``binary`` (nonzero = on)."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    image = (Image.fromarray(array.astype(bool)) if binary
             else Image.fromarray(array.astype(np.uint8), mode="L"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """The uint8 array of a base64 PNG from :func:`encode_png` (a 1-bit PNG gives 0/1)."""
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    return np.asarray(image.convert("L") if image.mode != "1" else image, dtype=np.uint8)


def mask_pngs(case_ids, masks: np.ndarray) -> dict[str, str]:
    """case id -> base64 1-bit PNG of its binary mask, for (N, S, S) ``masks``."""
    return {str(case_id): encode_png(mask, binary=True)
            for case_id, mask in zip(case_ids, masks, strict=True)}


def case_order(case_id: str) -> str:
    """The sort key of gallery cases: stable, and unrelated to file names or classes."""
    return hashlib.sha256(case_id.encode()).hexdigest()


def gallery_indices(case_ids, labels, per_class: int = GALLERY_PER_CLASS) -> list[int]:
    """Positions of the gallery cases among ``case_ids`` (one fold's test cases): per class,
    the first ``per_class`` in :func:`case_order`."""
    chosen = []
    for label in sorted({int(x) for x in labels}):
        members = [i for i, x in enumerate(labels) if int(x) == label]
        members.sort(key=lambda i: case_order(str(case_ids[i])))
        chosen += members[:per_class]
    return sorted(chosen)


def gallery(case_ids, labels, images: np.ndarray, masks: np.ndarray,
            per_class: int = GALLERY_PER_CLASS) -> dict[str, dict]:
    """case id -> {"image": gray PNG, "mask": 1-bit PNG, "label": int} of the gallery cases."""
    return {str(case_ids[i]): {"image": encode_png(images[i]),
                               "mask": encode_png(masks[i], binary=True),
                               "label": int(labels[i])}
            for i in gallery_indices(case_ids, labels, per_class)}
