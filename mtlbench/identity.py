"""What identifies a trial and a leaderboard row: one versioned key, designed once.

A trial's id is the hash of its key's fields. **Version 2** (mtlbench 0.2) holds the dataset
(with its options), the method, the method's knob values, the fold, the seed and the protocol
hash. Later versions add fields (training seeds as replicates, a task-balancing, an external
test dataset, a dataset's own split): each such field is added to ``TrialKey`` with a default,
and enters the hashed form only when it differs from that default, so every id computed
before the field existed stays what it was: adding a field is not a break. A change of what an
existing field means bumps ``KEY_VERSION``.

**Version 1** (mtlbench 0.1) hashed dataset, method, fold, protocol hash and seed, without a
version field and without knobs; its protocol hash also covered settings that are knobs now.
Trials of version 1 stay readable in old stores (``key_version`` 1 there) and show as rows of
their own; they are never matched to a version-2 trial.

The task balancing (``balancing``, issue 20: how the task losses are combined into the
update; ``mtlbench.balancing``) is such a field: its default ``fixed`` (the protocol's own
loss) is left out of the hashed form, so trials from before balancings keep their ids. So
are the balancing's knobs (``balancing_knobs``, ``mtlbench.balancing.knobs``): the key holds
only the values that differ from the balancing's defaults, and enters them only when there are
any, so a balancing at its defaults keeps the id it had before balancings had knobs.

An evaluation on an external test dataset (issue 21: ``mtlbench evaluate``) is the trained
trial's key plus ``test_dataset``, the test set's identity; its default "" (the trial's own
test fold) is left out of the hashed form, so every trial id from before stays. The ensemble
of a run's fold models is keyed with ``fold`` ``ENSEMBLE_FOLD`` (-1: all folds).

A leaderboard row is a trial key without its replicates (the fold today; the seed too once
seeds are replicates): ``RowKey``. Its ``variant`` names the knobs that differ from the
method's defaults under the protocol, so tables can say "mynet [aux_weight=0.5]" beside
"mynet", and "mynet · dwa [temperature=3.0]" beside "mynet · dwa" (``balancing_label``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

KEY_VERSION = 2

#: The balancing of a key that names none (mtlbench.balancing.DEFAULT_BALANCING).
DEFAULT_BALANCING = "fixed"

#: The fold of an evaluation by the ensemble of every fold's model.
ENSEMBLE_FOLD = -1

Knobs = tuple[tuple[str, Any], ...]


def knobs_tuple(knobs: dict[str, Any] | Knobs) -> Knobs:
    """Knob values as a sorted tuple of (name, value): hashable, stable."""
    items = knobs.items() if isinstance(knobs, dict) else knobs
    return tuple(sorted((str(k), v) for k, v in items))


@dataclass(frozen=True)
class RowKey:
    """One leaderboard row: a method (with its knob values) and a task balancing on a dataset
    under a protocol."""

    dataset: str
    protocol_hash: str
    method: str
    knobs: Knobs = ()
    balancing: str = DEFAULT_BALANCING
    balancing_knobs: Knobs = ()  # the balancing's knob values away from its defaults
    test_dataset: str = ""  # "": cross-validation on ``dataset``; else an external test set
    ensemble: bool = False  # an external test by the ensemble of the fold models

    @property
    def text(self) -> str:
        """A stable string of the key (for matching rows of two leaderboards); the default
        balancing, a balancing's default knobs and the test set are left out, so rows from
        before them match."""
        key = [self.dataset, self.protocol_hash, self.method, dict(self.knobs)]
        if self.balancing != DEFAULT_BALANCING:
            key.append(self.balancing)
        if self.balancing_knobs:
            key.append(dict(self.balancing_knobs))
        if self.test_dataset:
            key.append({"test": self.test_dataset, "ensemble": self.ensemble})
        return json.dumps(key, sort_keys=True, default=str)


@dataclass(frozen=True)
class TrialKey:
    """The fields that identify one trial (version ``KEY_VERSION``)."""

    dataset: str
    method: str
    fold: int
    seed: int
    protocol_hash: str
    knobs: Knobs = ()
    balancing: str = DEFAULT_BALANCING
    # The balancing's knob values that differ from its defaults (empty at the defaults).
    balancing_knobs: Knobs = ()
    test_dataset: str = ""

    def fields(self) -> dict[str, Any]:
        """The hashed form. A field added later joins it only away from its default."""
        fields = {"v": KEY_VERSION, "dataset": self.dataset, "method": self.method,
                  "fold": self.fold, "seed": self.seed, "protocol": self.protocol_hash,
                  "knobs": dict(self.knobs)}
        if self.balancing != DEFAULT_BALANCING:
            fields["balancing"] = self.balancing
        if self.balancing_knobs:
            fields["balancing_knobs"] = dict(self.balancing_knobs)
        if self.test_dataset:
            fields["test_dataset"] = self.test_dataset
        return fields

    @property
    def trial_id(self) -> str:
        text = json.dumps(self.fields(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def row(self) -> RowKey:
        return RowKey(self.dataset, self.protocol_hash, self.method, self.knobs, self.balancing,
                      self.balancing_knobs, self.test_dataset, self.fold == ENSEMBLE_FOLD)


def variant_text(knobs: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The knobs that differ from ``defaults``, as ``name=value`` joined by commas ("" when
    none): what tells two rows of one method apart."""
    return ", ".join(f"{k}={v}" for k, v in sorted(knobs.items()) if defaults.get(k) != v)


def balancing_label(balancing: str, knobs: dict[str, Any] | Knobs = ()) -> str:
    """A balancing as rows name it: ``dwa``, or with knobs away from its defaults (``knobs``:
    those values), ``dwa [temperature=3.0]``."""
    text = variant_text(dict(knobs), {})
    return f"{balancing} [{text}]" if text else balancing
