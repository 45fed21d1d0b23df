"""The UNet decoder skeleton: stages 6–9 and the segmentation head (spec §2.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ConvGNReLU, DoubleConv, Up

#: Channels of e1..e5 the decoder expects (those of ResNet18Encoder).
ENCODER_CHANNELS = (64, 64, 128, 256, 512)


class Stage9(nn.Sequential):
    """Decoder stage 9: 1×1 conv 128→128 (bias) + ReLU, then 3×3 conv 128→128 + GN(4) + ReLU."""

    def __init__(self, channels: int = 128, groups: int = 4) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size=1, bias=True),
            nn.ReLU(inplace=True),
            ConvGNReLU(channels, channels, groups),
        )


class SegmentationHead(nn.Module):
    """Bilinear ×2 (align_corners=True), 3×3 conv + GN(4) + ReLU, 1×1 conv to one logit map."""

    def __init__(self, channels: int = 128, groups: int = 4) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        self.refine = ConvGNReLU(channels, channels, groups)
        self.logits = nn.Conv2d(channels, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.refine(self.upsample(x)))


def _identity_modules(count: int) -> list[nn.Module]:
    return [nn.Identity() for _ in range(count)]


class UNetDecoder(nn.Module):
    """Decoder stages 6–9 and the segmentation head of the skeleton.

    ``forward([e1, ..., e5])`` returns ``(seg_logits, d6)``: seg_logits is (B, 1, H, W) for an
    input image of size H×W (e1 is at H/2), and d6 (B, 512, H/16, W/16) is the stage-6 output
    after its refiner, for classifiers that read it.

    Plug-in points (both default to identity: the plain encoder-decoder of spec §8.1):

    - ``skip_gates``: 5 modules applied to e1..e5 before the decoder uses them (a method's
      gating of the skips). Each must keep its input's shape.
    - ``refiners``: 2 modules applied after the stage-6 and stage-7 DoubleConvs (a method's
      refinement of those stages). Each must keep its input's shape.

    The features given to ``forward`` are not modified, so a classifier still sees ungated ones.
    """

    def __init__(
        self,
        skip_gates: Sequence[nn.Module] | None = None,
        refiners: Sequence[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        skip_gates = _identity_modules(5) if skip_gates is None else list(skip_gates)
        refiners = _identity_modules(2) if refiners is None else list(refiners)
        if len(skip_gates) != 5:
            raise ValueError(
                f"UNetDecoder: skip_gates needs 5 modules (for e1..e5), got {len(skip_gates)}"
            )
        if len(refiners) != 2:
            raise ValueError(
                f"UNetDecoder: refiners needs 2 modules (after stages 6 and 7), got {len(refiners)}"
            )
        self.skip_gates = nn.ModuleList(skip_gates)
        self.refiners = nn.ModuleList(refiners)

        self.up5 = Up(512, 256)
        self.stage6 = DoubleConv(512, groups=16)
        self.up6 = Up(512, 128)
        self.stage7 = DoubleConv(256, groups=8)
        self.up7 = Up(256, 64)
        self.stage8 = DoubleConv(128, groups=4)
        self.up8 = Up(128, 64)
        self.stage9 = Stage9(128, groups=4)
        self.head = SegmentationHead(128, groups=4)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        _check_features(features)
        e1, e2, e3, e4, e5 = (gate(f) for gate, f in zip(self.skip_gates, features, strict=True))
        refine6, refine7 = self.refiners

        d6 = refine6(self.stage6(torch.cat([e4, self.up5(e5)], dim=1)))
        d7 = refine7(self.stage7(torch.cat([e3, self.up6(d6)], dim=1)))
        d8 = self.stage8(torch.cat([e2, self.up7(d7)], dim=1))
        d9 = self.stage9(torch.cat([e1, self.up8(d8)], dim=1))
        return self.head(d9), d6


def _check_features(features: Sequence[torch.Tensor]) -> None:
    """Raise ValueError unless features are 5 maps with the encoder's widths, each half the last."""
    if len(features) != 5:
        raise ValueError(f"UNetDecoder: expected 5 encoder features e1..e5, got {len(features)}")
    for i, (f, ch) in enumerate(zip(features, ENCODER_CHANNELS, strict=True), start=1):
        if f.ndim != 4 or f.shape[1] != ch:
            raise ValueError(f"UNetDecoder: e{i} must be (B, {ch}, h, w), got {tuple(f.shape)}")
    for i in range(1, 5):
        hi, wi = features[i - 1].shape[-2:]
        hj, wj = features[i].shape[-2:]
        if (hi, wi) != (2 * hj, 2 * wj):
            raise ValueError(
                f"UNetDecoder: e{i} is {hi}×{wi} but e{i + 1} is {hj}×{wj}; each feature must be "
                "exactly half the size of the previous one (use an input size divisible by 32)"
            )
