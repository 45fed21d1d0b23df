"""How reading results scales: a store of N finished trials with 650 test images each.

    python benchmarks/results_scale.py                 # 10, 100 and 1,000 trials
    python benchmarks/results_scale.py --trials 1000 --keep /tmp/scale   # one size, kept

For each size it writes a store through the real ``Store.record`` (one transaction per trial),
then times, each in a fresh process so that imports count as a user sees them:

- ``open_results(store).leaderboard()`` (the API; target <= 2 s at 1,000 trials),
- ``mtlbench leaderboard --out RUN`` (the command, which must not import torch; <= 2 s),
- ``mtlbench report RUN`` (the HTML report with statistics and figures; <= 60 s).

The generated trials: 20 methods (10 multi-task, 8 segmentation-only, a single-task
segmentation and a classification reference) × 5 folds × as many seeds as the size needs, on
one dataset and protocol; each trial holds 650 test images with the 12 values a real trial
stores per image (both metric modes, label, prediction, probability), 17 fold metrics and a
10-epoch curve; the numbers are random but of the right kind. Results go to
``benchmarks/results/results-scale-cpu-2core.md`` with the CPU they came from.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mtlbench.protocol import get_protocol
from mtlbench.store import Store
from mtlbench.trial import TrialResult

IMAGES = 650
FOLDS = 5
METHODS = ([f"mtl{i:02d}" for i in range(10)] + [f"seg{i:02d}" for i in range(8)]
           + ["segref", "clsref"])
RESULTS = Path(__file__).parent / "results" / "results-scale-cpu-2core.md"


def tasks_of(method: str) -> list[str]:
    return ["cls"] if method == "clsref" else ["seg"] if method.startswith("seg") else \
        ["cls", "seg"]


def image_rows(rng: np.random.Generator, fold: int, tasks: list[str]) -> list[dict]:
    n = IMAGES
    label = rng.integers(0, 2, n).astype(float)
    rows = []
    dice = rng.beta(6, 2, n)
    hd95 = rng.gamma(2.0, 8.0, n)
    for i in range(n):
        row: dict = {"case_id": f"case-{fold}-{i:04d}", "label": label[i]}
        if "seg" in tasks:
            for mode in ("strict", "paper"):
                row[f"{mode}.dice"] = dice[i]
                row[f"{mode}.jaccard"] = dice[i] / (2 - dice[i])
                row[f"{mode}.hd95"] = hd95[i]
                row[f"{mode}.asd"] = hd95[i] / 4
            row["strict.empty_pred"] = 0.0
        if "cls" in tasks:
            prob = float(rng.random())
            row["prob_positive"], row["pred_label"] = prob, float(prob > 0.5)
        rows.append(row)
    return rows


def fold_metrics(rows: list[dict], tasks: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    if "seg" in tasks:
        for mode in ("strict", "paper"):
            for m in ("dice", "jaccard", "hd95", "asd"):
                out[f"{mode}.{m}"] = float(np.mean([r[f"{mode}.{m}"] for r in rows]))
        out["strict.empty_pred"] = 0.0
    if "cls" in tasks:
        acc = float(np.mean([r["pred_label"] == r["label"] for r in rows]))
        out.update({f"cls.{k}": acc for k in ("acc", "pre", "rec", "f1", "sensitivity",
                                               "specificity", "f1_malignant", "auc")})
    return out


def make_store(run_dir: Path, n_trials: int) -> float:
    """A run folder with ``n_trials`` finished trials; seconds it took to write."""
    run_dir.mkdir(parents=True, exist_ok=True)
    protocol = get_protocol("smoke")
    rng = np.random.default_rng(0)
    references = {"seg": "segref", "cls": "clsref"}
    started = time.perf_counter()
    with Store.in_run_dir(run_dir) as store:
        made = 0
        seed = 0
        while made < n_trials:
            for method in METHODS:
                for fold in range(FOLDS):
                    if made == n_trials:
                        break
                    tasks = tasks_of(method)
                    rows = image_rows(rng, fold, tasks)
                    env = {"tasks": tasks, "references": references, "pretrained": "none",
                           "precision": {"used": "fp32"},
                           "reference_for": {"segref": ["seg"], "clsref": ["cls"]}.get(
                               method, [])}
                    trial_id = f"{method}-{fold}-{seed}"
                    store.record(TrialResult(
                        trial_id, "synthetic", method, fold, seed,
                        {**protocol.to_dict(), "seed": seed}, protocol.hash, "finished",
                        image_rows=rows, fold_metrics=fold_metrics(rows, tasks),
                        curve=[{"epoch": e, "loss_total": 1.0 / (e + 1), "lr": 1e-3}
                               for e in range(10)],
                        profile={"params": 1e7, "flops": 1e10, "macs": 5e9},
                        timing={"wall_s": 10.0}, env=env))
                    made += 1
            seed += 1
    return time.perf_counter() - started


def timed(command: list[str]) -> float:
    """Seconds of ``command`` in a fresh process (asserted to succeed)."""
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return seconds


API = ("import sys, time; t = time.perf_counter()\n"
       "from mtlbench.results import open_results\n"
       "with open_results(sys.argv[1]) as run:\n"
       "    board = run.leaderboard()\n"
       "assert len(board) == min(20, -(-int(sys.argv[2]) // 5)), len(board)\n"
       "assert 'torch' not in sys.modules\n")


def measure(n_trials: int, keep: Path | None) -> dict:
    folder = keep or Path(tempfile.mkdtemp(prefix="mtlbench-scale-"))
    run_dir = folder / f"run-{n_trials}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    write_s = make_store(run_dir, n_trials)
    mtlbench = str(Path(sys.executable).with_name("mtlbench"))
    row = {"trials": n_trials, "images": n_trials * IMAGES, "write_s": write_s,
           "store_mb": (run_dir / "mtlbench.sqlite").stat().st_size / 2**20,
           "api_leaderboard_s": timed([sys.executable, "-c", API, str(run_dir),
                                       str(n_trials)]),
           "cli_leaderboard_s": timed([mtlbench, "leaderboard", "--out", str(run_dir)]),
           "report_s": timed([mtlbench, "report", str(run_dir), "--out",
                              str(folder / f"report-{n_trials}")])}
    if keep is None:
        shutil.rmtree(folder)
    print(json.dumps(row), flush=True)
    return row


def cpu_line() -> str:
    import torch

    return (f"{platform.processor() or torch.cpu.get_capabilities().get('cpu_name', '?')}, "
            f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--keep", type=Path, default=None,
                        help="Keep the stores and reports in this folder.")
    parser.add_argument("--write", action="store_true",
                        help=f"Write the table to {RESULTS.relative_to(Path.cwd())}.")
    args = parser.parse_args()
    rows = [measure(n, args.keep) for n in args.trials]
    lines = [
        "# Reading results at scale (issue 19)", "",
        f"Machine: {cpu_line()}. Command: `python benchmarks/results_scale.py`.", "",
        "Each store: N finished trials of 20 methods × 5 folds × seeds, 650 test images a "
        "trial with 12 stored values each. Times are wall seconds of a fresh process (imports "
        "included). Targets at 1,000 trials: leaderboard <= 2 s (API and command, the command "
        "without torch), report <= 60 s.", "",
        "| trials | image rows | store (MB) | write (s) | API leaderboard (s) | "
        "`mtlbench leaderboard` (s) | `mtlbench report` (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['trials']} | {r['images'] * 12:,} | {r['store_mb']:.0f} | "
                     f"{r['write_s']:.1f} | {r['api_leaderboard_s']:.2f} | "
                     f"{r['cli_leaderboard_s']:.2f} | {r['report_s']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
