"""The multi-task methods the paper compares with (Tables 4–7, spec §8.3–8.5).

All three are the paper's adaptations to BUS: a ResNet-18 encoder, one mask-logit map and an
image-level benign/malignant head, trained with the protocol's loss λ·CE + (1−λ)·L_seg.

- ``chen2019``: the UNet skeleton with Chen et al.'s spatial-pyramid classifier on e5.
- ``qu2019``: Qu et al.'s decoder (transposed convolutions; conv → ReLU → BN) on ResNet-18, an
  image-level head (reconstructed from Table 5's parameter count) and Qu's perceptual term.
- ``wang2018``: a pre-enhancing net over the image and three fixed filtered features (phase
  symmetry, local energy, a shadow map; computed once per image), then the UNet skeleton with
  a classification layer. Only the abstract of Wang et al. could be read: the filters and the
  pre-enhancing net are a reconstruction (spec §8.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from mtlbench.cards import (
    ImageFeatures,
    LossTerm,
    MethodCard,
    ModelConfig,
    cls_numbers,
    seg_numbers,
)
from mtlbench.hookspecs import hookimpl
from mtlbench.models import (
    EncoderDecoderNet,
    ResNet18Encoder,
    SingleScaleClassifier,
    UNetDecoder,
    check_input,
)
from mtlbench.weights import RESNET18_IMAGENET
from mtlbench_methods.perceptual import QU_PERCEPTUAL, QU_PERCEPTUAL_KNOBS

CITATIONS = {
    "chen2019": "C. Chen, W. Bai, D. Rueckert, Multi-task learning for left atrial segmentation "
                "on GE-MRI, STACOM 2018 (LNCS 11395, 2019).",
    "wang2018": "P. Wang, V. M. Patel, I. Hacihaliloglu, Simultaneous segmentation and "
                "classification of bone surfaces from ultrasound using a multi-feature guided "
                "CNN, MICCAI 2018.",
    "qu2019": "H. Qu, G. Riedlinger, P. Wu, Q. Huang, J. Yi, S. De, D. Metaxas, Joint "
              "segmentation and fine-grained classification of nuclei in histopathology "
              "images, ISBI 2019.",
}


def _encoder(config: ModelConfig) -> ResNet18Encoder:
    return ResNet18Encoder(weights="imagenet" if config.pretrained == "imagenet" else None)


# --- Chen et al. 2019 -------------------------------------------------------------------------

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



def build_chen2019(config: ModelConfig) -> EncoderDecoderNet:
    """UNet skeleton + SPP head (bins 4, 2, 1 on e5 → 10752 → 512 → dropout 0.5 → K)."""
    return EncoderDecoderNet(_encoder(config), decoder=UNetDecoder(),
                             classifier=SpatialPyramidClassifier(num_classes=config.num_classes))


class ChenConvBlock(nn.Sequential):
    """Chen's DoubleConv: twice [3×3 conv → BatchNorm → ReLU]."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True), nn.Conv2d(out_ch, out_ch, 3, padding=1),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class MTNet(nn.Module):
    """Chen et al.'s original MT-Net (spec §8.3): a six-level UNet (widths 64-128-256-512-512-
    512, max-pool 2, bilinear ×2 with align_corners=True, concat [skip, up]), a 1×1 output conv
    (here one mask-logit channel, trained with the protocol's Dice), and the spatial-pyramid
    classifier on the H/16 feature. Random init (no pretrained weights exist for it)."""

    WIDTHS = (64, 128, 256, 512, 512, 512)
    DECODER = (512, 256, 128, 64, 64)

    def __init__(self, in_ch: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        w = self.WIDTHS
        self.encoder = nn.ModuleList([ChenConvBlock(in_ch, w[0])] + [
            ChenConvBlock(a, b) for a, b in zip(w[:-1], w[1:], strict=True)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        ins = (w[-1], *self.DECODER[:-1])
        skips = w[-2::-1]
        self.decoder = nn.ModuleList(ChenConvBlock(s + i, o) for s, i, o in
                                     zip(skips, ins, self.DECODER, strict=True))
        self.out = nn.Conv2d(self.DECODER[-1], 1, kernel_size=1)
        self.classifier = SpatialPyramidClassifier(w[4], num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, in_channels=3, multiple=32)
        features = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        d = features[-1]
        for block, skip in zip(self.decoder, features[-2::-1], strict=True):
            d = block(torch.cat([skip, self.up(d)], dim=1))
        return {"seg": self.out(d), "cls": self.classifier(features[4])}


def build_chen2019_mtnet(config: ModelConfig) -> MTNet:
    return MTNet(num_classes=config.num_classes)


# --- Qu et al. 2019 ---------------------------------------------------------------------------

class QuUpBlock(nn.Module):
    """Qu et al.'s ConvUpBlock: a 2×2 transposed conv (stride 2) halving the channels, concat
    the skip, then twice [3×3 conv → ReLU → BatchNorm → Dropout2d(0.1)] (that order)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)

        def layer(i: int) -> list[nn.Module]:
            return [nn.Conv2d(i, out_ch, 3, padding=1), nn.ReLU(inplace=True),
                    nn.BatchNorm2d(out_ch), nn.Dropout2d(dropout)]

        self.conv = nn.Sequential(*layer(in_ch // 2 + skip_ch), *layer(out_ch))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class QuNet(nn.Module):
    """ResNet-18 encoder, Qu's four up-blocks on skips e4, e3, e2, e1 (widths 256, 128, 64, 64)
    and a final 2×2 transposed conv to full size.

    Default: one mask-logit channel and an image-level head GAP(e5) → FC 512→512 → ReLU →
    FC 512→K. ``pixelwise=True`` (Qu's own formulation): 1 + K channels, background and each
    class per pixel, no image head; see ``pixelwise_outputs``.
    """

    def __init__(self, encoder: ResNet18Encoder, num_classes: int = 2,
                 pixelwise: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        c1, c2, c3, c4, c5 = encoder.channels
        self.ups = nn.ModuleList([QuUpBlock(c5, c4, 256), QuUpBlock(256, c3, 128),
                                  QuUpBlock(128, c2, 64), QuUpBlock(64, c1, 64)])
        self.final = nn.ConvTranspose2d(64, 1 + num_classes if pixelwise else 1, kernel_size=2,
                                        stride=2)
        self.classifier = (None if pixelwise else
                           SingleScaleClassifier(c5, hidden=512, num_classes=num_classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, in_channels=3, multiple=32)
        e1, e2, e3, e4, e5 = self.encoder(x)
        d = e5
        for up, skip in zip(self.ups, (e4, e3, e2, e1), strict=True):
            d = up(d, skip)
        logits = self.final(d)
        if self.classifier is None:
            return pixelwise_outputs(logits, vote=not self.training)
        return {"seg": logits, "cls": self.classifier(e5)}


PIXEL_LOGITS = "pixel_logits"


def pixel_class_loss(outputs: dict[str, torch.Tensor], masks: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``outputs["pixel_logits"]`` (B, 1 + K, H, W) against the map that is 0
    on background and 1 + the image's class on its tumour pixels (Qu et al. 2019's
    "fine-grained" pixel classification, spec §8.4)."""
    logits = outputs.get(PIXEL_LOGITS)
    if logits is None:
        raise KeyError(f"the pixel-wise loss needs the model to return {PIXEL_LOGITS!r} "
                       "(B, 1 + K, H, W) besides 'seg' and 'cls'")
    target = (masks[:, 0] > 0.5).long() * (labels.view(-1, 1, 1) + 1)
    return F.cross_entropy(logits.float(), target)


class PixelClassLoss(nn.Module):
    """``pixel_class_loss`` as a loss term module."""

    def forward(self, outputs, masks, labels):
        return pixel_class_loss(outputs, masks, labels)


#: Qu et al.'s pixel-wise form: the whole loss is a pixel cross-entropy over background + K
#: classes on the model's "pixel_logits" (both tasks come from one map).
PIXEL_CLASSES = LossTerm(
    name="pixel_ce", part="whole", build=lambda knobs, protocol: PixelClassLoss(),
    describe=lambda knobs: "pixel CE over background + K classes (Qu et al.'s pixel-wise form)",
)


def check_pixel_logits(outputs: dict[str, torch.Tensor], batch: int, size: int) -> str | None:
    """The pixel-wise loss needs ``pixel_logits`` of shape (B, 1 + K, H, W), K from ``cls``."""
    classes = tuple(outputs["cls"].shape)[1] if "cls" in outputs else None
    wanted = (batch, None if classes is None else 1 + classes, size, size)
    shape = tuple(outputs[PIXEL_LOGITS].shape) if PIXEL_LOGITS in outputs else None
    if shape != wanted:
        return (f"its pixel-wise loss needs {PIXEL_LOGITS!r} of shape (B, 1 + K, H, W) = "
                f"{wanted}, got {shape}")
    return None


def pixelwise_outputs(pixel_logits: torch.Tensor, vote: bool) -> dict[str, torch.Tensor]:
    """The model contract from (B, 1 + K, H, W) pixel logits (spec §8.4, ``--qu-pixelwise``).

    ``seg``: the logit of P(tumour) = 1 − P(background). ``cls``: log of each class's share of
    the tumour: by mean probability over the pixels, weighted by P(tumour) (training); by
    majority vote of the pixels predicted tumour (``vote``, at evaluation), falling back to the
    mean probability for an image with no tumour pixel.
    """
    log_p = torch.log_softmax(pixel_logits.float(), dim=1)
    seg = torch.logsumexp(log_p[:, 1:], dim=1, keepdim=True) - log_p[:, :1]
    probs = log_p.exp()
    classes = probs[:, 1:]
    share = classes.sum((2, 3)) / classes.sum((1, 2, 3)).clamp_min(1e-12).unsqueeze(1)
    if vote:
        tumour = (probs[:, 0] < 0.5).unsqueeze(1)
        winner = F.one_hot(classes.argmax(1), classes.shape[1]).permute(0, 3, 1, 2)
        votes = (winner * tumour).sum((2, 3)).float()
        counted = votes.sum(1, keepdim=True)
        share = torch.where(counted > 0, votes / counted.clamp_min(1), share)
    return {"seg": seg, "cls": torch.log(share.clamp_min(1e-6)), PIXEL_LOGITS: pixel_logits}


def build_qu2019(config: ModelConfig, pixelwise: bool = False) -> QuNet:
    return QuNet(_encoder(config), num_classes=config.num_classes, pixelwise=pixelwise)


# --- Wang et al. 2018 -------------------------------------------------------------------------

def _wang_filters(images):
    from mtlbench_methods.wang_filters import wang_features_batch  # numpy FFTs, when needed

    return wang_features_batch(images)


#: Phase symmetry, local energy and a shadow map of each gray image (wang_filters).
WANG_FILTERS = ImageFeatures(
    name="wang2018-filters-v1", channels=3, compute=_wang_filters,
    description="local phase symmetry and local energy of the monogenic signal (log-Gabor, "
                "3 scales), and a per-column shadow map (spec §8.5, a reconstruction)",
)


class ConvBNReLU(nn.Sequential):
    """3×3 conv → BatchNorm → ReLU at full resolution."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class PreEnhancingNet(nn.Sequential):
    """The PE net (a reconstruction, spec §8.5): 3×3 conv-BN-ReLU layers 4→64, five 64→64 and
    64→3 at full resolution (0.19 M parameters, 12.3 GMACs at 256², which is Table 5's gap
    between Wang et al. and the UNet skeleton), turning the image and its three filtered
    features into a 3-channel enhanced image."""

    def __init__(self, in_ch: int = 4, width: int = 64, middle: int = 5, out_ch: int = 3) -> None:
        super().__init__(ConvBNReLU(in_ch, width), *[ConvBNReLU(width, width) for _ in
                                                     range(middle)], ConvBNReLU(width, out_ch))


class LinearClassifier(nn.Module):
    """GAP(e5) → FC in_ch→K: Wang et al.'s classification layer at the bottleneck."""

    def __init__(self, in_ch: int = 512, num_classes: int = 2) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def from_features(self, features, d6=None) -> torch.Tensor:
        return self(features[-1])


class WangNet(nn.Module):
    """Input (B, 6, H, W): the normalised gray image on channels 0–2 and the three filtered
    features on 3–5. The PE net reads the gray image and the features (4 channels); its
    3-channel output feeds the UNet skeleton with a linear classification layer on e5."""

    def __init__(self, encoder: ResNet18Encoder, num_classes: int = 2) -> None:
        super().__init__()
        self.pre_enhance = PreEnhancingNet(1 + WANG_FILTERS.channels)
        self.net = EncoderDecoderNet(encoder, decoder=UNetDecoder(),
                                     classifier=LinearClassifier(512, num_classes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, in_channels=3 + WANG_FILTERS.channels, multiple=32)
        return self.net(self.pre_enhance(torch.cat([x[:, :1], x[:, 3:]], dim=1)))


def build_wang2018(config: ModelConfig) -> WangNet:
    return WangNet(_encoder(config), num_classes=config.num_classes)


# --- cards ------------------------------------------------------------------------------------


# BUSI: Table 4 (classification) and Table 5 (segmentation, thop complexity); BUS (UDIAT):
# Tables 6 and 7. HD95/ASD in pixels at 256² (the paper says mm).
PUBLISHED = {
    "wang2018": {
        "busi": {**seg_numbers((82.76, 1.62), (76.30, 2.03), (14.39, 2.79), (4.45, 1.76)),
                 **cls_numbers((92.86, 2.84), (92.93, 2.93), (92.13, 3.61)),
                 "gmacs_paper": (37.86, 0.0), "mparams_paper": (29.38, 0.0)},
        "bus": {**seg_numbers((85.76, 4.54), (79.40, 4.91), (9.98, 4.37), (3.35, 2.46)),
                **cls_numbers((85.89, 2.42), (86.68, 1.97), (83.22, 3.27))},
    },
    "chen2019": {
        "busi": {**seg_numbers((82.38, 0.82), (75.48, 0.47), (16.51, 0.67), (5.20, 1.52)),
                 **cls_numbers((92.22, 1.91), (92.32, 1.88), (92.25, 1.89)),
                 "gmacs_paper": (27.90, 0.0), "mparams_paper": (34.72, 0.0)},
        "bus": {**seg_numbers((86.32, 2.19), (79.98, 1.87), (9.79, 2.48), (3.11, 1.96)),
                **cls_numbers((84.02, 3.69), (84.20, 3.56), (80.38, 4.52))},
    },
    "qu2019": {
        "busi": {**seg_numbers((82.28, 0.99), (75.48, 1.03), (17.71, 2.12), (5.41, 1.45)),
                 **cls_numbers((94.13, 1.98), (94.51, 1.48), (93.58, 1.36)),
                 "gmacs_paper": (5.82, 0.0), "mparams_paper": (14.55, 0.0)},
        "bus": {**seg_numbers((83.06, 4.05), (75.56, 3.68), (13.51, 4.29), (3.50, 1.74)),
                **cls_numbers((88.33, 4.16), (89.16, 2.89), (84.12, 6.99))},
    },
}

DESCRIPTIONS = {
    "wang2018": (
        "Wang et al.'s multi-feature guided CNN as reconstructed by spec §8.5 (only the "
        "abstract was readable): three fixed filtered features of the gray image — "
        "RECONSTRUCTED: monogenic phase symmetry and local energy (log-Gabor, 3 scales) and a "
        "per-column shadow map — computed once per image and cached; a RECONSTRUCTED "
        "pre-enhancing net (3×3 conv-BN-ReLU 4→64, 5×64→64, 64→3; 0.19 M, 12.3 GMACs at "
        "256²) over the image and features; then the UNet skeleton with a linear "
        "classification layer GAP(e5) → K. Paper convention 29.27 M / 38.03 G (Table 5: "
        "29.38 M / 37.86 G). Loss: λ·CE + (1−λ)·Dice (no enhancement target exists for BUS)."
    ),
    "chen2019": (
        "Chen et al.'s multi-task UNet as the paper adapted it (spec §8.3, a reconstruction "
        "consistent with Table 3's 'ResNet-18'): the UNet skeleton (ResNet-18 encoder, ACSNet "
        "decoder) with Chen's classifier on e5: spatial-pyramid max pooling (bins 4, 2, 1 → "
        "10752) → FC 512 → dropout 0.5 → FC K, no nonlinearity between the FCs (as Chen's "
        "code). Paper convention 34.59 M (Table 5: 34.72 M); Table 5's 27.90 GMACs stay "
        "unexplained (ours: 25.69). Loss: λ·CE + (1−λ)·Dice (no LossNet; Chen's own 1:1 CE on "
        "sigmoid outputs is not used)."
    ),
    "qu2019": (
        "Qu et al.'s joint network as the paper adapted it (spec §8.4): ResNet-18 encoder, "
        "Qu's decoder (2×2 transposed convs halving the channels, conv → ReLU → BN → "
        "Dropout2d 0.1, twice per block, skips e4..e1) and a final transposed conv to one "
        "mask channel (thop: 14.29 M / 5.82 G, Table 5's 5.82 G). The image-level head GAP(e5) "
        "→ 512 → ReLU → K is a reconstruction from Table 5's 14.55 M (the ReLU a guess; Qu "
        "classified pixels). Loss: λ·CE + (1−λ)·(Dice + β·perceptual), Qu's perceptual term "
        "(frozen VGG-16, no ImageNet normalisation, MSE averaged over relu1_2..relu4_3) on the "
        "tumour probability map, β = perceptual_weight (0.1, Qu's)."
    ),
}


def _card(name: str, build, loss_terms=(), knobs=(), thop_double_counted=("encoder",),
          image_features=None) -> MethodCard:
    return MethodCard(
        name=name, build=build, tasks=frozenset({"seg", "cls"}), family="multi-task",
        description=DESCRIPTIONS[name], citation=CITATIONS[name], groups=("comparison",),
        loss_terms=loss_terms, knobs=knobs, weights=(RESNET18_IMAGENET,),
        published=PUBLISHED[name],
        thop_double_counted=thop_double_counted, image_features=image_features,
    )


#: Chen et al.'s own network, an option of ``chen2019`` (spec §8.3, ``--chen-original``).
CHEN_MTNET = MethodCard(
    name="chen2019-mtnet", build=build_chen2019_mtnet, tasks=frozenset({"seg", "cls"}),
    family="multi-task", option_of="chen2019", citation=CITATIONS["chen2019"],
    description=(
        "Chen et al.'s original MT-Net (an option of chen2019): a six-level UNet (64-128-256-"
        "512-512-512, BatchNorm, bilinear ×2), 1×1 output conv changed to one mask channel "
        "with Dice, and the spatial-pyramid classifier (4, 2, 1) on the H/16 feature. Random "
        "init only. Spec §8.3 measures 30.71 M / 33.24 GMACs at 256², which does not match "
        "Table 5 (34.72 / 27.90): the paper used the adapted chen2019. Loss: λ·CE + (1−λ)·Dice."
    ),
)


#: Qu et al.'s own pixel-wise formulation, an option of ``qu2019`` (spec §8.4).
QU_PIXELWISE = MethodCard(
    name="qu2019-pixelwise", build=partial(build_qu2019, pixelwise=True),
    tasks=frozenset({"seg", "cls"}), family="multi-task", option_of="qu2019",
    citation=CITATIONS["qu2019"], loss_terms=(PIXEL_CLASSES,),
    check_outputs=check_pixel_logits, weights=(RESNET18_IMAGENET,),
    description=(
        "Qu et al.'s pixel-wise formulation (an option of qu2019, spec §8.4): the same "
        "ResNet-18 + Qu decoder with 1 + K output channels (background, benign tumour, "
        "malignant tumour) trained with pixel cross-entropy only; the mask is the "
        "non-background, the image's class the majority vote of its tumour pixels "
        "(mean probability while training and for images with no tumour pixel). Closer to "
        "Qu's method than qu2019, but not what Table 5's complexity suggests the paper ran."
    ),
)


@hookimpl
def mtlbench_register_methods(register):
    # Chen's adaptation shares the ACSNet code's skeleton, so its encoder was registered twice
    # like theirs (spec §8.3: 34.59 M paper convention). Qu's code keeps a plain encoder: Table
    # 5's 14.55 M counts it once.
    register(_card("wang2018", build_wang2018, thop_double_counted=("net.encoder",),
                   image_features=WANG_FILTERS))
    register(_card("chen2019", build_chen2019))
    register(CHEN_MTNET)
    register(_card("qu2019", build_qu2019, loss_terms=(QU_PERCEPTUAL,),
                   knobs=QU_PERCEPTUAL_KNOBS, thop_double_counted=()))
    register(QU_PIXELWISE)
