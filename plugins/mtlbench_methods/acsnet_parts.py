"""ACSNet's own parts (He et al., spec §2.2–2.3): the gate unit, the DSA module with its
modulated deformable convolution, and the multi-scale classification branch; plus the counting
rules of the deformable convolution (FLOPs and thop-style MACs), which the method cards declare.

Generic blocks (the ResNet-18 encoder, the UNet decoder skeleton, ConvGNReLU, channel attention)
come from ``mtlbench.models``, the core's library for method authors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from mtlbench.models import ChannelAttention, ConvGNReLU
from mtlbench.thop_rules import conv_rule

# --- the gate unit GU(C) (paper Eqs. 1–3; the released code calls it "GSA") ------------------

class GateUnit(nn.Module):
    """Rescales a feature map by two learned per-image gates, then refines it with a 3×3 conv.

    Gate branch: 3×3 conv C→C/8 + GN(C/16) + ReLU, 3×3 conv C/8→2, sigmoid. Channel 0 is
    average-pooled to the scalar G¹, channel 1 max-pooled to G² (Eqs. 1–2). Output (Eq. 3):
    ReLU(GN(C/4)(Conv3×3(X·G¹ + X·G²))). Keeps the shape of X; needs C divisible by 16.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 16:
            raise ValueError(f"GateUnit: {channels} channels is not a multiple of 16")
        self.gate = nn.Sequential(
            ConvGNReLU(channels, channels // 8, groups=channels // 16),
            nn.Conv2d(channels // 8, 2, kernel_size=3, padding=1, bias=True),
        )
        self.refine = ConvGNReLU(channels, channels, groups=channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.gate(x))
        g_avg = gates[:, 0:1].mean(dim=(2, 3), keepdim=True)  # G¹: global average pooling
        g_max = gates[:, 1:2].amax(dim=(2, 3), keepdim=True)  # G²: global max pooling
        return self.refine(x * g_avg + x * g_max)


# --- the DSA module (paper Eqs. 4–7) and its modulated deformable convolution ----------------

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


# --- the multi-scale classification branch (spec §2.3) ---------------------------------------

class MultiScaleClassifier(nn.Module):
    """The multi-scale classification branch on stages 4, 5 and 6 (spec §2.3).

    From e4 (256 × h × w), e5 (512 × h/2 × w/2) and the decoder's d6 (512 × h × w): each scale
    goes through its own channel attention (``attention=True``; identity otherwise, the
    paper's C_MS UNet), e5 is upsampled ×2 (bilinear, align_corners=True), the three maps are
    concatenated (1280 channels), average-pooled and classified by FC 1280→640 → ReLU →
    FC 640→num_classes. The encoder features it reads are the ungated ones.
    """

    def __init__(self, num_classes: int = 2, attention: bool = True,
                 channels: tuple[int, int, int] = (256, 512, 512)) -> None:
        super().__init__()
        c4, c5, c6 = channels

        def attend(c: int) -> nn.Module:
            return ChannelAttention(c) if attention else nn.Identity()

        self.attention4, self.attention5, self.attention6 = attend(c4), attend(c5), attend(c6)
        self.up5 = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        total = c4 + c5 + c6
        self.fc1 = nn.Linear(total, total // 2)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(total // 2, num_classes)

    def forward(self, e4: torch.Tensor, e5: torch.Tensor, d6: torch.Tensor) -> torch.Tensor:
        maps = [self.attention4(e4), self.up5(self.attention5(e5)), self.attention6(d6)]
        x = torch.flatten(self.pool(torch.cat(maps, dim=1)), 1)
        return self.fc2(self.relu(self.fc1(x)))

    def from_features(
        self, features: Sequence[torch.Tensor], d6: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Classify from e4, e5 (``features[3:5]``) and d6; d6 is required (needs a decoder)."""
        if d6 is None:
            raise ValueError("MultiScaleClassifier reads the decoder's stage 6: build the "
                             "network with a decoder")
        return self(features[3], features[4], d6)


# --- counting rules of the deformable convolution --------------------------------------------

def deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """torchvision's deform_conv2d counted like a convolution of the same shape: 2 FLOPs per
    multiply-add of its weights. The bilinear sampling and the mask (about 5 multiply-adds per
    sampled value, ~1% of the total at ACSNet's widths) are not counted, as for thop."""
    c_out, c_in_per_group, kh, kw = weight_shape
    return 2 * math.prod(out_shape) * c_in_per_group * kh * kw


#: FLOP formulas (mtlbench.profile) for the operators of ACSNet's parts.
FLOP_FORMULAS = {torch.ops.torchvision.deform_conv2d: deform_conv2d_flops}
#: thop-style MAC rules (mtlbench.thop_rules) for its modules: a deformable convolution counts
#: like a convolution of the same shape, which is what thop counted for the pure-PyTorch DCN
#: of the paper's code (its main conv is an nn.Conv2d with stride = kernel over the sampled
#: map). Sampling is not counted.
MAC_RULES = {DeformConv2d: conv_rule, SamplingDeformConv2d: conv_rule}
