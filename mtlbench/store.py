"""The results store: one SQLite file per run folder, the source of truth for every table.

A finished trial is written in one transaction with its per-image rows, per-fold metrics,
per-epoch curve and predicted masks (and its fold's gallery images, kept once per dataset, size
and case), so a crash never leaves half a trial. Queries are parameterised.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtlbench.trial import TrialResult

# Version 1 plus the predictions and case_images tables: additive (CREATE TABLE IF NOT EXISTS
# adds them to an old store, and an older mtlbench ignores them); their trials simply have no
# predictions. Version 2 (mtlbench 0.2) adds three columns to ``trials``: the trial key's
# version (mtlbench.identity), the method's knob values and their variant text. A version-1
# store is migrated when opened (ALTER TABLE ADD COLUMN: its trials get key version 1 and no
# knobs); mtlbench 0.1, which would write rows without those columns, refuses a version-2 store.
# Schema step "case fields" (mtlbench 0.2, BUS-BRA): the case_fields table, what a dataset
# records about each case (BI-RADS, scanner), keyed by dataset and case id. Additive like the
# predictions table (CREATE TABLE IF NOT EXISTS; an older mtlbench ignores it), so it needs no
# version of its own.
# Version 3 (issue 20) adds the column ``balancing`` to ``trials``: the task balancing
# (mtlbench.balancing). An older store is migrated when opened (ALTER TABLE ADD COLUMN: its
# trials get ``fixed``, the only balancing there was); an mtlbench of schema 2, which would
# show rows of different balancings as one, refuses a version-3 store.
# Version 4 adds ``balancing_knobs_json``: the balancing's knob values away from its defaults
# (the trial key's ``balancing_knobs``; mtlbench.balancing.knobs), '{}' at the defaults and in a
# migrated store; an mtlbench of schema 3, which would show ``dwa [temperature=3.0]`` and
# ``dwa`` as one row, refuses a version-4 store.
# Version 5 (issue 21) adds ``test_dataset`` to ``trials``: "" for a trial scored on its own
# test fold, else the external dataset a run's kept model (or, with fold -1, the ensemble of
# its fold models) was evaluated on (``mtlbench evaluate``). Older stores are migrated when
# opened (their trials get ""); an mtlbench of schema 4, which would show external results
# as cross-validation, refuses a version-5 store.
SCHEMA_VERSION = 5
_ADDED_TRIAL_COLUMNS = (("key_version", "INTEGER NOT NULL DEFAULT 1"),
                     ("knobs_json", "TEXT NOT NULL DEFAULT '{}'"),
                     ("variant", "TEXT NOT NULL DEFAULT ''"),
                     ("balancing", "TEXT NOT NULL DEFAULT 'fixed'"),
                     ("balancing_knobs_json", "TEXT NOT NULL DEFAULT '{}'"),
                     ("test_dataset", "TEXT NOT NULL DEFAULT ''"))
STORE_NAME = "mtlbench.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, method TEXT NOT NULL, fold INTEGER NOT NULL, seed INTEGER NOT NULL,
    protocol_name TEXT NOT NULL, protocol_hash TEXT NOT NULL, protocol_json TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '',
    selected_epoch INTEGER, resumed_from_epoch INTEGER,
    profile_json TEXT, timing_json TEXT, env_json TEXT,
    recorded_at REAL NOT NULL,
    key_version INTEGER NOT NULL DEFAULT 1, knobs_json TEXT NOT NULL DEFAULT '{}',
    variant TEXT NOT NULL DEFAULT '', balancing TEXT NOT NULL DEFAULT 'fixed',
    balancing_knobs_json TEXT NOT NULL DEFAULT '{}',
    test_dataset TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS fold_metrics (
    trial_id TEXT NOT NULL REFERENCES trials(trial_id) ON DELETE CASCADE,
    metric TEXT NOT NULL, value REAL, PRIMARY KEY (trial_id, metric)
);
CREATE TABLE IF NOT EXISTS image_metrics (
    trial_id TEXT NOT NULL REFERENCES trials(trial_id) ON DELETE CASCADE,
    case_id TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (trial_id, case_id, metric)
);
CREATE TABLE IF NOT EXISTS curves (
    trial_id TEXT NOT NULL REFERENCES trials(trial_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (trial_id, epoch, metric)
);
CREATE TABLE IF NOT EXISTS predictions (
    trial_id TEXT NOT NULL REFERENCES trials(trial_id) ON DELETE CASCADE,
    case_id TEXT NOT NULL, mask_png TEXT NOT NULL,
    PRIMARY KEY (trial_id, case_id)
);
CREATE TABLE IF NOT EXISTS case_images (
    dataset TEXT NOT NULL, image_size INTEGER NOT NULL, case_id TEXT NOT NULL,
    label INTEGER NOT NULL, image_png TEXT NOT NULL, mask_png TEXT NOT NULL,
    PRIMARY KEY (dataset, image_size, case_id)
);
CREATE TABLE IF NOT EXISTS case_fields (
    dataset TEXT NOT NULL, case_id TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (dataset, case_id, field)
);
"""


class StoreError(RuntimeError):
    """The store cannot be used as it is (written by a newer mtlbench, corrupt, ...)."""


class Store:
    """Results of all trials of one run folder.

    ``Store(path)`` opens it for writing (created and migrated as needed);
    ``Store.read(path)`` opens it read-only: it creates and changes nothing, works on a
    read-only file and folder, and refuses a file that is no mtlbench store.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._copy_dir: str | None = None
        if readonly:
            self._db, self._copy_dir = _connect_read_only(self.path)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
            with self._transaction():
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(f"store {self.path} was written by a newer mtlbench "
                                     f"(schema {row[0]} > {SCHEMA_VERSION}); upgrade mtlbench "
                                     "to read it")
                self._migrate()
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise damaged_store(self.path, exc) from exc
        except StoreError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Add the columns of schemas 2 to 5 to an older store."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(trials)")}
        for name, decl in _ADDED_TRIAL_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE trials ADD COLUMN {name} {decl}")

    @classmethod
    def in_run_dir(cls, run_dir: str | Path) -> Store:
        return cls(Path(run_dir) / STORE_NAME)

    @classmethod
    def read(cls, path: str | Path) -> Store:
        """The store at ``path`` (a store file, or a run folder holding one), read-only."""
        path = Path(path)
        return cls(path / STORE_NAME if path.is_dir() else path, readonly=True)

    def check_writable(self) -> None:
        """StoreError unless the store passes SQLite's quick check and takes a write (in a
        transaction rolled back): a damaged or read-only store stops a run before training."""
        try:
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('write_check', ?)",
                                 (str(time.time()),))
            finally:
                self._db.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"store {self.path} cannot take results ({exc}). Nothing was trained. If it "
                "is damaged, move it away (mtlbench leaderboard --out on a copy still reads "
                "what it can) and run again with another --out; if it is read-only, give "
                "this user write access to the file and its folder") from None

    def close(self) -> None:
        self._db.close()
        if self._copy_dir is not None:
            shutil.rmtree(self._copy_dir, ignore_errors=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def finished_ids(self) -> set[str]:
        rows = self._db.execute("SELECT trial_id FROM trials WHERE status='finished'")
        return {r[0] for r in rows}

    def finished_protocols(self) -> dict[str, str]:
        """protocol hash -> protocol JSON of the finished trials (one of each hash)."""
        return dict(self._db.execute(
            "SELECT protocol_hash, protocol_json FROM trials WHERE status='finished' "
            "GROUP BY protocol_hash"))

    def statuses(self) -> dict[str, str]:
        """trial id -> status ("finished" or "failed") of every trial in the store."""
        return dict(self._db.execute("SELECT trial_id, status FROM trials"))

    def error_of(self, trial_id: str) -> str:
        """The recorded reason a trial failed ("" when it did not, or is not in the store)."""
        row = self._db.execute("SELECT error FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
        return row[0] if row else ""

    def record(self, result: TrialResult) -> None:
        """Write one trial atomically; a re-run of the same trial replaces its old record."""
        with self._transaction():
            db = self._db
            db.execute("DELETE FROM trials WHERE trial_id=?", (result.trial_id,))
            db.execute(
                "INSERT INTO trials (trial_id, dataset, method, fold, seed, protocol_name, "
                "protocol_hash, protocol_json, status, error, selected_epoch, "
                "resumed_from_epoch, profile_json, timing_json, env_json, recorded_at, "
                "key_version, knobs_json, variant, balancing, balancing_knobs_json, "
                "test_dataset) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (result.trial_id, result.dataset, result.method, result.fold, result.seed,
                 result.protocol.get("name", ""), result.protocol_hash,
                 json.dumps(result.protocol, sort_keys=True), result.status, result.error,
                 result.selected_epoch, result.resumed_from_epoch, json.dumps(result.profile),
                 json.dumps(result.timing), json.dumps(result.env), time.time(),
                 result.key_version, json.dumps(result.knobs, sort_keys=True), result.variant,
                 result.balancing, json.dumps(result.balancing_knobs, sort_keys=True),
                 result.test_dataset),
            )
            db.executemany("INSERT INTO fold_metrics VALUES (?,?,?)",
                           [(result.trial_id, k, _num(v)) for k, v in result.fold_metrics.items()])
            db.executemany(
                "INSERT INTO image_metrics VALUES (?,?,?,?)",
                [(result.trial_id, row["case_id"], k, _num(v))
                 for row in result.image_rows for k, v in row.items() if k != "case_id"])
            db.executemany(
                "INSERT INTO curves VALUES (?,?,?,?)",
                [(result.trial_id, rec["epoch"], k, _num(v))
                 for rec in result.curve for k, v in rec.items() if k != "epoch"])
            db.executemany("INSERT INTO predictions VALUES (?,?,?)",
                           [(result.trial_id, case_id, png)
                            for case_id, png in result.predictions.items()])
            # The same case of the same dataset and size is the same image in every trial.
            size = int(result.protocol.get("image_size", 0))
            db.executemany(
                "INSERT OR REPLACE INTO case_images VALUES (?,?,?,?,?,?)",
                [(result.dataset, size, case_id, int(c["label"]), c["image"], c["mask"])
                 for case_id, c in result.gallery.items()])

    def record_case_fields(self, dataset: str, fields: dict[str, dict[str, str]]) -> None:
        """Keep what ``dataset`` records about its cases (case id -> field -> value), replacing
        what was kept for it before, in one transaction."""
        with self._transaction():
            self._db.execute("DELETE FROM case_fields WHERE dataset=?", (dataset,))
            self._db.executemany("INSERT INTO case_fields VALUES (?,?,?,?)",
                                 [(dataset, case_id, name, str(value))
                                  for case_id, values in fields.items()
                                  for name, value in values.items()])

    def case_fields(self, dataset: str) -> dict[str, dict[str, str]]:
        """case id -> field -> value kept for ``dataset`` (empty for a dataset that records
        none, or a store from before case fields, read as it is)."""
        out: dict[str, dict[str, str]] = {}
        try:
            rows = self._db.execute("SELECT case_id, field, value FROM case_fields "
                                    "WHERE dataset=?", (dataset,)).fetchall()
        except sqlite3.OperationalError:
            return {}
        for case_id, name, value in rows:
            out.setdefault(case_id, {})[name] = value
        return out

    def rename_trial(self, old_id: str, new_id: str, dataset: str) -> bool:
        """Give a stored trial a new id and dataset name, with everything recorded under it
        (and its dataset's gallery images), in one transaction: for trials stored under an
        older identity. False, changing nothing, when ``old_id`` is not stored or ``new_id``
        already is."""
        with self._transaction():
            db = self._db
            rows = dict(db.execute("SELECT trial_id, dataset FROM trials WHERE trial_id IN "
                                   "(?, ?)", (old_id, new_id)).fetchall())
            if set(rows) != {old_id}:
                return False
            db.execute("PRAGMA defer_foreign_keys = ON")  # children follow before the commit
            db.execute("UPDATE trials SET trial_id=?, dataset=? WHERE trial_id=?",
                       (new_id, dataset, old_id))
            for table in ("fold_metrics", "image_metrics", "curves", "predictions"):
                db.execute(f"UPDATE {table} SET trial_id=? WHERE trial_id=?", (new_id, old_id))
            db.execute("UPDATE OR IGNORE case_images SET dataset=? WHERE dataset=?",
                       (dataset, rows[old_id]))
        return True

    def trials(self, status: str | None = "finished") -> list[dict[str, Any]]:
        """Trial rows (with their fold metrics under ``metrics``), oldest first."""
        query = "SELECT * FROM trials" + (" WHERE status=?" if status else "")
        cur = self._db.execute(query + " ORDER BY recorded_at", (status,) if status else ())
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        metrics: dict[str, dict[str, float]] = {}
        for trial_id, metric, value in self._db.execute("SELECT * FROM fold_metrics"):
            metrics.setdefault(trial_id, {})[metric] = value
        for row in rows:
            for key in ("profile_json", "timing_json", "env_json", "protocol_json",
                        "knobs_json", "balancing_knobs_json"):  # absent from older stores
                row[key[:-5]] = json.loads(row.pop(key, None) or "{}")
            row.setdefault("key_version", 1)
            row.setdefault("variant", "")
            row.setdefault("balancing", "fixed")  # a store from before balancings, read as is
            row.setdefault("test_dataset", "")  # a store from before external tests
            row["metrics"] = metrics.get(row["trial_id"], {})
        return rows

    def long_rows(self, table: str) -> list[tuple]:
        """Every row of ``image_metrics`` (trial id, case id, metric, value), ``fold_metrics``
        (trial id, metric, value) or ``curves`` (trial id, epoch, metric, value): the long
        form that mtlbench.results turns into DataFrames with one query per table."""
        if table not in ("image_metrics", "fold_metrics", "curves"):
            raise ValueError(f"no long table {table!r}")
        return self._db.execute(f"SELECT * FROM {table}").fetchall()

    def image_metrics(self, trial_id: str) -> dict[str, dict[str, float]]:
        """case id -> metric -> value for one trial."""
        out: dict[str, dict[str, float]] = {}
        for case_id, metric, value in self._db.execute(
                "SELECT case_id, metric, value FROM image_metrics WHERE trial_id=?", (trial_id,)):
            out.setdefault(case_id, {})[metric] = value
        return out

    def predictions(self, trial_id: str) -> dict[str, str]:
        """case id -> base64 PNG of the predicted mask, for one trial (empty when the trial
        has no segmentation or was recorded before predictions were stored)."""
        try:
            return dict(self._db.execute(
                "SELECT case_id, mask_png FROM predictions WHERE trial_id=?", (trial_id,)))
        except sqlite3.OperationalError:  # a store from before predictions, read as it is
            return {}

    def case_images(self, dataset: str, image_size: int) -> dict[str, dict[str, Any]]:
        """case id -> {"label", "image", "mask"} (base64 PNGs) of the gallery cases stored for
        ``dataset`` at ``image_size``."""
        try:
            rows = self._db.execute(
                "SELECT case_id, label, image_png, mask_png FROM case_images "
                "WHERE dataset=? AND image_size=?", (dataset, image_size)).fetchall()
        except sqlite3.OperationalError:  # a store from before the gallery, read as it is
            return {}
        return {case_id: {"label": label, "image": image, "mask": mask}
                for case_id, label, image, mask in rows}

    def curve(self, trial_id: str) -> list[dict[str, float]]:
        """Per-epoch records of one trial."""
        epochs: dict[int, dict[str, float]] = {}
        for epoch, metric, value in self._db.execute(
                "SELECT epoch, metric, value FROM curves WHERE trial_id=? ORDER BY epoch",
                (trial_id,)):
            epochs.setdefault(epoch, {"epoch": epoch})[metric] = value
        return list(epochs.values())


def damaged_store(path: Path | str, exc: Exception) -> StoreError:
    """The error for a store SQLite cannot read or write, with what to do about it."""
    return StoreError(f"{path} is not a readable mtlbench store ({exc}): it may be damaged; "
                      "nothing was done with it. Move it away or use another --out folder "
                      "(`sqlite3 FILE .recover` may save what it holds)")


def _connect_read_only(path: Path) -> tuple[sqlite3.Connection, str | None]:
    """A read-only connection that creates and changes nothing where the store is, and the
    temporary folder it reads from, if any. ``mode=ro`` first. A WAL store whose ``-shm``
    file cannot be created (a read-only folder) is read with ``immutable=1`` when its ``-wal``
    is empty (nothing is in it to miss), else from a copy of both files in a temporary folder
    (removed on close). StoreError for a missing file or one that is no mtlbench store."""
    if not path.is_file():
        raise StoreError(f"{path}: no store there; point at a run folder or its "
                         f"{STORE_NAME}")
    wal = path.with_name(path.name + "-wal")
    last: Exception | None = None
    copy_dir: str | None = None
    for attempt in ("ro", "fallback"):
        source = path
        query = "?mode=ro"
        if attempt == "fallback":
            if wal.is_file() and wal.stat().st_size > 0:
                copy_dir = tempfile.mkdtemp(prefix="mtlbench-store-")
                source = Path(copy_dir) / path.name
                shutil.copyfile(path, source)
                shutil.copyfile(wal, Path(copy_dir) / wal.name)
            else:
                query = "?mode=ro&immutable=1"
        try:
            db = sqlite3.connect(source.resolve().as_uri() + query, uri=True, timeout=30,
                                 isolation_level=None)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                                "WHERE type='table'")}
        except sqlite3.OperationalError as exc:
            last = exc
            continue
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not a readable mtlbench store ({exc}); is it a "
                             "store, and is it intact?") from None
        if not {"meta", "trials", "fold_metrics"} <= tables:
            db.close()
            raise StoreError(f"{path} is not an mtlbench store (it has no trials table); "
                             "point at a run folder or its mtlbench.sqlite")
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            db.close()
            raise StoreError(f"store {path} was written by a newer mtlbench (schema "
                             f"{row[0]} > {SCHEMA_VERSION}); upgrade mtlbench to read it")
        return db, copy_dir
    if copy_dir is not None:
        shutil.rmtree(copy_dir, ignore_errors=True)
    raise StoreError(f"store {path} cannot be opened for reading ({last})")


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value else None  # NaN is stored as NULL
