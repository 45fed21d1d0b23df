"""HD95 + ASD throughput of mtlbench's strict metrics against MedPy, with the largest difference.

Usage: ``python benchmarks/metrics_vs_medpy.py [--pairs N] [--size S]``. Needs MedPy (the test
extra installs it). Prints one JSON record; the masks are random ellipses with jagged borders,
the shape of tumour masks, drawn from a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from mtlbench.metrics import strict_seg_metrics


def random_masks(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ground-truth-like ellipse and a prediction-like perturbed copy of it."""
    yy, xx = np.mgrid[:size, :size]

    def ellipse(cy, cx, ry, rx, jitter):
        angle = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + jitter * np.sin(5 * angle + rng.uniform(0, 2 * np.pi))
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= wobble ** 2

    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    ry, rx = rng.uniform(0.08, 0.25, 2) * size
    gt = ellipse(cy, cx, ry, rx, 0.05)
    shift = rng.normal(0, 0.03, 2) * size
    pred = ellipse(cy + shift[0], cx + shift[1], ry * rng.uniform(0.8, 1.2),
                   rx * rng.uniform(0.8, 1.2), 0.15)
    return pred, gt


def measure(pairs: int = 300, size: int = 256) -> dict:
    """HD95 + ASD of ``pairs`` random mask pairs by mtlbench (strict mode) and by MedPy: pairs/s
    of each, the speed-up and the largest absolute difference of the values."""
    from medpy.metric import binary

    rng = np.random.default_rng(0)
    masks = [random_masks(rng, size) for _ in range(pairs)]
    started = time.perf_counter()
    ours = [strict_seg_metrics(p, g) for p, g in masks]
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    ref = [(binary.hd95(p, g), binary.asd(p, g)) for p, g in masks]
    medpy_s = time.perf_counter() - started
    diff = max(max(abs(o["hd95"] - h), abs(o["asd"] - a)) for o, (h, a) in zip(ours, ref,
                                                                                strict=True))
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "pairs": pairs, "size": size,
        "mtlbench_pairs_per_s": pairs / ours_s,
        "medpy_pairs_per_s": pairs / medpy_s,
        "speedup": medpy_s / ours_s,
        "max_abs_difference": diff,
        "note": "mtlbench: HD95+ASD+Dice+Jaccard per pair; MedPy: hd95 and asd calls",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(json.dumps(measure(args.pairs, args.size), indent=1))


if __name__ == "__main__":
    main()
