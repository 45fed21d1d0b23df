"""The balancings that ship with the core, registered through the same hook as any plugin.

They live in the core, not in a method plugin, because a balancing is a harness concept that
crosses every method (like an executor); they name no method.
"""

from __future__ import annotations

from mtlbench.balancing import GRADIENT, LOSS, BalancingCard
from mtlbench.hookspecs import hookimpl


def _weighting(name: str):
    """A builder of ``mtlbench.balancing.weightings.<name>`` (imported, with torch, when a
    trial builds it, not when plugins load)."""
    def build(config):
        from mtlbench.balancing import weightings

        return getattr(weightings, name)(config)
    return build


def _gradnorm(config):
    from mtlbench.balancing.gradnorm import GradNorm

    return GradNorm(config)


def _nash(config):
    from mtlbench.balancing.aggregators import NashBalancing

    return NashBalancing(config)


def _aggregator(name: str, **kwargs):
    """A builder of a JacobianBalancing around ``torchjd.aggregation.<name>(**kwargs)``."""
    def build(config):
        import torchjd.aggregation as aggregation

        from mtlbench.balancing.aggregators import JacobianBalancing

        return JacobianBalancing(config, lambda: getattr(aggregation, name)(**kwargs))
    return build


#: name, torchjd aggregator, its options, description, citation.
AGGREGATORS = (
    ("pcgrad", "PCGrad", {}, "Projects each task gradient off the others it conflicts with, "
     "sums them.", "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020"),
    ("mgda", "MGDA", {}, "The minimum-norm point of the task gradients' convex hull.",
     "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018"),
    ("upgrad", "UPGrad", {}, "Projects each task gradient onto the dual cone of all of them, "
     "averages.", "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, 2024"),
    ("imtlg", "IMTLG", {}, "The combination with equal projections onto every task's "
     "gradient direction.", "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021"),
    ("alignedmtl", "AlignedMTL", {}, "Aligns the task gradients' principal components "
     "(the Gramian's eigenbasis), scaled by the smallest.",
     "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023"),
    ("cagrad", "CAGrad", {"c": 0.4}, "The update closest to the mean gradient that improves "
     "the worst task most (c = 0.4).",
     "Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021"),
)


@hookimpl
def mtlbench_register_balancings(register):
    register(BalancingCard("fixed", _weighting("Fixed"), LOSS,
                           "The protocol's loss: λ·CE + (1−λ)·L_seg (loss_mode=paper, λ = "
                           "cls_weight), or the released script's (loss_mode=code). The default.",
                           "The reference paper, spec §3"))
    register(BalancingCard("uncertainty", _weighting("Uncertainty"), LOSS,
                           "Learned homoscedastic-uncertainty weights, the released code's form "
                           "0.5/σ²·L + log(1+σ²), on the protocol's task losses.",
                           "Kendall, Gal & Cipolla, CVPR 2018"))
    register(BalancingCard("dwa", _weighting("DynamicWeightAverage"), LOSS,
                           "Dynamic Weight Average: weights from the ratio of each task's loss "
                           "over the two previous epochs (T = 2).",
                           "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, "
                           "CVPR 2019"))
    register(BalancingCard("rlw", _weighting("RandomLossWeighting"), LOSS,
                           "Random loss weighting: softmax of normal draws at every step.",
                           "Lin et al., Reasonable Effectiveness of Random Weighting, TMLR 2022"))
    register(BalancingCard("famo", _weighting("FastAdaptive"), LOSS,
                           "Fast Adaptive Multitask Optimization: softmax logits learned from "
                           "how much each task's log-loss fell, weights z/L (β = 0.025, "
                           "γ = 0.001).",
                           "Liu et al., FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023"))
    register(BalancingCard("gradnorm", _gradnorm, LOSS,
                           "GradNorm: weights learned so that each task's gradient norm over "
                           "the shared parameters follows its relative training rate (α = 1.5).",
                           "Chen, Badrinarayanan, Lee & Rabinovich, GradNorm, ICML 2018"))
    for name, cls, kwargs, text, cite in AGGREGATORS:
        register(BalancingCard(name, _aggregator(cls, **kwargs), GRADIENT, text, cite))
    register(BalancingCard("nashmtl", _nash, GRADIENT,
                           "Nash-MTL: the task gradients' Nash bargaining solution (weights α "
                           "with (Gα)_t = 1/α_t, update norm at most 1), solved every step.",
                           "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022"))
