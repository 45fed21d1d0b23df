"""Per-step training time of every registered balancing relative to ``fixed``.

Usage: ``python benchmarks/balancing_cost.py [--methods cunet,acsnet] [--sizes 64,256]
[--rounds 3] [--device cpu] [--balancings all] [--out FILE.md] [--trials [--epochs 4]]``.
For each method and input size: the method's model (seed 0) and loss
(harness_overhead.bench_knobs: a random VGG-16 for perceptual terms), fused Adam, one fixed
batch of 8 synthetic images; a step is the forward pass, the task losses, the balancing's
backward and the optimizer step. Each measurement resets the model to its initial weights,
builds a fresh optimizer and balancing, runs one untimed step and times the next; the
balancings take turns, ``--rounds`` times (the order reversed every other round), and each
keeps its best time, so that a spell of load from other processes on a shared machine falls on
all of them alike. The ratio is that time over ``fixed``'s. Prints a Markdown table (and
writes it to ``--out``).

``--trials``: whole trials instead of single steps (``run_trial`` on the synthetic set, fold 0,
the smoke protocol at ``--sizes``' first size with ``--epochs``; each method of ``--methods``),
the balancings taking turns for ``--rounds`` rounds; for each, the best training seconds
(wall), the process's CPU seconds (both threads) of that trial, and the seconds spent in the
Nash-MTL weighting's solver. The name ``nashmtl:torchjd`` is ``nashmtl`` with torchjd's own
weighting (its problem not in DPP form, as before mtlbench.balancing.nash): the "before".
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import subprocess
import tempfile
import time

import torch
from harness_overhead import fresh, synchronize

from mtlbench.data.fold import load_arrays, model_input, to_tensors
from mtlbench.plugins import load_plugins
from mtlbench.precision import autocast
from mtlbench.precision import resolve as resolve_precision
from mtlbench.protocol import get_protocol
from mtlbench.train import build_balancing, build_optimizer, run_trial
from mtlbench.trial import TrialSpec


def step_seconds(card, plugins, name: str, p, data, device, initial: dict) -> float:
    """Seconds of one training step under balancing ``name`` (after one untimed step), from
    the model state ``initial``, with a fresh optimizer and balancing."""
    model, loss = initial["model"], initial["loss"]
    model.load_state_dict(initial["state"])
    balancing = build_balancing(plugins, name, card, p, {}, model).to(device)
    optimizer = build_optimizer(model, loss, p, device, extra=list(balancing.parameters()))
    params = [q for q in model.parameters() if q.requires_grad]
    precision = resolve_precision(p.precision, device.type)
    images = data.images[:8].float().div_(255)
    masks, labels = data.masks[:8].float(), data.labels[:8]
    model.train()
    for _ in range(2):  # the second step is timed
        synchronize(device)
        started = time.perf_counter()
        with autocast(precision, device):
            outputs = model(model_input(images, p, False))
        terms, tasks = loss.terms_and_tasks(outputs, masks, labels)
        optimizer.zero_grad(set_to_none=True)
        balancing.backward(tasks, terms["total"], params)
        optimizer.step()
        synchronize(device)
    return time.perf_counter() - started


def interleaved(card, plugins, names, p, data, device, rounds: int) -> dict[str, float]:
    """The best over ``rounds`` of each balancing's step time, the balancings taking turns in
    every round (so a spell of load from other processes falls on all of them alike); one
    model, reset to its initial state before each measurement."""
    model, loss, _ = fresh(card, p, 0, device, channels_last=False)
    initial = {"model": model, "loss": loss,
               "state": {k: v.clone() for k, v in model.state_dict().items()}}
    best: dict[str, float] = {}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            seconds = step_seconds(card, plugins, name, p, data, device, initial)
            best[name] = min(best.get(name, seconds), seconds)
    return best


class SolverClock:
    """Seconds spent in torchjd's Nash-MTL ``_solve_optimization`` (ours inherits it)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def installed(self):
        from torchjd.aggregation._nash_mtl import _NashMTLWeighting

        solve = _NashMTLWeighting._solve_optimization

        def timed(weighting, gtg):
            started = time.perf_counter()
            try:
                return solve(weighting, gtg)
            finally:
                self.seconds += time.perf_counter() - started
        _NashMTLWeighting._solve_optimization = timed
        try:
            yield self
        finally:
            _NashMTLWeighting._solve_optimization = solve


@contextlib.contextmanager
def torchjd_nash():
    """``nashmtl`` built with torchjd's own weighting (not DPP) while the block runs."""
    from torchjd.aggregation._nash_mtl import _NashMTLWeighting

    from mtlbench.balancing import nash

    ours, nash.DPPNashWeighting = nash.DPPNashWeighting, _NashMTLWeighting
    try:
        yield
    finally:
        nash.DPPNashWeighting = ours


def trial_seconds(plugins, method: str, name: str, epochs: int, size: int,
                  precision: str) -> dict[str, float]:
    """Training wall seconds, the process's CPU seconds and the Nash solver's seconds of one
    fresh trial of ``method`` with balancing ``name`` (synthetic set, fold 0, smoke)."""
    balancing, _, variant = name.partition(":")
    p = get_protocol("smoke", "synthetic", {"epochs": str(epochs), "image_size": str(size),
                                            "precision": precision})
    clock = SolverClock()
    with tempfile.TemporaryDirectory() as run_dir, clock.installed(), \
            (torchjd_nash() if variant == "torchjd" else contextlib.nullcontext()):
        spec = TrialSpec("synthetic", method, 0, p, run_dir, balancing=balancing)
        cpu = time.process_time()
        result = run_trial(spec, plugins)
        cpu = time.process_time() - cpu
    assert result.status == "finished", result.error
    return {"train_s": result.timing["train_s"], "cpu_s": cpu, "solver_s": clock.seconds}


def trials_table(plugins, methods, names, args) -> list[str]:
    """The ``--trials`` table: per method, each balancing's best-of-rounds training seconds
    and its ratio to ``fixed``'s, the CPU seconds' ratio, and the solver's seconds."""
    size = int(args.sizes.split(",")[0])
    lines = [f"Whole trials (synthetic, fold 0, smoke protocol at {size}², {args.epochs} "
             f"epochs, {args.precision}; {cpu_name()}, {torch.get_num_threads()} threads, "
             f"{torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}; best of "
             f"{args.rounds} interleaved rounds).", "",
             "| method | balancing | train s | × fixed | CPU s | CPU × fixed | solver s |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for method in methods:
        best: dict[str, dict[str, float]] = {}
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                got = trial_seconds(plugins, method, name, args.epochs, size, args.precision)
                print(f"  round {r} {method} {name}: {got}", flush=True)
                kept = best.setdefault(name, got)
                best[name] = {k: min(kept[k], v) for k, v in got.items()}
        base = best["fixed"]
        for name in names:
            b = best[name]
            line = (f"| {method} | {name} | {b['train_s']:.1f} | "
                    f"{b['train_s'] / base['train_s']:.2f}× | {b['cpu_s']:.1f} | "
                    f"{b['cpu_s'] / base['cpu_s']:.2f}× | {b['solver_s']:.2f} |")
            lines.append(line)
            print(line, flush=True)
    return lines


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--balancings", default="all")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", default="")
    parser.add_argument("--trials", action="store_true", help="whole trials, not steps")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a --trials trial")
    args = parser.parse_args()
    plugins = load_plugins()
    variants = [n for n in args.balancings.split(",") if ":" in n]
    plain = ",".join(n for n in args.balancings.split(",") if ":" not in n)
    names = plugins.select_balancings(plain or "fixed")
    if "fixed" in names:
        names.remove("fixed")
    names.insert(0, "fixed")
    if args.trials:
        lines = trials_table(plugins, args.methods.split(","), names + variants, args)
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
        return
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"{cpu_name()}, {torch.get_num_threads()} threads, "
             f"{torch.backends.cpu.get_cpu_capability()}")
    lines = [f"Per-step time relative to `fixed` ({where}; torch {torch.__version__}, "
             f"{args.precision}, batch 8; a step after one untimed step, best of {args.rounds} "
             "interleaved rounds).", "",
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
            seconds = interleaved(card, plugins, names, p, data, device, args.rounds)
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
