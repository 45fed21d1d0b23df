"""Batch augmentation on the training device: mtlbench's own against kornia and torchvision.

Usage: ``python benchmarks/augmentation.py [--device cpu] [--size 256] [--batch 16]``. Each
candidate applies the protocol's transform (per-sample horizontal flip p = 0.6, rotation
uniform in ±30° with bilinear image and nearest mask, vertical flip p = 0.6) to a batch of
float images and masks on the device. Prints images/s of each; a library that is not installed
(``pip install -e ".[bench]"`` brings kornia) is reported as such.

- ``mtlbench``: ``mtlbench.data.augment`` (flips by ``torch.where``, one ``affine_grid`` and two
  ``grid_sample`` calls per batch).
- ``kornia``: ``AugmentationSequential`` of its RandomHorizontalFlip, RandomRotation and
  RandomVerticalFlip with ``data_keys=["input", "mask"]`` (per-sample parameters, whole batch).
- ``torchvision.v2``: ``transforms.v2`` with ``tv_tensors.Mask``; v2 draws one set of parameters
  per call, so per-sample transforms need a Python loop over the batch.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mtlbench.data.augment import augment_batch, draw_augmentations
from mtlbench.protocol import get_protocol


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, batches: int, device: torch.device) -> float:
    """Images/s of ``fn()`` (one batch per call) over ``batches`` calls after one warm-up."""
    fn()
    _sync(device)
    started = time.perf_counter()
    for _ in range(batches):
        fn()
    _sync(device)
    return time.perf_counter() - started


def measure(device: torch.device, size: int = 256, batch: int = 16, batches: int = 20) -> dict:
    """Images/s of each available implementation, and why a missing one is missing."""
    p = get_protocol("paper")
    images = torch.rand(batch, 1, size, size, device=device)
    masks = (images > 0.5).float()
    generator = torch.Generator().manual_seed(0)
    candidates = {"mtlbench": lambda: augment_batch(
        images, masks, p, draw_augmentations(batch, generator, device))}
    missing: dict[str, str] = {}
    try:
        import kornia.augmentation as K

        pipeline = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=p.hflip_p), K.RandomRotation(p.rotate_deg, p=1.0),
            K.RandomVerticalFlip(p=p.vflip_p), data_keys=["input", "mask"]).to(device)
        candidates["kornia"] = lambda: pipeline(images, masks)
    except ImportError as exc:
        missing["kornia"] = f"not installed ({exc}); pip install -e '.[bench]'"
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    per_sample = v2.Compose([v2.RandomHorizontalFlip(p.hflip_p),
                             v2.RandomRotation(p.rotate_deg,
                                               interpolation=v2.InterpolationMode.BILINEAR),
                             v2.RandomVerticalFlip(p.vflip_p)])

    def torchvision_v2():
        pairs = [per_sample(images[i], tv_tensors.Mask(masks[i])) for i in range(batch)]
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    candidates["torchvision.v2"] = torchvision_v2
    rates = {name: batch * batches / _timed(fn, batches, device)
             for name, fn in candidates.items()}
    return {"device": str(device), "size": size, "batch": batch, "images_per_s": rates,
            "missing": missing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(measure(torch.device(args.device), args.size, args.batch, args.batches),
                     indent=1))


if __name__ == "__main__":
    main()
