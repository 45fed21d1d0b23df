"""Trial results and progress as files in the run folder, for executors whose workers cannot
hand results to the driver directly (cluster jobs) and for `mtlbench collect`.

    results/<trial id>.json      one TrialResult (finished or failed), written atomically
    progress/<trial id>.jsonl    one JSON line per event of a trial ("started", "epoch")

Only the driver (or `mtlbench collect`) writes the store: it reads these files and records
them. A result file stays where it is after it was stored; ``ingest`` compares it with the
store, so reading it twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mtlbench.files import write_text_atomically
from mtlbench.store import Store
from mtlbench.trial import TrialResult

RESULTS_DIR = "results"
PROGRESS_DIR = "progress"


class ResultFileError(RuntimeError):
    """A result file that cannot be read as a TrialResult; the message names the file."""


def result_path(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / RESULTS_DIR / f"{trial_id}.json"


def progress_path(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / PROGRESS_DIR / f"{trial_id}.jsonl"


def write_result(run_dir: str | Path, result: TrialResult) -> Path:
    """Write ``result`` to its file in one rename, so a reader never sees half of it."""
    return write_text_atomically(result_path(run_dir, result.trial_id),
                                 json.dumps(dataclasses.asdict(result)))


def read_result(path: str | Path) -> TrialResult:
    """The TrialResult in ``path``; ResultFileError names the file when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(TrialResult)}
        fields = {k: v for k, v in data.items() if k in known}
        fields.setdefault("key_version", 1)  # written before trial keys had a version
        return TrialResult(**fields)
    except (OSError, ValueError, TypeError) as exc:
        raise ResultFileError(f"result file {path} cannot be read ({exc}); delete it and run "
                              "the trial again") from exc


def result_files(run_dir: str | Path) -> list[Path]:
    """Every result file of the run folder, by name."""
    return sorted((Path(run_dir) / RESULTS_DIR).glob("*.json"))


def ingest(store: Store, run_dir: str | Path) -> tuple[list[TrialResult], list[str]]:
    """Record every result file whose trial the store does not hold in that state yet.

    Returns the results recorded and the problems (unreadable files), which are reported and
    skipped, never raised: one bad file must not keep the others out of the store. A finished
    trial in the store is never replaced by a failed result file.
    """
    stored = store.statuses()
    recorded, problems = [], []
    for path in result_files(run_dir):
        try:
            result = read_result(path)
        except ResultFileError as exc:
            problems.append(str(exc))
            continue
        have = stored.get(result.trial_id)
        if have == "finished" or (have == result.status == "failed"
                                  and store.error_of(result.trial_id) == result.error):
            continue
        store.record(result)
        stored[result.trial_id] = result.status
        recorded.append(result)
    return recorded, problems


def append_progress(run_dir: str | Path, trial_id: str, event: dict[str, Any]) -> None:
    """Append one event line to the trial's progress file (one write: lines stay whole)."""
    path = progress_path(run_dir, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(event) + "\n")


class ProgressReader:
    """Reads the lines added to a progress file since the last call (none while it is
    missing); a line still being written is left for the next call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        events = []
        for line in complete.decode(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a damaged line (a job killed mid-write) costs one progress tick
        return events
