"""The harness's training epoch against a bare PyTorch loop on the same model and data.

Usage: ``python benchmarks/harness_overhead.py [--method unet] [--epochs 3]``. Both loops train
the same freshly built model (same seed) on the same in-memory smoke-size synthetic fold with
the same batches, loss (Dice + CE), optimiser (fused Adam) and precision (bf16 autocast); the
harness adds what it does for every method: augmentation, the model-contract check, the named
loss terms and the epoch record. Prints one JSON record with the ratio, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from mtlbench.cards import ModelConfig
from mtlbench.losses import soft_dice_loss
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.train import (
    autocast,
    build_loss,
    load_arrays,
    normalise,
    to_tensors,
    train_epoch,
)


def fresh(card, p, seed: int):
    torch.manual_seed(seed)
    model = card.build(ModelConfig(image_size=p.image_size))
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(p.beta1, p.beta2),
                                 weight_decay=p.weight_decay, fused=True)
    return model, optimizer


def bare_epoch(model, optimizer, data, p, order) -> None:
    """The minimal loop: index, scale, normalise, forward, Dice + CE, backward, step."""
    model.train()
    for i in range(0, len(order), p.batch_size):
        idx = order[i:i + p.batch_size]
        images = data.images[idx].float().div_(255)
        masks = data.masks[idx].float()
        with autocast(p, images.device):
            out = model(normalise(images, p))
        loss = p.cls_weight * F.cross_entropy(out["cls"].float(), data.labels[idx]) + \
            (1 - p.cls_weight) * soft_dice_loss(out["seg"], masks, p.dice_smooth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="cunet")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    plugins = load_plugins()
    card = plugins.methods.get(args.method)
    p = get_protocol("smoke", "synthetic")
    arrays = load_arrays(plugins.datasets.get("synthetic"), None, p.image_size, None)
    data = to_tensors(arrays, list(range(128)), torch.device("cpu"))
    n = data.labels.shape[0]
    times = {"harness": [], "bare": []}
    for epoch in range(args.epochs + 1):  # epoch 0 warms both up and is not counted
        for kind in ("harness", "bare"):
            model, optimizer = fresh(card, p, 0)
            generator = torch.Generator().manual_seed(epoch)
            started = time.perf_counter()
            if kind == "harness":
                loss = build_loss(card, p)
                train_epoch(model, loss, card, "bench", data, optimizer, generator, p, epoch)
            else:
                bare_epoch(model, optimizer, data, p, torch.randperm(n, generator=generator))
            if epoch:
                times[kind].append(time.perf_counter() - started)
    harness, bare = min(times["harness"]), min(times["bare"])
    print(json.dumps({"method": args.method, "images_per_epoch": n, "batch": p.batch_size,
                      "harness_s": harness, "bare_s": bare, "ratio": harness / bare,
                      "note": "best of the timed epochs; harness includes augmentation"},
                     indent=1))


if __name__ == "__main__":
    main()
