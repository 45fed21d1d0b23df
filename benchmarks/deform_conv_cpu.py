"""Time one training step (forward + backward) of ACSNet's DSA modules on the CPU, with
torchvision's deform_conv2d kernel and with mtlbench's sampled form of the same operator.

    python benchmarks/deform_conv_cpu.py            # prints a Markdown table

Shapes are those of decoder stages 6 and 7 at the smoke (64²) and paper (256²) input sizes.
"""

from __future__ import annotations

import platform
import time

import torch
from torchvision.ops import DeformConv2d

from mtlbench_methods.acsnet_parts import DSAModule, SamplingDeformConv2d

# (label, channels, spatial size, batch)
CASES = (("DSA512 @ 64² input (4×4)", 512, 4, 8), ("DSA256 @ 64² input (8×8)", 256, 8, 8),
         ("DSA512 @ 256² input (16×16)", 512, 16, 16), ("DSA256 @ 256² input (32×32)", 256, 32, 16))


def step_seconds(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    module(x).sum().backward()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        module(x).sum().backward()
    return (time.perf_counter() - started) / repeats


def with_torchvision_kernel(module: DSAModule) -> DSAModule:
    """The same module, its deformable convs switched to plain torchvision DeformConv2d."""
    for dcn in module.modules():
        if isinstance(dcn, SamplingDeformConv2d):
            dcn.__class__ = DeformConv2d
    return module


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}\n")
    print("| case | batch | torchvision kernel (ms) | sampled (ms) | speed-up |")
    print("|---|---|---|---|---|")
    for label, channels, size, batch in CASES:
        x = torch.randn(batch, channels, size, size, requires_grad=True)
        repeats = 5 if size <= 8 else 2
        module = DSAModule(channels)
        sampled = step_seconds(module, x, repeats)
        kernel = step_seconds(with_torchvision_kernel(module), x, repeats)
        print(f"| {label} | {batch} | {kernel * 1e3:.0f} | {sampled * 1e3:.0f} | "
              f"{kernel / sampled:.1f}× |")


if __name__ == "__main__":
    main()
