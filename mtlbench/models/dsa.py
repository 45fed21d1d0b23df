"""The DSAModule of ACSNet (paper Eqs. 4–7, spec §2.2) and its modulated deformable conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d


def sampled_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                          weight: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's ``deform_conv2d`` (stride 1, dilation 1, one group, one offset group,
    no bias) computed with ``grid_sample`` and one matrix product.

    Same operator, same offset layout ((dy, dx) per tap, row-major taps), same zero padding
    outside the map; forward and gradients agree with torchvision to float precision (tested).
    The sampling runs in float32 even under bf16 autocast, as torchvision's kernel does: bf16
    positions would be rounded to 0.5–1 pixel on a 128² map, and ``torch.compile``'s bf16
    ``grid_sample`` backward gave NaN gradients; the matrix product follows autocast.
    """
    b, c, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    taps = kh * kw
    with torch.autocast(x.device.type, enabled=False):
        x, offset, mask = x.float(), offset.float(), mask.float()
        ky, kx = torch.meshgrid(torch.arange(kh, device=x.device, dtype=x.dtype),
                                torch.arange(kw, device=x.device, dtype=x.dtype), indexing="ij")
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
        offset = offset.view(b, taps, 2, h, w)
        y = rows - padding + ky.reshape(1, taps, 1, 1) + offset[:, :, 0]
        x_pos = cols - padding + kx.reshape(1, taps, 1, 1) + offset[:, :, 1]
        # pixel coordinates -> grid_sample's [-1, 1] (align_corners=False: -1 is the left edge)
        grid = torch.stack([(2 * x_pos + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
        samples = F.grid_sample(x, grid.view(b, taps * h, w, 2), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        samples = samples.view(b, c, taps, h, w) * mask.view(b, 1, taps, h, w)
    return torch.einsum("bckhw,ock->bohw", samples, weight.view(out_ch, c, taps))


class SamplingDeformConv2d(DeformConv2d):
    """``torchvision.ops.DeformConv2d`` that computes on the CPU with ``sampled_deform_conv2d``.

    Why: torchvision's CPU kernel is correct but its backward pass is slow; on a 2-core CPU
    the whole DSA module trained 3–9× slower than with the sampled form (measured in
    benchmarks/results/deform-conv-cpu.md). On other devices torchvision's kernel runs
    unchanged. Only the configuration ACSNet uses (stride 1, dilation 1, one group, no bias)
    takes the CPU path; any other falls back to torchvision.
    """

    def forward(self, input: torch.Tensor, offset: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        simple = (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                  and self.bias is None and mask is not None
                  and offset.shape[1] == 2 * self.weight.shape[2] * self.weight.shape[3]
                  and self.padding[0] == self.padding[1])
        if input.device.type != "cpu" or not simple:
            return super().forward(input, offset, mask)
        return sampled_deform_conv2d(input, offset, mask, self.weight, self.padding[0])


class ModulatedDeformConv(nn.Module):
    """DCNv2: a 3×3 deformable conv whose offsets and modulation come from two 3×3 convs.

    Uses ``torchvision.ops.DeformConv2d`` (bias-free, stride 1, "same" padding; see
    ``SamplingDeformConv2d`` for its CPU path). As in the
    DCN the released code imports (spec §2.2): the offset conv's weights start at 0 (its bias
    keeps PyTorch's default, so the first offsets are small and random) and the modulation
    conv's weights start at the constant 0.5; the mask is the sigmoid of that conv.
    Maps (B, in_ch, H, W) to (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        pad = kernel_size // 2
        self.offset = nn.Conv2d(in_ch, 2 * taps, kernel_size, padding=pad, bias=True)
        self.modulation = nn.Conv2d(in_ch, taps, kernel_size, padding=pad, bias=True)
        self.conv = SamplingDeformConv2d(in_ch, out_ch, kernel_size, padding=pad, bias=False)
        nn.init.zeros_(self.offset.weight)
        nn.init.constant_(self.modulation.weight, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x), torch.sigmoid(self.modulation(x)))


class DSAModule(nn.Module):
    """Deformable spatial attention: DCN, two spatial attention maps, DCN (Eqs. 4–7).

    X' = ReLU(GN(DCN(X))); S1 = σ(conv3×3(mean_c X')), S2 = σ(conv3×3(max_c X'));
    Y = ReLU(GN(DCN([X'·S1, X'·S2]))), GN with C/4 groups. Keeps the shape of X.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"DSAModule: {channels} channels is not a multiple of 4")
        groups = channels // 4
        self.deform_in = nn.Sequential(ModulatedDeformConv(channels, channels),
                                       nn.GroupNorm(groups, channels), nn.ReLU(inplace=True))
        self.mean_attention = nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=True)
        self.max_attention = nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=True)
        self.deform_out = nn.Sequential(ModulatedDeformConv(2 * channels, channels),
                                        nn.GroupNorm(groups, channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deform_in(x)
        s1 = torch.sigmoid(self.mean_attention(x.mean(dim=1, keepdim=True)))
        s2 = torch.sigmoid(self.max_attention(x.amax(dim=1, keepdim=True)))
        return self.deform_out(torch.cat([x * s1, x * s2], dim=1))
