"""One fold's data as the training device holds it: the dataset read once (and cached), the
saved split's train and test cases of a trial, and the uint8 tensors the model is fed from,
normalised as the protocol says."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtlbench.cards import DatasetCard
from mtlbench.data.prepare import DatasetArrays, prepare_dataset, resolve_root
from mtlbench.data.splits import load_or_make_split, split_path, straddling_groups
from mtlbench.protocol import Protocol
from mtlbench.trial import TrialSpec


@dataclass
class FoldTensors:
    """One fold's cases as tensors on the training device."""

    images: torch.Tensor  # uint8 (N, 1 + feature channels, S, S)
    masks: torch.Tensor  # uint8 (N, 1, S, S), 0/1
    labels: torch.Tensor  # int64 (N,)


def default_cache_dir() -> Path:
    """Where resized datasets are cached: $MTLBENCH_CACHE, else ~/.cache/mtlbench."""
    base = os.environ.get("MTLBENCH_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtlbench"
    return Path(base)


@functools.lru_cache(maxsize=2)
def load_arrays(card: DatasetCard, data_root: str | None, size: int, cache_dir: str | None,
                options: tuple[tuple[str, str], ...] = ()) -> DatasetArrays:
    """The dataset at ``size``, read once per process (and once per machine via the cache)."""
    root = resolve_root(card, data_root)
    return prepare_dataset(card, root, size,
                           Path(cache_dir) if cache_dir else default_cache_dir(), dict(options))


def saved_folds(spec: TrialSpec, arrays: DatasetArrays) -> list[list[int]]:
    """Every fold's test cases, from the run's saved split (made and saved the first time).

    A split saved by an older mtlbench under the dataset's spec as given (with an absolute
    path in it, see mtlbench.data.prepare.dataset_identity) is taken over under its identity."""
    p = spec.protocol
    folder = Path(spec.run_dir) / "splits"
    path = split_path(folder, spec.dataset, p.split, p.folds, p.split_seed)
    if spec.data_spec and spec.data_spec != spec.dataset and not path.exists():
        older = split_path(folder, spec.data_spec, p.split, p.folds, p.split_seed)
        if older.exists():
            older.replace(path)
    return load_or_make_split(path, arrays, p.folds, p.split, p.split_seed)


def split_notes(spec: TrialSpec, arrays: DatasetArrays) -> list[str]:
    """What to say before training about the spec's split: under ``split=official``, the
    groups (patients, near-duplicate clusters) that the dataset's own folds divide."""
    if spec.protocol.split != "official":
        return []
    divided = straddling_groups(arrays, saved_folds(spec, arrays))
    if not divided:
        return []
    shown = "; ".join(", ".join(ids[:3]) + (" …" if len(ids) > 3 else "") for ids in divided[:3])
    return [f"split=official: {len(divided)} group(s) of images that belong together (one "
            f"patient's, or near duplicates found by `mtlbench data audit`) straddle the folds "
            f"of the dataset's own partition ({shown}{' …' if len(divided) > 3 else ''}): "
            "their images sit on both sides of a fold's split, which may flatter the scores. "
            "The partition is followed as shipped; split=stratified-group keeps every group "
            "in one fold"]


def fold_indices(spec: TrialSpec, arrays: DatasetArrays) -> tuple[list[int], list[int]]:
    """(train, test) case indices of the spec's fold, from the run's saved split."""
    folds = saved_folds(spec, arrays)
    if not 0 <= spec.fold < len(folds):
        raise ValueError(f"fold {spec.fold} does not exist: the protocol has {len(folds)} folds")
    test = folds[spec.fold]
    held_out = set(test)
    return [i for i in range(len(arrays)) if i not in held_out], test


def to_tensors(arrays: DatasetArrays, indices: list[int], device: torch.device,
               features: np.ndarray | None = None) -> FoldTensors:
    """The cases ``indices`` on ``device``; a method's feature channels follow the image's."""
    idx = np.asarray(indices, dtype=np.int64)
    images = arrays.images[idx][:, None]
    if features is not None:
        images = np.concatenate([images, features[idx]], axis=1)
    return FoldTensors(
        images=torch.from_numpy(images).to(device),
        masks=torch.from_numpy(arrays.masks[idx]).unsqueeze(1).to(device),
        labels=torch.from_numpy(arrays.labels[idx]).to(device),
    )


def normalise(images_01: torch.Tensor, p: Protocol) -> torch.Tensor:
    """Protocol normalisation of the gray channel, replicated to the 3 channels the models
    expect; a method's feature channels (already in [0, 1]) follow unchanged."""
    gray = ((images_01[:, :1] - p.norm_mean) / p.norm_std).expand(-1, 3, -1, -1)
    return gray if images_01.shape[1] == 1 else torch.cat([gray, images_01[:, 1:]], dim=1)


def model_input(images_01: torch.Tensor, p: Protocol, channels_last: bool) -> torch.Tensor:
    """The normalised batch in the memory format the model was put in."""
    x = normalise(images_01, p)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
