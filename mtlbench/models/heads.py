"""A generic classification head for the encoder-decoder skeleton: GAP → FC → ReLU → FC."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import ChannelAttention


class SingleScaleClassifier(nn.Module):
    """[CA(in_ch)] → GAP → FC in_ch→hidden → ReLU → FC hidden→num_classes, on one feature map.

    ``forward(x)`` maps (B, in_ch, h, w) to (B, num_classes) logits. With ``attention=True``
    a channel-attention block reweights the map before pooling (as in the reference paper's
    ablation). Inside ``EncoderDecoderNet`` it reads the deepest encoder feature e5 (see
    ``from_features``).
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
