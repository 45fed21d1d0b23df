"""Executors run trial specs and hand back results; only the driver writes the store.

An executor is a plugin like a method: a plugin's ``mtlbench_register_executors`` hook
registers an ``ExecutorCard`` whose ``build`` makes the executor from its options
(``mtlbench run --executor NAME --executor-set KEY=VALUE``). The built-in ones are ``local``
(the default), ``pool`` (worker processes) and ``slurm`` (cluster jobs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from typing import Protocol as Interface

from mtlbench.trial import TrialResult, TrialSpec

if TYPE_CHECKING:
    from mtlbench.plugins import Plugins


class RunEvents(Interface):
    """What an executor reports while it works (the progress display listens)."""

    def trial_started(self, spec: TrialSpec) -> None: ...
    def epoch_finished(self, spec: TrialSpec, record: dict) -> None: ...


class Executor(Interface):
    """Runs specs, yields one TrialResult per spec (failed ones too), in any order.

    ``device`` is where the trials run (it goes into each spec). An executor may set
    ``detached = True`` after ``run`` when it returned before its trials finished (their
    results arrive later as result files, see ``mtlbench.result_files``).
    """

    device: str

    def run(self, specs: list[TrialSpec], events: RunEvents) -> Iterator[TrialResult]: ...


class ExecutorOptionError(ValueError):
    """An executor option that does not exist or has a bad value; the message names it."""


@dataclass(frozen=True)
class ExecutorContext:
    """What an executor is built for: the run folder, the device --device asked for (resolved:
    'cpu', 'cuda', 'cuda:N') and the loaded plugins."""

    run_dir: Path
    device: str = "cpu"
    plugins: Plugins | None = None


@dataclass(frozen=True)
class ExecutorOption:
    """One option of an executor: its default (as typed on the command line) and its help."""

    default: str
    help: str


@dataclass(frozen=True)
class ExecutorCard:
    """An executor as a plugin registers it.

    ``build(context, options)`` returns the executor; ``options`` holds every declared option,
    defaults filled in, as strings. ``build`` raises ExecutorOptionError for a bad value and
    should check everything it needs (libraries, commands) so a run stops before training.
    """

    name: str
    build: Callable[[ExecutorContext, dict[str, str]], Any]
    description: str = ""
    options: dict[str, ExecutorOption] = field(default_factory=dict)

    def create(self, context: ExecutorContext, values: dict[str, str]) -> Executor:
        """The executor with ``values`` over the defaults; unknown keys are refused."""
        unknown = sorted(set(values) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ExecutorOptionError(
                f"--executor-set {unknown[0]}: executor {self.name!r} has no such option "
                f"(its options: {valid}; `mtlbench list executors` describes them)")
        merged = {key: option.default for key, option in self.options.items()}
        merged.update(values)
        return self.build(context, merged)


def parse_int(options: dict[str, str], key: str, executor: str, minimum: int = 0) -> int:
    """``options[key]`` as an int ≥ ``minimum``; ExecutorOptionError names the option."""
    try:
        value = int(options[key])
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ExecutorOptionError(f"--executor-set {key}={options[key]}: executor {executor!r} "
                                  f"needs a whole number ≥ {minimum}")
    return value


def parse_bool(options: dict[str, str], key: str, executor: str) -> bool:
    """``options[key]`` as a bool (true/false, yes/no, 1/0, on/off)."""
    text = options[key].strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ExecutorOptionError(f"--executor-set {key}={options[key]}: executor {executor!r} "
                              "expects true or false")
