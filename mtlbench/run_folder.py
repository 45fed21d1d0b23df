"""The run folder of `mtlbench run`: its lock, and the errors of a folder that cannot be used.

Kept apart from the runner so that the commands that only read a run folder (``leaderboard``,
``compare``) import neither it nor torch.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another mtlbench run is using the same output folder."""


class RunFolderError(RuntimeError):
    """The run folder (--out) cannot be made or written; the message says why."""



@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process; a second run on it stops at once. RunFolderError
    when the folder cannot be made or written (a file of that name, no permission, a name too
    long)."""
    path = run_dir / ".lock"
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunFolderError(f"--out {run_dir}: a file of that name exists; --out names a "
                                 "run folder (give another name)")
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise RunFolderError(f"--out {run_dir}: the run folder cannot be used "
                             f"({exc.strerror or exc}); choose a folder this user may "
                             "write") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"{run_dir} is in use by {holder}; wait for it to finish or use another "
                "--out folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"mtlbench run (pid {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
