"""Task balancings: how one trial combines its task losses into an update.

A balancing is a plugin like a method: a plugin's ``mtlbench_register_balancings`` hook
registers a ``BalancingCard`` whose ``build(config)`` makes a ``Balancing`` for one trial
(``mtlbench run --balancing NAME,...``). Two kinds: a *loss* weighting turns the task losses
into one scalar and backpropagates it; a *gradient* balancing takes one gradient per task over
the parameters both tasks reach and aggregates them (a Jacobian's rows into one vector).

The balancing is part of a trial's identity (``mtlbench.identity.TrialKey.balancing``); the
default, ``fixed``, is the protocol's own loss (λ·CE + (1−λ)·L_seg under ``loss_mode=paper``,
the released script's loss under ``loss_mode=code``), so every trial id from before
balancings existed stays what it was. A balancing's own settings are its ``knobs``
(``mtlbench.cards.Knob``, set with ``--set BALANCING.KNOB=VALUE``:
``mtlbench.balancing.knobs``); its build receives all their values in
``BalancingConfig.knobs``, and those that differ from the defaults enter the trial id
(``TrialKey.balancing_knobs``). A balancing's state (learned weights, loss history,
generator) lives in its ``state_dict`` as tensors, so ``weights_only`` checkpoints carry it.
This module imports no torch (plugins load it); the classes a balancing derives from are in
``mtlbench.balancing.base``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mtlbench.cards import Knob
from mtlbench.identity import DEFAULT_BALANCING

__all__ = ["DEFAULT_BALANCING", "LOSS", "GRADIENT", "KINDS", "BalancingCard", "BalancingConfig",
           "BalancingError"]
LOSS, GRADIENT = "loss", "gradient"
KINDS = (LOSS, GRADIENT)


class BalancingError(ValueError):
    """A balancing that cannot be used for a trial; the message says why and what to do."""


@dataclass(frozen=True)
class BalancingConfig:
    """What a balancing is built for: the trial's tasks (sorted), the protocol's λ
    (``cls_weight``), seed and epochs, the ids of the parameters that count as shared
    when the method card names them (``MethodCard.shared_parameters``; None: found), and the
    values of the balancing's knobs (name -> value; a trial gives every knob of the card, a
    config built by hand may give fewer: ``with_defaults`` fills them in)."""

    tasks: tuple[str, ...]
    cls_weight: float = 0.3
    seed: int = 0
    epochs: int = 1
    shared: frozenset[int] | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BalancingCard:
    """A balancing: its name, how to build it for a trial, its kind (``loss`` or ``gradient``),
    a line about it, the paper it comes from, and its knobs (``mtlbench.cards.Knob``: set with
    ``--set NAME.KNOB=VALUE``, given to ``build`` in ``BalancingConfig.knobs``; a value away
    from the knob's default enters the trial id). A knob's default is part of what the
    balancing is: trials at the defaults carry no knob in their id, so changing a default
    would give another balancing the same ids; add a knob (or a balancing) instead."""

    name: str
    build: Callable[[BalancingConfig], Any]  # -> mtlbench.balancing.base.Balancing
    kind: str
    description: str = ""
    citation: str = ""
    knobs: tuple[Knob, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"balancing {self.name!r}: kind must be one of {KINDS}, "
                             f"got {self.kind!r}")
        names = [k.name for k in self.knobs]
        if len(set(names)) != len(names):
            raise ValueError(f"balancing {self.name!r}: knob names repeat: {names}")
        preset = [k.name for k in self.knobs if k.presets]
        if preset:
            raise ValueError(f"balancing {self.name!r}: knobs {preset} have protocol presets; "
                             "a balancing's knob has one default (what its id leaves out)")

    def knob(self, name: str) -> Knob | None:
        return next((k for k in self.knobs if k.name == name), None)

    def with_defaults(self, config: BalancingConfig) -> BalancingConfig:
        """``config`` with every knob of the card it does not give at its default."""
        return with_defaults(config, self.knobs)


def with_defaults(config: BalancingConfig, knobs: tuple[Knob, ...]) -> BalancingConfig:
    """``config`` with every knob of ``knobs`` it does not give at its default."""
    values = {k.name: k.default for k in knobs}
    return dataclasses.replace(config, knobs={**values, **config.knobs})


def skips_axis(method: Any, knobs: dict[str, Any], loss_mode: str) -> bool:
    """Whether ``method`` (a MethodCard) has nothing to balance under ``knobs`` and
    ``loss_mode``: one task, or one loss term that is the whole loss of both tasks."""
    if len(method.tasks) < 2:
        return True
    return any(t.part == "whole" and t.active(knobs, loss_mode, method.tasks)
               for t in method.loss_terms)


def check_balancing(name: str, loss_mode: str) -> None:
    """Raise BalancingError unless balancing ``name`` can run under ``loss_mode``."""
    if name != DEFAULT_BALANCING and loss_mode == "code":
        raise BalancingError(
            f"balancing {name!r} needs loss_mode=paper: loss_mode=code is the released "
            "script's whole loss, its own uncertainty weighting included; drop --set "
            "loss_mode=code, or keep it with --balancing fixed (--balancing uncertainty is "
            "that weighting on the protocol's task losses)")
