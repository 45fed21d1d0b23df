"""Model size and cost: unique parameters and true FLOPs/MACs of one forward pass.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts a
multiply-add as 2 FLOPs and knows the common aten ops (convolutions, matmuls, attention).
Ops it does not know (e.g. ``torchvision::deform_conv2d``) count 0 unless a formula is
registered with ``register_flop_formula``. Normalisation, activations, pooling and
interpolation are not counted, which is the usual convention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Extra FLOP formulas, keyed by operator packet (e.g. ``torch.ops.torchvision.deform_conv2d``).
_EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {}


def register_flop_formula(op: Any, fn: Callable[..., int], *, replace: bool = False) -> None:
    """Make ``count_flops`` count ``op`` with ``fn``.

    ``op`` is a torch operator, e.g. ``torch.ops.torchvision.deform_conv2d`` (an overload such
    as ``....default`` is accepted and stands for all its overloads). ``fn`` follows the
    FlopCounterMode convention: it is called with the op's positional and keyword arguments in
    which every tensor is replaced by its shape (a ``torch.Size``), plus the keyword
    ``out_shape`` (the output's shape, or a tuple of shapes), and returns the number of FLOPs
    (2 per multiply-add). Registering an op twice raises ValueError unless ``replace=True``.
    """
    packet = _packet(op)
    if packet in _EXTRA_FLOP_FORMULAS and not replace:
        raise ValueError(
            f"a FLOP formula for {packet} is already registered; pass replace=True to replace it"
        )
    _EXTRA_FLOP_FORMULAS[packet] = fn


def unregister_flop_formula(op: Any) -> None:
    """Forget the extra FLOP formula of ``op``, if one was registered."""
    _EXTRA_FLOP_FORMULAS.pop(_packet(op), None)


def registered_flop_formulas() -> dict[Any, Callable[..., int]]:
    """A copy of the extra FLOP formulas ``count_flops`` uses, keyed by operator packet."""
    return dict(_EXTRA_FLOP_FORMULAS)


def _packet(op: Any) -> Any:
    return getattr(op, "_overloadpacket", op)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters in ``model``; a parameter shared by modules counts once."""
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values())


def count_flops(
    model: nn.Module, image_size: int | Sequence[int], in_channels: int = 3
) -> dict[str, int]:
    """True FLOPs and MACs of one forward pass at batch 1 in eval mode.

    ``image_size`` is an int (square) or (H, W). Returns ``{"flops": F, "macs": F // 2}``.
    The model keeps its device, its parameters, its buffers and every submodule's train/eval
    mode.
    """
    height, width = _size_pair(image_size)
    reference = next(
        (t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None
    )
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    x = torch.zeros(1, in_channels, height, width, device=device, dtype=dtype)

    modes = {module: module.training for module in model.modules()}
    counter = FlopCounterMode(display=False, custom_mapping=dict(_EXTRA_FLOP_FORMULAS))
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for module, training in modes.items():
            module.training = training
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2}


@dataclass(frozen=True)
class ModelProfile:
    """Size and cost of a model at one input size: parameters, FLOPs and MACs (batch 1)."""

    params: int
    flops: int
    macs: int

    @property
    def mparams(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        """FLOPs in billions."""
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        """MACs in billions (what the paper's tables call "FLOPs (G)")."""
        return self.macs / 1e9


def profile_model(
    model: nn.Module, image_size: int | Sequence[int], in_channels: int = 3
) -> ModelProfile:
    """Parameters (``count_parameters``) and FLOPs/MACs (``count_flops``) of ``model``."""
    cost = count_flops(model, image_size, in_channels)
    return ModelProfile(params=count_parameters(model), flops=cost["flops"], macs=cost["macs"])


def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        pair = (image_size, image_size)
    else:
        pair = tuple(int(s) for s in image_size)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return pair  # type: ignore[return-value]
