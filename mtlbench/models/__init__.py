"""The core's library of generic building blocks for method authors (as ``timm.layers`` is
for timm's models): a ResNet-18 encoder split into five stages, a UNet decoder skeleton with
hooks for skip and stage modules, GroupNorm conv blocks, a squeeze-and-excitation channel
attention, a GAP classification head and the encoder-decoder skeleton that joins them.

What is named after one paper's parts lives in that method's plugin (``plugins/``).
"""

from .attention import ChannelAttention
from .blocks import ConvGNReLU, DoubleConv, Up
from .decoders import SegmentationHead, Stage9, UNetDecoder
from .encoders import ResNet18Encoder
from .heads import SingleScaleClassifier
from .skeleton import EncoderDecoderNet, SegmentationOnly, check_input

__all__ = [
    "ChannelAttention",
    "ConvGNReLU",
    "DoubleConv",
    "EncoderDecoderNet",
    "ResNet18Encoder",
    "SegmentationHead",
    "SegmentationOnly",
    "SingleScaleClassifier",
    "Stage9",
    "UNetDecoder",
    "Up",
    "check_input",
]
