"""Loss weightings: balancings that combine the task losses into one scalar, written here
because each is a few lines over the task losses (torchjd aggregates gradients, not losses)."""

from __future__ import annotations

import torch

from mtlbench.balancing import BalancingConfig
from mtlbench.balancing.base import LossWeighting
from mtlbench.losses import UncertaintyWeighting


class Fixed(LossWeighting):
    """The protocol's own loss, unchanged: λ·L_cls + (1−λ)·L_seg under ``loss_mode=paper``
    (the reference paper's text, λ = ``cls_weight``), the released script's whole loss under
    ``loss_mode=code``. The same numbers as before balancings existed; it reports no weights
    (the curves of a default trial stay as they were)."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.cls_weight = config.cls_weight

    def combine(self, losses, total):
        return total


class Uncertainty(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018), in the form of
    the reference paper's released code: Σ_t 0.5/σ_t²·L_t + log(1 + σ_t²), σ learned (from 1)
    with the model. Unlike ``loss_mode=code`` it weighs the protocol's task losses (the paper's
    Dice, the method's terms), not the released script's whole loss."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.tasks = config.tasks
        self.uncertainty = UncertaintyWeighting(len(self.tasks))

    def combine(self, losses, total):
        return self.uncertainty(*(losses[t] for t in self.tasks))

    def weights(self):
        var = self.uncertainty.sigma.detach() ** 2
        return {t: float(0.5 / var[i]) for i, t in enumerate(self.tasks)}


class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019, Eq. 7): w_t = K·exp(r_t/T) / Σ_i exp(r_i/T) with
    r_t = L_t(e−1)/L_t(e−2), the ratio of the task's mean losses of the two previous epochs,
    T = knob ``temperature`` (the paper's 2); w_t = 1 for the first two epochs. The loss is
    Σ_t w_t·L_t."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.tasks = config.tasks
        self.temperature = float(config.knobs["temperature"])
        # The mean losses of the last two epochs (row 0: older), and how many are known.
        self.register_buffer("history", torch.zeros(2, len(self.tasks), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("current", torch.ones(len(self.tasks), dtype=torch.float64))

    def end_epoch(self, means):
        row = torch.tensor([means[t] for t in self.tasks], dtype=torch.float64)
        self.history.copy_(torch.stack([self.history[1], row]))
        self.seen.add_(1)
        if int(self.seen) >= 2:
            ratio = self.history[1] / self.history[0]
            self.current.copy_(len(self.tasks) * torch.softmax(ratio / self.temperature, 0))

    def combine(self, losses, total):
        return weighted_sum(self.current, losses, self.tasks)

    def weights(self):
        return {t: float(self.current[i]) for i, t in enumerate(self.tasks)}


class RandomLossWeighting(LossWeighting):
    """Random loss weighting (Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022): at every step the weights
    are softmax(z), z ~ N(0, I), drawn from the balancing's own generator (seeded by the
    protocol's seed, its state checkpointed), and the loss is Σ_t w_t·L_t."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.tasks = config.tasks
        self.generator = torch.Generator().manual_seed(config.seed)
        self.last = torch.full((len(self.tasks),), 1 / len(self.tasks))

    def draw(self) -> torch.Tensor:
        """The next step's weights."""
        self.last = torch.softmax(torch.randn(len(self.tasks), generator=self.generator), 0)
        return self.last

    def combine(self, losses, total):
        return weighted_sum(self.draw(), losses, self.tasks)

    def weights(self):
        return {t: float(self.last[i]) for i, t in enumerate(self.tasks)}

    def get_extra_state(self):
        return {"generator": self.generator.get_state(), "last": self.last.clone()}

    def set_extra_state(self, state):
        self.generator.set_state(state["generator"])
        self.last = state["last"].clone()


def weighted_sum(weights: torch.Tensor, losses: dict[str, torch.Tensor],
                 tasks: tuple[str, ...]) -> torch.Tensor:
    """Σ_t w_t·L_t, on the losses' device without reading the weights back (no sync)."""
    stacked = torch.stack([losses[t].float() for t in tasks])
    return (weights.to(stacked.device, torch.float32) * stacked).sum()


class FastAdaptive(LossWeighting):
    """FAMO (Liu, Liang, Chen, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization",
    NeurIPS 2023, Algorithm 1). Logits ξ (from 0), z = softmax(ξ); each step descends
    Σ_t c·z_t·log L_t with c = (Σ_t z_t/L_t)⁻¹, i.e. weights w_t = c·z_t/L_t on the task
    losses. Then ξ ← ξ − β((diag z − z zᵀ)·δ + γ·ξ), δ_t = log L_t(before) − log L_t(after),
    β = knob ``lr``, γ = knob ``decay`` (the paper's 0.025 and 0.001). The paper evaluates
    L(after) with an extra forward pass on the same batch; here the next step's losses (the next
    batch) stand in for it, which needs no extra pass: ξ is updated at the start of each step
    but the first."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.tasks = config.tasks
        self.lr, self.decay = float(config.knobs["lr"]), float(config.knobs["decay"])
        k = len(self.tasks)
        self.register_buffer("logits", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("previous", torch.zeros(k, dtype=torch.float64))  # log L, last step
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self.register_buffer("current", torch.full((k,), 1 / k, dtype=torch.float64))

    def combine(self, losses, total):
        stacked = torch.stack([losses[t].float() for t in self.tasks])
        logs = stacked.detach().clamp_min(1e-8).log().to(self.logits.device, torch.float64)
        if bool(self.started):
            z = torch.softmax(self.logits, 0)
            delta = self.previous - logs
            grad = z * delta - z * (z @ delta)  # (diag z − z zᵀ)·δ
            self.logits.sub_(self.lr * (grad + self.decay * self.logits))
        self.previous.copy_(logs)
        self.started.fill_(True)
        z = torch.softmax(self.logits, 0)
        inverse = z / logs.exp()
        self.current.copy_(inverse / inverse.sum())  # c·z_t/L_t
        return (self.current.to(stacked.device, torch.float32) * stacked).sum()

    def weights(self):
        return {t: float(self.current[i]) for i, t in enumerate(self.tasks)}
