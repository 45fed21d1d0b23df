"""Checkpoints written in the background, so that a trial can keep one for every epoch.

At an epoch's end the training state is copied to host memory (a snapshot: the optimizer goes
on changing its own tensors in place) and a thread writes the copy to disk while training goes
on. One write at a time: an epoch that ends while the previous checkpoint is still being
written skips its own (the next epoch offers again), so a slow disk or a large model never
stalls training. A crash therefore costs the epoch in progress, and at most the epochs that
went by while one checkpoint was written.

What a checkpoint holds, and writing and reading it (``checkpoint_payload``,
``write_checkpoint``, ``load_checkpoint``), live here too: the model, the loss's and the
optimizer's state, the scheduler, the generators and ``TrainState``, as tensors and plain data
only, so that ``torch.load(weights_only=True)`` reads it without running any code.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.serialization import config as serialization_config

from mtlbench.files import atomic_writer, temp_files
from mtlbench.trial import TrialFailed, TrialSpec


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


@dataclass
class TrainState:
    """What a checkpoint carries besides the model and optimizer."""

    epoch: int = -1
    curve: list | None = None
    best_score: float = -math.inf
    best_epoch: int = -1
    best_model: dict | None = None
    precisions: list | None = None  # the resolved precision of each epoch trained so far

    def __post_init__(self) -> None:
        self.curve = self.curve or []
        self.precisions = self.precisions or []


def checkpoint_payload(spec: TrialSpec, model, loss, optimizer, scheduler, generator,
                       state: TrainState, balancing=None) -> dict:
    """Everything a resumed trial needs, as tensors and plain data (live references: take a
    ``host_copy`` before training goes on); the balancing's state too, when one is given."""
    extra = {} if balancing is None else {"balancing": balancing.state_dict()}
    return {**extra,
        "trial_id": spec.trial_id, "trial": f"{spec.label}, protocol {spec.protocol.hash}",
        "epoch": state.epoch, "curve": list(state.curve),
        "model": model.state_dict(), "loss": loss.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(), "best_score": state.best_score,
        "best_epoch": state.best_epoch, "best_model": state.best_model,
        "precisions": list(state.precisions),
    }


def write_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a reader, or a process that is
    killed meanwhile, sees the previous checkpoint or this one, never a part.

    Without zip CRC32s: computing them took 60–70% of the save on a 2-core CPU (2.5 of 4 s for
    a 1.26 GB training state), and they guard against disk corruption, not against the interrupted
    writes that the temp file and rename already make harmless.
    """
    with atomic_writer(path) as f, serialization_config.patch({"save.compute_crc32": False}):
        torch.save(payload, f)


def save_checkpoint(spec: TrialSpec, model, loss, optimizer, scheduler, generator,
                    state: TrainState, balancing=None) -> None:
    """Write the trial's checkpoint now, in this thread (``write_checkpoint``)."""
    write_checkpoint(spec.checkpoint_path,
                     checkpoint_payload(spec, model, loss, optimizer, scheduler, generator, state,
                                        balancing))


def remove_stale_checkpoint_files(spec: TrialSpec) -> None:
    """Delete temporary checkpoint files of this trial left by a process killed while writing
    one (the run lock makes this process the only writer; each can be as large as the model's
    whole training state)."""
    for stale in checkpoint_temp_files(spec.checkpoint_path):
        stale.unlink(missing_ok=True)


def load_checkpoint(spec: TrialSpec, model, loss, optimizer, scheduler,
                    generator, balancing=None) -> TrainState:
    """Restore a trial's checkpoint (weights only: no pickled code is ever executed), the
    balancing's state too when one is given."""
    path = spec.checkpoint_path
    restart = ("delete it to restart this trial from scratch, or use another --out folder")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: code, or not ours
        # torch's message suggests weights_only=False; keep only the line naming the object.
        lines = [x.strip() for x in str(exc).splitlines()
                 if "GLOBAL" in x or x.startswith("Unsupported")]
        what = f" ({lines[0]})" if lines else ""
        raise TrialFailed(f"checkpoint {path} was refused: it holds objects other than tensors "
                          f"and plain data{what}, which mtlbench never writes and will not "
                          f"unpickle; {restart}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is treated alike
        raise TrialFailed(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                          f"{restart}") from exc
    if not isinstance(payload, dict) or "trial_id" not in payload:
        raise TrialFailed(f"checkpoint {path} is not a checkpoint of an mtlbench trial (no "
                          f"trial id in it); {restart}")
    if payload["trial_id"] != spec.trial_id:
        other = f" ({payload['trial']})" if payload.get("trial") else ""
        raise TrialFailed(f"checkpoint {path} belongs to trial {payload['trial_id']!r}{other}, "
                          f"not to {spec.trial_id!r} ({spec.label}, protocol "
                          f"{spec.protocol.hash}); {restart}")
    try:
        model.load_state_dict(payload["model"])
        loss.load_state_dict(payload.get("loss", {}))
        if balancing is not None:
            balancing.load_state_dict(payload.get("balancing", {}))
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        # Checkpoints written before precisions were recorded: those epochs' precision is
        # unknown.
        precisions = payload.get("precisions") or ["unknown"] * (payload["epoch"] + 1)
        return TrainState(int(payload["epoch"]), list(payload["curve"]), payload["best_score"],
                          payload["best_epoch"], payload["best_model"], list(precisions))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        # The file is the trial's, but its tensors do not fit the model, optimizer or
        # generator (edited, or written by another version of the method): the file's fault,
        # not the method's.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrialFailed(f"checkpoint {path} is this trial's but its contents do not fit "
                          f"(the method is not at fault: {type(exc).__name__}: {first}); "
                          f"{restart}") from None
