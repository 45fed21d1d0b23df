"""The classes a balancing derives from (``Balancing``, ``LossWeighting``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlbench.balancing import GRADIENT, LOSS

__all__ = ["Balancing", "LossWeighting", "GRADIENT", "LOSS"]


class Balancing(nn.Module):
    """Combines the task losses of one training step into the gradients the optimizer uses.

    ``backward(losses, total, params)``: ``losses`` maps each task to its loss (a scalar
    tensor), ``total`` is the protocol's fixed combination of them, ``params`` the model's
    trainable parameters; afterwards every parameter's ``.grad`` holds the update direction.
    ``end_epoch(means)`` receives each task's mean loss over the epoch that ended. ``weights()``
    are the task weights of the last step (for the curves), empty where there are none.
    ``parameters()`` train with the model (the optimizer gets them); ``state_dict()`` holds
    every other state as tensors.
    """

    kind: str = LOSS

    def backward(self, losses: dict[str, torch.Tensor], total: torch.Tensor,
                 params: Sequence[nn.Parameter]) -> None:
        raise NotImplementedError

    def end_epoch(self, means: dict[str, float]) -> None:
        """Called once per finished epoch with each task's mean training loss."""

    def weights(self) -> dict[str, float]:
        return {}


class LossWeighting(Balancing):
    """A balancing that combines the task losses into one scalar: ``combine`` says how."""

    kind = LOSS

    def combine(self, losses: dict[str, torch.Tensor], total: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, losses, total, params) -> None:
        self.combine(losses, total).backward()
