"""Trials a run folder holds under the id an older mtlbench gave them, taken over under the
id they have now, so that a changed identity never orphans a finished trial.

Until issue 22, a dataset option naming a file or folder by absolute path (``folder:csv=/elsewhere/
labels.csv``) entered trial ids as it was written, and moving the file broke resuming; now the
path enters by its name alone (mtlbench.data.prepare.dataset_identity). A trial stored under
the older id is renamed in the store when a run plans it again, so it counts as done and its
leaderboard row is the current one. Specs without an absolute path had the same id before.
"""

from __future__ import annotations

import dataclasses

from mtlbench.store import Store
from mtlbench.trial import TrialSpec


def adopt_older_trials(store: Store, specs: list[TrialSpec]) -> list[str]:
    """Rename the stored trials of ``specs`` that carry their older id (their dataset spec as
    given in place of its identity); the notes to show before training."""
    renamed, restarted = 0, []
    for spec in specs:
        if not spec.data_spec or spec.data_spec == spec.dataset:
            continue
        older = dataclasses.replace(spec, dataset=spec.data_spec)
        if store.rename_trial(older.trial_id, spec.trial_id, spec.dataset):
            renamed += 1
        elif older.checkpoint_path.exists() and not spec.checkpoint_path.exists():
            restarted.append(f"{spec.label} (its checkpoint {older.checkpoint_path} is left "
                             "as it was)")
    notes = []
    if renamed:
        notes.append(f"{renamed} stored trial(s) of this dataset were recorded under the id an "
                     "older mtlbench gave them (with the absolute path of a dataset option); "
                     f"they now carry the dataset name {specs[0].dataset!r} and their current "
                     "id, and count as done")
    if restarted:
        notes.append("interrupted under their older id, these trials start again from their "
                     "first epoch: " + "; ".join(restarted))
    return notes
