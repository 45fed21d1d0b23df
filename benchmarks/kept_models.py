"""What keeping fold models costs, what half precision changes, and how fast `predict` is.

Usage:
  python benchmarks/kept_models.py sizes                     # bytes per method, fp32 and fp16
  python benchmarks/kept_models.py fp16 RUN DATASET [--data-root DIR]
      # RUN kept with --keep-models fp32: each fold model against its own fp16 copy on every
      # image of DATASET at the protocol size (probabilities, mask pixels, class flips)
  python benchmarks/kept_models.py speed RUN [--images 64] [--side 500]
      # predict images/s: the 5-fold ensemble and one fold, on generated gray PNGs

Each prints one JSON record per line, with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save as save_tensors

from mtlbench.cards import ModelConfig
from mtlbench.data.fold import load_arrays
from mtlbench.data.prepare import lookup_dataset
from mtlbench.fold_models import host_tensors, kept_models
from mtlbench.plugins import load_plugins
from mtlbench.precision import cpu_description
from mtlbench.predict import Ensemble, image_files, predict_images, select_models


def sizes() -> None:
    """The kept file's bytes per method (one fold) in fp32 and fp16, built at 256²."""
    plugins = load_plugins()
    for name in plugins.main_methods():
        card = plugins.methods.get(name)
        model = card.build(ModelConfig(in_channels=card.in_channels, image_size=256,
                                       pretrained="none"))
        row = {"method": name, "default": name in plugins.method_groups("default")}
        for dtype in ("fp32", "fp16"):
            row[dtype] = len(save_tensors(host_tensors(model, dtype)))
        print(json.dumps(row), flush=True)


def fp16(run: str, dataset: str, data_root: str | None) -> None:
    """Each kept fp32 model against its fp16 copy on every image of ``dataset``."""
    plugins = load_plugins()
    card, options = lookup_dataset(plugins.datasets, dataset)
    for model in kept_models(run):
        size = int(model.meta["protocol"]["image_size"])
        arrays = load_arrays(card, data_root, size, None, tuple(sorted(options.items())))
        full = Ensemble(plugins, [model])
        half = Ensemble(plugins, [model])
        for net in half.nets:  # round every float tensor through fp16, as --keep-models does
            state = {k: v.half().float() if v.is_floating_point() else v
                     for k, v in net.state_dict().items()}
            net.load_state_dict(state)
        seg32, cls32 = full.probabilities(arrays.images)
        seg16, cls16 = half.probabilities(arrays.images)
        row = {"method": model.method, "fold": model.fold, "images": len(arrays),
               "size": size, "cpu": cpu_description()["model"]}
        if seg32 is not None:
            row.update(seg_max_abs=float(np.abs(seg32 - seg16).max()),
                       mask_pixels_changed=int(((seg32 >= 0.5) != (seg16 >= 0.5)).sum()),
                       mask_pixels=int(seg32.size))
        if cls32 is not None:
            row.update(cls_max_abs=float(np.abs(cls32 - cls16).max()),
                       class_flips=int((cls32.argmax(1) != cls16.argmax(1)).sum()))
        print(json.dumps(row), flush=True)


def speed(run: str, n: int, side: int) -> None:
    """predict's images/s (reading, resizing, the models, writing PNGs and the CSV)."""
    plugins = load_plugins()
    models = kept_models(run)
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (side, int(side * 1.2)), dtype=np.uint8)
                            ).save(Path(folder) / f"{i:03d}.png")
        sources = image_files([folder])
        method = models[0].method
        kept = select_models(models, method)
        # 5 models: the kept folds repeated where fewer were kept (a smoke run's two folds):
        # the same compute as five different fold models.
        five = [kept[i % len(kept)] for i in range(5)]
        for label, chosen in (("one fold", kept[:1]), (f"{len(kept)} folds", kept),
                              ("5 models", five)):
            ensemble = Ensemble(plugins, chosen)
            predict_images(ensemble, sources[:8], Path(folder) / "warm")
            started = time.perf_counter()
            predict_images(ensemble, sources, Path(folder) / "out")
            seconds = time.perf_counter() - started
            print(json.dumps({"method": method, "models": len(chosen), "what": label,
                              "images": n, "image": f"{int(side * 1.2)}x{side}",
                              "size": int(chosen[0].meta["protocol"]["image_size"]),
                              "images_per_s": n / seconds, "threads": torch.get_num_threads(),
                              "cpu": cpu_description()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("sizes")
    one = sub.add_parser("fp16")
    one.add_argument("run")
    one.add_argument("dataset")
    one.add_argument("--data-root")
    two = sub.add_parser("speed")
    two.add_argument("run")
    two.add_argument("--images", type=int, default=64)
    two.add_argument("--side", type=int, default=500)
    args = parser.parse_args()
    if args.what == "sizes":
        sizes()
    elif args.what == "fp16":
        fp16(args.run, args.dataset, args.data_root)
    else:
        speed(args.run, args.images, args.side)


if __name__ == "__main__":
    main()
