"""Task balancings: how one trial combines its task losses into an update.

A balancing is a plugin like a method: a plugin's ``mtlbench_register_balancings`` hook
registers a ``BalancingCard`` whose ``build(config)`` makes a ``Balancing`` for one trial
(``mtlbench run --balancing NAME,...``). Two kinds: a *loss* weighting turns the task losses
into one scalar and backpropagates it; a *gradient* balancing takes one gradient per task over
the parameters both tasks reach and aggregates them (a Jacobian's rows into one vector).

The balancing is part of a trial's identity (``mtlbench.identity.TrialKey.balancing``); the
default, ``fixed``, is the protocol's own loss (λ·CE + (1−λ)·L_seg under ``loss_mode=paper``,
the released script's loss under ``loss_mode=code``), so every trial id from before
balancings existed stays what it was. A balancing's state (learned weights, loss history,
generator) lives in its ``state_dict`` as tensors, so ``weights_only`` checkpoints carry it.
This module imports no torch (plugins load it); the classes a balancing derives from are in
``mtlbench.balancing.base``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    (``cls_weight``), seed and epochs, and the ids of the parameters that count as shared
    when the method card names them (``MethodCard.shared_parameters``; None: found)."""

    tasks: tuple[str, ...]
    cls_weight: float = 0.3
    seed: int = 0
    epochs: int = 1
    shared: frozenset[int] | None = None


@dataclass(frozen=True)
class BalancingCard:
    """A balancing: its name, how to build it for a trial, its kind (``loss`` or ``gradient``),
    a line about it and the paper it comes from."""

    name: str
    build: Callable[[BalancingConfig], Any]  # -> mtlbench.balancing.base.Balancing
    kind: str
    description: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"balancing {self.name!r}: kind must be one of {KINDS}, "
                             f"got {self.kind!r}")


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
