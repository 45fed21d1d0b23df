"""Checkpoints written in the background, so that a trial can keep one for every epoch.

At an epoch's end the training state is copied to host memory (a snapshot: the optimizer goes
on changing its own tensors in place) and a thread writes the copy to disk while training goes
on. One write at a time: an epoch that ends while the previous checkpoint is still being
written skips its own (the next epoch offers again), so a slow disk or a large model never
stalls training. A crash therefore costs the epoch in progress, and at most the epochs that
went by while one checkpoint was written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtlbench.files import temp_files


def host_copy(obj: Any) -> Any:
    """``obj`` with every tensor in it (through dicts, lists and tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: host_copy(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(value) for value in obj)
    return obj


class CheckpointWriter:
    """Writes one trial's checkpoints in a background thread, one at a time.

    ``offer(make_payload)``: when no write is in flight and ``min_interval_s`` passed since the
    last one started (or since the writer was made), take the snapshot
    (``host_copy(make_payload())``, in the caller's thread) and start writing it with
    ``write(payload)``; otherwise do nothing. Returns whether it started a write. An error of a
    write is raised by the next ``offer`` or by ``close``, which
    waits for the write in flight (use it in a ``finally``).
    """

    def __init__(self, write: Callable[[dict], None], min_interval_s: float = 0.0) -> None:
        self._write = write
        self.min_interval_s = min_interval_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_start = time.perf_counter()  # the interval counts from the trial's start
        self.written = 0
        self.skipped = 0

    def offer(self, make_payload: Callable[[], dict]) -> bool:
        self._raise_error()
        if self._thread is not None and self._thread.is_alive():
            self.skipped += 1
            return False
        if time.perf_counter() - self._last_start < self.min_interval_s:
            return False
        payload = host_copy(make_payload())
        self._last_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, args=(payload,),
                                        name="mtlbench-checkpoint", daemon=True)
        self._thread.start()
        return True

    def close(self) -> None:
        """Wait for the write in flight; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _run(self, payload: dict) -> None:
        try:
            self._write(payload)
            self.written += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread
            self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def checkpoint_temp_files(path: Path) -> list[Path]:
    """The temporary files a write of ``path`` uses (left behind by a killed process)."""
    return temp_files(path)
