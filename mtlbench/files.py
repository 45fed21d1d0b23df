"""Writing files so that a reader, or a process killed meanwhile, never sees half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temp_path(path: Path) -> Path:
    """The temporary file this process writes ``path`` through: ``.NAME.PID.tmp`` beside it
    (the pid tells a leftover of a killed process from a live writer's)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_writer(path: str | Path, mode: str = "wb", encoding: str | None = None
                  ) -> Iterator[IO]:
    """A file to write ``path`` through: the temporary ``temp_path(path)``, fsynced and renamed
    over ``path`` when the block ends, removed when it raises. Every file mtlbench writes goes
    through here (checkpoints, caches, splits, results, leaderboards, downloads), so a reader
    or a process killed meanwhile sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through ``atomic_writer``."""
    with atomic_writer(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``atomic_writer``."""
    with atomic_writer(path) as handle:
        handle.write(data)
    return Path(path)


def temp_files(path: str | Path) -> list[Path]:
    """The temporary files of writes of ``path`` (any process's, live or killed)."""
    path = Path(path)
    return list(path.parent.glob(f".{path.name}.*.tmp"))


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
