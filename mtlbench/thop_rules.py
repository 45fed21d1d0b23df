"""MACs and parameters counted by thop 0.1's rules: the convention of the reference paper's
complexity table and of much of this field.

We re-implement thop's counting rules here rather than depend on it: it is unmaintained since
2022, it adds buffers to and changes the mode of the model it measures, and a method cannot
add rules for its own modules to it. The tests check this module against thop.

Rules, per call of a module (a module without a rule counts 0, as in thop):

- convolution: output elements × in_channels/groups × kernel area (bias not counted);
- BatchNorm / LayerNorm / InstanceNorm: 2 × input elements, doubled when affine
  (GroupNorm has no rule in thop and counts 0);
- Linear: in_features × output elements;
- AvgPool: output elements; AdaptiveAvgPool: (pooled area + 1) × output elements;
- Upsample: output elements × 1 (nearest), 5 (linear), 11 (bilinear), 259 (bicubic),
  31 (trilinear);
- Softmax: rows × (3n − 1) for n classes;
- a method's own modules: the rules its card declares (``MethodCard.mac_rules``), passed
  to ``thop_count`` as ``extra_rules`` and counted as exact types.

Parameters: those of every module with a rule that ran, once per module (so GroupNorm's are
not counted, as in thop).

thop looks rules up by exact type, so it counts nothing for subclasses such as timm's
weight-standardised ``StdConv2d``. ``ThopCount.macs`` also
counts subclasses by their base class's rule; the paper-convention figures do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtlbench.probe import evaluating, probe_input

_UPSAMPLE_OPS = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 259, "trilinear": 31}


def conv_rule(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """A convolution: output elements × in_channels/groups × kernel area (no bias)."""
    return y.numel() * (x.shape[1] // m.groups) * math.prod(m.weight.shape[2:])


def _norm(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * x.numel() * (2 if affine else 1)


def _linear(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> int:
    return m.in_features * y.numel()


def _avgpool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return y.numel()


def _adaptive_avgpool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    area = math.prod(i / o for i, o in zip(x.shape[2:], y.shape[2:], strict=True))
    return int((area + 1) * y.numel())


def _upsample(m: nn.Upsample, x: torch.Tensor, y: torch.Tensor) -> int:
    return _UPSAMPLE_OPS.get(m.mode, 0) * y.numel()


def _softmax(m: nn.Softmax, x: torch.Tensor, y: torch.Tensor) -> int:
    n = x.shape[m.dim]
    return (x.numel() // n) * (3 * n - 1)


def _zero(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return 0


Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], int]

#: Exact module type -> rule, as thop 0.1.1's table (RNN rules omitted: no method uses them;
#: nn.Sequential omitted: thop gives it a zero rule but counts its children instead).
RULES: dict[type, Rule] = {
    nn.ZeroPad2d: _zero,
    **{t: conv_rule for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                          nn.ConvTranspose2d, nn.ConvTranspose3d)},
    **{t: _norm for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                          nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                          nn.InstanceNorm3d)},
    **{t: _zero for t in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d,
                          nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                          nn.AdaptiveMaxPool3d, nn.Dropout, nn.PixelShuffle)},
    nn.Softmax: _softmax,
    **{t: _avgpool for t in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)},
    **{t: _adaptive_avgpool for t in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                                      nn.AdaptiveAvgPool3d)},
    nn.Linear: _linear,
    **{t: _upsample for t in (nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)},
}


@dataclass(frozen=True)
class ThopCount:
    """thop-rule counts of one forward pass at batch 1.

    ``macs``: the model as built here, every layer with a rule counted, subclasses included
    (functional ops such as attention's matrix products have no rule and count 0).
    ``params``: as thop counts them (exact types). ``paper_params``/``paper_macs``: as thop
    counted the method's original code (exact types only), where the ``double_counted``
    submodules were registered twice (their parameters counted twice, their MACs four times;
    spec §7).
    """

    params: int
    macs: int
    paper_params: int
    paper_macs: int


def thop_count(model: nn.Module, image_size: int | Sequence[int], in_channels: int = 3,
               double_counted: Sequence[str] = (),
               extra_rules: Mapping[type, Rule] | None = None) -> ThopCount:
    """Count ``model`` by thop's rules on one zero input; its modes and state are kept.

    ``double_counted`` names submodules (``model.get_submodule`` paths) that the original code
    registered twice; an unknown name raises ValueError. ``extra_rules`` adds rules for module
    types thop has none for (a method's own operators), counted like thop's own.
    """
    rules = {**RULES, **(extra_rules or {})}
    subs = {}
    for name in double_counted:
        try:
            subs[name] = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"thop_count: the model has no submodule {name!r} to count "
                             "twice") from None
    ops: dict[nn.Module, int] = {}
    params: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        ops[module] = ops.get(module, 0) + rule_for(type(module), rules)(module, inputs[0], output)
        params[module] = sum(p.numel() for p in module.parameters())

    x = probe_input(model, image_size, in_channels)
    handles = [module.register_forward_hook(hook) for module in model.modules()
               if rule_for(type(module), rules) is not None]
    try:
        with evaluating(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()

    def within(sub: nn.Module, table: dict[nn.Module, int]) -> int:
        return sum(table.get(m, 0) for m in sub.modules())

    exact_ops = {m: n for m, n in ops.items() if type(m) in rules}
    exact_params = {m: n for m, n in params.items() if type(m) in rules}
    thop_macs, thop_params = sum(exact_ops.values()), sum(exact_params.values())
    return ThopCount(
        params=thop_params, macs=sum(ops.values()),
        paper_params=thop_params + sum(within(s, exact_params) for s in subs.values()),
        paper_macs=thop_macs + 3 * sum(within(s, exact_ops) for s in subs.values()),
    )


def rule_for(module_type: type, rules: Mapping[type, Rule] | None = None) -> Rule | None:
    """The rule of ``module_type`` or of its nearest base class that has one (in ``rules``,
    thop's own table by default)."""
    rules = RULES if rules is None else rules
    return next((rules[t] for t in module_type.__mro__ if t in rules), None)
