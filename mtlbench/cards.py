"""Cards: what a plugin registers for a method or a dataset, with its metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from mtlbench.data.cases import Case

TASKS = ("seg", "cls")
FAMILIES = ("single-task", "multi-task")
EXTRA_LOSSES = ("lossnet", "qu_perceptual", "pixel_classes")


@dataclass(frozen=True)
class ModelConfig:
    """What a method's ``build`` receives: everything about the model the protocol decides."""

    num_classes: int = 2
    in_channels: int = 3
    image_size: int = 256
    pretrained: str = "none"  # "none" or "imagenet"
    options: dict[str, Any] = field(default_factory=dict)


Published = tuple[float, float]  # (mean, std) as a paper prints it


def seg_numbers(dice: Published, jaccard: Published, hd95: Published,
                asd: Published) -> dict[str, Published]:
    """A paper's segmentation numbers under the names ``MethodCard.published`` uses."""
    return {"Dice": dice, "Jaccard": jaccard, "HD95": hd95, "ASD": asd}


def cls_numbers(acc: Published, pre: Published, rec: Published) -> dict[str, Published]:
    """A paper's classification numbers under the names ``MethodCard.published`` uses."""
    return {"ACC": acc, "PRE": pre, "REC": rec}


@dataclass(frozen=True)
class ImageFeatures:
    """Fixed (not learned) per-image feature channels a method reads besides the image.

    ``compute`` maps the dataset's gray images, uint8 (N, S, S), to float (N, channels, S, S)
    with values in [0, 1]. The harness runs it once per image when a dataset is prepared,
    caches the result (quantised to uint8) under ``name`` — change the name whenever
    ``compute`` changes — and augments the channels together with their image. The model then
    receives (B, 3 + channels, H, W): the normalised gray image on 3 channels, then these.
    """

    name: str
    channels: int
    compute: Callable[[Any], Any]
    description: str = ""

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"image features {self.name!r}: channels must be >= 1")


@dataclass(frozen=True)
class MethodCard:
    """A method: how to build its model and what the benchmark should know about it.

    ``published`` maps a dataset name to the paper's numbers for this method, metric name ->
    (mean, std), in the paper's units (percent for Dice/Jaccard/ACC/PRE/REC, pixels for
    HD95/ASD; ``gmacs_paper``/``mparams_paper`` for the paper's complexity figures).
    ``weights`` names the pretrained weights the model loads when the protocol asks for them
    (see mtlbench.weights). ``extra_losses`` names the losses the method adds to the
    protocol's (``"lossnet"``: the perceptual LossNet term on the mask, weighted by the
    protocol's ``lossnet_weight``; ``"qu_perceptual"``: Qu et al.'s perceptual term instead,
    weighted by ``perceptual_weight``; ``"pixel_classes"``: the whole loss is a pixel
    cross-entropy over background + K classes on the model's ``"pixel_logits"``, Qu et al.'s
    pixel-wise form). ``thop_double_counted`` names submodules that the method's
    original code registered twice, so that thop, which produced the paper's complexity
    figures, counted their parameters twice and their MACs four times (spec §7).
    ``image_features``: fixed feature channels computed once per image and appended to the
    model's input (see ImageFeatures); None for image-only methods. ``option_of`` names the
    method this one is an option (a variant) of, e.g. FCN-8s of FCN: ``--methods all`` leaves
    options out; they run when named or with ``--methods options``.
    """

    name: str
    build: Callable[[ModelConfig], nn.Module]
    tasks: frozenset[str]
    family: str
    description: str = ""
    citation: str = ""
    groups: tuple[str, ...] = ()
    extra_losses: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    published: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    thop_double_counted: tuple[str, ...] = ()
    image_features: ImageFeatures | None = None
    option_of: str = ""

    @property
    def in_channels(self) -> int:
        """Channels of the model's input: 3 (the gray image) plus any feature channels."""
        return 3 + (self.image_features.channels if self.image_features else 0)

    def __post_init__(self) -> None:
        unknown = set(self.extra_losses) - set(EXTRA_LOSSES)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown extra losses {sorted(unknown)}; "
                             f"known: {', '.join(EXTRA_LOSSES)}")
        tasks = frozenset(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        if not tasks or not tasks <= set(TASKS):
            raise ValueError(f"method {self.name!r}: tasks must be a non-empty subset of {TASKS}")
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name!r}: family must be one of {FAMILIES}")


@dataclass(frozen=True)
class DatasetCard:
    """A dataset: where it comes from and how to turn a folder into cases.

    ``load(root)`` returns the cases (``root`` is None for datasets that need no files);
    ``fingerprint(root)`` is a cheap string that changes whenever the data would (it keys the
    resized-array cache, so an epoch never touches the disk).
    """

    name: str
    classes: tuple[str, ...]
    load: Callable[[Path | None], list[Case]]
    fingerprint: Callable[[Path | None], str]
    description: str = ""
    citation: str = ""
    licence: str = ""
    obtain: str = ""
    layout: str = ""
    needs_files: bool = True
    folder_name: str = ""  # its folder under MTLBENCH_DATA; defaults to the name
    check: Callable[[Path | None], Any] | None = None  # -> mtlbench.data.check.CheckReport
    # Options a user may give as ``--dataset NAME:key=value,...``; load, fingerprint and check
    # receive them as keyword arguments (strings), and classes_for(options) names the classes.
    options: tuple[str, ...] = ()
    classes_for: Callable[[dict[str, str]], tuple[str, ...]] | None = None

    def class_names(self, options: dict[str, str]) -> tuple[str, ...]:
        return self.classes_for(options) if self.classes_for else tuple(self.classes)
