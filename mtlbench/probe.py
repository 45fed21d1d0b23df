"""One probing forward pass for the counters: a zero input on the model's device, eval mode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair; ValueError otherwise."""
    if isinstance(image_size, int):
        pair = (image_size, image_size)
    else:
        pair = tuple(int(s) for s in image_size)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return pair  # type: ignore[return-value]


def probe_input(model: nn.Module, image_size: int | Sequence[int],
                in_channels: int = 3) -> torch.Tensor:
    """A zero batch of one image on the device and in the float dtype of ``model``."""
    height, width = size_pair(image_size)
    reference = next(
        (t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None
    )
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    return torch.zeros(1, in_channels, height, width, device=device, dtype=dtype)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; every submodule's train/eval mode restored after."""
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training
