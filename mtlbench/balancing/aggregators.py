"""Gradient balancings: one gradient per task, aggregated by a torchjd aggregator.

The models' tasks share more than an encoder (a classifier may read a decoder stage), so
there is no single shared-feature cut to differentiate at. Instead each task's loss is
differentiated over all trainable parameters (one backward pass per task); a parameter that
every task's loss reaches is *shared*, and the rows of the Jacobian over the shared parameters
are aggregated into one vector by the aggregator. A parameter only one task reaches gets that
task's gradient. A method card may name its shared parameters itself
(``MethodCard.shared_parameters``). The aggregation itself is torchjd's
(https://github.com/TorchJD/torchjd, pinned in pyproject.toml); only this splitting of the
parameters is written here, because torchjd's ``mtl_backward`` needs one shared-feature tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mtlbench.balancing import GRADIENT, BalancingConfig
from mtlbench.balancing.base import Balancing


class JacobianBalancing(Balancing):
    """Aggregates the task gradients over the shared parameters with ``make_aggregator()``;
    ``config.shared`` (when given) holds the shared parameters' ids, else they are found at
    the first step as those every task's loss reaches (the same after a resume)."""

    kind = GRADIENT

    def __init__(self, config: BalancingConfig, make_aggregator: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.tasks = config.tasks
        self.aggregator = make_aggregator()
        self.shared_ids = None if config.shared is None else set(config.shared)

    def backward(self, losses, total, params: Sequence[nn.Parameter]) -> None:
        params, grads, self.shared_ids = task_gradients(losses, self.tasks, params,
                                                        self.shared_ids)
        shared = [j for j, p in enumerate(params) if id(p) in self.shared_ids]
        for j, p in enumerate(params):
            if id(p) not in self.shared_ids:
                reached = [g[j] for g in grads if g[j] is not None]
                p.grad = torch.stack(reached).sum(0) if reached else None
        if not shared:
            return
        jacobian = torch.stack([flat(g, params, shared) for g in grads])
        direction = self.aggregator(jacobian)
        offset = 0
        for j in shared:
            p = params[j]
            p.grad = direction[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()


def task_gradients(losses: dict[str, torch.Tensor], tasks: Sequence[str],
                   params: Sequence[nn.Parameter], shared_ids: set[int] | None):
    """Each task's gradient over the trainable ``params`` (None where its loss does not reach
    one), one backward pass per task; and the ids of the shared parameters: ``shared_ids``
    when given, else those every task's loss reaches. Returns (params, grads, shared ids)."""
    params = [p for p in params if p.requires_grad]
    grads = [torch.autograd.grad(losses[t], params, retain_graph=i < len(tasks) - 1,
                                 allow_unused=True)
             for i, t in enumerate(tasks)]
    if shared_ids is None:
        shared_ids = {id(p) for j, p in enumerate(params) if all(g[j] is not None for g in grads)}
    return params, grads, shared_ids


def flat(grads, params, indices) -> torch.Tensor:
    """The gradients of ``params[indices]`` as one float vector (zeros where None)."""
    return torch.cat([(grads[j] if grads[j] is not None else torch.zeros_like(params[j]))
                      .flatten().float() for j in indices])
