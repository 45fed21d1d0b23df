"""Joint image/mask augmentation of whole batches on the tensors' device (spec §1).

Order as the paper's code: horizontal flip, rotation about the centre (black fill; image
bilinear, mask nearest), vertical flip. Written with affine_grid/grid_sample rather than a
per-sample PIL pipeline so a batch is augmented in a few tensor ops with no DataLoader worker.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtlbench.protocol import Protocol

DRAWS_PER_SAMPLE = 4
"""Uniform draws one sample's augmentation uses: h-flip, angle, angle sign, v-flip."""


def draw_augmentations(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 4) uniform draws from ``generator`` (a CPU generator, so a resumed trial replays the
    same augmentations), moved to ``device`` in one copy.

    A training epoch draws for all its samples at once: one host-to-device copy per epoch
    instead of one per step, which on CUDA would wait for the GPU every step. Drawing n rows
    at once gives the same numbers as drawing them batch by batch.
    """
    return torch.rand(n, DRAWS_PER_SAMPLE, generator=generator).to(device)


def augment_batch(images: torch.Tensor, masks: torch.Tensor, protocol: Protocol,
                  draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flipped and rotated copies of ``images`` and ``masks`` (both float (B, C, H, W)).

    The same transform is applied to a sample's image and mask; ``draws`` holds the batch's
    (B, 4) uniform draws (see ``draw_augmentations``), on the images' device.
    """
    if protocol.hflip_p > 0:
        images, masks = _flip(images, masks, draws[:, 0] < protocol.hflip_p, dim=3)
    if protocol.rotate_deg > 0:
        angles = _angles(draws[:, 1], draws[:, 2], protocol)
        images, masks = _rotate(images, masks, angles)
    if protocol.vflip_p > 0:
        images, masks = _flip(images, masks, draws[:, 3] < protocol.vflip_p, dim=2)
    return images, masks


def _flip(images, masks, chosen: torch.Tensor, dim: int):
    chosen = chosen.view(-1, 1, 1, 1)
    return (torch.where(chosen, images.flip(dim), images),
            torch.where(chosen, masks.flip(dim), masks))


def _angles(u: torch.Tensor, sign_draw: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """Rotation angles in degrees: uniform in ±deg, or |θ| in [10, deg] with a random sign."""
    deg = protocol.rotate_deg
    if protocol.rotate_mode == "paper-text":
        low = min(10.0, deg)
        magnitude = low + u * (deg - low)
        return torch.where(sign_draw < 0.5, -magnitude, magnitude)
    return (2 * u - 1) * deg


def _rotate(images, masks, angles_deg: torch.Tensor):
    theta = angles_deg.to(images.dtype) * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, masks
