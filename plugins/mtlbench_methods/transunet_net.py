"""TransUNet (Chen et al. 2021) with the R50 + ViT-B/16 hybrid encoder, as in the official code.

The parts follow the paper's Figure 1 and the released ``vit_seg_modeling.py`` (config
``R50-ViT-B_16``, ``n_skip = 3``), built from timm's ResNetV2 and ViT blocks:

- ``HybridEncoder``: ResNet-50 v2 body without pre-activation (stages of 3, 4, 9 bottlenecks,
  weight-standardised convs, GroupNorm) gives the skips at H/2 (64), H/4 (256), H/8 (512) and a
  1024-channel map at H/16; a 1×1 patch embedding makes it a sequence of (H/16)·(W/16) tokens of
  width 768 with learned position embeddings; 12 ViT-B blocks and a final LayerNorm.
- ``CascadedUpsampler`` (CUP): a 3×3 conv 768→512, then four ``DecoderBlock``s (bilinear ×2,
  concat skip, two 3×3 conv-BN-ReLU) with 256, 128, 64, 16 channels; the last has no skip.
- A 3×3 conv 16→1 gives the mask logits at full size.

Deliberate differences from the official PyTorch code (none changes a parameter count):
timm's stem max-pool pads by 1, so H/4 is exact and the official zero-padding of odd-sized
features is not needed; the attention output has no dropout (official: attention dropout 0.0
applies there too) and the MLP has dropout 0.1, as in the official config.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import GroupNormAct, StdConv2d
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import Block
from torch import nn

#: ViT-B/16: width, depth, heads, MLP ratio; dropout of the official config.
VIT_WIDTH, VIT_DEPTH, VIT_HEADS, VIT_MLP_RATIO, VIT_DROPOUT = 768, 12, 12, 4.0, 0.1
R50_LAYERS = (3, 4, 9)
PATCH_GRID_STRIDE = 16
SKIP_CHANNELS = (512, 256, 64, 0)
DECODER_CHANNELS = (256, 128, 64, 16)
CUP_HEAD_CHANNELS = 512


def r50_body() -> ResNetV2:
    """The hybrid's ResNet-50 v2 (3, 4, 9 blocks; no fourth stage), as TransUNet builds it:
    weight-standardised convs (eps 1e-5), GroupNorm(32, eps 1e-6), no pre-activation."""
    return ResNetV2(
        layers=R50_LAYERS, num_classes=0, global_pool="", preact=False, stem_type="",
        conv_layer=partial(StdConv2d, eps=1e-5),
        norm_layer=partial(GroupNormAct, num_groups=32, eps=1e-6),
    )


class HybridEncoder(nn.Module):
    """R50 + ViT-B/16 for an ``image_size`` input: returns the token map (B, 768, H/16, W/16)
    and the three skips [H/8 (512), H/4 (256), H/2 (64)], deepest first."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        grid = image_size // PATCH_GRID_STRIDE
        self.grid = grid
        self.resnet = r50_body()
        self.patch_embed = nn.Conv2d(self.resnet.num_features, VIT_WIDTH, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, VIT_WIDTH))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(VIT_DROPOUT)
        self.blocks = nn.Sequential(*[self._block() for _ in range(VIT_DEPTH)])
        self.norm = nn.LayerNorm(VIT_WIDTH, eps=1e-6)

    @staticmethod
    def _block() -> Block:
        block = Block(VIT_WIDTH, VIT_HEADS, VIT_MLP_RATIO, qkv_bias=True, proj_drop=VIT_DROPOUT,
                      norm_layer=partial(nn.LayerNorm, eps=1e-6))
        block.attn.proj_drop = nn.Dropout(0.0)  # the official attention has no output dropout
        return block

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stem = self.resnet.stem
        half = stem.norm(stem.conv(x))                     # 64 @ H/2, before the max-pool
        quarter = self.resnet.stages[0](stem.pool(half))   # 256 @ H/4
        eighth = self.resnet.stages[1](quarter)            # 512 @ H/8
        features = self.resnet.stages[2](eighth)           # 1024 @ H/16
        tokens = self.patch_embed(features)
        b, c, h, w = tokens.shape
        if h * w != self.pos_embed.shape[1]:
            raise ValueError(
                f"TransUNet was built for {self.grid}×{self.grid} tokens "
                f"({self.grid * PATCH_GRID_STRIDE}² inputs), got {h}×{w}: build it at the "
                "protocol's image size"
            )
        tokens = self.dropout(tokens.flatten(2).transpose(1, 2) + self.pos_embed)
        tokens = self.norm(self.blocks(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w), [eighth, quarter, half]


class ConvBNReLU(nn.Sequential):
    """3×3 conv (no bias) → BatchNorm → ReLU, TransUNet's ``Conv2dReLU``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Bilinear ×2 (align_corners=True, as the official code), concat the skip, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class CascadedUpsampler(nn.Module):
    """The CUP decoder: 768→512 conv, then four decoder blocks back to full size (16 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_more = ConvBNReLU(VIT_WIDTH, CUP_HEAD_CHANNELS)
        ins = (CUP_HEAD_CHANNELS, *DECODER_CHANNELS[:-1])
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o)
            for i, s, o in zip(ins, SKIP_CHANNELS, DECODER_CHANNELS, strict=True)
        )

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv_more(x)
        for block, skip in zip(self.blocks, [*skips, None], strict=True):
            x = block(x, skip)
        return x


class TransUNet(nn.Module):
    """R50-ViT-B/16 TransUNet with three skips; returns mask logits (B, 1, H, W)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        if image_size % PATCH_GRID_STRIDE:
            raise ValueError(f"TransUNet needs an image size divisible by 16, got {image_size}")
        self.encoder = HybridEncoder(image_size)
        self.decoder = CascadedUpsampler()
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, skips = self.encoder(x)
        return self.head(self.decoder(tokens, skips))


# ---- ImageNet-21k weights -------------------------------------------------------------------

#: timm's port of Google's ``R50+ViT-B_16.npz`` (ImageNet-21k), the file TransUNet loads.
R50_VIT_IN21K_REPO = "timm/vit_base_r50_s16_224.orig_in21k"
R50_VIT_IN21K_FILE = "model.safetensors"


def encoder_state_from_timm(state: dict[str, torch.Tensor], grid: int) -> dict[str, torch.Tensor]:
    """Map a timm ``vit_base_r50_s16_224`` state dict onto ``HybridEncoder``'s names.

    The class token is dropped and the 14×14 position-embedding grid is resized bilinearly to
    ``grid``×``grid``, as TransUNet does (it uses an order-1 zoom).
    """
    from timm.layers import resample_abs_pos_embed

    out = {}
    for key, value in state.items():
        if key.startswith("patch_embed.backbone."):
            out["resnet." + key.removeprefix("patch_embed.backbone.")] = value
        elif key.startswith("patch_embed.proj."):
            out["patch_embed." + key.removeprefix("patch_embed.proj.")] = value
        elif key.startswith(("blocks.", "norm.")):
            out[key] = value
        elif key == "pos_embed":
            tokens = value[:, 1:] if value.shape[1] % 2 else value  # 197 = class token + 14²
            old = int(round(tokens.shape[1] ** 0.5))
            out["pos_embed"] = resample_abs_pos_embed(
                tokens, new_size=(grid, grid), old_size=(old, old), num_prefix_tokens=0,
                interpolation="bilinear", antialias=False)
    return out


def load_r50_vit_in21k(encoder: HybridEncoder) -> None:
    """Load the ImageNet-21k R50+ViT-B/16 weights (Hugging Face cache) into ``encoder``.

    The caller checks beforehand that the file is cached or downloadable
    (``mtlbench.weights.ensure_weights``). Every encoder tensor must be covered.
    """
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    state = load_file(hf_hub_download(R50_VIT_IN21K_REPO, R50_VIT_IN21K_FILE))
    encoder.load_state_dict(encoder_state_from_timm(state, encoder.grid), strict=True)
