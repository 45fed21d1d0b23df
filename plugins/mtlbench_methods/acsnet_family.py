"""ACSNet and its ablation family: the ten methods of the paper's Table 1 (spec §2, §8.1).

All share the ResNet-18 encoder-decoder skeleton and differ only in the paper's parts:
channel attention (CA) in the classifier, the gate units (G) on the skips, the DSA modules (A)
after decoder stages 6 and 7, and the multi-scale (MS) classification branch.

| method   | task    | CA | Gate | DSA | MS |
|----------|---------|----|------|-----|----|
| unet     | seg     |    |      |     |    |
| clsnet   | cls     |    |      |     |    |
| cunet    | seg+cls |    |      |     |    |
| cugnet   | seg+cls |    | ✓    |     |    |
| caunet   | seg+cls | ✓  |      |     |    |
| cuanet   | seg+cls |    |      | ✓   |    |
| cuganet  | seg+cls |    | ✓    | ✓   |    |
| cmsunet  | seg+cls |    |      |     | ✓  |
| camsunet | seg+cls | ✓  |      |     | ✓  |
| acsnet   | seg+cls | ✓  | ✓    | ✓   | ✓  |
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from mtlbench.cards import MethodCard, ModelConfig, cls_numbers, seg_numbers
from mtlbench.hookspecs import hookimpl
from mtlbench.models import EncoderDecoderNet, ResNet18Encoder, SingleScaleClassifier, UNetDecoder
from mtlbench.weights import RESNET18_IMAGENET
from mtlbench_methods.acsnet_parts import (
    FLOP_FORMULAS,
    MAC_RULES,
    DSAModule,
    GateUnit,
    MultiScaleClassifier,
)
from mtlbench_methods.perceptual import LOSSNET, LOSSNET_KNOBS

ACSNET_CITATION = (
    "Q. He, Q. Yang, H. Su, Y. Wang, Multi-task learning for segmentation and classification "
    "of breast tumors from ultrasound images, Computers in Biology and Medicine (2024)."
)
#: The methods `mtlbench run` trains when no --methods is given: the single-task segmentation
#: baseline and the plain multi-task baseline. Five folds of both fit the 10-minute budget of
#: the default job on a 2-core CPU in float32 (AVX2 only, where bf16 is emulated); ACSNet, 40%
#: more time per step there, would not (benchmarks/results/default-run-cpu-2core.md).
#: `--methods unet,cunet,acsnet`, `ablation` or `all` add the paper's method and the rest.
DEFAULT_METHODS = ("unet", "cunet")


@dataclass(frozen=True)
class Parts:
    """Which of the paper's parts a Table 1 variant has (spec §8.1)."""

    seg: bool = True
    cls: bool = True
    attention: bool = False  # CA in the classifier
    gates: bool = False  # the five gate units on e1..e5
    dsa: bool = False  # DSA512 / DSA256 after decoder stages 6 and 7
    multi_scale: bool = False  # the classifier reads stages 4, 5, 6 instead of stage 5

    @property
    def tasks(self) -> frozenset[str]:
        return frozenset(t for t, on in (("seg", self.seg), ("cls", self.cls)) if on)


def build_variant(parts: Parts, config: ModelConfig) -> EncoderDecoderNet:
    """The skeleton with the given parts (spec §2.3); without DSA, d6 is the DoubleConv output."""
    encoder = ResNet18Encoder(weights="imagenet" if config.pretrained == "imagenet" else None)
    decoder = None
    if parts.seg:
        gates = [GateUnit(c) for c in encoder.channels] if parts.gates else None
        refiners = [DSAModule(512), DSAModule(256)] if parts.dsa else None
        decoder = UNetDecoder(skip_gates=gates, refiners=refiners)
    classifier = None
    if parts.cls and parts.multi_scale:
        classifier = MultiScaleClassifier(config.num_classes, attention=parts.attention)
    elif parts.cls:
        classifier = SingleScaleClassifier(num_classes=config.num_classes,
                                           attention=parts.attention)
    return EncoderDecoderNet(encoder, decoder=decoder, classifier=classifier)


# The paper's numbers: BUSI from Table 2 (ablation), BUS (UDIAT) from Tables 6-7; Dice etc. in %,
# HD95/ASD in pixels at 256² (the paper says mm; spec §6). gmacs_paper/mparams_paper are the
# paper's Table 5 figures, counted with thop and the encoder registered twice (spec §7).

PUBLISHED = {
    "unet": {
        "busi": {**seg_numbers((83.04, 1.64), (76.34, 2.04), (15.95, 2.29), (5.14, 0.67)),
                 "gmacs_paper": (25.69, 0.0), "mparams_paper": (29.38, 0.0)},
        "bus": seg_numbers((87.36, 1.99), (81.28, 2.41), (8.77, 1.12), (2.56, 0.90)),
    },
    "clsnet": {"busi": cls_numbers((92.38, 2.59), (92.54, 2.29), (91.38, 2.30))},
    "cunet": {
        "busi": {**seg_numbers((83.56, 1.72), (76.36, 2.19), (15.07, 2.47), (4.01, 1.13)),
                 **cls_numbers((92.54, 2.87), (92.92, 2.39), (92.20, 2.04)),
                 "gmacs_paper": (25.69, 0.0), "mparams_paper": (29.12, 0.0)},
        "bus": {**seg_numbers((87.26, 3.70), (80.90, 3.74), (10.95, 4.33), (3.35, 2.36)),
                **cls_numbers((87.08, 3.70), (87.00, 3.75), (83.91, 4.54))},
    },
    "cugnet": {"busi": {**seg_numbers((84.26, 1.14), (77.58, 1.36), (14.04, 1.15), (3.75, 0.61)),
                        **cls_numbers((93.02, 2.21), (93.20, 2.13), (91.70, 1.62))}},
    "caunet": {"busi": {**seg_numbers((83.44, 1.28), (76.98, 1.17), (14.33, 1.39), (3.95, 0.93)),
                        **cls_numbers((93.81, 1.46), (93.89, 1.40), (92.89, 1.25))}},
    "cuanet": {"busi": {**seg_numbers((84.48, 1.26), (77.78, 0.94), (14.03, 1.75), (4.22, 1.33)),
                        **cls_numbers((93.33, 2.91), (93.61, 2.43), (92.82, 2.12))}},
    "cuganet": {"busi": {**seg_numbers((84.76, 0.83), (78.20, 0.94), (13.12, 1.08), (3.33, 0.68)),
                         **cls_numbers((93.17, 2.91), (93.35, 2.68), (92.03, 2.74))}},
    "cmsunet": {"busi": {**seg_numbers((83.76, 1.90), (77.12, 1.99), (14.84, 2.27), (4.26, 1.29)),
                         **cls_numbers((94.16, 2.77), (94.35, 2.11), (93.76, 1.67))}},
    "camsunet": {"busi": {**seg_numbers((84.02, 1.18), (77.12, 1.29), (14.63, 1.68), (4.45, 0.95)),
                          **cls_numbers((94.29, 2.10), (94.46, 2.07), (94.07, 1.48))}},
    "acsnet": {
        "busi": {**seg_numbers((84.90, 1.69), (78.62, 1.75), (13.04, 2.58), (3.45, 1.59)),
                 **cls_numbers((94.44, 2.07), (94.61, 1.56), (93.86, 2.33)),
                 "gmacs_paper": (30.96, 0.0), "mparams_paper": (42.99, 0.0)},
        "bus": {**seg_numbers((89.12, 2.31), (83.04, 2.60), (7.76, 1.73), (2.05, 1.38)),
                **cls_numbers((88.96, 1.49), (89.29, 1.46), (87.52, 2.66))},
    },
}

# name -> (parts, description)
VARIANTS = {
    "unet": (Parts(cls=False),
             "ResNet-18 encoder-decoder (the skeleton without gates, DSA or classifier). "
             "Table 5 lists ASD 4.14 where Table 2 has 5.14 (card: Table 2)."),
    "clsnet": (Parts(seg=False),
               "ResNet-18 encoder with a single-scale head (GAP → 256 → K; hidden width a "
               "guess, spec §8.1); cross-entropy only. The paper prints it as 'ClpNet'."),
    "cunet": (Parts(), "UNet plus the single-scale head on stage 5 (GAP → 256 → K)."),
    "cugnet": (Parts(gates=True), "CUNet plus the five gate units (paper's CU_G Net)."),
    "caunet": (Parts(attention=True),
               "CUNet with channel attention on stage 5 before pooling (paper's C_A UNet)."),
    "cuanet": (Parts(dsa=True),
               "CUNet plus DSA modules after decoder stages 6 and 7 (paper's CU_A Net; "
               "'A' is DSA here)."),
    "cuganet": (Parts(gates=True, dsa=True), "CUNet plus gate units and DSA (CU_GA Net)."),
    "cmsunet": (Parts(multi_scale=True),
                "UNet plus the multi-scale head on stages 4, 5, 6 without channel attention "
                "(C_MS UNet)."),
    "camsunet": (Parts(attention=True, multi_scale=True),
                 "UNet plus the full multi-scale head with channel attention (C_AMS UNet)."),
    "acsnet": (Parts(attention=True, gates=True, dsa=True, multi_scale=True),
               "ACSNet: gate units, DSA modules and the multi-scale channel-attention "
               "classifier. The paper prints it once as 'ACSGNet'."),
}


def _card(name: str) -> MethodCard:
    parts, description = VARIANTS[name]
    groups = ("ablation", "default") if name in DEFAULT_METHODS else ("ablation",)
    loss = ("Loss: λ·CE + (1−λ)·(Dice + γ·LossNet)." if parts.seg and parts.cls else
            "Loss: Dice + γ·LossNet." if parts.seg else "Loss: CE.")
    return MethodCard(
        name=name, build=partial(build_variant, parts), tasks=parts.tasks,
        family="multi-task" if len(parts.tasks) == 2 else "single-task",
        description=f"{description} {loss}", citation=ACSNET_CITATION, groups=groups,
        # Spec §3: the same L_seg (Dice + γ·LossNet) for every segmenting model of Table 1.
        loss_terms=(LOSSNET,) if parts.seg else (), knobs=LOSSNET_KNOBS if parts.seg else (),
        weights=(RESNET18_IMAGENET,), published=PUBLISHED[name],
        # The deformable convolution of the DSA modules needs its own counting rules.
        flop_formulas=FLOP_FORMULAS if parts.dsa else {},
        mac_rules=MAC_RULES if parts.dsa else {},
        # The released code keeps the torchvision ResNet and re-wraps its children, so thop
        # counted the encoder twice (spec §7); `mtlbench profile` reproduces that figure.
        thop_double_counted=("encoder",),
        # The paper's single-task baselines (its Table 2) are the references of Δm.
        reference_for=REFERENCE_FOR.get(name, frozenset()),
    )


#: The tasks a variant is the default single-task reference of, for the multi-task gain Δm:
#: the ablation's UNet and ClsNet share the multi-task variants' encoder and decoder.
REFERENCE_FOR = {"unet": frozenset({"seg"}), "clsnet": frozenset({"cls"})}


@hookimpl
def mtlbench_register_methods(register):
    for name in VARIANTS:
        register(_card(name))
