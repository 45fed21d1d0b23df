"""A channel-attention block CA(C) from average- and max-pooled descriptors (as in CBAM).

Generic: the reference paper's classifier uses it (spec §2.2), and any head may."""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """Reweights channels from both pooled descriptors; not plain squeeze-and-excitation.

    w = σ(FC C/16→C(ReLU(FC 2C→C/16([GAP(X), GMP(X)])))); output ReLU(X·w). Keeps the shape
    of X; needs C divisible by 16.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels % reduction:
            raise ValueError(f"ChannelAttention: {channels} channels is not a multiple of "
                             f"{reduction}")
        self.fc = nn.Sequential(
            nn.Linear(2 * channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        weights = self.fc(pooled)[:, :, None, None]
        return torch.relu(x * weights)
