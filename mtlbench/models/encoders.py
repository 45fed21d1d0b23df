"""A ResNet-18 encoder split into its five stages (spec §2.1), shared by most methods."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

ENCODER_WEIGHTS = (None, "imagenet")


class ResNet18Encoder(nn.Module):
    """torchvision ResNet-18 cut into the paper's five stages; returns [e1, e2, e3, e4, e5].

    For an input (B, 3, H, W) the features have ``channels`` = (64, 64, 128, 256, 512) channels
    and strides 2, 4, 8, 16, 32. ``weights`` is None (random init) or "imagenet"
    (ResNet18_Weights.IMAGENET1K_V1 through torchvision's normal cache; the caller makes sure
    they are available). The unused ``avgpool``/``fc`` are not kept, so every parameter
    held here is used.
    """

    channels = (64, 64, 128, 256, 512)
    in_channels = 3
    reduction = 32

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        if weights not in ENCODER_WEIGHTS:
            raise ValueError(
                f"ResNet18Encoder: unknown weights {weights!r}; use one of {ENCODER_WEIGHTS}"
            )
        tv_weights = ResNet18_Weights.IMAGENET1K_V1 if weights == "imagenet" else None
        net = resnet18(weights=tv_weights)
        self.weights = weights
        self.stage1 = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.stage2 = nn.Sequential(net.maxpool, net.layer1)
        self.stage3 = net.layer2
        self.stage4 = net.layer3
        self.stage5 = net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e1 = self.stage1(x)
        e2 = self.stage2(e1)
        e3 = self.stage3(e2)
        e4 = self.stage4(e3)
        e5 = self.stage5(e4)
        return [e1, e2, e3, e4, e5]
