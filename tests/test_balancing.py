"""Each built-in balancing's update against a hand computation on a two-parameter toy problem.

θ = (a, b) at (0.5, 0.5); L_seg = (a − 1)² + b², L_cls = a² + (b − 2)². There
g_seg = (−1, 1) and g_cls = (1, −3) conflict (g_seg·g_cls = −4), so every aggregator has
something to do. Tasks are sorted: row 0 is ``cls``, row 1 is ``seg``.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from mtlbench.balancing import BalancingConfig
from mtlbench.plugins import load_plugins

G_SEG = torch.tensor([-1.0, 1.0])
G_CLS = torch.tensor([1.0, -3.0])
CONFIG = BalancingConfig(tasks=("cls", "seg"), cls_weight=0.3, seed=7)


@pytest.fixture(scope="module")
def cards():
    return load_plugins().balancings


def toy(theta=None):
    """θ (a new parameter at (0.5, 0.5) unless given), the two task losses and the fixed total."""
    if theta is None:
        theta = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    theta.grad = None
    a, b = theta[0], theta[1]
    losses = {"seg": (a - 1) ** 2 + b ** 2, "cls": a ** 2 + (b - 2) ** 2}
    total = 0.3 * losses["cls"] + 0.7 * losses["seg"]
    return theta, losses, total


def step(balancing, theta=None):
    """The update direction the balancing leaves in θ.grad, and the losses it saw (on the
    parameter ``theta`` when given: a gradient balancing keeps which parameters are shared)."""
    theta, losses, total = toy(theta)
    balancing.backward(losses, total, [theta])
    return theta.grad.detach(), {k: float(v.detach()) for k, v in losses.items()}


def build(cards, name, config=CONFIG):
    return cards.get(name).build(config)


def test_toy_gradients_are_what_the_docstring_says():
    theta, losses, _ = toy()
    assert torch.allclose(torch.autograd.grad(losses["seg"], theta)[0], G_SEG)
    assert torch.allclose(torch.autograd.grad(losses["cls"], theta)[0], G_CLS)


def test_fixed_is_the_protocols_combination(cards):
    grad, _ = step(build(cards, "fixed"))
    assert torch.allclose(grad, 0.3 * G_CLS + 0.7 * G_SEG)


def test_uncertainty_at_its_start_and_its_sigma_gradient(cards):
    balancing = build(cards, "uncertainty")
    grad, losses = step(balancing)
    # σ = 1: 0.5/σ² = 0.5 for both tasks; d/dσ (0.5/σ²·L + log(1+σ²)) = −L/σ³ + 2σ/(1+σ²).
    assert torch.allclose(grad, 0.5 * G_CLS + 0.5 * G_SEG)
    sigma_grad = balancing.uncertainty.sigma.grad
    assert torch.allclose(sigma_grad, torch.tensor([-losses["cls"] + 1, -losses["seg"] + 1]))
    assert list(balancing.parameters()) == [balancing.uncertainty.sigma]


def test_dwa_weights_from_the_two_previous_epochs(cards):
    balancing = build(cards, "dwa")
    grad, _ = step(balancing)
    assert torch.allclose(grad, G_CLS + G_SEG)  # w = 1 before two epochs are known
    balancing.end_epoch({"cls": 2.0, "seg": 1.0})
    assert torch.allclose(step(balancing)[0], G_CLS + G_SEG)
    balancing.end_epoch({"cls": 1.0, "seg": 0.9})
    r_cls, r_seg = 1.0 / 2.0, 0.9 / 1.0
    e_cls, e_seg = math.exp(r_cls / 2), math.exp(r_seg / 2)
    w_cls, w_seg = 2 * e_cls / (e_cls + e_seg), 2 * e_seg / (e_cls + e_seg)
    assert torch.allclose(step(balancing)[0], w_cls * G_CLS + w_seg * G_SEG)
    assert balancing.weights() == pytest.approx({"cls": w_cls, "seg": w_seg})
    # The history is state: a fresh balancing loaded from it weighs the same.
    again = build(cards, "dwa")
    again.load_state_dict(balancing.state_dict())
    assert torch.allclose(step(again)[0], w_cls * G_CLS + w_seg * G_SEG)


def test_rlw_softmax_of_normal_draws_from_its_seeded_generator(cards):
    balancing = build(cards, "rlw")
    draws = torch.Generator().manual_seed(CONFIG.seed)
    for _ in range(3):
        z = torch.randn(2, generator=draws)
        w = torch.exp(z) / torch.exp(z).sum()
        assert torch.allclose(step(balancing)[0], w[0] * G_CLS + w[1] * G_SEG, atol=1e-6)
    # Its generator is checkpointed state (through weights_only): the next draw continues.
    saved = balancing.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    again = build(cards, "rlw")
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.allclose(step(again)[0], step(balancing)[0])


def project_off(g, h):
    """g with its component against h removed when g·h < 0 (PCGrad's projection)."""
    dot = float(g @ h)
    return g - dot / float(h @ h) * h if dot < 0 else g


def test_pcgrad_projects_each_conflicting_gradient(cards):
    expected = project_off(G_CLS, G_SEG) + project_off(G_SEG, G_CLS)
    assert torch.allclose(step(build(cards, "pcgrad"))[0], expected, atol=1e-6)


def test_upgrad_averages_the_dual_cone_projections(cards):
    # With two conflicting rows, projecting g_i onto {x: x·g_j ≥ 0 ∀j} is PCGrad's
    # projection off the other row (it keeps x·g_i ≥ 0 by Cauchy–Schwarz); UPGrad averages.
    # atol: torchjd's quadprog projector regularises the Gramian (reg_eps = 1e-4 on its diagonal).
    expected = (project_off(G_CLS, G_SEG) + project_off(G_SEG, G_CLS)) / 2
    assert torch.allclose(step(build(cards, "upgrad"))[0], expected, atol=1e-3)


def test_mgda_is_the_min_norm_point_of_the_segment(cards):
    alpha = float((G_SEG - G_CLS) @ G_SEG / ((G_CLS - G_SEG) @ (G_CLS - G_SEG)))
    alpha = min(max(alpha, 0.0), 1.0)
    expected = alpha * G_CLS + (1 - alpha) * G_SEG
    got = step(build(cards, "mgda"))[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert float(got @ G_CLS) == pytest.approx(float(got @ G_SEG), abs=1e-4)  # interior point


def test_imtlg_projects_equally_onto_both_directions(cards):
    u = G_CLS / G_CLS.norm() - G_SEG / G_SEG.norm()
    alpha = -float(G_SEG @ u) / float((G_CLS - G_SEG) @ u)
    expected = alpha * G_CLS + (1 - alpha) * G_SEG
    got = step(build(cards, "imtlg"))[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert float(got @ G_CLS / G_CLS.norm()) == pytest.approx(float(got @ G_SEG / G_SEG.norm()),
                                                              abs=1e-5)


def test_alignedmtl_is_sqrt_lambda_min_times_the_inverse_root_gramian(cards):
    jacobian = torch.stack([G_CLS, G_SEG]).double()
    gram = jacobian @ jacobian.T
    tr, det = float(gram.trace()), float(torch.linalg.det(gram))
    # 2×2 closed forms: √M = (M + √det·I)/√(tr + 2√det); λ_min = (tr − √(tr² − 4det))/2.
    root = (gram + math.sqrt(det) * torch.eye(2, dtype=torch.float64)) / math.sqrt(
        tr + 2 * math.sqrt(det))
    lam_min = (tr - math.sqrt(tr * tr - 4 * det)) / 2
    weights = math.sqrt(lam_min) * torch.linalg.inv(root) @ torch.tensor([0.5, 0.5]).double()
    expected = (weights @ jacobian).float()
    assert torch.allclose(step(build(cards, "alignedmtl"))[0], expected, atol=1e-5)


def test_cagrad_against_a_grid_search_of_its_dual(cards):
    c = 0.4  # the built-in's c
    g0 = (G_CLS + G_SEG) / 2
    best = None
    for k in range(200_001):
        w = k / 200_000
        gw = w * G_CLS + (1 - w) * G_SEG
        cost = float(gw @ g0) + c * float(g0.norm()) * float(gw.norm())
        if best is None or cost < best[0]:
            best = (cost, gw)
    gw = best[1]
    expected = g0 + c * g0.norm() / gw.norm() * gw
    assert torch.allclose(step(build(cards, "cagrad"))[0], expected, atol=2e-3)


def test_a_parameter_one_task_reaches_gets_that_tasks_gradient(cards):
    theta, losses, total = toy()
    head = torch.nn.Parameter(torch.tensor(3.0))
    losses["seg"] = losses["seg"] + head ** 2  # only seg reaches the head
    build(cards, "upgrad").backward(losses, total, [theta, head])
    assert float(head.grad) == pytest.approx(6.0)
    expected = (project_off(G_CLS, G_SEG) + project_off(G_SEG, G_CLS)) / 2
    assert torch.allclose(theta.grad, expected, atol=1e-3)


def test_a_card_may_name_the_shared_parameters(cards):
    theta, losses, total = toy()
    # θ named not shared: it gets the plain sum of the task gradients, no aggregation.
    config = BalancingConfig(tasks=("cls", "seg"), shared=frozenset())
    build(cards, "upgrad", config).backward(losses, total, [theta])
    assert torch.allclose(theta.grad, G_CLS + G_SEG)


def test_groups_and_unknown_names():
    plugins = load_plugins()
    loss = plugins.select_balancings("loss")
    gradient = plugins.select_balancings("gradient")
    assert {"fixed", "uncertainty", "dwa", "rlw", "famo", "gradnorm"} <= set(loss)
    assert {"pcgrad", "mgda", "upgrad", "imtlg", "alignedmtl", "cagrad"} <= set(gradient)
    assert not set(loss) & set(gradient)
    assert plugins.select_balancings("all") == plugins.balancings.names()
    with pytest.raises(KeyError, match="unknown balancing 'pcgard'.*'pcgrad'"):
        plugins.select_balancings("pcgard")


def test_famo_weights_and_its_logit_update(cards):
    balancing = build(cards, "famo")
    grad, losses = step(balancing)
    l_cls, l_seg = losses["cls"], losses["seg"]  # 4.5 and 0.5
    # z = (½, ½): w_t = c·z_t/L_t with c = 1/Σ z_t/L_t.
    c = 1 / (0.5 / l_cls + 0.5 / l_seg)
    assert torch.allclose(grad, c * 0.5 / l_cls * G_CLS + c * 0.5 / l_seg * G_SEG)
    # The next step, at θ = (0.6, 0.7): δ = log L(before) − log L(now), ξ ← −β(diag z − zzᵀ)δ.
    theta = torch.nn.Parameter(torch.tensor([0.6, 0.7]))
    now = {"seg": (theta[0] - 1) ** 2 + theta[1] ** 2, "cls": theta[0] ** 2 + (theta[1] - 2) ** 2}
    n_cls, n_seg = float(now["cls"].detach()), float(now["seg"].detach())
    delta = torch.tensor([math.log(l_cls / n_cls), math.log(l_seg / n_seg)], dtype=torch.float64)
    z = torch.tensor([0.5, 0.5], dtype=torch.float64)
    xi = -0.025 * (torch.diag(z) - torch.outer(z, z)) @ delta
    z = torch.softmax(xi, 0)
    c = 1 / float(z[0] / n_cls + z[1] / n_seg)
    balancing.backward(now, now["cls"], [theta])
    g_cls = torch.tensor([2 * 0.6, 2 * (0.7 - 2)])
    g_seg = torch.tensor([2 * (0.6 - 1), 2 * 0.7])
    expected = c * float(z[0]) / n_cls * g_cls + c * float(z[1]) / n_seg * g_seg
    assert torch.allclose(theta.grad, expected.float(), atol=1e-6)
    assert torch.allclose(balancing.logits, xi)


def test_gradnorm_weights_and_their_gradient(cards):
    balancing = build(cards, "gradnorm")
    theta, losses, total = toy()
    balancing.backward(losses, total, [theta])
    assert torch.allclose(theta.grad, G_CLS + G_SEG)  # w = (1, 1)
    first = {k: float(v.detach()) for k, v in losses.items()}
    # First step: L̃ = 1, r = 1; G = ‖g‖ = (√10, √2), target = mean G; ∂/∂w = sign(G − t)·‖g‖.
    n_cls, n_seg = math.sqrt(10), math.sqrt(2)
    assert balancing.task_weights.grad.tolist() == pytest.approx([n_cls, -n_seg])
    # A later step, the same parameter at θ = (0.6, 0.7), w = (0.5, 1.0): renormalised to
    # (2/3, 4/3) before the step.
    with torch.no_grad():
        balancing.task_weights.copy_(torch.tensor([0.5, 1.0]))
        theta.copy_(torch.tensor([0.6, 0.7]))
    theta.grad = None
    now = {"seg": (theta[0] - 1) ** 2 + theta[1] ** 2, "cls": theta[0] ** 2 + (theta[1] - 2) ** 2}
    l_now = [float(now["cls"].detach()), float(now["seg"].detach())]
    balancing.backward(now, now["cls"], [theta])
    g_cls = torch.tensor([2 * 0.6, 2 * (0.7 - 2)])
    g_seg = torch.tensor([2 * (0.6 - 1), 2 * 0.7])
    w = [2 / 3, 4 / 3]
    assert torch.allclose(theta.grad, w[0] * g_cls + w[1] * g_seg)
    norms = [float(g_cls.norm()), float(g_seg.norm())]
    ratio = [l_now[0] / first["cls"], l_now[1] / first["seg"]]
    ratio = [r / (sum(ratio) / 2) for r in ratio]
    big_g = [w[i] * norms[i] for i in range(2)]
    target = [sum(big_g) / 2 * r ** 1.5 for r in ratio]
    expected = [math.copysign(norms[i], big_g[i] - target[i]) for i in range(2)]
    assert balancing.task_weights.grad.tolist() == pytest.approx(expected, rel=1e-5)


def test_nashmtl_is_the_bargaining_solution_and_its_state_resumes(cards):
    # Gramian normalised by its Frobenius norm; α solves (Ĝα)_t = 1/α_t. With two tasks:
    # a·α1² = c·α2² from the two equations, so α2 = α1·√(a/c), α1² = 1/(a + b·√(a/c)).
    jac = torch.stack([G_CLS, G_SEG]).double()
    gram = jac @ jac.T
    gram = gram / gram.norm()
    a, b, c = float(gram[0, 0]), float(gram[0, 1]), float(gram[1, 1])
    a1 = 1 / math.sqrt(a + b * math.sqrt(a / c))
    alpha = torch.tensor([a1, a1 * math.sqrt(a / c)], dtype=torch.float64)
    direction = alpha @ jac
    direction = direction / direction.norm() if direction.norm() > 1 else direction  # max_norm
    balancing = build(cards, "nashmtl")
    theta = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    assert torch.allclose(step(balancing, theta)[0].double(), direction, atol=1e-2)
    # Its solver state is plain tensors: a fresh one loaded from it takes the same next step.
    buffer = io.BytesIO()
    torch.save(balancing.state_dict(), buffer)
    buffer.seek(0)
    again = build(cards, "nashmtl")
    again.load_state_dict(torch.load(buffer, weights_only=True))
    other = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    assert torch.allclose(step(again, other)[0], step(balancing, theta)[0], atol=1e-6)
