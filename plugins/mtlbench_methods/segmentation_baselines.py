"""The single-task segmentation methods the paper compares with (Tables 5 and 7, spec §8.2).

FCN is built here on the shared ResNet-18 encoder; DeepLabV3+, FPN and UNet++ come from
segmentation-models-pytorch (smp) with a ResNet-18 encoder. All output one mask-logit map and
train with the protocol's segmentation loss (Dice; no LossNet: spec §8.2 GUESS kept).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from mtlbench.cards import MethodCard, ModelConfig, seg_numbers
from mtlbench.hookspecs import hookimpl
from mtlbench.models import ResNet18Encoder, SegmentationOnly
from mtlbench.weights import RESNET18_IMAGENET

CITATIONS = {
    "fcn": "J. Long, E. Shelhamer, T. Darrell, Fully convolutional networks for semantic "
           "segmentation, CVPR 2015.",
    "deeplabv3plus": "L.-C. Chen, Y. Zhu, G. Papandreou, F. Schroff, H. Adam, Encoder-decoder "
                     "with atrous separable convolution for semantic image segmentation, "
                     "ECCV 2018.",
    "fpn": "T.-Y. Lin, P. Dollár, R. Girshick, K. He, B. Hariharan, S. Belongie, Feature pyramid "
           "networks for object detection, CVPR 2017 (segmentation head as in smp).",
    "unetplusplus": "Z. Zhou, M. M. R. Siddiquee, N. Tajbakhsh, J. Liang, UNet++: a nested U-Net "
                    "architecture for medical image segmentation, DLMIA 2018.",
}


class FCN(nn.Module):
    """FCN on the ResNet-18 encoder: a 1×1 score conv on stage 5, upsampled ×32 (FCN-32s).

    ``skips=True`` gives FCN-8s: score convs on stages 3 and 4 are added after ×2 upsamplings
    of the coarser score, then the sum is upsampled ×8. Upsampling is bilinear (the original
    FCN learns its upsampling; spec §8.2 describes bilinear).
    """

    def __init__(self, encoder: ResNet18Encoder, skips: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.skips = skips
        self.score5 = nn.Conv2d(512, 1, kernel_size=1)
        if skips:
            self.score4 = nn.Conv2d(256, 1, kernel_size=1)
            self.score3 = nn.Conv2d(128, 1, kernel_size=1)
            self.up2 = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
        self.up_out = nn.Upsample(scale_factor=8.0 if skips else 32.0, mode="bilinear",
                                  align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, e3, e4, e5 = self.encoder(x)
        score = self.score5(e5)
        if self.skips:
            score = self.up2(score) + self.score4(e4)
            score = self.up2(score) + self.score3(e3)
        return self.up_out(score)


def load_imagenet_resnet18(encoder: nn.Module) -> None:
    """Load torchvision's ImageNet ResNet-18 (from torch's hub cache) into a ResNet-18-shaped
    encoder such as smp's (a torchvision ResNet without ``fc``)."""
    from torchvision.models import ResNet18_Weights

    state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})


def build_fcn(skips: bool, config: ModelConfig) -> SegmentationOnly:
    weights = "imagenet" if config.pretrained == "imagenet" else None
    return SegmentationOnly(FCN(ResNet18Encoder(weights=weights), skips=skips))


#: DeepLabV3's atrous rates (6, 12, 18) were chosen for a 33×33 feature map (513² crops at
#: output stride 16). smp's default (12, 24, 36) is DeepLab's output-stride-8 setting; on the
#: 16×16 map of a 256² input two of its three branches would sample only padding.
DEEPLAB_RATES, DEEPLAB_MAP = (6, 12, 18), 33
DEEPLAB_OUTPUT_STRIDE = 16


def deeplab_rates(image_size: int) -> tuple[int, ...]:
    """DeepLabV3's rates scaled to the ASPP feature map of an ``image_size`` input (≥ 1)."""
    side = image_size / DEEPLAB_OUTPUT_STRIDE
    return tuple(max(1, round(r * side / DEEPLAB_MAP)) for r in DEEPLAB_RATES)


def build_smp(kind: str, config: ModelConfig) -> SegmentationOnly:
    import segmentation_models_pytorch as smp

    if kind == "deeplabv3plus":
        net = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=1,
                                encoder_output_stride=DEEPLAB_OUTPUT_STRIDE,
                                decoder_atrous_rates=deeplab_rates(config.image_size))
    elif kind == "fpn":
        net = smp.FPN("resnet18", encoder_weights=None, classes=1)
    elif kind == "unetplusplus":
        net = smp.UnetPlusPlus("resnet18", encoder_weights=None, classes=1)
    else:
        raise ValueError(f"unknown smp model {kind!r}")
    if config.pretrained == "imagenet":
        load_imagenet_resnet18(net.encoder)
    return SegmentationOnly(net)



# BUSI: Table 5 (with its FLOPs/params: thop with the encoder registered twice, spec §7);
# BUS (UDIAT): Table 7. HD95/ASD in pixels at 256² (the paper says mm).
PUBLISHED = {
    "fcn": {"busi": {**seg_numbers((81.46, 1.50), (73.90, 1.66), (16.14, 1.69), (4.50, 0.36)),
                     "gmacs_paper": (9.54, 0.0), "mparams_paper": (22.35, 0.0)},
            "bus": seg_numbers((84.36, 3.31), (76.62, 4.21), (8.57, 4.30), (2.31, 2.21))},
    "fpn": {"busi": {**seg_numbers((82.68, 0.69), (75.88, 0.72), (15.98, 1.27), (4.26, 0.68)),
                     "gmacs_paper": (14.41, 0.0), "mparams_paper": (28.91, 0.0)},
            "bus": seg_numbers((83.00, 3.73), (75.52, 3.36), (14.28, 1.87), (4.97, 1.61))},
    "deeplabv3plus": {
        "busi": {**seg_numbers((83.34, 0.96), (76.30, 0.88), (14.87, 1.18), (4.26, 0.64)),
                 "gmacs_paper": (15.08, 0.0), "mparams_paper": (27.78, 0.0)},
        "bus": seg_numbers((86.78, 3.70), (80.34, 4.58), (9.81, 5.06), (3.11, 2.24))},
    "unetplusplus": {
        "busi": {**seg_numbers((82.80, 0.87), (76.04, 1.03), (14.83, 0.67), (4.18, 1.26)),
                 "gmacs_paper": (35.20, 0.0), "mparams_paper": (16.80, 0.0)},
        "bus": seg_numbers((87.37, 2.29), (81.30, 2.89), (9.05, 1.49), (2.19, 0.72))},
}

DESCRIPTIONS = {
    "fcn": "FCN-32s on the ResNet-18 encoder: 1×1 score conv on stage 5, bilinear ×32. "
           "Table 5's 9.54 G / 22.35 M is thop with the encoder registered twice.",
    "fcn8s": "FCN-8s on the ResNet-18 encoder: score convs on stages 3, 4, 5 fused after ×2 "
             "upsamplings, bilinear ×8. Not in the paper (an option of its FCN).",
    "deeplabv3plus": "smp DeepLabV3+ with ResNet-18: output stride 16, atrous rates = "
                     "DeepLabV3's (6, 12, 18) scaled to the feature map (3, 6, 9 at 256²) "
                     "instead of smp's (12, 24, 36), whose wider branches see only padding at "
                     "this size; 256 decoder channels, separable ASPP, ×4 upsampling. No smp "
                     "setting reproduces Table 5's 15.08 G / 27.78 M (spec §8.2).",
    "fpn": "smp FPN with ResNet-18 (pyramid 256, segmentation 128 channels, dropout 0.2, "
           "merge by addition, ×4 upsampling). No smp setting reproduces Table 5's "
           "14.41 G / 28.91 M (spec §8.2).",
    "unetplusplus": "smp UNet++ with ResNet-18 (decoder 256-128-64-32-16, BatchNorm, nearest "
                    "upsampling). Table 5's 35.20 G / 16.80 M fits neither this (16.03 G / "
                    "15.97 M) nor the VGG-block NestedUNet (spec §8.2).",
}


def _card(name: str, build, citation_key: str, groups=("comparison",),
          option_of: str = "") -> MethodCard:
    return MethodCard(
        name=name, build=build, tasks=frozenset({"seg"}), family="single-task",
        description=DESCRIPTIONS[name] + " Loss: Dice.", citation=CITATIONS[citation_key],
        groups=groups, weights=(RESNET18_IMAGENET,), published=PUBLISHED.get(name, {}),
        # The paper profiled every ResNet-18 model with the encoder registered twice (spec §7);
        # for smp models the paper-convention figure is the same rule, not a reproduction.
        thop_double_counted=("net.encoder",), option_of=option_of,
    )


@hookimpl
def mtlbench_register_methods(register):
    register(_card("fcn", partial(build_fcn, False), "fcn"))
    register(_card("fcn8s", partial(build_fcn, True), "fcn", groups=(), option_of="fcn"))
    register(_card("deeplabv3plus", partial(build_smp, "deeplabv3plus"), "deeplabv3plus"))
    register(_card("fpn", partial(build_smp, "fpn"), "fpn"))
    register(_card("unetplusplus", partial(build_smp, "unetplusplus"), "unetplusplus"))
