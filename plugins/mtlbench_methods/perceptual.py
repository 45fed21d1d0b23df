"""Perceptual loss terms through a frozen VGG-16, as method plugins bring them: LossNet
(MSNet's, which ACSNet adds to its segmentation loss, spec §3) and Qu et al.'s perceptual term
(spec §8.4). Each is a ``LossTerm`` with its weight and its VGG's weights as the method's knobs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlbench.cards import Knob, LossTerm
from mtlbench.weights import WeightsSource

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_WEIGHTS = ("imagenet", "random")

VGG16_IMAGENET = WeightsSource(
    "torchvision/vgg16-imagenet", "vgg16-397923af.pth",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    "torchvision VGG-16 ImageNet weights (IMAGENET1K_V1) for the perceptual losses "
    "(LossNet; Qu et al.'s term)",
    "run with --set lossnet_weight=0 (LossNet) and --set perceptual_weight=0 (Qu et "
    "al.'s term) to train without them, or with --set lossnet_vgg=random (LossNet) or "
    "--set perceptual_vgg=random (Qu et al.'s term) for a random VGG-16 (recorded with every "
    "result and marked † in tables: it is not the paper's loss)",
)


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
        raise ValueError(f"VGG-16: weights must be 'imagenet' or 'random', got {weights!r}")
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


class OnMask(nn.Module):
    """A mask loss as a loss term: ``loss(sigmoid(outputs["seg"]), masks)``."""

    def __init__(self, loss: VGGFeatureLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: dict[str, torch.Tensor], masks: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        return self.loss(torch.sigmoid(outputs["seg"].float()), masks)


def _vgg_term(name: str, label: str, kind: type[VGGFeatureLoss], weight_knob: str,
              vgg_knob: str, paper: str) -> LossTerm:
    def vgg_text(knobs: dict[str, Any]) -> str:
        return ("ImageNet VGG-16" if knobs[vgg_knob] == "imagenet"
                else f"RANDOM VGG-16, not the paper's {label}")

    def caveat(knobs: dict[str, Any]) -> str | None:
        if knobs[vgg_knob] == "imagenet":
            return None
        return (f"trained with {label} on a RANDOM VGG-16 (--set {vgg_knob}=random): not "
                f"{paper}, which uses ImageNet weights.")

    return LossTerm(
        name=name, part="seg", weight=weight_knob,
        build=lambda knobs, protocol: OnMask(kind(knobs[vgg_knob])),
        weights=lambda knobs: (VGG16_IMAGENET,) if knobs[vgg_knob] == "imagenet" else (),
        describe=lambda knobs: f"{label} ({vgg_text(knobs)})",
        caveat=caveat,
    )


#: LossNet on the mask, weighted by the knob lossnet_weight (γ), its VGG by lossnet_vgg.
LOSSNET = _vgg_term("lossnet", "LossNet", LossNet, "lossnet_weight", "lossnet_vgg",
                    "the paper's LossNet")
LOSSNET_KNOBS = (
    Knob("lossnet_weight", 0.2, "γ: LossNet's weight in L_seg = Dice + γ·LossNet (spec §3); "
         "0 trains without it (smoke: 0, it needs the ImageNet VGG-16 and makes a CPU epoch "
         "2.4× longer)", check=lambda v: None if v >= 0 else "must be >= 0",
         presets={"smoke": 0.0}),
    Knob("lossnet_vgg", "imagenet", "LossNet's VGG-16: imagenet (the paper's) or random "
         "(allowed when asked for, marked † in tables)", choices=VGG_WEIGHTS),
)

#: Qu et al.'s perceptual term, weighted by perceptual_weight (β), its VGG by perceptual_vgg.
QU_PERCEPTUAL = _vgg_term("perceptual", "Qu perceptual", QuPerceptualLoss, "perceptual_weight",
                          "perceptual_vgg", "Qu et al.'s perceptual term")
QU_PERCEPTUAL_KNOBS = (
    Knob("perceptual_weight", 0.1, "β: the weight of Qu et al.'s perceptual term in L_seg "
         "(0.1, Qu's); 0 trains without it (smoke: 0)",
         check=lambda v: None if v >= 0 else "must be >= 0", presets={"smoke": 0.0}),
    Knob("perceptual_vgg", "imagenet", "the perceptual term's VGG-16: imagenet or random "
         "(marked † in tables)", choices=VGG_WEIGHTS),
)
