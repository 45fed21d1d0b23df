"""Nash-MTL's DPP form solves torchjd's problem: the same weights, step after step, without
cvxpy canonicalising it again at every solve."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchjd.aggregation as aggregation

from mtlbench.balancing.nash import DPPNashWeighting, dpp_nash_mtl


@pytest.mark.parametrize(("tasks", "update_every"), [(2, 1), (3, 1), (2, 3)])
def test_the_dpp_form_gives_torchjds_weights_step_after_step(tasks, update_every):
    torch.manual_seed(tasks)
    ours = dpp_nash_mtl(tasks, update_weights_every=update_every)
    theirs = aggregation.NashMTL(tasks, update_weights_every=update_every)
    assert isinstance(ours.weighting, DPPNashWeighting)
    # Rows of varied scale and alignment; each step starts from the previous α (state).
    base = torch.randn(tasks, 40, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchjd's problem: cvxpy's "not DPP" warning
        for k in range(12):
            jacobian = (base + 0.5 * torch.randn_like(base)) * (1 + 3 * torch.rand(tasks, 1))
            got, expected = ours(jacobian), theirs(jacobian)
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7), k
    assert ours.weighting.prob.problem.is_dpp()
    assert not theirs.weighting.prob.is_dpp()  # what the DPP form is for


def test_the_dpp_form_does_not_warn():
    ours = dpp_nash_mtl(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            ours(torch.randn(2, 10, dtype=torch.float64))
    assert not [w for w in caught if "DPP" in str(w.message)]
