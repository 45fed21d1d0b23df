"""Five-fold splits: computed once, saved as JSON (case id + content hash per fold), reused.

``stratified-group`` (default): folds stratified by class, and a group (patient or
near-duplicate cluster) never lands on both sides. ``paper``: the reference paper's code's
split (spec §1), sklearn KFold(shuffle=True, random_state=seed) over the cases sorted
naturally by id inside each class, classes in label order; not stratified and blind to groups.
``official``: the partition the dataset ships (each case's ``fold``), followed as it is; its
folds in natural order of their names (BUS-BRA's kFold 1 is fold 0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mtlbench.data.prepare import DatasetArrays
from mtlbench.files import write_text_atomically

SPLIT_FORMAT = 1


class SplitMismatchError(ValueError):
    """A saved split does not fit the data; the message names the file and what to do."""


class TooFewCasesError(ValueError):
    """The dataset has too few cases or groups for the protocol's folds; says how many."""


class PartitionError(ValueError):
    """``split=official`` cannot follow the dataset's own partition (none, cases without a
    fold, another number of folds than the protocol's); says what to do."""


def make_folds(arrays: DatasetArrays, n_folds: int, method: str, seed: int) -> list[list[int]]:
    """Test-set case indices of each fold; every case is in exactly one test set."""
    if method == "official":
        return official_folds(arrays, n_folds)
    # imported here: scikit-learn takes seconds to import, and the commands that only read
    # results (leaderboard, compare) import this module for its errors
    from sklearn.model_selection import KFold, StratifiedGroupKFold

    n = len(arrays)
    units, what = ((n, "case(s)") if method == "paper"
                   else (len(set(arrays.groups)), "group(s) (patients or near-duplicate "
                                                  "clusters)"))
    if units < n_folds:
        raise TooFewCasesError(f"dataset {arrays.name!r} has {n} case(s), {units} {what}: too "
                               f"few for {n_folds} folds; add cases or set fewer folds "
                               f"(--set folds=N, N >= 2)")
    if method == "paper":
        order = sorted(range(n), key=lambda i: (arrays.labels[i], _natural_key(arrays.ids[i])))
        kfold = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return [sorted(order[j] for j in test) for _, test in kfold.split(order)]
    if method == "stratified-group":
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(np.zeros(n), arrays.labels, groups=np.array(arrays.groups))
        return [sorted(int(i) for i in test) for _, test in folds]
    raise ValueError(f"unknown split method {method!r}")


def official_folds(arrays: DatasetArrays, n_folds: int) -> list[list[int]]:
    """Test-set case indices of each fold of the dataset's own partition, folds in natural
    order of their names; PartitionError unless every case has a fold and there are
    ``n_folds`` of them."""
    if not arrays.folds:
        raise PartitionError(f"dataset {arrays.name!r}: its files give no partition of their "
                             "own (a folder dataset's: a fold column, named by the option "
                             "fold_column); use split=stratified-group (the default) or "
                             "split=paper")
    missing = [case_id for case_id, fold in zip(arrays.ids, arrays.folds, strict=True)
               if not fold]
    if missing:
        raise PartitionError(f"dataset {arrays.name!r}: {len(missing)} case(s) have no fold in "
                             f"its partition, e.g. {missing[:3]}; give every case its fold, or "
                             "use split=stratified-group")
    names = sorted(set(arrays.folds), key=_natural_key)
    if len(names) != n_folds:
        raise PartitionError(f"dataset {arrays.name!r}: its own partition has {len(names)} "
                             f"folds ({', '.join(names)}), the protocol asks for {n_folds}; "
                             f"add --set folds={len(names)}")
    return [[i for i, fold in enumerate(arrays.folds) if fold == name] for name in names]


def straddling_groups(arrays: DatasetArrays, folds: list[list[int]]) -> list[list[str]]:
    """The case ids of each group (patient or near-duplicate cluster) whose cases sit in more
    than one test fold: images of one group on both sides of those folds' splits."""
    fold_of = {i: k for k, fold in enumerate(folds) for i in fold}
    members: dict[str, list[int]] = {}
    for i, group in enumerate(arrays.groups):
        members.setdefault(group, []).append(i)
    return [[arrays.ids[i] for i in cases] for cases in members.values()
            if len({fold_of[i] for i in cases}) > 1]


def split_path(split_dir: Path, dataset: str, method: str, n_folds: int, seed: int) -> Path:
    """Where a dataset's split lives; dataset options become part of the file name."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "+", dataset)
    return split_dir / f"{safe}-{method}-k{n_folds}-seed{seed}.json"


def load_or_make_split(path: Path, arrays: DatasetArrays, n_folds: int, method: str,
                       seed: int) -> list[list[int]]:
    """The folds saved at ``path`` (checked against the data), or new ones saved there."""
    if path.exists():
        return read_split(path, arrays, n_folds)
    folds = make_folds(arrays, n_folds, method, seed)
    doc = {
        "format": SPLIT_FORMAT, "dataset": arrays.name, "method": method, "seed": seed,
        "n_folds": n_folds,
        "folds": [[{"id": arrays.ids[i], "hash": arrays.hashes[i]} for i in fold]
                  for fold in folds],
    }
    write_text_atomically(path, json.dumps(doc, indent=1))
    return folds


def read_split(path: Path, arrays: DatasetArrays, n_folds: int) -> list[list[int]]:
    """Folds from a split file; every case must appear once with its current content hash."""
    try:
        doc = json.loads(path.read_text())
        folds_doc = doc["folds"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SplitMismatchError(f"split file {path} is not a valid split ({exc}); delete it "
                                 "to have a new split computed") from None
    if len(folds_doc) != n_folds:
        raise SplitMismatchError(f"split file {path} has {len(folds_doc)} folds, the protocol "
                                 f"asks for {n_folds}")
    index = {case_id: i for i, case_id in enumerate(arrays.ids)}
    seen: set[str] = set()
    folds: list[list[int]] = []
    for fold in folds_doc:
        indices = []
        for entry in fold:
            case_id, digest = entry["id"], entry.get("hash")
            if case_id not in index:
                raise SplitMismatchError(f"split file {path} lists case {case_id!r}, which "
                                         f"dataset {arrays.name!r} does not have")
            if digest and digest != arrays.hashes[index[case_id]]:
                raise SplitMismatchError(
                    f"split file {path}: case {case_id!r} changed since the split was made "
                    "(content hash differs); delete the file to re-split, or restore the data")
            if case_id in seen:
                raise SplitMismatchError(f"split file {path} lists case {case_id!r} twice")
            seen.add(case_id)
            indices.append(index[case_id])
        folds.append(sorted(indices))
    missing = [c for c in arrays.ids if c not in seen]
    if missing:
        raise SplitMismatchError(f"split file {path} misses {len(missing)} case(s) of "
                                 f"{arrays.name!r}, e.g. {missing[:3]}; delete it to re-split")
    return folds


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]
