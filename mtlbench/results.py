"""Results as data: pandas DataFrames over a run folder's store, read-only.

    from mtlbench.results import open_results

    with open_results("mtlbench-runs") as run:   # a run folder or a store file
        board = run.leaderboard()                # a row per (dataset, protocol, method, balancing)
        images = run.images()                    # one row per (trial, test image)

Every frame carries the identifying columns of its trials (``KEY_COLUMNS``) so frames join on
``trial_id`` and group by dataset, protocol, method (with its knobs: ``variant``) and task
balancing (``balancing``, with its knobs away from their defaults: ``balancing_variant``);
``test_dataset`` is "" for the cross-validation and names the external test set of
`mtlbench evaluate`'s results (``fold`` -1: the fold models' ensemble). Metric columns keep
the store's names: ``strict.dice``, ``paper.hd95``, ``cls.acc``, ... in the store's units
(fractions for Dice, Jaccard, ACC; pixels for HD95, ASD); ``leaderboard()`` is in the tables'
display units (mtlbench.metric_table). The store is opened read-only
(``Store.read``): nothing is created or changed, a read-only folder works.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtlbench.identity import balancing_label, variant_text
from mtlbench.report import entry_name, leaderboard, to_records
from mtlbench.store import Store

#: The columns that identify a trial in every frame.
KEY_COLUMNS = ["trial_id", "dataset", "protocol", "protocol_hash", "method", "variant",
               "balancing", "balancing_variant", "fold", "seed", "test_dataset"]


class Results:
    """The results of one store as DataFrames (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.store = Store.read(path)
        self._trials = None

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _trial_rows(self) -> list[dict]:
        if self._trials is None:
            self._trials = self.store.trials(status=None)
        return self._trials

    def trials(self) -> pd.DataFrame:
        """One row per trial, finished or failed: its key, status, error, selected epoch,
        timing (train_s, eval_s, wall_s), size (params, flops, macs), precision used, device,
        knobs (a dict) and the whole protocol and env (dicts)."""
        rows = []
        for t in self._trial_rows():
            env, timing, profile = t["env"], t["timing"], t["profile"]
            precision = env.get("precision")
            rows.append({
                **self._key(t), "status": t["status"], "error": t["error"],
                "key_version": t["key_version"], "selected_epoch": t["selected_epoch"],
                "resumed_from_epoch": t["resumed_from_epoch"],
                "train_s": timing.get("train_s"), "eval_s": timing.get("eval_s"),
                "wall_s": timing.get("wall_s"), "params": profile.get("params"),
                "flops": profile.get("flops"), "macs": profile.get("macs"),
                "precision": precision.get("used") if isinstance(precision, dict) else None,
                "device": env.get("device"), "recorded_at": t["recorded_at"],
                "knobs": t["knobs"], "protocol_settings": t["protocol"], "env": env,
            })
        return pd.DataFrame(rows, columns=[*KEY_COLUMNS, "status", "error", "key_version",
                                           "selected_epoch", "resumed_from_epoch", "train_s",
                                           "eval_s", "wall_s", "params", "flops", "macs",
                                           "precision", "device", "recorded_at", "knobs",
                                           "protocol_settings", "env"])

    def folds(self) -> pd.DataFrame:
        """One row per finished trial (a fold), one column per fold metric."""
        return self._wide("fold_metrics", ["trial_id"])

    def images(self) -> pd.DataFrame:
        """One row per (finished trial, test image): ``case_id``, the image's ``label``,
        ``pred_label``, ``prob_positive`` and its metrics in both modes (``strict.*``,
        ``paper.*``)."""
        return self._wide("image_metrics", ["trial_id", "case_id"])

    def curves(self) -> pd.DataFrame:
        """One row per (finished trial, epoch): the training losses, learning rate, speed and
        (with the paper's checkpoint selection) the test-fold scores."""
        return self._wide("curves", ["trial_id", "epoch"])

    def leaderboard(self, mode: str = "strict",
                    references: dict[str, str] | None = None) -> pd.DataFrame:
        """The leaderboard as the tables show it (``mtlbench leaderboard --format json``): one
        row per (dataset, protocol, method with its knobs), ``<metric>_mean``/``_std`` in
        display units over the trials (folds × seeds), ``<metric>_seed_std`` (the spread of
        the seeds' means, with two or more seeds), ``folds``, ``seeds``, ``trials``, the
        multi-task gain ``delta_m`` in % (None where a reference did not run; ``references``
        as ``mtlbench leaderboard --delta-ref``: {"seg": NAME, "cls": NAME}), size and
        precision."""
        frame = pd.DataFrame(to_records(leaderboard(self.store, mode, references), mode))
        if not frame.empty:
            frame.insert(2, "entry", [
                entry_name(m, v or "", balancing_label(b, k or {}), t, e)
                for m, v, b, k, t, e in zip(frame["method"], frame["variant"], frame["balancing"],
                                            frame["balancing_knobs"], frame["test_dataset"],
                                            frame["ensemble"], strict=True)])
        return frame

    def _key(self, t: dict) -> dict:
        return {"trial_id": t["trial_id"], "dataset": t["dataset"],
                "protocol": t["protocol_name"], "protocol_hash": t["protocol_hash"],
                "method": t["method"], "variant": t.get("variant") or "",
                "balancing": t.get("balancing") or "fixed",
                "balancing_variant": variant_text(t.get("balancing_knobs") or {}, {}),
                "fold": t["fold"], "seed": t["seed"], "test_dataset": t.get("test_dataset") or ""}

    def _wide(self, table: str, index: list[str]) -> pd.DataFrame:
        """A long store table pivoted to one column per metric, with the trials' keys."""
        long = pd.DataFrame(self.store.long_rows(table), columns=[*index, "metric", "value"])
        finished = pd.DataFrame([self._key(t) for t in self._trial_rows()
                                 if t["status"] == "finished"], columns=KEY_COLUMNS)
        if long.empty:
            return finished.iloc[0:0].reindex(columns=[*KEY_COLUMNS, *index[1:]])
        # unstack, not pivot_table(dropna=False): that crosses every trial with every case id
        # of the store (rows of NaN for the other folds' images); the store's primary keys
        # make (index, metric) unique.
        wide = long.set_index([*index, "metric"])["value"].unstack("metric").reset_index()
        wide.columns.name = None
        return finished.merge(wide, on="trial_id", how="inner")


def open_results(path: str | Path) -> Results:
    """The results of a run folder (or a store file), read-only."""
    return Results(path)
