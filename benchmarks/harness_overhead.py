"""The harness's training epoch against a bare PyTorch loop on the same model and data.

Usage: ``python benchmarks/harness_overhead.py [--method unet] [--epochs 3] [--device cpu]
[--size 64] [--batch 8]``. Both loops train the same freshly built model (same seed) on the same
in-memory synthetic fold with the same batches, the method's own loss (``TrialLoss``), fused
Adam and the protocol's precision (auto: bf16 autocast where native), channels_last where the
harness uses it (on CUDA) — the "tuned bare loop". The harness adds what it does for every
method: augmentation, the model-contract check, the named loss terms and the epoch record.
Prints one JSON record with the ratio, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mtlbench.cards import ModelConfig
from mtlbench.data.fold import FoldTensors, load_arrays, model_input, to_tensors
from mtlbench.knobs import knob_values
from mtlbench.plugins import load_plugins
from mtlbench.precision import autocast
from mtlbench.precision import resolve as resolve_precision
from mtlbench.protocol import Protocol, get_protocol
from mtlbench.train import build_loss, build_optimizer, place_model, train_epoch
from mtlbench.trial import SpeedOptions

#: Benchmarks give the perceptual loss terms a random VGG-16: the same compute per step, and
#: nothing to download.
RANDOM_VGG = {"lossnet_vgg": "random", "perceptual_vgg": "random"}


def bench_knobs(card, p: Protocol, overrides: dict | None = None) -> dict:
    """The card's knobs under ``p``'s preset with a random VGG-16 and ``overrides``."""
    return knob_values(card, p.name, {**RANDOM_VGG, **(overrides or {})})


def fresh(card, p: Protocol, seed: int, device: torch.device, channels_last: bool,
          knobs: dict | None = None):
    """The method's model (seed ``seed``), its loss (``bench_knobs`` with ``knobs``) and a
    fused Adam, on ``device``."""
    torch.manual_seed(seed)
    values = bench_knobs(card, p, knobs)
    model = card.build(ModelConfig(image_size=p.image_size, in_channels=card.in_channels,
                                   options=values))
    place_model(model, device, channels_last)
    loss = build_loss(card, p, values).to(device)
    return model, loss, build_optimizer(model, loss, p, device)


def bare_epoch(model, loss, optimizer, data: FoldTensors, p: Protocol, order: torch.Tensor,
               channels_last: bool) -> None:
    """The minimal loop: index, scale, normalise, forward, the method's loss, backward, step."""
    model.train()
    for i in range(0, len(order), p.batch_size):
        idx = order[i:i + p.batch_size]
        images = data.images[idx].float().div_(255)
        masks = data.masks[idx].float()
        with autocast(resolve_precision(p.precision, images.device.type), images.device):
            out = model(model_input(images, p, channels_last))
        total = loss.terms(out, masks, data.labels[idx])["total"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(card, p: Protocol, data: FoldTensors, device: torch.device, epochs: int = 3) -> dict:
    """Best-of-``epochs`` seconds per epoch of the harness and of the bare loop, and their ratio
    (an untimed first epoch warms both up; the two loops take turns going first)."""
    channels_last = SpeedOptions().channels_last_on(device.type)
    n = data.labels.shape[0]
    times: dict[str, list[float]] = {"harness": [], "bare": []}
    for epoch in range(epochs + 1):
        # The order alternates: whichever loop runs second in a pair would otherwise always
        # meet the allocator and caches warmed by the first.
        for kind in ("harness", "bare") if epoch % 2 else ("bare", "harness"):
            model, loss, optimizer = fresh(card, p, 0, device, channels_last)
            generator = torch.Generator().manual_seed(epoch)
            synchronize(device)
            started = time.perf_counter()
            if kind == "harness":
                train_epoch(model, loss, card, "bench", data, optimizer, generator, p, epoch,
                            channels_last, precision=resolve_precision(p.precision, device.type))
            else:
                order = torch.randperm(n, generator=generator).to(device)
                bare_epoch(model, loss, optimizer, data, p, order, channels_last)
            synchronize(device)
            if epoch:
                times[kind].append(time.perf_counter() - started)
    harness, bare = min(times["harness"]), min(times["bare"])
    return {"method": card.name, "images_per_epoch": n, "batch": p.batch_size,
            "size": p.image_size, "precision": resolve_precision(p.precision, device.type),
            "channels_last": channels_last,
            "harness_s": harness, "bare_s": bare, "ratio": harness / bare,
            "harness_images_per_s": n / harness, "bare_images_per_s": n / bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="cunet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    plugins = load_plugins()
    card = plugins.methods.get(args.method)
    p = get_protocol("smoke", "synthetic", {"image_size": str(args.size),
                                            "batch_size": str(args.batch)})
    arrays = load_arrays(plugins.datasets.get("synthetic"), None, p.image_size, None)
    device = torch.device(args.device)
    data = to_tensors(arrays, list(range(min(args.images, len(arrays)))), device)
    record = measure(card, p, data, device, args.epochs)
    record["note"] = "best of the timed epochs; the harness includes augmentation"
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
