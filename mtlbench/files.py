"""Writing small text files so that a reader, or a process killed meanwhile, never sees half."""

from __future__ import annotations

import os
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The temporary file this process writes ``path`` through: ``.NAME.PID.tmp`` beside it
    (the pid tells a leftover of a killed process from a live writer's)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temps(folder: Path, pattern: str) -> None:
    """Delete the temporary files matching ``pattern`` in ``folder`` whose writer process is
    gone (killed mid-write); those of a live process on this machine are left alone."""
    for tmp in folder.glob(pattern):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
