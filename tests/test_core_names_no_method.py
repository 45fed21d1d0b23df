"""The core names no method: every built-in method's name and every part named after one
paper lives in its plugin (plugins/), never in mtlbench/.

Kept out of the list on purpose, as generic building blocks or words of the field: ``unet``
(the UNet decoder skeleton of mtlbench.models is generic; the method ``unet`` is its plain
use), ``fcn``/``fpn`` (architecture families), channel attention (mtlbench.models.attention: a
CBAM-style block any head may use), the ResNet-18 encoder, ViT, timm and smp (libraries), and
``paper`` (the reference paper's protocol preset and metric mode are the benchmark's own, not a
method's: see their docstrings).
"""

from __future__ import annotations

import re
from pathlib import Path

import mtlbench

CORE = Path(mtlbench.__file__).parent

#: Built-in method names, the parts named after one paper, and what only one method uses.
NAMES = (
    # method names
    "acsnet", "clsnet", "cunet", "cugnet", "caunet", "cuanet", "cuganet", "cmsunet", "camsunet",
    "wang2018", "chen2019", "qu2019", "transunet", "deeplabv3plus", "unetplusplus", "fcn8s",
    "FCN-8s", "DeepLabV3+", "UNet++", "TransUNet",
    # their papers' authors, as the cards and descriptions name them
    "Wang et al", "Chen et al", "Qu et al", "Qu's",
    # ACSNet's parts and loss
    "GateUnit", "gate unit", "DSAModule", "DSA", "MultiScaleClassifier", "LossNet", "MSNet",
    # the other methods' parts
    "SpatialPyramidClassifier", "MTNet", "QuNet", "WangNet", "pixel_logits", "pixel_classes",
    "qu_perceptual", "phase symmetry", "log-Gabor", "monogenic", "PreEnhancingNet",
    "HybridEncoder", "CascadedUpsampler", "R50", "VGG", "vgg16",
    # what only built-in methods' parts are: their deformable convolution, perceptual losses
    "deformable", "deform_conv2d", "perceptual",
    # the paper's tables, as only the cards' data may hold them
    "Table 5",
)

PATTERN = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(re.escape(n) for n in NAMES)
                     + r")(?![A-Za-z0-9_])", re.IGNORECASE)


def test_no_builtin_method_is_named_in_the_core():
    hits = []
    for path in sorted(CORE.rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".html", ".css", ".js", ".txt",
                                                      ".md", ".json", ".toml"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in PATTERN.finditer(line):
                hits.append(f"{path.relative_to(CORE.parent)}:{number}: {match.group(0)!r} in "
                            f"{line.strip()}")
    assert not hits, ("method-specific names in mtlbench/ (they belong to the method's "
                      "plugin):\n" + "\n".join(hits))


def test_the_name_check_finds_a_planted_name(tmp_path):
    """The pattern is not vacuous: it matches the names as code and prose would write them."""
    for text in ("from .dsa import DSAModule", "the ACSNet code's split", "LossNet weight",
                 "Qu et al.'s term", "Table 5 GMACs"):
        assert PATTERN.search(text), text
    for text in ("UNetDecoder", "ChannelAttention", "fcn", "unet", "Perceptually"):
        assert not PATTERN.search(text), text
