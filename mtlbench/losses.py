"""Losses of the protocol (spec §3): soft Dice, cross-entropy, LossNet and their combination.

``loss_mode=paper`` (default): L = λ·CE + (1−λ)·(Dice + γ·LossNet), the LossNet term only for
methods whose card asks for it (Qu et al.'s card asks for its own perceptual term, weighted by
β, in its place). ``loss_mode=code``: the released training script's loss,
learned uncertainty weighting of Dice and CE, no LossNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The released code's Dice smoothing (spec §3), used by loss_mode=code.
CODE_DICE_SMOOTH = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def vgg16_features(weights: str) -> nn.Sequential:
    """VGG-16's convolutional layers up to relu4_3 (torchvision layers 0–22).

    ``weights`` is "imagenet" (torchvision's IMAGENET1K_V1, from torch's hub cache; the caller
    makes sure the file is there) or "random" (torchvision's default initialisation).
    The classifier is never built: it would hold 124 M unused parameters.
    """
    from torchvision.models import VGG16_Weights
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)[:23]
    if weights == "imagenet":
        state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if k.startswith("features.") and int(k.split(".")[1]) < 23})
    elif weights != "random":
        raise ValueError(f"LossNet: weights must be 'imagenet' or 'random', got {weights!r}")
    return features


class VGGFeatureLoss(nn.Module):
    """A perceptual loss through a frozen VGG-16: MSE between its features of the predicted
    probabilities and of the ground-truth mask, each repeated to 3 channels, at relu1_2,
    relu2_2, relu3_3 and relu4_3, summed or averaged over the four levels.

    Gradients flow through the VGG into the prediction only. Subclasses fix the variant.
    """

    #: Layer ranges of torchvision's vgg16.features ending at relu1_2, relu2_2, relu3_3, relu4_3.
    LEVELS = ((0, 4), (4, 9), (9, 16), (16, 23))
    normalise = True  # ImageNet mean/std before the VGG
    reduction = "sum"  # over the four levels: "sum" or "mean"

    def __init__(self, weights: str = "imagenet") -> None:
        super().__init__()
        features = vgg16_features(weights)
        self.weights = weights
        self.blocks = nn.ModuleList(features[a:b] for a, b in self.LEVELS)
        for p in self.blocks.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatureLoss:
        """Stays in eval mode: the VGG is frozen."""
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std if self.normalise else x

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss for probs and target of shape (B, 1, H, W)."""
        p, g = self._prepare(probs), self._prepare(target)
        loss = probs.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            p = block(p)
            with torch.no_grad():
                g = block(g)
            loss = loss + F.mse_loss(p, g)
        return loss / len(self.blocks) if self.reduction == "mean" else loss


class LossNet(VGGFeatureLoss):
    """The perceptual loss of MSNet (Zhao et al. 2021) as ACSNet uses it (spec §3): ImageNet
    normalisation, the four levels' MSEs summed. Inputs stay at the protocol's size (the
    reference resizes to 256², the paper's size)."""


class QuPerceptualLoss(VGGFeatureLoss):
    """Qu et al. 2019's perceptual term (spec §8.4): no ImageNet normalisation, the four
    levels' MSEs averaged. Here on the tumour probability map against the mask (Qu used the
    nucleus-contour map; BUS has no contour class)."""

    normalise = False
    reduction = "mean"


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


PIXEL_LOGITS = "pixel_logits"


def pixel_class_loss(outputs: dict[str, torch.Tensor], masks: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``outputs["pixel_logits"]`` (B, 1 + K, H, W) against the map that is 0
    on background and 1 + the image's class on its tumour pixels (Qu et al. 2019's
    "fine-grained" pixel classification, spec §8.4)."""
    logits = outputs.get(PIXEL_LOGITS)
    if logits is None:
        raise KeyError(f"the pixel-wise loss needs the model to return {PIXEL_LOGITS!r} "
                       "(B, 1 + K, H, W) besides 'seg' and 'cls'")
    target = (masks[:, 0] > 0.5).long() * (labels.view(-1, 1, 1) + 1)
    return F.cross_entropy(logits.float(), target)


class TrialLoss(nn.Module):
    """The loss of one trial: built from the method's tasks and extra losses and the protocol.

    ``terms(outputs, masks, labels)`` returns the named terms and their ``"total"``.
    ``parameters()`` are the learned loss weights (code mode) that train with the model;
    ``state_dict()`` holds only those (the frozen LossNet is rebuilt, never saved).
    """

    def __init__(self, tasks: frozenset[str], extra_losses: tuple[str, ...], mode: str = "paper",
                 cls_weight: float = 0.3, dice_smooth: float = 1.0, lossnet_weight: float = 0.0,
                 lossnet_vgg: str = "imagenet", perceptual_weight: float = 0.0) -> None:
        super().__init__()
        if mode not in ("paper", "code"):
            raise ValueError(f"loss mode must be 'paper' or 'code', got {mode!r}")
        self.tasks, self.mode = frozenset(tasks), mode
        self.cls_weight, self.dice_smooth = cls_weight, dice_smooth
        seg_extras = mode == "paper" and "seg" in self.tasks
        kind, weight = None, 0.0
        if seg_extras and "lossnet" in extra_losses and lossnet_weight > 0:
            kind, weight = LossNet, lossnet_weight
        elif seg_extras and "qu_perceptual" in extra_losses and perceptual_weight > 0:
            kind, weight = QuPerceptualLoss, perceptual_weight
        self.lossnet_weight = weight  # the weight of the perceptual term in L_seg
        # Qu et al.'s pixel-wise form replaces the whole loss (both tasks come from one map).
        self.pixel_classes = "pixel_classes" in extra_losses
        # Kept out of the module tree so that state_dict and parameters() never include it.
        self._lossnet = [kind(lossnet_vgg)] if kind is not None else []
        self.weighting = (UncertaintyWeighting(2) if mode == "code" and len(self.tasks) == 2
                          else None)

    @property
    def lossnet(self) -> VGGFeatureLoss | None:
        """The perceptual term of L_seg (LossNet or Qu's), None without one."""
        return self._lossnet[0] if self._lossnet else None

    def to(self, *args, **kwargs) -> TrialLoss:
        super().to(*args, **kwargs)
        self._lossnet = [m.to(*args, **kwargs) for m in self._lossnet]
        return self

    def describe(self) -> str:
        """The loss in words, as tables and results record it."""
        if self.pixel_classes:
            return "pixel CE over background + K classes (Qu et al.'s pixel-wise form)"
        if self.mode == "code":
            return ("code: uncertainty-weighted Dice + CE, no LossNet" if self.weighting
                    else "code: " + ("Dice" if "seg" in self.tasks else "CE"))
        parts = []
        if "seg" in self.tasks:
            seg = "Dice"
            if self.lossnet is not None:
                name = "LossNet" if isinstance(self.lossnet, LossNet) else "Qu perceptual"
                vgg = ("ImageNet VGG-16" if self.lossnet.weights == "imagenet"
                       else f"RANDOM VGG-16, not the paper's {name}")
                seg += f" + {self.lossnet_weight:g}·{name} ({vgg})"
            parts.append(seg)
        if "cls" in self.tasks:
            parts.append("CE")
        if len(parts) == 2:
            return f"{self.cls_weight:g}·CE + {1 - self.cls_weight:g}·({parts[0]})"
        return parts[0]

    def terms(self, outputs: dict[str, torch.Tensor], masks: torch.Tensor,
              labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pixel_classes:
            ce = pixel_class_loss(outputs, masks, labels)
            return {"pixel_ce": ce, "total": ce}
        terms: dict[str, torch.Tensor] = {}
        seg = ce = None
        if "seg" in self.tasks:
            logits = outputs["seg"]
            if self.mode == "code":
                terms["dice"] = seg = code_dice_loss(logits, masks)
            else:
                terms["dice"] = seg = soft_dice_loss(logits, masks, self.dice_smooth)
                if self.lossnet is not None:
                    terms["lossnet"] = self.lossnet(torch.sigmoid(logits.float()), masks)
                    seg = seg + self.lossnet_weight * terms["lossnet"]
        if "cls" in self.tasks:
            terms["ce"] = ce = F.cross_entropy(outputs["cls"].float(), labels)
        if seg is not None and ce is not None:
            terms["total"] = (self.weighting(seg, ce) if self.weighting is not None
                              else self.cls_weight * ce + (1 - self.cls_weight) * seg)
        else:
            terms["total"] = seg if seg is not None else ce
        return terms
