"""Small building blocks shared by the UNet-style decoders (spec §2.2)."""

from __future__ import annotations

import torch
from torch import nn


class Up(nn.Module):
    """Up(i→o): 1×1 conv i→o with bias, ReLU, then bilinear ×2 upsampling (align_corners=True).

    Promises an output of shape (B, out_ch, 2H, 2W) for an input of shape (B, in_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        # A module (torch's UpsamplingBilinear2d semantics), as in the released code, so that
        # module-level counters such as thop see it (spec §7).
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.relu(self.conv(x)))


class ConvGNReLU(nn.Sequential):
    """One conv (with bias, "same" padding) followed by GroupNorm(groups) and ReLU.

    Keeps the spatial size; maps in_ch to out_ch channels.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int, kernel_size: int = 3) -> None:
        if out_ch % groups != 0:
            raise ValueError(
                f"ConvGNReLU: {out_ch} channels cannot be split into {groups} GroupNorm groups"
            )
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=True),
            nn.GroupNorm(groups, out_ch),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """DoubleConv(c, g): two [3×3 conv c→c (pad 1, bias), GroupNorm(g, c), ReLU] layers.

    Keeps both the channel count and the spatial size.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__(
            ConvGNReLU(channels, channels, groups),
            ConvGNReLU(channels, channels, groups),
        )
