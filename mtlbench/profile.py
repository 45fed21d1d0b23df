"""Model size and cost: unique parameters, FLOPs and MACs of one forward pass.

Two counters, because the field uses two conventions:

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs
  and knows the common aten ops (convolutions, matmuls, attention), whether called through
  modules or functions. Normalisation, activations, pooling and interpolation are not counted.
  Ops it does not know count 0 unless a formula is given: a method's card declares formulas
  for its own operators (``MethodCard.flop_formulas``), and ``register_flop_formula`` adds one
  for every model.
- MACs: thop's per-module rules (``mtlbench.thop_rules``), the convention of the reference
  paper's complexity table, including its figure for the paper's own code
  (``paper_params``/``paper_macs``); a card adds rules for its own modules
  (``MethodCard.mac_rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torchvision  # noqa: F401 - registers torch.ops.torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mtlbench.probe import evaluating, probe_input

if TYPE_CHECKING:
    from mtlbench.cards import MethodCard
from mtlbench.thop_rules import thop_count

#: Extra FLOP formulas for every model, keyed by operator packet (``torch.ops.NS.op``).
_EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {}


def register_flop_formula(op: Any, fn: Callable[..., int], *, replace: bool = False) -> None:
    """Make ``count_flops`` count ``op`` with ``fn``.

    ``op`` is a torch operator, e.g. ``torch.ops.torchvision.roi_align`` (an overload such as
    ``....default`` is accepted and stands for all its overloads). ``fn`` follows the
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


def count_flops(model: nn.Module, image_size: int | Sequence[int], in_channels: int = 3,
                formulas: Mapping[Any, Callable[..., int]] | None = None) -> int:
    """FLOPs of one forward pass at batch 1 in eval mode, by FlopCounterMode (2 per MAC).

    ``image_size`` is an int (square) or (H, W). ``formulas`` (op -> formula, the convention of
    ``register_flop_formula``) count operators FlopCounterMode does not know, for this call.
    The model keeps its device, its parameters, its buffers and every submodule's train/eval
    mode.
    """
    x = probe_input(model, image_size, in_channels)
    mapping = {**_EXTRA_FLOP_FORMULAS, **{_packet(op): fn for op, fn in (formulas or {}).items()}}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with evaluating(model), counter:
        model(x)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class ModelProfile:
    """Size and cost of a model at one input size (batch 1).

    ``params``: unique parameters. ``flops``: FlopCounterMode FLOPs (2 per multiply-add of
    convolutions, matrix products and attention). ``macs``: MACs by thop's rules on the model
    as built, every layer counted (spec §7's "true" column; attention's matrix products have
    no thop rule). ``paper_params``/``paper_macs``: thop's own figures for the method's
    original code (the convention of the reference paper's complexity table: exact layer
    types only, double
    registrations as the card declares).
    """

    params: int
    flops: int
    macs: int
    paper_params: int = 0
    paper_macs: int = 0

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

    @property
    def paper_gmacs(self) -> float:
        return self.paper_macs / 1e9

    @property
    def paper_mparams(self) -> float:
        return self.paper_params / 1e6


def profile_model(model: nn.Module, image_size: int | Sequence[int], in_channels: int = 3,
                  double_counted: Sequence[str] = (),
                  flop_formulas: Mapping[Any, Callable[..., int]] | None = None,
                  mac_rules: Mapping[type, Callable[..., int]] | None = None) -> ModelProfile:
    """Parameters, FLOPs (``count_flops``) and thop-rule MACs (``thop_count``) of ``model``;
    ``flop_formulas`` and ``mac_rules`` count a method's own operators and modules."""
    thop = thop_count(model, image_size, in_channels, double_counted, mac_rules)
    return ModelProfile(params=count_parameters(model),
                        flops=count_flops(model, image_size, in_channels, flop_formulas),
                        macs=thop.macs, paper_params=thop.paper_params,
                        paper_macs=thop.paper_macs)


def profile_method(method: MethodCard, model: nn.Module, image_size: int) -> ModelProfile:
    """``profile_model`` with everything the method's card says about counting it."""
    return profile_model(model, image_size, method.in_channels,
                         double_counted=method.thop_double_counted,
                         flop_formulas=method.flop_formulas, mac_rules=method.mac_rules)


@dataclass(frozen=True)
class ModelSpeed:
    """Measured speed of a model on one device (medians over repeats, after a warm-up)."""

    device: str
    latency_ms: float  # one forward pass at batch 1, eval mode, no autograd
    train_images_per_s: float  # forward + backward + Adam step at ``batch_size``
    batch_size: int


def measure_speed(model: nn.Module, image_size: int, device: str = "cpu", batch_size: int = 8,
                  repeats: int = 5, in_channels: int = 3) -> ModelSpeed:
    """Forward latency at batch 1 and training throughput of ``model`` on ``device``.

    The model is moved to ``device`` and trained on random data for a few steps (its weights
    change: measure a fresh copy). The training step's loss is the sum of the squared means of
    every output tensor, which reaches every head.
    """
    import statistics
    import time

    dev = torch.device(device)
    model = model.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            sync()
            started = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    one = torch.randn(1, in_channels, image_size, image_size, device=dev)
    model.eval()
    with torch.no_grad():
        latency = timed(lambda: model(one))

    batch = torch.randn(batch_size, in_channels, image_size, image_size, device=dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def step() -> None:
        outputs = model(batch)
        values = outputs.values() if isinstance(outputs, dict) else [outputs]
        loss = sum(v.float().mean().square() for v in values)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    step_s = timed(step)
    return ModelSpeed(device=str(dev), latency_ms=latency * 1e3,
                      train_images_per_s=batch_size / step_s, batch_size=batch_size)


_PROFILES: dict[tuple, ModelProfile] = {}


def cached_profile(method: MethodCard, model, size: int) -> ModelProfile:
    """The model's size and cost, counted once per (method, size) in a process: the five folds
    of a method build the same architecture, and counting a ViT-sized model at 256² takes
    seconds."""
    key = (method.name, method.build, size, method.in_channels, method.thop_double_counted,
           id(method.flop_formulas), id(method.mac_rules))
    if key not in _PROFILES:
        _PROFILES[key] = profile_method(method, model, size)
    return _PROFILES[key]
