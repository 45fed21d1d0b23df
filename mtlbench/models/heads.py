"""Classification heads for the ACSNet-family skeleton (spec §2.3, §8.1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import ChannelAttention


class SingleScaleClassifier(nn.Module):
    """[CA(in_ch)] → GAP → FC in_ch→hidden → ReLU → FC hidden→num_classes, on one feature map.

    ``forward(x)`` maps (B, in_ch, h, w) to (B, num_classes) logits. With ``attention=True``
    a channel-attention block reweights the map before pooling (the paper's C_A UNet). Inside
    ``EncoderDecoderNet`` it reads the deepest encoder feature e5 (see ``from_features``).
    """

    def __init__(self, in_ch: int = 512, hidden: int = 256, num_classes: int = 2,
                 attention: bool = False) -> None:
        super().__init__()
        self.attention = ChannelAttention(in_ch) if attention else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(in_ch, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.attention(x)), 1)
        return self.fc2(self.relu(self.fc1(x)))

    def from_features(
        self, features: Sequence[torch.Tensor], d6: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Classify from the skeleton's outputs: reads e5 (``features[-1]``); ignores d6."""
        return self(features[-1])


class MultiScaleClassifier(nn.Module):
    """The multi-scale classification branch on stages 4, 5 and 6 (spec §2.3).

    From e4 (256 × h × w), e5 (512 × h/2 × w/2) and the decoder's d6 (512 × h × w): each scale
    goes through its own channel attention (``attention=True``; identity otherwise, the
    paper's C_MS UNet), e5 is upsampled ×2 (bilinear, align_corners=True), the three maps are
    concatenated (1280 channels), average-pooled and classified by FC 1280→640 → ReLU →
    FC 640→num_classes. The encoder features it reads are the ungated ones.
    """

    def __init__(self, num_classes: int = 2, attention: bool = True,
                 channels: tuple[int, int, int] = (256, 512, 512)) -> None:
        super().__init__()
        c4, c5, c6 = channels

        def attend(c: int) -> nn.Module:
            return ChannelAttention(c) if attention else nn.Identity()

        self.attention4, self.attention5, self.attention6 = attend(c4), attend(c5), attend(c6)
        self.up5 = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        total = c4 + c5 + c6
        self.fc1 = nn.Linear(total, total // 2)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(total // 2, num_classes)

    def forward(self, e4: torch.Tensor, e5: torch.Tensor, d6: torch.Tensor) -> torch.Tensor:
        maps = [self.attention4(e4), self.up5(self.attention5(e5)), self.attention6(d6)]
        x = torch.flatten(self.pool(torch.cat(maps, dim=1)), 1)
        return self.fc2(self.relu(self.fc1(x)))

    def from_features(
        self, features: Sequence[torch.Tensor], d6: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Classify from e4, e5 (``features[3:5]``) and d6; d6 is required (needs a decoder)."""
        if d6 is None:
            raise ValueError("MultiScaleClassifier reads the decoder's stage 6: build the "
                             "network with a decoder")
        return self(features[3], features[4], d6)


class SpatialPyramidClassifier(nn.Module):
    """Chen et al. 2019's head: spatial-pyramid max pooling → FC → dropout → FC (spec §8.3).

    ``forward(x)`` max-pools (B, in_ch, h, w) into ``bins`` × ``bins`` grids (4, 2, 1: 21 cells,
    10752 values for 512 channels), then FC → hidden, dropout, FC → num_classes, with no
    nonlinearity between the two FCs, as in the original code. Reads e5 in the skeleton.
    """

    def __init__(self, in_ch: int = 512, bins: Sequence[int] = (4, 2, 1), hidden: int = 512,
                 num_classes: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.AdaptiveMaxPool2d(b) for b in bins)
        self.fc1 = nn.Linear(in_ch * sum(b * b for b in bins), hidden)
        # The original applies Dropout2d to the (B, hidden) vector, which torch treats as plain
        # dropout on 2-D input (with a deprecation warning); this is that dropout, stated.
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.flatten(pool(x), 1) for pool in self.pools], dim=1)
        return self.fc2(self.dropout(self.fc1(pooled)))

    def from_features(
        self, features: Sequence[torch.Tensor], d6: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Classify from e5 (``features[-1]``); ignores d6."""
        return self(features[-1])
