"""The encoder-decoder skeleton: an encoder, an optional decoder and an optional classifier."""

from __future__ import annotations

import torch
from torch import nn


class EncoderDecoderNet(nn.Module):
    """Encoder + optional segmentation decoder + optional classifier, under the model contract.

    ``forward(x)`` takes x of shape (B, C, H, W), C = ``encoder.in_channels`` and H, W multiples
    of ``encoder.reduction`` (32), and returns a dict with

    - ``"seg"``: (B, 1, H, W) mask logits, when a decoder is given;
    - ``"cls"``: (B, K) class logits, when a classifier is given.

    Parts:

    - ``encoder(x)`` returns the feature list [e1, ..., e5];
    - ``decoder(features)`` returns ``(seg_logits, d6)`` (e.g. ``UNetDecoder``);
    - ``classifier.from_features(features, d6)`` returns the class logits. ``d6`` is the
      decoder's stage-6 output, or None without a decoder. This one method is how a head picks
      its inputs: ``SingleScaleClassifier`` reads e5, a multi-scale head can read (e4, e5, d6),
      and neither needs a different skeleton.

    At least one of decoder and classifier is required.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if decoder is None and classifier is None:
            raise ValueError("EncoderDecoderNet: give a decoder, a classifier, or both")
        if classifier is not None and not callable(getattr(classifier, "from_features", None)):
            raise TypeError(
                f"EncoderDecoderNet: classifier {type(classifier).__name__} has no "
                "from_features(features, d6) method; add one that picks its inputs"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = classifier

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this network solves, among ("seg", "cls")."""
        return tuple(
            name
            for name, part in (("seg", self.decoder), ("cls", self.classifier))
            if part is not None
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(
            x,
            in_channels=getattr(self.encoder, "in_channels", None),
            multiple=getattr(self.encoder, "reduction", 32),
        )
        features = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        d6 = None
        if self.decoder is not None:
            out["seg"], d6 = self.decoder(features)
        if self.classifier is not None:
            out["cls"] = self.classifier.from_features(features, d6)
        return out


def check_input(x: torch.Tensor, in_channels: int | None = None, multiple: int = 32) -> None:
    """Raise ValueError naming the shape unless x is (B, C, H, W), H and W multiples of `multiple`.

    C must equal `in_channels` unless that is None.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an image batch of shape (B, C, H, W), got {shape}")
    _, c, h, w = x.shape
    if in_channels is not None and c != in_channels:
        raise ValueError(
            f"expected {in_channels} input channels, got {c} (input shape {tuple(x.shape)})"
        )
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(
            f"input size {h}×{w} is not supported: height and width must be positive "
            f"multiples of {multiple} (e.g. 32, 64, 256); resize or pad the images"
        )


class SegmentationOnly(nn.Module):
    """Wraps a network that returns mask logits (B, 1, H, W) into the model contract
    ``{"seg": logits}``, checking that inputs are 3-channel with sides a multiple of
    ``multiple`` (the network's total stride)."""

    def __init__(self, net: nn.Module, multiple: int = 32) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, in_channels=3, multiple=self.multiple)
        return {"seg": self.net(x)}
