"""Cards: what a plugin registers for a method or a dataset, with its metadata."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from mtlbench.data.cases import Case
    from mtlbench.protocol import Protocol
    from mtlbench.weights import WeightsSource

TASKS = ("seg", "cls")
FAMILIES = ("single-task", "multi-task")
#: Where a loss term goes: added to the segmentation or the classification loss, or the whole
#: loss (the method computes both tasks from one output, so the task losses are not used).
LOSS_PARTS = ("seg", "cls", "whole")
KNOB_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Knob:
    """A setting of one method: overridable with ``--set NAME=VALUE``, recorded with every
    result and part of its trial id, shown by ``mtlbench list methods``.

    ``default`` fixes the type (bool, int, float or str) unless ``type`` says otherwise;
    ``choices`` lists the allowed values (empty: any); ``check(value)`` returns a problem in
    words, or None. ``presets`` gives the knob's value under named protocol presets where it
    differs from ``default`` (e.g. a costly loss term off in ``smoke``).
    """

    name: str
    default: Any
    help: str = ""
    type: type | None = None
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None
    presets: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"knob {self.name!r}: the name must be an identifier")
        kind = self.type or type(self.default)
        if kind not in KNOB_TYPES:
            raise ValueError(f"knob {self.name!r}: type must be one of bool, int, float, str")
        object.__setattr__(self, "type", kind)

    def default_for(self, preset: str) -> Any:
        """The knob's value under the protocol preset ``preset`` when nothing overrides it."""
        return self.presets.get(preset, self.default)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            return f"expected {self.type.__name__}, got {value!r}"
        if self.type is float and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        return self.check(value) if self.check else None


@dataclass(frozen=True)
class LossTerm:
    """A loss a method adds to the task losses the harness computes (soft Dice, CE).

    ``build(knobs, protocol)`` returns the term as a module called ``term(outputs, masks,
    labels)`` -> scalar tensor (``outputs``: the model's dict; ``masks`` (B, 1, H, W) in
    {0, 1}; ``labels`` (B,)). It may hold its own networks and pretrained weights: the harness
    freezes them (no gradient, eval mode), keeps them out of checkpoints and builds the term
    once per trial, under its own seeded random generator. ``part``: ``"seg"`` adds
    ``weight`` × the term to the segmentation loss, ``"cls"`` to the classification loss
    (both under ``loss_mode=paper``; the released code's loss has no extra terms), ``"whole"``
    makes the term the whole loss in every mode. ``weight``: a number, or the name of one of
    the method's knobs; a weight of 0 leaves the term out (nothing is built or downloaded).
    ``weights(knobs)``: the pretrained files the term loads (WeightsSource), checked before
    training. ``describe(knobs)``: the term in a result's loss formula (default: its name).
    ``caveat(knobs)``: a footnote for tables when these knobs make the result differ from what
    the method's paper describes (e.g. a random instead of a pretrained network), else None.
    """

    name: str
    build: Callable[[dict[str, Any], Protocol], nn.Module]
    part: str = "seg"
    weight: float | str = 1.0
    weights: Callable[[dict[str, Any]], tuple[WeightsSource, ...]] | None = None
    describe: Callable[[dict[str, Any]], str] | None = None
    caveat: Callable[[dict[str, Any]], str | None] | None = None

    def __post_init__(self) -> None:
        if self.part not in LOSS_PARTS:
            raise ValueError(f"loss term {self.name!r}: part must be one of {LOSS_PARTS}")
        if not self.name.isidentifier():
            raise ValueError(f"loss term {self.name!r}: the name must be an identifier")

    def weight_value(self, knobs: dict[str, Any]) -> float:
        """The term's weight under ``knobs``."""
        return float(knobs[self.weight]) if isinstance(self.weight, str) else float(self.weight)

    def active(self, knobs: dict[str, Any], loss_mode: str, tasks: frozenset[str]) -> bool:
        """True when a trial with these knobs, loss mode and tasks trains with the term."""
        if self.weight_value(knobs) <= 0:
            return False
        if self.part == "whole":
            return True
        return loss_mode == "paper" and self.part in tasks

    def text(self, knobs: dict[str, Any]) -> str:
        return self.describe(knobs) if self.describe else self.name

    def sources(self, knobs: dict[str, Any]) -> tuple[WeightsSource, ...]:
        return tuple(self.weights(knobs)) if self.weights else ()


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
    ``weights``: the pretrained weights the model loads when the protocol asks for them
    (``mtlbench.weights.WeightsSource``, or the name of one the core provides, such as
    ``mtlbench.weights.RESNET18_IMAGENET``), checked before training.

    What a method brings beyond its network (README, "Writing a method plugin"):

    - ``knobs``: its own settings (Knob), given to ``build`` as ``ModelConfig.options`` and to
      its loss terms; part of the trial id.
    - ``loss_terms``: losses added to the task losses (LossTerm).
    - ``flop_formulas`` (torch op -> FLOP formula, see ``mtlbench.profile``) and ``mac_rules``
      (module type -> thop-style rule, see ``mtlbench.thop_rules``) count its own operators.
    - ``check_outputs(outputs, batch, size)``: the checks of its outputs beyond ``seg``/``cls``
      (returns a problem in words, or None), run on the first training step.

    ``thop_double_counted`` names submodules that the method's
    original code registered twice, so that thop, which produced the paper's complexity
    figures, counted their parameters twice and their MACs four times (spec §7).
    ``image_features``: fixed feature channels computed once per image and appended to the
    model's input (see ImageFeatures); None for image-only methods. ``option_of`` names the
    method this one is an option (a variant) of, e.g. a network with more skips of another:
    ``--methods all`` leaves options out; they run when named or with ``--methods options``.
    ``reference_for``: the tasks a single-task method is the default reference of for the
    multi-task gain Δm (``mtlbench.multitask_gain``); one registered method per task.
    ``shared_parameters(model)``: the parameters a gradient balancing (``mtlbench.balancing``)
    aggregates the task gradients over; None: those both task losses reach.
    """

    name: str
    build: Callable[[ModelConfig], nn.Module]
    tasks: frozenset[str]
    family: str
    description: str = ""
    citation: str = ""
    groups: tuple[str, ...] = ()
    #: Removed in mtlbench 0.2 (a closed list of the core's losses); kept in its place only to
    #: refuse it with a message saying what to use instead.
    extra_losses: tuple[str, ...] = ()
    weights: tuple[str | WeightsSource, ...] = ()
    published: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    thop_double_counted: tuple[str, ...] = ()
    image_features: ImageFeatures | None = None
    option_of: str = ""
    knobs: tuple[Knob, ...] = ()
    loss_terms: tuple[LossTerm, ...] = ()
    flop_formulas: Mapping[Any, Callable[..., int]] = field(default_factory=dict)
    mac_rules: Mapping[type, Callable[..., int]] = field(default_factory=dict)
    check_outputs: Callable[[dict[str, Any], int, int], str | None] | None = None
    reference_for: frozenset[str] = frozenset()
    shared_parameters: Callable[[Any], Any] | None = None

    @property
    def in_channels(self) -> int:
        """Channels of the model's input: 3 (the gray image) plus any feature channels."""
        return 3 + (self.image_features.channels if self.image_features else 0)

    def knob(self, name: str) -> Knob | None:
        return next((k for k in self.knobs if k.name == name), None)

    def __post_init__(self) -> None:
        if self.extra_losses:
            raise ValueError(
                f"method {self.name!r}: MethodCard.extra_losses={tuple(self.extra_losses)} was "
                "removed in mtlbench 0.2; a method now brings its own losses as "
                "MethodCard.loss_terms (mtlbench.cards.LossTerm) and their settings as "
                "MethodCard.knobs; see the README's 'Writing a method plugin'")
        names = [k.name for k in self.knobs]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r}: knob names repeat: {names}")
        from mtlbench.protocol import setting_names

        shared = sorted(set(names) & set(setting_names()))
        if shared:
            raise ValueError(f"method {self.name!r}: knobs {shared} are protocol settings; "
                             "give the method's own knobs names of their own")
        for term in self.loss_terms:
            if isinstance(term.weight, str) and term.weight not in names:
                raise ValueError(f"method {self.name!r}: loss term {term.name!r} is weighted by "
                                 f"knob {term.weight!r}, which the card does not declare")
        terms = [t.name for t in self.loss_terms]
        if len(set(terms)) != len(terms) or set(terms) & {"dice", "ce", "total"}:
            raise ValueError(f"method {self.name!r}: loss term names must be unique and not "
                             f"'dice', 'ce' or 'total': {terms}")
        tasks = frozenset(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        if not tasks or not tasks <= set(TASKS):
            raise ValueError(f"method {self.name!r}: tasks must be a non-empty subset of {TASKS}")
        reference_for = frozenset(self.reference_for)
        object.__setattr__(self, "reference_for", reference_for)
        if not reference_for <= tasks or (reference_for and len(tasks) > 1):
            raise ValueError(f"method {self.name!r}: reference_for {sorted(reference_for)} must "
                             "name the task of a single-task method (a Δm reference scores "
                             "one task)")
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name!r}: family must be one of {FAMILIES}")


@dataclass(frozen=True)
class DatasetCard:
    """A dataset: where it comes from and how to turn a folder into cases.

    ``load(root)`` returns the cases (``root`` is None for datasets that need no files);
    ``fingerprint(root)`` is a cheap string that changes whenever the data would (it keys the
    resized-array cache, so an epoch never touches the disk).

    ``partition`` says in words what the dataset's own partition is (its cases carry their
    fold, ``Case.fold``), which ``split=official`` follows; empty when it ships none, and
    ``split=official`` is refused. ``path_options`` names the options whose values are files
    or folders: given as an absolute path, such a value enters the dataset's identity (trial
    ids, split files, tables) by its name alone, so the data resumes wherever it sits.
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
    # Checks the option values when the spec is parsed (before anything is read); raises
    # mtlbench.data.prepare.DatasetOptionError naming the option.
    validate: Callable[[dict[str, str]], None] | None = None
    partition: str = ""
    path_options: tuple[str, ...] = ()

    def class_names(self, options: dict[str, str]) -> tuple[str, ...]:
        return self.classes_for(options) if self.classes_for else tuple(self.classes)
