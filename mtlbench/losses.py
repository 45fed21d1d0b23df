"""Losses of the common protocol: soft Dice, cross-entropy and their multi-task combination."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − (2Σpg + s)/(Σp + Σg + s) per sample on sigmoid probabilities, averaged (Eq. 9)."""
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (probs * target).sum(1)
    dice = (2 * inter + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return (1 - dice).mean()


def task_losses(outputs: dict[str, torch.Tensor], masks: torch.Tensor, labels: torch.Tensor,
                tasks: frozenset[str], cls_weight: float,
                dice_smooth: float) -> dict[str, torch.Tensor]:
    """The loss terms of one batch and their total under the protocol's weighting.

    Multi-task: total = λ·CE + (1−λ)·Dice; segmentation only: Dice; classification only: CE.
    """
    terms: dict[str, torch.Tensor] = {}
    if "seg" in tasks:
        terms["dice"] = soft_dice_loss(outputs["seg"], masks, dice_smooth)
    if "cls" in tasks:
        terms["ce"] = F.cross_entropy(outputs["cls"].float(), labels)
    if len(terms) == 2:
        terms["total"] = cls_weight * terms["ce"] + (1 - cls_weight) * terms["dice"]
    else:
        terms["total"] = next(iter(terms.values()))
    return terms
