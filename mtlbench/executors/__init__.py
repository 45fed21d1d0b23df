"""Executors run trial specs and hand back results; only the driver writes the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol as Interface

from mtlbench.trial import TrialResult, TrialSpec


class RunEvents(Interface):
    """What an executor reports while it works (the progress display listens)."""

    def trial_started(self, spec: TrialSpec) -> None: ...
    def epoch_finished(self, spec: TrialSpec, record: dict) -> None: ...


class Executor(Interface):
    """Runs specs, yields one TrialResult per spec (failed ones too), in any order."""

    def run(self, specs: list[TrialSpec], events: RunEvents) -> Iterator[TrialResult]: ...
