"""Nash-MTL through torchjd, with its solver problem in cvxpy's DPP form.

Imported only when a trial builds Nash-MTL: it loads cvxpy.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch
import torchjd.aggregation as aggregation

# Private in torchjd 0.18.0 (pinned in pyproject.toml): its public NashMTL takes no weighting.
from torchjd.aggregation._nash_mtl import _NashMTLWeighting

from mtlbench.balancing import BalancingConfig
from mtlbench.balancing.aggregators import JacobianBalancing


class NashBalancing(JacobianBalancing):
    """Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022) through
    torchjd's stateful ``NashMTL``, with its knobs ``max_norm``, ``update_weights_every`` and
    ``optim_niter`` (defaults 1.0, 1 and 20: torchjd's, the official code's), its weighting
    ``DPPNashWeighting``. torchjd keeps its state as numpy values on the weighting; written
    here: that state as tensors in this module's state_dict, so a ``weights_only`` checkpoint
    resumes it, and on loading, the solver problem rebuilt from it (torchjd builds it only at
    its first step)."""

    def __init__(self, config: BalancingConfig) -> None:
        knobs = config.knobs
        super().__init__(config, lambda: dpp_nash_mtl(
            len(config.tasks), float(knobs["max_norm"]), int(knobs["update_weights_every"]),
            int(knobs["optim_niter"])))

    def get_extra_state(self):
        w = self.aggregator.weighting
        return {"step": torch.tensor(float(w.step), dtype=torch.float64),
                "prvs_alpha": torch.from_numpy(np.asarray(w.prvs_alpha, dtype=np.float64)),
                "normalization_factor": torch.from_numpy(
                    np.asarray(w.normalization_factor, dtype=np.float64))}

    def set_extra_state(self, state):
        w = self.aggregator.weighting
        w.step = float(state["step"])
        w.prvs_alpha = state["prvs_alpha"].numpy().astype(np.float32)
        w.normalization_factor = state["normalization_factor"].numpy()
        if w.step > 0:
            w._init_optim_problem()  # what torchjd's own first step does, from prvs_alpha


def dpp_nash_mtl(n_tasks: int, max_norm: float = 1.0, update_weights_every: int = 1,
                 optim_niter: int = 20) -> aggregation.NashMTL:
    """torchjd's ``NashMTL`` with its weighting replaced by ``DPPNashWeighting``: the same
    weights (to the solver's tolerance), each solve without canonicalising the problem again."""
    aggregator = aggregation.NashMTL(n_tasks, max_norm, update_weights_every, optim_niter)
    aggregator.weighting = DPPNashWeighting(n_tasks, max_norm, update_weights_every,
                                            optim_niter)
    return aggregator


class DPPNashWeighting(_NashMTLWeighting):
    """torchjd 0.18.0's Nash-MTL weighting with its convex problem in cvxpy's DPP form.

    Written here because torchjd's problem is not DPP: cvxpy warns "You are solving a
    parameterized problem that is not DPP" and canonicalises it again at every solve, up to
    ``optim_niter`` solves a step. Its objective Σ(Gα) + φ'·(α − α₀)/n linearises φ at the
    previous α₀ with φ' = 1/α₀ + (1/(Gα₀))·G written as an expression of the parameters G and
    α₀ (and divided by the parameter n), products and quotients of parameters that DPP
    forbids. Here φ'/n is computed with numpy before each solve and enters as one parameter
    vector, ``slope``; the constant −φ'·α₀/n is left out (it moves no minimiser). The
    constraints are torchjd's (they are DPP), and so is the iteration: torchjd's
    ``_solve_optimization`` runs unchanged, setting G, α₀ and n, and calls ``self.prob.solve``,
    which sets ``slope`` from them first (``_Linearised``)."""

    def _init_optim_problem(self) -> None:
        n = self.n_tasks
        self.alpha_param = cp.Variable(shape=(n,), nonneg=True)
        self.prvs_alpha_param = cp.Parameter(shape=(n,), value=self.prvs_alpha)
        self.G_param = cp.Parameter(shape=(n, n), value=self.init_gtg)
        self.normalization_factor_param = cp.Parameter(shape=(1,), value=np.array([1.0]))
        self.slope = cp.Parameter(shape=(n,))
        g_alpha = self.G_param @ self.alpha_param
        constraints = [-cp.log(a * self.normalization_factor_param) - cp.log(g_a) <= 0
                       for a, g_a in zip(self.alpha_param, g_alpha, strict=True)]
        objective = cp.Minimize(cp.sum(g_alpha) + self.slope @ self.alpha_param)
        self.prob = _Linearised(cp.Problem(objective, constraints), self)


class _Linearised:
    """A DPP problem of ``DPPNashWeighting``, solved after setting its ``slope`` from the
    weighting's parameter values: φ'(α₀)/n = (1/α₀ + (1/(Gα₀))·G)/n. A zero in α₀ makes the
    slope infinite and cvxpy refuse it (ValueError), which torchjd's loop handles as it handles
    its own solver's failures."""

    def __init__(self, problem: cp.Problem, weighting: DPPNashWeighting) -> None:
        self.problem, self.weighting = problem, weighting

    def solve(self, **options):
        w = self.weighting
        gram, previous = w.G_param.value, w.prvs_alpha_param.value
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (1 / previous + (1 / (gram @ previous)) @ gram)
        w.slope.value = slope / w.normalization_factor_param.value[0]
        return self.problem.solve(**options)
