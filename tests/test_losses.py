import torch

from mtlbench.losses import soft_dice_loss, task_losses


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


def test_multitask_weighting():
    outputs = {"seg": torch.zeros(2, 1, 4, 4), "cls": torch.zeros(2, 2)}
    masks, labels = torch.ones(2, 1, 4, 4), torch.tensor([0, 1])
    terms = task_losses(outputs, masks, labels, frozenset({"seg", "cls"}), 0.3, 1.0)
    expected = 0.3 * terms["ce"] + 0.7 * terms["dice"]
    assert torch.allclose(terms["total"], expected)
    seg_only = task_losses(outputs, masks, labels, frozenset({"seg"}), 0.3, 1.0)
    assert set(seg_only) == {"dice", "total"} and torch.equal(seg_only["total"], seg_only["dice"])
