"""UNet, ClsNet and CUNet: the ResNet-18 encoder-decoder skeleton of ACSNet (spec §2, §8.1).

These are the first three rows of the paper's ablation (Table 1): no gate units, no DSA
modules, single-scale classification head on stage 5.
"""

from __future__ import annotations

from mtlbench.cards import MethodCard, ModelConfig
from mtlbench.hookspecs import hookimpl
from mtlbench.models import (
    EncoderDecoderNet,
    ResNet18Encoder,
    SingleScaleClassifier,
    UNetDecoder,
)

ACSNET_CITATION = (
    "Q. He, Q. Yang, H. Su, Y. Wang, Multi-task learning for segmentation and classification "
    "of breast tumors from ultrasound images, Computers in Biology and Medicine (2024)."
)
RESNET18_IMAGENET = "torchvision/resnet18-imagenet"


def _encoder(config: ModelConfig) -> ResNet18Encoder:
    return ResNet18Encoder(weights="imagenet" if config.pretrained == "imagenet" else None)


def build_unet(config: ModelConfig) -> EncoderDecoderNet:
    """Encoder + decoder + segmentation head (gates = identity, no DSA)."""
    return EncoderDecoderNet(_encoder(config), decoder=UNetDecoder())


def build_clsnet(config: ModelConfig) -> EncoderDecoderNet:
    """Encoder + GAP(e5) → FC 512→256 → ReLU → FC 256→K."""
    return EncoderDecoderNet(_encoder(config),
                             classifier=SingleScaleClassifier(num_classes=config.num_classes))


def build_cunet(config: ModelConfig) -> EncoderDecoderNet:
    """UNet plus the single-scale classification head on stage 5."""
    return EncoderDecoderNet(_encoder(config), decoder=UNetDecoder(),
                             classifier=SingleScaleClassifier(num_classes=config.num_classes))


def _card(name, build, tasks, family, description, published) -> MethodCard:
    return MethodCard(name=name, build=build, tasks=frozenset(tasks), family=family,
                      description=description, citation=ACSNET_CITATION, groups=("ablation",),
                      weights=(RESNET18_IMAGENET,), published=published)


# The paper's numbers: BUSI from Table 2 (ablation), BUS (UDIAT) from Tables 6-7; Dice etc. in %,
# HD95/ASD in pixels at 256² (the paper says mm; spec §6). gmacs/mparams are the paper's Table 5
# figures, counted with thop's encoder double registration (spec §7).
UNET_PUBLISHED = {
    "busi": {"Dice": (83.04, 1.64), "Jaccard": (76.34, 2.04), "HD95": (15.95, 2.29),
             "ASD": (5.14, 0.67), "gmacs_paper": (25.69, 0.0), "mparams_paper": (29.38, 0.0)},
    "bus": {"Dice": (87.36, 1.99), "Jaccard": (81.28, 2.41), "HD95": (8.77, 1.12),
            "ASD": (2.56, 0.90)},
}
CLSNET_PUBLISHED = {
    "busi": {"ACC": (92.38, 2.59), "PRE": (92.54, 2.29), "REC": (91.38, 2.30)},
}
CUNET_PUBLISHED = {
    "busi": {"Dice": (83.56, 1.72), "Jaccard": (76.36, 2.19), "HD95": (15.07, 2.47),
             "ASD": (4.01, 1.13), "ACC": (92.54, 2.87), "PRE": (92.92, 2.39),
             "REC": (92.20, 2.04), "gmacs_paper": (25.69, 0.0), "mparams_paper": (29.12, 0.0)},
    "bus": {"Dice": (87.26, 3.70), "Jaccard": (80.90, 3.74), "HD95": (10.95, 4.33),
            "ASD": (3.35, 2.36), "ACC": (87.08, 3.70), "PRE": (87.00, 3.75),
            "REC": (83.91, 4.54)},
}


@hookimpl
def mtlbench_register_methods(register):
    register(_card(
        "unet", build_unet, {"seg"}, "single-task",
        "ResNet-18 encoder-decoder (ACSNet skeleton without gates, DSA or classifier); Dice "
        "loss. Table 5 lists ASD 4.14 where Table 2 has 5.14 (card: Table 2).",
        UNET_PUBLISHED))
    register(_card(
        "clsnet", build_clsnet, {"cls"}, "single-task",
        "ResNet-18 encoder with a single-scale head (GAP → 256 → K; hidden width a guess, "
        "spec §8.1); cross-entropy. The paper prints it as 'ClpNet'.",
        CLSNET_PUBLISHED))
    register(_card(
        "cunet", build_cunet, {"seg", "cls"}, "multi-task",
        "UNet plus the single-scale head on stage 5; loss 0.3·CE + 0.7·Dice.",
        CUNET_PUBLISHED))
