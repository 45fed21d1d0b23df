"""A method from outside mtlbench that uses every extension point of the method contract.

``edgenet``: a small encoder-decoder with both task heads and a third output, ``edge`` (the
tumour's boundary map). It brings

- a knob ``edge_weight`` (the weight of its own loss term; 0 in no preset, checked >= 0) and a
  knob ``width`` (the network's width, one of 8 or 16), both in the trial id;
- a loss term ``edge``: a frozen Sobel network whose kernels are loaded from a weights file
  (a small local file, ``sobel.weights``) compares the ``edge`` output with the mask's edges;
- fixed input features: the gradient magnitude of each image, one channel;
- its own operator (``outside::soft_gate``, a custom torch op) with a FLOP formula, and its
  own module (``Gain``) with a thop-style MAC rule;
- a check of its output beyond ``seg``/``cls``: ``edge`` must be (B, 1, H, W).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlbench.cards import ImageFeatures, Knob, LossTerm, MethodCard, ModelConfig
from mtlbench.hookspecs import hookimpl
from mtlbench.weights import WeightsSource

HERE = Path(__file__).parent
#: Where the Sobel kernels are kept once fetched: $MTLBENCH_OUTSIDE_WEIGHTS (tests point it at
#: a temporary folder), and where they come from: the file shipped beside this module.
SOBEL = WeightsSource(
    "outside/sobel", "sobel.weights", (HERE / "sobel.weights").as_uri(),
    "the Sobel kernels of edgenet's edge loss",
    "run with --set edge_weight=0 to train without the edge loss",
    directory="$MTLBENCH_OUTSIDE_WEIGHTS",
)


# --- an operator of its own, with a FLOP formula --------------------------------------------

@torch.library.custom_op("outside::soft_gate", mutates_args=())
def soft_gate(x: torch.Tensor) -> torch.Tensor:
    """x · sigmoid(x), as one operator."""
    return x * torch.sigmoid(x)


@soft_gate.register_fake
def _soft_gate_shape(x):
    return torch.empty_like(x)


def _soft_gate_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _soft_gate_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    s = torch.sigmoid(x)
    return grad * (s + x * s * (1 - s))


soft_gate.register_autograd(_soft_gate_backward, setup_context=_soft_gate_setup)

SOFT_GATE_FLOPS_PER_ELEMENT = 4


def soft_gate_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    """4 FLOPs per element (exp, add, divide, multiply)."""
    return SOFT_GATE_FLOPS_PER_ELEMENT * math.prod(x_shape)


class SoftGate(nn.Module):
    def forward(self, x):
        return torch.ops.outside.soft_gate(x)


# --- a module of its own, with a MAC rule ----------------------------------------------------

class Gain(nn.Module):
    """A learned per-channel gain: one multiply per element."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.gain


def gain_macs(module: Gain, x: torch.Tensor, y: torch.Tensor) -> int:
    return y.numel()


# --- the network -----------------------------------------------------------------------------

class EdgeNet(nn.Module):
    """Input (B, 4, H, W): the normalised gray image on channels 0–2 and its gradient magnitude
    on channel 3. Outputs ``seg`` (B, 1, H, W), ``cls`` (B, K) and ``edge`` (B, 1, H, W)."""

    def __init__(self, width: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), Gain(width), SoftGate(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.seg = nn.Conv2d(width, 1, 1)
        self.edge = nn.Conv2d(width, 1, 1)
        self.cls = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.body(x)
        return {"seg": self.seg(h), "cls": self.cls(h.mean((2, 3))), "edge": self.edge(h)}


def build(config: ModelConfig) -> EdgeNet:
    return EdgeNet(config.options["width"], config.num_classes)


def check_edge(outputs, batch: int, size: int) -> str | None:
    shape = tuple(outputs["edge"].shape) if "edge" in outputs else None
    if shape != (batch, 1, size, size):
        return f"'edge' must be (B, 1, H, W) = {(batch, 1, size, size)}, got {shape}"
    return None


# --- the loss term: a frozen network with weights from a file --------------------------------

class SobelEdgeLoss(nn.Module):
    """MSE between sigmoid(outputs["edge"]) and the Sobel edge magnitude of the mask (clipped
    to [0, 1]); the Sobel kernels are read from the weights file."""

    def __init__(self) -> None:
        super().__init__()
        kernels = torch.load(SOBEL.path, weights_only=True)  # (2, 1, 3, 3)
        self.sobel = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.sobel.weight.copy_(kernels)

    def forward(self, outputs, masks, labels):
        gx, gy = self.sobel(masks.float()).unbind(1)
        edges = (gx.square() + gy.square()).sqrt().clamp(max=1).unsqueeze(1)
        return F.mse_loss(torch.sigmoid(outputs["edge"].float()), edges)


EDGE_TERM = LossTerm(
    name="edge", part="seg", weight="edge_weight",
    build=lambda knobs, protocol: SobelEdgeLoss(),
    weights=lambda knobs: (SOBEL,),
    describe=lambda knobs: "Sobel edge MSE",
)


# --- fixed input features ---------------------------------------------------------------------

def gradient_magnitude(images: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> (N, 1, S, S) float in [0, 1]."""
    x = images.astype(np.float32) / 255.0
    gy, gx = np.gradient(x, axis=(1, 2))
    magnitude = np.sqrt(gx**2 + gy**2)
    return np.clip(magnitude / max(float(magnitude.max()), 1e-6), 0, 1)[:, None]


GRADIENT = ImageFeatures("outside-gradient-v1", 1, gradient_magnitude,
                         "gradient magnitude of the gray image")


CARD = MethodCard(
    name="edgenet", build=build, tasks=frozenset({"seg", "cls"}), family="multi-task",
    description="A small multi-task net with an edge output and an edge loss (a test plugin).",
    knobs=(
        Knob("edge_weight", 0.5, "the edge loss's weight in L_seg",
             check=lambda v: None if v >= 0 else "must be >= 0"),
        Knob("width", 8, "channels of the network", choices=(8, 16)),
    ),
    loss_terms=(EDGE_TERM,),
    image_features=GRADIENT,
    flop_formulas={torch.ops.outside.soft_gate: soft_gate_flops},
    mac_rules={Gain: gain_macs},
    check_outputs=check_edge,
)


@hookimpl
def mtlbench_register_methods(register):
    register(CARD)
