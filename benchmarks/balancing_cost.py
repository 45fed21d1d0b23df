"""Per-step training time of every registered balancing relative to ``fixed``.

Usage: ``python benchmarks/balancing_cost.py [--methods cunet,acsnet] [--sizes 64,256]
[--steps 3] [--device cpu] [--balancings all] [--out FILE.md]``. For each method and input
size: the method's model (seed 0) and loss (harness_overhead.bench_knobs: a random VGG-16 for
perceptual terms), fused Adam, one fixed batch of 8 synthetic images; a step is the forward
pass, the task losses, the balancing's backward and the optimizer step. The time of a step is
the best of ``--steps`` timed steps after one untimed warm-up step, each balancing on a fresh
model; the ratio is that time over ``fixed``'s. Prints a Markdown table (and writes it to
``--out``).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import torch
from harness_overhead import fresh, synchronize

from mtlbench.data.fold import load_arrays, model_input, to_tensors
from mtlbench.plugins import load_plugins
from mtlbench.precision import autocast
from mtlbench.precision import resolve as resolve_precision
from mtlbench.protocol import get_protocol
from mtlbench.train import build_balancing, build_optimizer


def step_seconds(card, plugins, name: str, p, data, device, steps: int) -> float:
    """Best-of-``steps`` seconds of one training step under balancing ``name``."""
    model, loss, _ = fresh(card, p, 0, device, channels_last=False)
    balancing = build_balancing(plugins, name, card, p, {}, model).to(device)
    optimizer = build_optimizer(model, loss, p, device, extra=list(balancing.parameters()))
    params = [q for q in model.parameters() if q.requires_grad]
    precision = resolve_precision(p.precision, device.type)
    images = data.images[:8].float().div_(255)
    masks, labels = data.masks[:8].float(), data.labels[:8]
    times = []
    model.train()
    for i in range(steps + 1):
        synchronize(device)
        started = time.perf_counter()
        with autocast(precision, device):
            outputs = model(model_input(images, p, False))
        terms, tasks = loss.terms_and_tasks(outputs, masks, labels)
        optimizer.zero_grad(set_to_none=True)
        balancing.backward(tasks, terms["total"], params)
        optimizer.step()
        synchronize(device)
        if i:
            times.append(time.perf_counter() - started)
    return min(times)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="cunet,acsnet")
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--balancings", default="all")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    plugins = load_plugins()
    names = plugins.select_balancings(args.balancings)
    if "fixed" in names:
        names.remove("fixed")
    names.insert(0, "fixed")
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"{cpu_name()}, {torch.get_num_threads()} threads, "
             f"{torch.backends.cpu.get_cpu_capability()}")
    lines = [f"Per-step time relative to `fixed` ({where}; torch {torch.__version__}, "
             f"{args.precision}, batch 8, best of {args.steps} steps after a warm-up).", "",
             "| method | size | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    print("\n".join(lines), flush=True)
    for method in args.methods.split(","):
        card = plugins.methods.get(method)
        for size in (int(s) for s in args.sizes.split(",")):
            p = get_protocol("smoke", "synthetic", {"image_size": str(size),
                                                    "precision": args.precision})
            arrays = load_arrays(plugins.datasets.get("synthetic"), None, size, None)
            data = to_tensors(arrays, list(range(8)), device)
            seconds = {n: step_seconds(card, plugins, n, p, data, device, args.steps)
                       for n in names}
            base = seconds["fixed"]
            cells = [f"{base * 1000:.0f} ms"] + [f"{seconds[n] / base:.2f}×" for n in names[1:]]
            line = f"| {method} | {size}² | " + " | ".join(cells) + " |"
            lines.append(line)
            print(line, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
