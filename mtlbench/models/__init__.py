"""Shared building blocks of the ACSNet-family models: encoder, decoder, heads and skeleton."""

from .blocks import ConvGNReLU, DoubleConv, Up
from .decoders import SegmentationHead, Stage9, UNetDecoder
from .encoders import ResNet18Encoder
from .heads import SingleScaleClassifier
from .skeleton import EncoderDecoderNet, check_input

__all__ = [
    "ConvGNReLU",
    "DoubleConv",
    "EncoderDecoderNet",
    "ResNet18Encoder",
    "SegmentationHead",
    "SingleScaleClassifier",
    "Stage9",
    "UNetDecoder",
    "Up",
    "check_input",
]
