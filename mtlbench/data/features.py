"""Per-image feature channels that a method declares (``MethodCard.image_features``):
computed once per image and size, cached on disk, never recomputed per step."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mtlbench.cards import ImageFeatures
from mtlbench.data.prepare import DatasetArrays
from mtlbench.files import atomic_writer


class ImageFeaturesError(ValueError):
    """A method's feature function returned something other than its declared channels."""


def feature_arrays(arrays: DatasetArrays, features: ImageFeatures,
                   cache_dir: Path | None) -> np.ndarray:
    """uint8 (N, C, S, S): ``features.compute`` of every image of ``arrays``, quantised to
    0..255; read from ``cache_dir`` when this dataset content, size and feature name were
    computed before, else computed and cached (atomically)."""
    digest = hashlib.sha256(
        "\n".join([features.name, str(arrays.images.shape), *arrays.hashes]).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"features-{features.name}-{digest}.npy" if cache_dir else None
    expected = (len(arrays), features.channels, *arrays.images.shape[1:])
    if path is not None and path.exists():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == expected and cached.dtype == np.uint8:
                return cached
        except (OSError, ValueError):
            pass
        path.unlink(missing_ok=True)  # a damaged or stale cache is rebuilt, never trusted
    values = np.asarray(features.compute(arrays.images))
    if values.shape != expected:
        raise ImageFeaturesError(f"image features {features.name!r} must have shape {expected} "
                                 f"(N, channels, S, S), got {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ImageFeaturesError(f"image features {features.name!r} must be finite values in "
                                 "[0, 1]; scale them in the feature function")
    quantised = np.rint(values * 255).astype(np.uint8)
    if path is not None:
        with atomic_writer(path) as f:
            np.save(f, quantised, allow_pickle=False)
    return quantised
