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


#: The executor of `mtlbench run` without --executor (or --devices / --trials-per-device).
DEFAULT_EXECUTOR = "local"


class RunEvents(Interface):
    """What an executor reports while it works (the progress display listens)."""

    def trial_started(self, spec: TrialSpec) -> None: ...
    def epoch_finished(self, spec: TrialSpec, record: dict) -> None: ...


class Executor(Interface):
    """Runs specs, yields one TrialResult per spec (failed ones too), in any order.

    ``device`` is where the trials run (it goes into each spec). What an executor tells the
    user is its own, through these optional methods (an executor without them says nothing
    beyond the harness's own lines; see ``announcement`` and the two below):

    - ``announce(n_trials) -> str``: a line when the run starts (workers, job array, ...);
    - ``interrupted_note() -> str``: what Ctrl-C of the driver left behind and how to go on;
    - ``detached_note(n_trials) -> str``: after a ``run`` that returned before its trials
      finished, which it says by setting ``detached = True`` (their results arrive later as
      result files, see ``mtlbench.result_files``, and ``mtlbench collect`` stores them).
    """

    device: str

    def run(self, specs: list[TrialSpec], events: RunEvents) -> Iterator[TrialResult]: ...


def announcement(executor: Executor, n_trials: int) -> str | None:
    """The executor's line for the start of a run of ``n_trials``, if it has one."""
    announce = getattr(executor, "announce", None)
    return announce(n_trials) if announce is not None and n_trials else None


def interrupted_note(executor: Executor) -> str | None:
    """What the executor says about a Ctrl-C of the driver, if it says anything."""
    note = getattr(executor, "interrupted_note", None)
    return note() if note is not None else None


def detached_note(executor: Executor, n_trials: int) -> str | None:
    """For an executor whose ``run`` returned before its trials finished: what it says."""
    if not getattr(executor, "detached", False):
        return None
    note = getattr(executor, "detached_note", None)
    return note(n_trials) if note is not None else \
        f"Submitted {n_trials} trial(s); `mtlbench collect` stores their results later."


class ExecutorOptionError(ValueError):
    """An executor option that does not exist or has a bad value; the message names it."""


class ExecutorError(RuntimeError):
    """An executor that cannot work here (a library or command missing, a refused submission);
    the message says what to do. The CLI shows it like any bad input, without a traceback."""


@dataclass(frozen=True)
class OutstandingJob:
    """A trial that a driver left to its job (for ``mtlbench collect``): still queued or
    running, or ``ended`` without writing a result (then ``hint`` says where to look)."""

    trial_id: str
    job: str
    state: str
    label: str
    ended: bool
    hint: str = ""


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
    defaults filled in, as strings. ``build`` raises ExecutorOptionError for a bad value, or
    ExecutorError for what it lacks (libraries, commands), so a run stops before training.

    ``local_device``: the trials run on this machine, so --device is checked here (False for
    a cluster, whose nodes decide). ``flags``: options that `mtlbench run` also takes as flags
    of their own (--devices, --trials-per-device); giving one of them chooses this executor.
    ``outstanding(run_dir, statuses)``: the jobs of the trials not yet finished in the store
    (``statuses``: trial id -> status) that this executor's detached runs left in
    ``run_dir``, for ``mtlbench collect``; None for an executor whose runs never detach.
    """

    name: str
    build: Callable[[ExecutorContext, dict[str, str]], Any]
    description: str = ""
    options: dict[str, ExecutorOption] = field(default_factory=dict)
    local_device: bool = True
    flags: tuple[str, ...] = ()
    outstanding: Callable[[Path, dict[str, str]], list[OutstandingJob]] | None = None

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
