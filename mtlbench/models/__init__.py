"""Building blocks of the ACSNet-family models, named after the paper's parts (spec §2)."""

from .attention import ChannelAttention
from .blocks import ConvGNReLU, DoubleConv, Up
from .decoders import SegmentationHead, Stage9, UNetDecoder
from .dsa import DSAModule, ModulatedDeformConv, SamplingDeformConv2d, sampled_deform_conv2d
from .encoders import ResNet18Encoder
from .gate import GateUnit
from .heads import MultiScaleClassifier, SingleScaleClassifier, SpatialPyramidClassifier
from .skeleton import EncoderDecoderNet, SegmentationOnly, check_input

__all__ = [
    "ChannelAttention",
    "ConvGNReLU",
    "DSAModule",
    "DoubleConv",
    "EncoderDecoderNet",
    "GateUnit",
    "ModulatedDeformConv",
    "MultiScaleClassifier",
    "ResNet18Encoder",
    "SamplingDeformConv2d",
    "SegmentationHead",
    "SegmentationOnly",
    "SingleScaleClassifier",
    "SpatialPyramidClassifier",
    "Stage9",
    "UNetDecoder",
    "Up",
    "check_input",
    "sampled_deform_conv2d",
]
