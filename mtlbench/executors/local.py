"""The default executor: trials one after another in this process."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

from mtlbench.executors import RunEvents
from mtlbench.plugins import Plugins
from mtlbench.train import EpochCallback, TrialFailed, run_trial
from mtlbench.trial import TrialResult, TrialSpec


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
    reason instead of raised; KeyboardInterrupt and SystemExit propagate."""
    try:
        return run_trial(spec, plugins, on_epoch=on_epoch)
    except TrialFailed as exc:
        return TrialResult.failed(spec, str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad trial must not sink the run
        detail = traceback.format_exc(limit=3)
        return TrialResult.failed(spec, f"{type(exc).__name__}: {exc}\n{detail}")
