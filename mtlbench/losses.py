"""Losses of the protocol (spec §3): soft Dice, cross-entropy, a method's own terms, and how
they combine.

``loss_mode=paper`` (default): L = λ·CE + (1−λ)·(Dice + the method's terms on the mask).
``loss_mode=code``: the reference paper's released training script's loss, learned uncertainty
weighting of its Dice form and CE, no extra terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from mtlbench.cards import LossTerm, MethodCard
    from mtlbench.protocol import Protocol

#: The released code's Dice smoothing (spec §3), used by loss_mode=code.
CODE_DICE_SMOOTH = 1e-5


def _dice_sums(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: Σpg and Σp + Σg, on sigmoid probabilities."""
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    return (probs * target).sum(1), probs.sum(1) + target.sum(1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − (2Σpg + s)/(Σp + Σg + s) per sample on sigmoid probabilities, averaged (Eq. 9)."""
    inter, total = _dice_sums(logits, target)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def code_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                   smooth: float = CODE_DICE_SMOOTH) -> torch.Tensor:
    """The released code's form, 1 − 2(Σpg + s)/(Σp + Σg + s), per sample, averaged."""
    inter, total = _dice_sums(logits, target)
    return (1 - 2 * (inter + smooth) / (total + smooth)).mean()


class UncertaintyWeighting(nn.Module):
    """The released code's "AutomaticWeightedLoss": Σ_i 0.5/σ_i²·L_i + log(1 + σ_i²).

    σ is learned (initialised to 1) and trained with the model (weight decay included).
    """

    def __init__(self, count: int = 2) -> None:
        super().__init__()
        self.sigma = nn.Parameter(torch.ones(count))

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        var = self.sigma ** 2
        return sum(0.5 / var[i] * loss + torch.log1p(var[i]) for i, loss in enumerate(losses))


class TrialLoss(nn.Module):
    """The loss of one trial: the task losses of the method's tasks, the method's own loss
    terms (``MethodCard.loss_terms``), combined as the protocol says.

    ``loss_mode=paper``: L = λ·L_cls + (1−λ)·L_seg, L_seg = Dice + Σ w·term for the terms on
    ``seg``, L_cls = CE + Σ w·term for those on ``cls``. ``loss_mode=code``: the reference
    paper's released script: uncertainty-weighted code-form Dice and CE, no terms. A term on
    ``whole`` is the whole loss in either mode.

    ``terms(outputs, masks, labels)`` returns the named parts and their ``"total"``.
    ``parameters()`` are the learned loss weights (code mode) that train with the model;
    ``state_dict()`` holds only those (the frozen terms are rebuilt, never saved).
    """

    def __init__(self, tasks: frozenset[str], mode: str = "paper", cls_weight: float = 0.3,
                 dice_smooth: float = 1.0, terms: Sequence[tuple[LossTerm, nn.Module]] = (),
                 knobs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if mode not in ("paper", "code"):
            raise ValueError(f"loss mode must be 'paper' or 'code', got {mode!r}")
        self.tasks, self.mode = frozenset(tasks), mode
        self.cls_weight, self.dice_smooth = cls_weight, dice_smooth
        self.knobs = dict(knobs or {})
        for _, module in terms:
            freeze(module)
        # Kept out of the module tree so that state_dict and parameters() never include them.
        self._terms = [(term, module, term.weight_value(self.knobs)) for term, module in terms]
        self.weighting = (UncertaintyWeighting(2) if mode == "code" and len(self.tasks) == 2
                          and self._whole is None else None)

    @property
    def _whole(self) -> tuple[LossTerm, nn.Module, float] | None:
        """The term that is the whole loss, if the method has one."""
        return next(((t, m, w) for t, m, w in self._terms if t.part == "whole"), None)

    @property
    def term_modules(self) -> list[nn.Module]:
        """The modules of the method's loss terms in this trial (frozen)."""
        return [m for _, m, _ in self._terms]

    def to(self, *args, **kwargs) -> TrialLoss:
        super().to(*args, **kwargs)
        self._terms = [(t, m.to(*args, **kwargs), w) for t, m, w in self._terms]
        return self

    def caveats(self) -> list[str]:
        """Footnotes the method's terms ask for under these knobs (``LossTerm.caveat``)."""
        notes = [t.caveat(self.knobs) for t, _, _ in self._terms if t.caveat]
        return [n for n in notes if n]

    def describe(self) -> str:
        """The loss in words, as tables and results record it."""
        if self._whole is not None:
            return self._whole[0].text(self.knobs)
        if self.mode == "code":
            return ("code: uncertainty-weighted Dice + CE, no extra terms" if self.weighting
                    else "code: " + ("Dice" if "seg" in self.tasks else "CE"))

        def with_terms(base: str, part: str) -> str:
            extra = [f"{w:g}·{t.text(self.knobs)}" for t, _, w in self._terms if t.part == part]
            return " + ".join([base, *extra])

        parts = []
        if "seg" in self.tasks:
            parts.append(with_terms("Dice", "seg"))
        if "cls" in self.tasks:
            parts.append(with_terms("CE", "cls"))
        if len(parts) == 2:
            cls = parts[1] if parts[1] == "CE" else f"({parts[1]})"
            return f"{self.cls_weight:g}·{cls} + {1 - self.cls_weight:g}·({parts[0]})"
        return parts[0]

    def terms(self, outputs: dict[str, torch.Tensor], masks: torch.Tensor,
              labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.terms_and_tasks(outputs, masks, labels)[0]

    def terms_and_tasks(self, outputs: dict[str, torch.Tensor], masks: torch.Tensor,
                        labels: torch.Tensor
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``terms(...)`` and the task losses a balancing combines: ``seg`` (Dice + the terms
        on ``seg``) and ``cls`` (CE + the terms on ``cls``) for the tasks the method solves;
        a method whose term is the whole loss has the one task loss ``whole``."""
        if self._whole is not None:
            term, module, weight = self._whole
            value = module(outputs, masks, labels)
            total = value if weight == 1 else weight * value
            return {term.name: value, "total": total}, {"whole": total}
        terms: dict[str, torch.Tensor] = {}
        seg = ce = None
        if "seg" in self.tasks:
            logits = outputs["seg"]
            if self.mode == "code":
                terms["dice"] = seg = code_dice_loss(logits, masks)
            else:
                terms["dice"] = seg = soft_dice_loss(logits, masks, self.dice_smooth)
        if "cls" in self.tasks:
            terms["ce"] = ce = F.cross_entropy(outputs["cls"].float(), labels)
        for term, module, weight in self._terms:
            terms[term.name] = value = module(outputs, masks, labels)
            if term.part == "seg":
                seg = seg + weight * value
            else:
                ce = ce + weight * value
        if seg is not None and ce is not None:
            terms["total"] = (self.weighting(seg, ce) if self.weighting is not None
                              else self.cls_weight * ce + (1 - self.cls_weight) * seg)
        else:
            terms["total"] = seg if seg is not None else ce
        tasks = {name: value for name, value in (("seg", seg), ("cls", ce)) if value is not None}
        return terms, tasks


def freeze(module: nn.Module) -> nn.Module:
    """No gradients into ``module``'s own parameters, and eval mode (a loss term's networks are
    fixed; gradients still flow through it into the prediction)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def build_terms(method: MethodCard, knobs: dict[str, Any], protocol: Protocol
                ) -> list[tuple[LossTerm, nn.Module]]:
    """The method's loss terms that are active under ``knobs`` and ``protocol``, built under a
    random generator seeded with the protocol's seed (so that a term with a randomly
    initialised network draws the same one every time, and the model's initialisation does
    not depend on which terms exist)."""
    active = [t for t in method.loss_terms
              if t.active(knobs, protocol.loss_mode, method.tasks)]
    if not active:
        return []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(protocol.seed)
        return [(t, t.build(knobs, protocol)) for t in active]
