"""TransUNet (R50 + ViT-B/16, cascaded upsampler, three skips), compared in Tables 5 and 7.

The model lives in ``transunet_net``; it is imported when a trial builds it, so listing
methods does not pay for importing timm's transformer code. The card declares the pretrained
file it loads (ImageNet-21k R50+ViT-B/16 from the Hugging Face hub).
"""

from __future__ import annotations

from mtlbench.cards import MethodCard, ModelConfig, seg_numbers
from mtlbench.hookspecs import hookimpl
from mtlbench.models import SegmentationOnly
from mtlbench.weights import WeightsSource

R50_VIT_IN21K = WeightsSource(
    "timm/vit_base_r50_s16_224.orig_in21k", "model.safetensors",
    "https://huggingface.co/timm/vit_base_r50_s16_224.orig_in21k/resolve/main/"
    "model.safetensors",
    "R50+ViT-B/16 ImageNet-21k weights for TransUNet (timm's port of Google's "
    "R50+ViT-B_16.npz)",
    hf_repo="timm/vit_base_r50_s16_224.orig_in21k",
)

CITATION = ("J. Chen, Y. Lu, Q. Yu, X. Luo, E. Adeli, Y. Wang, L. Lu, A. L. Yuille, Y. Zhou, "
            "TransUNet: Transformers make strong encoders for medical image segmentation, "
            "arXiv:2102.04306, 2021.")

DESCRIPTION = (
    "TransUNet R50-ViT-B/16 (official config, n_skip 3): ResNet-50 v2 body (3, 4, 9 blocks, "
    "weight-standardised convs, GroupNorm) → 1×1 patch embedding → 12 ViT-B blocks at H/16, "
    "cascaded upsampler 512→256→128→64→16 with skips at H/8, H/4, H/2, 3×3 head. Built from "
    "timm's ResNetV2 and ViT Block. Pretrained: ImageNet-21k R50+ViT-B/16 (timm's port of the "
    "file TransUNet loads), position embeddings resized from 14² to the protocol's grid. "
    "True size 105.32 M at 256² (105.14 M + 0.19 M of position embeddings); Table 5's 93.23 M / "
    "32.23 G is thop, which skips timm's and TransUNet's weight-standardised convs and the "
    "position embeddings. Loss: Dice."
)

# Table 5 (BUSI) with its thop complexity, Table 7 (BUS). HD95/ASD in pixels at 256².
PUBLISHED = {
    "busi": {**seg_numbers((83.82, 0.89), (77.12, 0.84), (14.69, 1.68), (4.11, 1.09)),
             "gmacs_paper": (32.23, 0.0), "mparams_paper": (93.23, 0.0)},
    "bus": seg_numbers((87.86, 2.51), (81.38, 3.28), (8.39, 1.39), (2.74, 1.21)),
}


def build_transunet(config: ModelConfig) -> SegmentationOnly:
    from mtlbench_methods.transunet_net import PATCH_GRID_STRIDE, TransUNet, load_r50_vit_in21k

    net = TransUNet(config.image_size)
    if config.pretrained == "imagenet":
        load_r50_vit_in21k(net.encoder)
    return SegmentationOnly(net, multiple=PATCH_GRID_STRIDE)


@hookimpl
def mtlbench_register_methods(register):
    register(MethodCard(
        name="transunet", build=build_transunet, tasks=frozenset({"seg"}),
        family="single-task", description=DESCRIPTION, citation=CITATION,
        groups=("comparison",), weights=(R50_VIT_IN21K,), published=PUBLISHED,
    ))
