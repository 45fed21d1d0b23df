"""The gate unit GU(C) of ACSNet (paper Eqs. 1–3, spec §2.2; the released code calls it "GSA")."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvGNReLU


class GateUnit(nn.Module):
    """Rescales a feature map by two learned per-image gates, then refines it with a 3×3 conv.

    Gate branch: 3×3 conv C→C/8 + GN(C/16) + ReLU, 3×3 conv C/8→2, sigmoid. Channel 0 is
    average-pooled to the scalar G¹, channel 1 max-pooled to G² (Eqs. 1–2). Output (Eq. 3):
    ReLU(GN(C/4)(Conv3×3(X·G¹ + X·G²))). Keeps the shape of X; needs C divisible by 16.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 16:
            raise ValueError(f"GateUnit: {channels} channels is not a multiple of 16")
        self.gate = nn.Sequential(
            ConvGNReLU(channels, channels // 8, groups=channels // 16),
            nn.Conv2d(channels // 8, 2, kernel_size=3, padding=1, bias=True),
        )
        self.refine = ConvGNReLU(channels, channels, groups=channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.gate(x))
        g_avg = gates[:, 0:1].mean(dim=(2, 3), keepdim=True)  # G¹: global average pooling
        g_max = gates[:, 1:2].amax(dim=(2, 3), keepdim=True)  # G²: global max pooling
        return self.refine(x * g_avg + x * g_max)
