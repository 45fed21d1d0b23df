"""The benchmark suite: one command, one result file per device (JSON) plus a Markdown table.

Usage (from the repository root, with the bench extra: ``pip install -e ".[bench]"``)::

    python benchmarks/suite.py                 # every part, on CUDA when there is one
    python benchmarks/suite.py --device cpu --only throughput,projection --methods unet,acsnet
    python benchmarks/suite.py --quick         # a minute: checks the suite itself

Writes ``benchmarks/results/suite-<device>.json`` and ``.md`` (``--out`` elsewhere), rewritten
after every part so a failure in one part keeps the others. Parts (``--only`` picks some):

- ``throughput``: training and evaluation images/s of every method at the paper protocol's
  size (256²) and batch sizes (BUS 4, BUSI 16; on the CPU only 4), through the harness's own
  ``train_epoch`` and ``predict``; also the seconds to build and count a model and to write its
  checkpoint. The paper protocol's losses are used (LossNet with a random VGG-16: the same
  compute as the ImageNet one) and random initialisation (pretraining costs no step time).
- ``overhead``: the harness's epoch against a tuned bare loop on the same model and data
  (``harness_overhead.py``); on the CPU cunet and acsnet at the smoke size, on CUDA every method
  at the protocol size.
- ``metrics``: HD95 + ASD against MedPy on 256² masks (``metrics_vs_medpy.py``) and the time of
  all per-image metrics of both modes.
- ``concurrency``: wall time of one ``mtlbench run`` of six trials with 1 and with N trials at
  once on the device (``--trials-per-device``; CUDA: N = 3 at the paper protocol's size, CPU:
  N = 2 at the smoke size).
- ``augmentation``: the harness's batch augmentation against kornia and torchvision.v2.
- ``variants``: channels_last, ``torch.compile`` and float32 against the protocol's
  ``precision=auto`` (bf16 autocast where the CPU has it natively, else float32), for unet and
  acsnet (compiling on the CPU under bf16 is refused by ``mtlbench run``: it gives NaN
  gradients for ACSNet; the suite shows it).
- ``default_job``: wall time and peak memory of ``mtlbench run`` with no method arguments.
- ``projection``: the full paper protocol (five folds, BUS and BUSI) projected from the
  measured per-epoch times, for the paper's eleven methods and for all methods.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import augmentation  # noqa: E402 - a sibling script
import harness_overhead  # noqa: E402
import metrics_vs_medpy  # noqa: E402

from mtlbench.cards import ModelConfig  # noqa: E402
from mtlbench.checkpointing import TrainState, save_checkpoint  # noqa: E402
from mtlbench.data.features import feature_arrays  # noqa: E402
from mtlbench.data.fold import default_cache_dir, load_arrays, to_tensors  # noqa: E402
from mtlbench.evaluation import predict  # noqa: E402
from mtlbench.metrics import seg_metrics  # noqa: E402
from mtlbench.plugins import load_plugins  # noqa: E402
from mtlbench.precision import cpu_description, cpu_kind, cpu_model  # noqa: E402
from mtlbench.precision import resolve as resolve_precision  # noqa: E402
from mtlbench.profile import profile_method  # noqa: E402
from mtlbench.protocol import Protocol, get_protocol  # noqa: E402
from mtlbench.train import (  # noqa: E402
    build_loss,
    build_optimizer,
    compile_model,
    place_model,
    train_epoch,
)
from mtlbench.trial import SpeedOptions, TrialSpec  # noqa: E402

# In the order they run: the projection needs metrics and throughput, and comes early so that
# a run cut short (a GPU lease) still has it.
PARTS = ("metrics", "throughput", "projection", "overhead", "concurrency", "augmentation",
         "variants", "default_job")
DATASET_SIZES = {"bus": 163, "busi": 647}  # images the paper uses (spec §1)
PAPER_SET = ("unet", "cunet", "acsnet")  # plus the 'comparison' group: the paper's 11 methods


# --- the machine -------------------------------------------------------------------------------

def device_info(device: torch.device) -> dict:
    """What the results were measured on, and a file-name slug for it."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        slug = "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    else:
        # The CPU kind is in the name: an AMX CPU (bf16 native) and an AVX2-only one (bf16
        # emulated, float32 chosen) give results too different to share a file.
        name = cpu_model()
        slug = f"cpu-{os.cpu_count()}core-{cpu_kind()}"
    cpu = cpu_description()
    emulated = bool(os.environ.get("ATEN_CPU_CAPABILITY") or cpu["onednn_max_isa"])
    return {"device": str(device), "name": name, "slug": slug, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu": {**cpu, "emulated": emulated}}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- throughput ------------------------------------------------------------------------------

def fold_data(arrays, card, n: int, device: torch.device):
    """The first ``n`` cases as the harness holds them, with the method's feature channels."""
    features = None
    if card.image_features is not None:
        features = feature_arrays(arrays, card.image_features, default_cache_dir())
    return to_tensors(arrays, list(range(n)), device, features)


def bench_protocol(dataset: str, size: int, overrides: dict | None = None) -> Protocol:
    """The paper protocol of ``dataset`` with no pretraining (and, through
    harness_overhead.bench_knobs, a random VGG-16 for the perceptual terms): the same compute
    per step, and nothing to download."""
    settings = {"pretrained": "none", "image_size": str(size)}
    return get_protocol("paper", dataset, {**settings, **(overrides or {})})


def train_rate(card, p: Protocol, data, device: torch.device, speed: SpeedOptions,
               warmup_steps: int, steps: int, knobs: dict | None = None) -> float:
    """Training images/s of the harness's ``train_epoch`` over ``steps`` batches (after
    ``warmup_steps`` batches, which also compile when ``speed.compile``)."""
    channels_last = speed.channels_last_on(device.type)
    model, loss, optimizer = harness_overhead.fresh(card, p, 0, device, channels_last, knobs)
    forward = compile_model(model) if speed.compile else model
    generator = torch.Generator().manual_seed(0)
    b = p.batch_size

    def epoch_of(n_steps: int, epoch: int) -> float:
        subset = type(data)(data.images[:b * n_steps], data.masks[:b * n_steps],
                            data.labels[:b * n_steps])
        synchronize(device)
        started = time.perf_counter()
        train_epoch(forward, loss, card, "bench", subset, optimizer, generator, p, epoch,
                    channels_last, precision=resolve_precision(p.precision, device.type))
        synchronize(device)
        return time.perf_counter() - started

    epoch_of(warmup_steps, 0)
    return b * steps / epoch_of(steps, 1)


def eval_rate(card, p: Protocol, data, device: torch.device) -> float:
    """Inference images/s of the harness's ``predict`` (eval batch of the protocol)."""
    channels_last = SpeedOptions().channels_last_on(device.type)
    model, _, _ = harness_overhead.fresh(card, p, 0, device, channels_last)
    precision = resolve_precision(p.precision, device.type)
    predict(model, data, p, channels_last, precision=precision)  # warm-up (cuDNN autotuning)
    synchronize(device)
    started = time.perf_counter()
    predict(model, data, p, channels_last, precision=precision)
    synchronize(device)
    return data.labels.shape[0] / (time.perf_counter() - started)


def fixed_costs(card, p: Protocol, device: torch.device) -> dict:
    """Seconds to build a model, to count it (once per method in a process) and to write
    its checkpoint (model, Adam moments; the CRC-free atomic save of the harness)."""
    started = time.perf_counter()
    model = card.build(ModelConfig(num_classes=2, in_channels=card.in_channels,
                                   image_size=p.image_size))
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    profile_method(card, model, p.image_size)
    profile_s = time.perf_counter() - started
    place_model(model, device, channels_last=False)
    loss = build_loss(card, p, harness_overhead.bench_knobs(card, p)).to(device)
    optimizer = build_optimizer(model, loss, p, device)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        spec = TrialSpec("bench", card.name, 0, p, tmp)
        synchronize(device)
        started = time.perf_counter()
        save_checkpoint(spec, model, loss, optimizer, scheduler, torch.Generator(),
                        TrainState(epoch=0))
        save_s = time.perf_counter() - started
        size_mb = spec.checkpoint_path.stat().st_size / 2**20
    return {"build_s": build_s, "profile_s": profile_s, "checkpoint_save_s": save_s,
            "checkpoint_mb": size_mb}


def part_throughput(plugins, methods, device, size, quick) -> dict:
    batch_sizes = sorted({get_protocol("paper", d).batch_size for d in DATASET_SIZES})
    if device.type == "cpu" and not quick:
        batch_sizes = batch_sizes[:1]  # 16-image steps at 256² take minutes on a small CPU
    if quick:
        batch_sizes = [2]
    warmup, steps = (1, 1) if quick or device.type == "cpu" else (3, 6)
    arrays = load_arrays(plugins.datasets.get("synthetic"), None, size, None)
    records = {}
    for name in methods:
        card = plugins.methods.get(name)
        record: dict = {"train_images_per_s": {}}
        try:
            for b in batch_sizes:
                p = bench_protocol("busi" if b == 16 else "bus", size,
                                   {"batch_size": str(b)})
                data = fold_data(arrays, card, b * max(warmup, steps), device)
                record["train_images_per_s"][str(b)] = train_rate(
                    card, p, data, device, SpeedOptions(), warmup, steps)
            p = bench_protocol("busi", size)
            n_eval = 8 if quick else (32 if device.type == "cpu" else 128)
            data = fold_data(arrays, card, n_eval, device)
            record["eval_images_per_s"] = eval_rate(card, p, data, device)
            record.update(fixed_costs(card, p, device))
        except Exception as exc:  # noqa: BLE001 - one method's failure (OOM) keeps the rest
            record["error"] = f"{type(exc).__name__}: {exc}"
        if device.type == "cuda":
            record["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.empty_cache()
        records[name] = record
        print(f"  {name}: {json.dumps(record)}", flush=True)
    return {"size": size, "batch_sizes": batch_sizes, "warmup_steps": warmup, "steps": steps,
            "channels_last": SpeedOptions().channels_last_on(device.type), "methods": records}


# --- the other parts -------------------------------------------------------------------------

def part_overhead(plugins, methods, device, quick) -> dict:
    if device.type == "cpu" or quick:
        names = [m for m in ("cunet", "acsnet") if m in methods] or methods[:1]
        size, batch, n, epochs = (32, 4, 16, 1) if quick else (64, 8, 128, 6)
    else:
        names, size, batch, n, epochs = methods, 256, 16, 96, 2
    # The same loss on both sides; LossNet and the perceptual term off, as in the smoke
    # protocol (they are the method's loss, not the harness's overhead).
    p = get_protocol("smoke", "synthetic", {"image_size": str(size), "batch_size": str(batch)})
    arrays = load_arrays(plugins.datasets.get("synthetic"), None, size, None)
    records = {}
    for name in names:
        card = plugins.methods.get(name)
        try:
            records[name] = harness_overhead.measure(card, p, fold_data(arrays, card, n, device),
                                                     device, epochs)
        except Exception as exc:  # noqa: BLE001
            records[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  {name}: {json.dumps(records[name])}", flush=True)
    return {"size": size, "batch": batch, "images": n, "epochs": epochs, "methods": records}


def part_metrics(quick) -> dict:
    pairs = 20 if quick else 300
    record = metrics_vs_medpy.measure(pairs, 256)
    rng = np.random.default_rng(1)
    masks = [metrics_vs_medpy.random_masks(rng, 256) for _ in range(pairs)]
    pred = np.stack([m[0] for m in masks])
    gt = np.stack([m[1] for m in masks])
    started = time.perf_counter()
    seg_metrics(pred, gt, gt.astype(np.uint8) * 255)
    record["all_seg_metrics_s_per_image"] = (time.perf_counter() - started) / pairs
    return record


def part_variants(plugins, device, quick) -> dict:
    names = ["unet"] if quick else ["unet", "acsnet"]
    size, batch = (32, 2) if quick else ((64, 8) if device.type == "cpu" else (256, 16))
    warmup, steps = (1, 1) if quick else ((2, 4) if device.type == "cpu" else (3, 8))
    p = bench_protocol("busi", size, {"batch_size": str(batch)})
    no_lossnet = {"lossnet_weight": "0"}
    arrays = load_arrays(plugins.datasets.get("synthetic"), None, size, None)
    fp32 = bench_protocol("busi", size, {"batch_size": str(batch), "precision": "fp32"})
    variants = {"plain": (p, SpeedOptions(channels_last=False)),
                "channels_last": (p, SpeedOptions(channels_last=True)),
                "fp32": (fp32, SpeedOptions(channels_last=False))}
    if not quick:
        variants["compile"] = (p, SpeedOptions(channels_last=device.type == "cuda",
                                               compile=True))
    records = {}
    for name in names:
        card = plugins.methods.get(name)
        data = fold_data(arrays, card, batch * max(warmup, steps), device)
        records[name] = {}
        for label, (protocol, speed) in variants.items():
            try:
                started = time.perf_counter()
                rate = train_rate(card, protocol, data, device, speed, warmup, steps,
                                  no_lossnet)
                records[name][label] = {"train_images_per_s": rate,
                                        "total_s": time.perf_counter() - started}
            except Exception as exc:  # noqa: BLE001
                records[name][label] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  {name}: {json.dumps(records[name])}", flush=True)
    return {"size": size, "batch": batch, "warmup_steps": warmup, "steps": steps,
            "note": "total_s includes the warm-up steps (and compiling)", "methods": records}


def part_concurrency(device) -> dict:
    if device.type == "cuda":
        index = device.index or 0
        settings = ["--protocol", "paper", "--set", "epochs=3", "--set", "lossnet_vgg=random",
                    "--pretrained", "none", "--devices", str(index)]
        counts = (1, 3)
    else:
        settings = ["--set", "epochs=2", "--devices", "cpu"]
        counts = (1, 2)
    common = ["--methods", "unet,cunet,acsnet", "--folds", "0,1", *settings]
    records = {}
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "mtlbench", "run", *common,
                                   "--trials-per-device", str(n), "--out", tmp],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
            record = {"wall_s": wall, "exit_code": done.returncode}
            if done.returncode != 0:
                record["error"] = done.stderr[-2000:]
            else:
                db = sqlite3.connect(Path(tmp) / "mtlbench.sqlite")
                images = sum(c for (c,) in db.execute(
                    "SELECT count(*) FROM curves WHERE metric = 'images_per_s'"))
                db.close()
                record["trial_epochs"] = images
            records[str(n)] = record
        print(f"  {n} at once: {json.dumps(records[str(n)])}", flush=True)
    one, many = records[str(counts[0])], records[str(counts[1])]
    speedup = one["wall_s"] / many["wall_s"] if "error" not in one and "error" not in many \
        else None
    return {"command": "mtlbench run " + " ".join(common) + " --trials-per-device N",
            "runs": records, "speedup": speedup, "n": counts[1]}


def part_default_job(device) -> dict:
    # A fresh Python in between reports the peak RSS of its child alone (this process's
    # RUSAGE_CHILDREN holds the largest of all the children the suite ran so far).
    measure = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode;"
               " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
               " sys.exit(code)")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "mtlbench",
                               "run", "--out", tmp, "--device", str(device)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        peak_kb = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        record = {"command": f"mtlbench run --device {device}", "wall_s": wall,
                  "exit_code": done.returncode,
                  "peak_rss_mb": int(peak_kb) / 1024 if peak_kb.isdigit() else None}
        if done.returncode != 0:
            record["error"] = done.stderr[-2000:]
            return record
        db = sqlite3.connect(Path(tmp) / "mtlbench.sqlite")
        timings = [json.loads(t) for (t,) in db.execute("SELECT timing_json FROM trials")]
        db.close()
        record["trials"] = len(timings)
        record["peak_device_mb"] = max((t.get("peak_device_mb", 0) for t in timings),
                                       default=None) or None
    return record


def project(throughput: dict, methods: list[str], epochs_scale: float = 1.0) -> dict:
    """Seconds of the full paper protocol (5 folds) per dataset for ``methods``, from the
    measured rates: training epochs, final evaluation with metrics, per-trial build and
    checkpoint writes (in the background, one per epoch when the writer is free: on the
    critical path only the last one, which the trial waits for). None where a method has no
    measurement."""
    records = throughput["methods"]
    out = {}
    for dataset, n in DATASET_SIZES.items():
        p = get_protocol("paper", dataset)
        total, per_method, missing = 0.0, {}, []
        for name in methods:
            r = records.get(name, {})
            rates = r.get("train_images_per_s", {})
            rate = rates.get(str(p.batch_size)) or next(iter(rates.values()), None)
            if not rate or "eval_images_per_s" not in r:
                missing.append(name)
                continue
            epoch_s = 0.8 * n / rate
            trial_train_s = p.epochs * epochs_scale * epoch_s
            seconds = 5 * (trial_train_s + r["checkpoint_save_s"] + r["build_s"]) \
                + n / r["eval_images_per_s"] + r["profile_s"] \
                + n * throughput.get("metrics_s_per_image", 0.0)
            per_method[name] = {"epoch_s": epoch_s, "total_s": seconds,
                                "batch_measured": str(p.batch_size) in rates}
            total += seconds
        out[dataset] = {"images": n, "batch": p.batch_size, "epochs": p.epochs, "folds": 5,
                        "total_s": total, "methods": per_method, "missing": missing}
    return out


def part_projection(plugins, results: dict) -> dict:
    throughput = dict(results.get("throughput") or {})
    if not throughput.get("methods"):
        return {"error": "needs the throughput part (run it in the same call or before)"}
    throughput["metrics_s_per_image"] = (results.get("metrics") or {}).get(
        "all_seg_metrics_s_per_image", 0.0)
    paper = [*PAPER_SET, *plugins.method_groups("comparison")]
    return {"paper_methods": paper, "paper": project(throughput, paper),
            "all_methods": plugins.main_methods(),
            "all": project(throughput, plugins.main_methods()),
            "assumes": "sequential trials on one device; data and filter caches warm; "
                       "BUSI at batch 4's rate where batch 16 was not measured"}


# --- the report ------------------------------------------------------------------------------

def _fmt(value, digits=1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(results: dict) -> str:
    """The result file as Markdown tables."""
    info = results["device"]
    cpu = info.get("cpu", {})
    kind = (f"torch CPU capability {cpu['capability']}, native bf16 {cpu['bf16_native']} "
            f"({cpu['bf16_reason']})" + ("; instruction sets capped by ATEN_CPU_CAPABILITY / "
                                         "ONEDNN_MAX_CPU_ISA (emulation)" if cpu.get("emulated")
                                         else "") + ". " if cpu else "")
    lines = [f"# Benchmark suite · {info['name']} ({info['device']})", "",
             f"{kind}torch {info['torch']}, {info['threads']} threads, {info['cpus']} CPUs, "
             f"{info['platform']}. Last call {results['date']}: `python benchmarks/suite.py "
             f"{results['arguments']}`; parts it did not run are kept from earlier calls. When "
             "each part was measured: " + ", ".join(
                 f"{part} {results[part].get('measured_at', '?')}" for part in PARTS
                 if isinstance(results.get(part), dict)) + ". The JSON beside this file holds "
             "every number.", ""]
    t = results.get("throughput")
    if t and t.get("methods"):
        sizes = t["batch_sizes"]
        lines += [f"## Throughput at {t['size']}² (images/s; harness `train_epoch`, "
                  f"channels_last {t['channels_last']})", "",
                  "| method | " + " | ".join(f"train, batch {b}" for b in sizes)
                  + " | eval | build s | count s | checkpoint s (MB) |",
                  "|---" * (len(sizes) + 5) + "|"]
        for name, r in t["methods"].items():
            if "error" in r:
                lines.append(f"| {name} | {r['error'][:80]} |")
                continue
            rates = [_fmt(r["train_images_per_s"].get(str(b))) for b in sizes]
            lines.append(f"| {name} | " + " | ".join(rates)
                         + f" | {_fmt(r['eval_images_per_s'])} | {_fmt(r['build_s'], 2)} | "
                         f"{_fmt(r['profile_s'], 2)} | {_fmt(r['checkpoint_save_s'], 2)} "
                         f"({r['checkpoint_mb']:.0f}) |")
        lines.append("")
    o = results.get("overhead")
    if o and o.get("methods"):
        lines += [f"## Harness vs bare loop ({o['size']}², batch {o['batch']}, {o['images']} "
                  "images, best of the timed epochs)", "",
                  "| method | harness s/epoch | bare s/epoch | ratio |", "|---|---|---|---|"]
        for name, r in o["methods"].items():
            lines.append(f"| {name} | {_fmt(r.get('harness_s'), 3)} | {_fmt(r.get('bare_s'), 3)}"
                         f" | {_fmt(r.get('ratio'), 3)} |" if "error" not in r
                         else f"| {name} | {r['error'][:80]} | | |")
        lines.append("")
    m = results.get("metrics")
    if m and "speedup" in m:
        lines += ["## HD95 + ASD against MedPy (256², random tumour-like masks)", "",
                  "| pairs | mtlbench pairs/s | MedPy pairs/s | speed-up | max abs diff | all "
                  "metrics, both modes (ms/image) |", "|---|---|---|---|---|---|",
                  f"| {m['pairs']} | {m['mtlbench_pairs_per_s']:.0f} | "
                  f"{m['medpy_pairs_per_s']:.0f} | {m['speedup']:.1f}× | "
                  f"{m['max_abs_difference']:.1e} | {m['all_seg_metrics_s_per_image'] * 1e3:.2f}"
                  " |", ""]
    a = results.get("augmentation")
    if a and "images_per_s" in a:
        lines += [f"## Batch augmentation ({a['size']}², batch {a['batch']}, images/s)", "",
                  "| " + " | ".join(a["images_per_s"]) + " |",
                  "|---" * len(a["images_per_s"]) + "|",
                  "| " + " | ".join(_fmt(v, 0) for v in a["images_per_s"].values()) + " |", ""]
        missing = [f"{k}: {v}" for k, v in a.get("missing", {}).items()]
        lines += [*missing, ""] if missing else []
    v = results.get("variants")
    if v and v.get("methods"):
        labels = list(next(iter(v["methods"].values())))
        lines += [f"## Speed options ({v['size']}², batch {v['batch']}, training images/s; "
                  "seconds including warm-up and compiling)", "",
                  "| method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for name, r in v["methods"].items():
            cells = [f"{_fmt(r[k].get('train_images_per_s'))} ({_fmt(r[k].get('total_s'), 0)} s)"
                     if "error" not in r[k] else r[k]["error"][:60] for k in labels]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    c = results.get("concurrency")
    if c and c.get("runs"):
        lines += ["## Several trials at once (one run of six trials)", "",
                  f"`{c['command']}`", "", "| trials at once | wall | speed-up |",
                  "|---|---|---|"]
        for n, r in c["runs"].items():
            lines.append(f"| {n} | {_duration(r['wall_s'])} | "
                         f"{_fmt(c['speedup'], 2) + '×' if n == str(c['n']) else '1×'} |")
        lines.append("")
    d = results.get("default_job")
    if d and "wall_s" in d:
        lines += ["## Default job", "", "| command | wall | peak RSS (MB) | peak device (MB) |",
                  "|---|---|---|---|",
                  f"| `{d['command']}` | {_duration(d['wall_s'])} | {_fmt(d.get('peak_rss_mb'), 0)}"
                  f" | {_fmt(d.get('peak_device_mb'), 0)} |", ""]
    pr = results.get("projection")
    if pr and "paper" in pr:
        lines += ["## Projection of the full paper protocol (5 folds, sequential trials)", "",
                  "| methods | BUS (163 images, 4×90) | BUSI (647 images, 16×100) |",
                  "|---|---|---|"]
        for key, label in (("paper", f"the paper's {len(pr['paper_methods'])}"),
                           ("all", f"all {len(pr['all_methods'])}")):
            cells = [_duration(pr[key][ds]["total_s"])
                     + (f" (missing: {', '.join(pr[key][ds]['missing'])})"
                        if pr[key][ds]["missing"] else "") for ds in ("bus", "busi")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"Assumes: {pr['assumes']}.", ""]
    errors = {k: r["error"] for k, r in results.items() if isinstance(r, dict) and "error" in r}
    for part, error in errors.items():
        lines += [f"**{part} failed**: {error.splitlines()[-1] if error else ''}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma list of parts: {', '.join(PARTS)}")
    parser.add_argument("--methods", default="all", help="as `mtlbench run --methods`")
    parser.add_argument("--size", type=int, default=None, help="input size (default 256)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one method: checks that the suite runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only {','.join(unknown)}: the parts are {', '.join(PARTS)}")
    plugins = load_plugins()
    methods = ["unet"] if args.quick else plugins.select_methods(args.methods)
    size = args.size or (32 if args.quick else 256)
    info = device_info(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"suite-{info['slug']}{'-quick' if args.quick else ''}"
    results: dict = {"device": info, "date": time.strftime("%Y-%m-%d %H:%M"),
                     "arguments": " ".join(argv if argv is not None else sys.argv[1:])}
    previous = stem.with_suffix(".json")
    kept = {}
    if previous.exists() and set(parts) != set(PARTS):  # a partial rerun keeps the other parts
        kept = json.loads(previous.read_text())
        results.update({k: kept[k] for k in PARTS if k in kept and k not in parts})
    runners = {
        "throughput": lambda: part_throughput(plugins, methods, device, size, args.quick),
        "overhead": lambda: part_overhead(plugins, methods, device, args.quick),
        "concurrency": lambda: part_concurrency(device),
        "metrics": lambda: part_metrics(args.quick),
        "augmentation": lambda: augmentation.measure(device, size, 2 if args.quick else 16,
                                                     2 if args.quick else 20),
        "variants": lambda: part_variants(plugins, device, args.quick),
        "default_job": lambda: part_default_job(device),
        "projection": lambda: part_projection(plugins, results),
    }
    for part in PARTS:
        if part not in parts:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {part}", flush=True)
        started = time.perf_counter()
        try:
            results[part] = runners[part]()
        except Exception:  # noqa: BLE001 - one part's failure keeps the others
            results[part] = {"error": traceback.format_exc()}
        old = kept.get(part, {}).get("methods")
        if old and "methods" in results[part]:  # a rerun of some methods keeps the others
            results[part]["methods"] = {**old, **results[part]["methods"]}
        results[part]["seconds"] = time.perf_counter() - started
        results[part]["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
        stem.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
