"""GradNorm, a loss weighting learned from the task gradients' norms."""

from __future__ import annotations

import torch
from torch import nn

from mtlbench.balancing import LOSS, BalancingConfig
from mtlbench.balancing.aggregators import flat, task_gradients
from mtlbench.balancing.base import Balancing


class GradNorm(Balancing):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018). Weights w (from 1, summing
    to the number of tasks K, trained with the model's optimizer); the model descends Σ w_t·L_t.
    G_t = w_t·‖∇_W L_t‖ over the shared parameters W (those both task losses reach: the
    paper's last shared layer does not exist for every model here), r_t = L̃_t / mean L̃
    with L̃_t = L_t / L_t(first step), and w's gradient is that of Σ_t |G_t − mean(G)·r_t^α|
    with the target held constant, α = knob ``alpha`` (the paper's 1.5):
    sign(G_t − target_t)·‖∇_W L_t‖ (closed form, so no second-order backward is needed). w is
    renormalised to sum K before each step."""

    kind = LOSS

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.tasks = config.tasks
        self.alpha = float(config.knobs["alpha"])
        k = len(self.tasks)
        self.task_weights = nn.Parameter(torch.ones(k))
        self.register_buffer("initial", torch.ones(k))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self.shared_ids = None if config.shared is None else set(config.shared)

    def backward(self, losses, total, params) -> None:
        w = self.task_weights
        with torch.no_grad():
            w.clamp_(min=1e-3).mul_(len(self.tasks) / w.sum())
        params, grads, self.shared_ids = task_gradients(losses, self.tasks, params,
                                                        self.shared_ids)
        shared = [j for j, p in enumerate(params) if id(p) in self.shared_ids]
        current = torch.stack([losses[t].detach().float() for t in self.tasks])
        if not bool(self.started):
            self.initial.copy_(current)
            self.started.fill_(True)
        if shared:
            norms = torch.stack([flat(g, params, shared).norm() for g in grads])
            ratio = current / self.initial
            ratio = ratio / ratio.mean()
            G = w.detach() * norms
            target = G.mean() * ratio ** self.alpha
            w.grad = (torch.sign(G - target) * norms).to(w.dtype)
        weights = w.detach()
        for j, p in enumerate(params):
            parts = [weights[i] * g[j] for i, g in enumerate(grads) if g[j] is not None]
            p.grad = torch.stack(parts).sum(0).to(p.dtype) if parts else None

    def weights(self):
        w = self.task_weights.detach()
        return {t: float(w[i]) for i, t in enumerate(self.tasks)}
