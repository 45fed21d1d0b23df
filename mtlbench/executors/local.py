"""The default executor: trials one after another in this process."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

import torch

from mtlbench.executors import RunEvents
from mtlbench.plugins import Plugins
from mtlbench.precision import bf16_support
from mtlbench.precision import resolve as resolve_precision
from mtlbench.train import EpochCallback, run_trial
from mtlbench.trial import TrialFailed, TrialResult, TrialSpec


class LocalExecutor:
    """Runs each trial through ``run_trial`` in this process; a failing trial does not stop the
    others (it comes back with status ``failed`` and its reason). Ctrl-C propagates."""

    def __init__(self, plugins: Plugins | None = None, device: str = "cpu") -> None:
        self.plugins = plugins
        self.device = device

    def run(self, specs: list[TrialSpec], events: RunEvents) -> Iterator[TrialResult]:
        for spec in specs:
            events.trial_started(spec)
            yield run_one_trial(spec, self.plugins, events.epoch_finished)


def run_one_trial(spec: TrialSpec, plugins: Plugins | None = None,
                  on_epoch: EpochCallback | None = None) -> TrialResult:
    """``run_trial(spec)``, with a trial that fails returned as a failed TrialResult naming the
    reason instead of raised; KeyboardInterrupt and SystemExit propagate.

    Out of memory gets a reason that says so and suggests a smaller batch; any other exception
    (a plugin's forward that raises, ...) keeps the innermost frames of its traceback, which
    point into the code that raised it.
    """
    try:
        return run_trial(spec, plugins, on_epoch=on_epoch)
    except TrialFailed as exc:
        return TrialResult.failed(spec, str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad trial must not sink the run
        detail = traceback.format_exc(limit=-4)
        if not is_out_of_memory(exc):
            return TrialResult.failed(spec, f"method {spec.method!r} raised "
                                            f"{type(exc).__name__}: {exc}\n{detail}")
        result = TrialResult.failed(spec, out_of_memory_reason(spec, exc) + "\n" + detail)
    # Outside the except block: the traceback's frames, which held the trial's tensors, are gone.
    _release_device_memory()
    return result


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's out-of-memory error, torch's CPU allocator failing, and MemoryError."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower()
                                              or "can't allocate memory" in text)


def out_of_memory_reason(spec: TrialSpec, exc: BaseException) -> str:
    """One line: the trial ran out of memory on its device, and what to try instead."""
    batch = spec.protocol.batch_size
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    bf16 = (", --set precision=bf16" if resolve_precision(spec.protocol.precision, spec.device)
            == "fp32" and bf16_support(spec.device).native else "")
    return (f"method {spec.method!r} ran out of memory on {spec.device} at batch size {batch} "
            f"({type(exc).__name__}: {first}); run it with a smaller batch, e.g. --set "
            f"batch_size={max(1, batch // 2)} (a new protocol hash){bf16}, or with fewer "
            "trials at once on the device (--trials-per-device)")


def _release_device_memory() -> None:
    """Hand the failed trial's cached CUDA blocks back, so the next trial starts clean."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
