"""The benchmark suite runs with one command and writes its result files; its projection adds up."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_quick_suite_writes_json_and_markdown(tmp_path):
    parts = "throughput,overhead,metrics,augmentation,variants,projection"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "suite.py"), "--quick", "--device",
                           "cpu", "--only", parts, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = tmp_path.glob("suite-cpu-*core-*-quick.json")
    data = json.loads(result.read_text())
    # named and described by the CPU kind: an AMX and an AVX2 machine never share a file
    from mtlbench.precision import cpu_kind

    assert result.name.endswith(f"core-{cpu_kind()}-quick.json")
    cpu = data["device"]["cpu"]
    assert cpu["model"] and cpu["capability"] and isinstance(cpu["bf16_native"], bool)
    for part in parts.split(","):
        assert "error" not in data[part], data[part]
    unet = data["throughput"]["methods"]["unet"]
    assert unet["train_images_per_s"]["2"] > 0 and unet["eval_images_per_s"] > 0
    assert unet["checkpoint_mb"] > 0
    assert data["metrics"]["max_abs_difference"] < 1e-6  # equal to MedPy
    assert data["augmentation"]["images_per_s"]["mtlbench"] > 0
    assert data["projection"]["paper"]["bus"]["missing"]  # one method measured of eleven
    text = result.with_suffix(".md").read_text()
    for heading in ("## Throughput", "## Harness vs bare loop", "## HD95 + ASD",
                    "## Batch augmentation", "## Speed options", "## Projection"):
        assert heading in text


def test_projection_adds_epochs_evaluation_and_fixed_costs():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import suite
    finally:
        sys.path.remove(str(BENCHMARKS))
    throughput = {"metrics_s_per_image": 0.01, "methods": {"m": {
        "train_images_per_s": {"4": 100.0, "16": 200.0}, "eval_images_per_s": 50.0,
        "build_s": 1.0, "profile_s": 2.0, "checkpoint_save_s": 0.5}}}
    out = suite.project(throughput, ["m", "absent"])
    bus = out["bus"]  # 163 images, batch 4, 90 epochs, 5 folds
    epoch_s = 0.8 * 163 / 100.0
    saves = int(90 * epoch_s // 60)  # one checkpoint per minute of training
    expected = 5 * (90 * epoch_s + saves * 0.5 + 1.0) + 163 / 50.0 + 2.0 + 163 * 0.01
    assert bus["total_s"] == pytest.approx(expected)
    assert bus["missing"] == ["absent"]
    assert out["busi"]["methods"]["m"]["epoch_s"] == pytest.approx(0.8 * 647 / 200.0)
