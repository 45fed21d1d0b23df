"""The balancings that ship with the core, registered through the same hook as any plugin.

They live in the core, not in a method plugin, because a balancing is a harness concept that
crosses every method (like an executor); they name no method.
"""

from __future__ import annotations

from mtlbench.balancing import GRADIENT, LOSS, BalancingCard, with_defaults
from mtlbench.cards import Knob
from mtlbench.hookspecs import hookimpl


def _positive(value) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _not_negative(value) -> str | None:
    return None if value >= 0 else f"must be ≥ 0, got {value!r}"


# Each balancing's knobs: the hyper-parameters its paper sets, at the paper's values (the
# defaults are what a trial id without knobs means: see BalancingCard).
DWA_KNOBS = (Knob("temperature", 2.0, "T of the softmax over the loss ratios (the paper: 2)",
                  check=_positive),)
FAMO_KNOBS = (Knob("lr", 0.025, "β, the step size of the logits' update (the paper: 0.025)",
                   check=_positive),
              Knob("decay", 0.001, "γ, the logits' weight decay (the paper: 0.001)",
                   check=_not_negative))
GRADNORM_KNOBS = (Knob("alpha", 1.5, "α, how strongly the training rates pull the gradient "
                       "norms apart (the paper: 1.5 on NYUv2)", check=_not_negative),)
CAGRAD_KNOBS = (Knob("c", 0.4, "the radius of the ball around the mean gradient, relative to "
                     "its norm (the paper: 0.4 on NYUv2)", check=_not_negative),)
NASH_KNOBS = (Knob("max_norm", 1.0, "the update's norm is clipped to this (0: no clipping; "
                   "torchjd's default, the official code's)", check=_not_negative),
              Knob("update_weights_every", 1, "solve for the weights every this many steps, "
                   "reusing them in between (the paper's faster variant: more than 1)",
                   check=_positive),
              Knob("optim_niter", 20, "the solver's iterations per solve, at most (the "
                   "official code's 20)", check=_positive))


def _weighting(name: str, knobs=()):
    """A builder of ``mtlbench.balancing.weightings.<name>`` (imported, with torch, when a
    trial builds it, not when plugins load), its knobs at their defaults where the config
    gives none."""
    def build(config):
        from mtlbench.balancing import weightings

        return getattr(weightings, name)(with_defaults(config, knobs))
    return build


def _gradnorm(config):
    from mtlbench.balancing.gradnorm import GradNorm

    return GradNorm(with_defaults(config, GRADNORM_KNOBS))


def _nash(config):
    from mtlbench.balancing.nash import NashBalancing

    return NashBalancing(with_defaults(config, NASH_KNOBS))


def _aggregator(name: str, knobs=()):
    """A builder of a JacobianBalancing around ``torchjd.aggregation.<name>(**knob values)``:
    the knobs are named as torchjd names the aggregator's options."""
    def build(config):
        import torchjd.aggregation as aggregation

        from mtlbench.balancing.aggregators import JacobianBalancing

        options = dict(with_defaults(config, knobs).knobs)
        return JacobianBalancing(config, lambda: getattr(aggregation, name)(**options))
    return build


#: name, torchjd aggregator, its knobs (torchjd's option names), description, citation.
AGGREGATORS = (
    ("pcgrad", "PCGrad", (), "Projects each task gradient off the others it conflicts with, "
     "sums them.", "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020"),
    ("mgda", "MGDA", (), "The minimum-norm point of the task gradients' convex hull.",
     "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018"),
    ("upgrad", "UPGrad", (), "Projects each task gradient onto the dual cone of all of them, "
     "averages.", "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, 2024"),
    ("imtlg", "IMTLG", (), "The combination with equal projections onto every task's "
     "gradient direction.", "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021"),
    ("alignedmtl", "AlignedMTL", (), "Aligns the task gradients' principal components "
     "(the Gramian's eigenbasis), scaled by the smallest.",
     "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023"),
    ("cagrad", "CAGrad", CAGRAD_KNOBS, "The update closest to the mean gradient that improves "
     "the worst task most (radius c).",
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
    register(BalancingCard("dwa", _weighting("DynamicWeightAverage", DWA_KNOBS), LOSS,
                           "Dynamic Weight Average: weights from the ratio of each task's loss "
                           "over the two previous epochs (softmax temperature T).",
                           "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, "
                           "CVPR 2019", DWA_KNOBS))
    register(BalancingCard("rlw", _weighting("RandomLossWeighting"), LOSS,
                           "Random loss weighting: softmax of normal draws at every step.",
                           "Lin et al., Reasonable Effectiveness of Random Weighting, TMLR 2022"))
    register(BalancingCard("famo", _weighting("FastAdaptive", FAMO_KNOBS), LOSS,
                           "Fast Adaptive Multitask Optimization: softmax logits learned from "
                           "how much each task's log-loss fell, weights z/L (step β, decay "
                           "γ).",
                           "Liu et al., FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023",
                           FAMO_KNOBS))
    register(BalancingCard("gradnorm", _gradnorm, LOSS,
                           "GradNorm: weights learned so that each task's gradient norm over "
                           "the shared parameters follows its relative training rate "
                           "(strength α).",
                           "Chen, Badrinarayanan, Lee & Rabinovich, GradNorm, ICML 2018",
                           GRADNORM_KNOBS))
    for name, cls, knobs, text, cite in AGGREGATORS:
        register(BalancingCard(name, _aggregator(cls, knobs), GRADIENT, text, cite, knobs))
    register(BalancingCard("nashmtl", _nash, GRADIENT,
                           "Nash-MTL: the task gradients' Nash bargaining solution (weights α "
                           "with (Gα)_t = 1/α_t, the update's norm clipped).",
                           "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022",
                           NASH_KNOBS))
