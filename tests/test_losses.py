import pytest
import torch

from mtlbench.cards import MethodCard
from mtlbench.losses import (
    TrialLoss,
    UncertaintyWeighting,
    code_dice_loss,
    soft_dice_loss,
)
from mtlbench.protocol import get_protocol
from mtlbench.train import build_loss
from mtlbench_methods.perceptual import LOSSNET, LOSSNET_KNOBS, LossNet, vgg16_features

SEG_CLS = frozenset({"seg", "cls"})
PAPER = get_protocol("paper", "busi")
CODE = get_protocol("paper", "busi", {"loss_mode": "code"})


def card(tasks=SEG_CLS, lossnet=True):
    """A method with ACSNet's LossNet term (or none) on the given tasks."""
    return MethodCard(name="m", build=lambda config: None, tasks=tasks,
                      family="multi-task" if len(tasks) == 2 else "single-task",
                      loss_terms=(LOSSNET,) if lossnet else (),
                      knobs=LOSSNET_KNOBS if lossnet else ())


def lossnet_knobs(weight=0.2, vgg="random"):
    return {"lossnet_weight": weight, "lossnet_vgg": vgg}


def batch():
    torch.manual_seed(0)
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:20, 10:24] = 1
    outputs = {"seg": torch.randn(2, 1, 32, 32, requires_grad=True),
               "cls": torch.randn(2, 2, requires_grad=True)}
    return outputs, masks, torch.tensor([0, 1])


def test_dice_loss_perfect_and_worst():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50  # logits saturating to the target
    assert soft_dice_loss(perfect, target).item() < 1e-3
    assert soft_dice_loss(-perfect, target).item() > 0.95


def test_dice_loss_is_per_sample_mean():
    target = torch.zeros(2, 1, 4, 4)
    target[0, :, :2] = 1
    logits = torch.full((2, 1, 4, 4), -50.0)
    logits[0] = target[0] * 100 - 50
    # sample 0 perfect (loss 0); sample 1: empty target and empty prediction: (0+1)/(0+0+1) = 1
    assert soft_dice_loss(logits, target, smooth=1.0).item() < 1e-3


def test_code_dice_form_puts_the_smoothing_inside_the_factor_2():
    target = torch.zeros(1, 1, 4, 4)
    logits = torch.full((1, 1, 4, 4), -50.0)  # empty prediction, empty target
    # code: 1 − 2(0 + s)/(0 + s) = −1; paper: 1 − (0 + 1)/(0 + 1) = 0
    assert code_dice_loss(logits, target).item() == pytest.approx(-1.0)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0)


def test_paper_weighting_without_lossnet():
    outputs, masks, labels = batch()
    terms = TrialLoss(SEG_CLS, "paper", cls_weight=0.3).terms(outputs, masks, labels)
    assert set(terms) == {"dice", "ce", "total"}
    assert torch.allclose(terms["total"], 0.3 * terms["ce"] + 0.7 * terms["dice"])
    seg_only = TrialLoss(frozenset({"seg"})).terms(outputs, masks, labels)
    assert set(seg_only) == {"dice", "total"} and torch.equal(seg_only["total"], seg_only["dice"])
    cls_only = build_loss(card(frozenset({"cls"})), PAPER, lossnet_knobs(0.2))
    assert cls_only.term_modules == []  # LossNet is a segmentation loss


def test_paper_loss_with_lossnet_follows_the_formula():
    outputs, masks, labels = batch()
    knobs = lossnet_knobs(0.2, "random")
    loss = TrialLoss(SEG_CLS, "paper", cls_weight=0.3,
                     terms=[(LOSSNET, LOSSNET.build(knobs, PAPER))], knobs=knobs)
    assert [type(m.loss) for m in loss.term_modules] == [LossNet]
    terms = loss.terms(outputs, masks, labels)
    assert set(terms) == {"dice", "ce", "lossnet", "total"}
    assert terms["lossnet"] > 0
    expected = 0.3 * terms["ce"] + 0.7 * (terms["dice"] + 0.2 * terms["lossnet"])
    assert torch.allclose(terms["total"], expected)
    assert "RANDOM VGG-16, not the paper's LossNet" in loss.describe()
    assert any("RANDOM VGG-16" in note for note in loss.caveats())  # footnoted in tables
    # the frozen VGG is neither trained nor saved
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    # only methods whose card asks for LossNet get it, and only with γ > 0
    assert build_loss(card(lossnet=False), PAPER).term_modules == []
    assert build_loss(card(), PAPER, lossnet_knobs(0.0, "imagenet")).term_modules == []
    # the card's build_loss gives the same loss as the terms built by hand
    built = build_loss(card(), PAPER, knobs)
    assert [type(m.loss) for m in built.term_modules] == [LossNet]
    assert built.describe() == loss.describe()


def test_lossnet_is_zero_on_a_perfect_prediction_and_trains_only_the_prediction():
    torch.manual_seed(0)
    net = LossNet("random")
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 4:16, 4:20] = 1
    assert net(masks.clone(), masks).item() == 0.0
    probs = torch.rand(2, 1, 32, 32, requires_grad=True)
    value = net(probs, masks)
    value.backward()
    assert value > 0 and probs.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # stays frozen in eval mode


def test_lossnet_levels_end_at_the_paper_relus():
    net = LossNet("random")
    shapes = []
    x = torch.zeros(1, 3, 32, 32)
    for block in net.blocks:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
        assert isinstance(block[-1], torch.nn.ReLU)
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


def test_imagenet_vgg_features_come_from_torchvision_weights(monkeypatch):
    from torchvision.models import VGG16_Weights

    reference = vgg16_features("random")
    state = {f"features.{k}": torch.full_like(v, 0.5) for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(3, 3)  # ignored
    seen = []

    def fake_state_dict(self, progress=True, **kwargs):
        seen.append(self)
        return state

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", fake_state_dict)
    features = vgg16_features("imagenet")
    assert seen == [VGG16_Weights.IMAGENET1K_V1]
    assert all(torch.all(v == 0.5) for v in features.state_dict().values())
    with pytest.raises(ValueError, match="imagenet"):
        vgg16_features("imagenet21k")


def test_code_mode_is_uncertainty_weighted_dice_and_ce_without_lossnet():
    outputs, masks, labels = batch()
    loss = build_loss(card(), CODE, lossnet_knobs(0.2))
    assert loss.mode == "code" and loss.term_modules == []
    with torch.no_grad():
        loss.weighting.sigma.copy_(torch.tensor([2.0, 0.5]))
    terms = loss.terms(outputs, masks, labels)
    assert set(terms) == {"dice", "ce", "total"}
    expected = (0.5 / 4 * terms["dice"] + torch.log1p(torch.tensor(4.0))
                + 0.5 / 0.25 * terms["ce"] + torch.log1p(torch.tensor(0.25)))
    assert torch.allclose(terms["total"], expected)
    assert torch.allclose(terms["dice"], code_dice_loss(outputs["seg"], masks))
    assert [p.shape for p in loss.parameters()] == [torch.Size([2])]
    assert set(loss.state_dict()) == {"weighting.sigma"}
    terms["total"].backward()
    assert loss.weighting.sigma.grad.abs().sum() > 0
    assert "uncertainty-weighted" in loss.describe()


def test_uncertainty_weighting_starts_at_sigma_one():
    weighting = UncertaintyWeighting(2)
    total = weighting(torch.tensor(1.0), torch.tensor(3.0))
    assert total.item() == pytest.approx(0.5 * 1 + 0.5 * 3 + 2 * torch.log1p(torch.tensor(1.0)))


def test_unknown_loss_mode_is_refused():
    with pytest.raises(ValueError, match="paper' or 'code"):
        TrialLoss(SEG_CLS, "awl")
