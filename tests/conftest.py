"""Shared fixtures: an isolated environment, a small dataset and a tiny method for fast runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from mtlbench.cards import DatasetCard, MethodCard, ModelConfig
from mtlbench.plugins import load_plugins


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path_factory):
    """Only the built-in plugins load, nothing downloads, the data and kernel caches are per
    session."""
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MTLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # torch.compile's kernels per session: the shared /tmp cache once held kernels compiled
    # under the AVX2 emulation (ATEN_CPU_CAPABILITY=avx2), and a native run that loaded them
    # crashed (segmentation fault in the compiled forward).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inductor"))
    monkeypatch.delenv("MTLBENCH_DATA", raising=False)
    torch.set_num_threads(2)


class TinyNet(nn.Module):
    """A few convolutions with both heads: trains in a fraction of a second."""

    def __init__(self, num_classes: int = 2, tasks=("seg", "cls")) -> None:
        super().__init__()
        self.tasks = tasks
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.seg = nn.Conv2d(8, 1, 1)
        self.cls = nn.Linear(8, num_classes)

    def forward(self, x):
        h = self.body(x)
        out = {}
        if "seg" in self.tasks:
            out["seg"] = self.seg(h)
        if "cls" in self.tasks:
            out["cls"] = self.cls(h.mean((2, 3)))
        return out


def tiny_card(name: str = "tiny", tasks=("seg", "cls"), build=None) -> MethodCard:
    def default_build(config: ModelConfig) -> nn.Module:
        return TinyNet(config.num_classes, tasks)

    family = "multi-task" if len(tasks) == 2 else "single-task"
    return MethodCard(name=name, build=build or default_build, tasks=frozenset(tasks),
                      family=family, description="test method")


def small_synthetic_card(n_cases: int = 30) -> DatasetCard:
    from mtlbench.data.synthetic import GENERATOR_VERSION, generate_synthetic

    return DatasetCard(
        name="small", classes=("benign", "malignant"),
        load=lambda root: generate_synthetic(n_cases=n_cases, size=64, seed=1),
        fingerprint=lambda root: f"small-gen{GENERATOR_VERSION}-{n_cases}",
        needs_files=False,
    )


@pytest.fixture
def plugins():
    """The built-in plugins plus a tiny method and a 30-case synthetic dataset."""
    loaded = load_plugins()
    for card in (tiny_card(), tiny_card("tinyseg", ("seg",)), tiny_card("tinycls", ("cls",))):
        loaded.methods.register(card.name, card, owner="tests")
    loaded.datasets.register("small", small_synthetic_card(), owner="tests")
    return loaded


def install_plugin(site: Path, name: str, source: str) -> Path:
    """Install ``source`` as the module ``mtlbench_<name>`` of a distribution ``mtlbench-<name>``
    in the folder ``site``, with an ``mtlbench`` entry point ``<name>``: what `pip install` of a
    third-party plugin leaves, for a process that has ``site`` on its path."""
    info = site / f"mtlbench_{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mtlbench-{name}\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mtlbench]\n{name} = mtlbench_{name}\n")
    (site / f"mtlbench_{name}.py").write_text(source)
    return site


def processes_with(marker: str, command_part: bytes = b"") -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (and whose command line holds
    ``command_part``), read from /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes() if command_part else b""
        except OSError:
            continue
        if marker.encode() in environ and command_part in cmdline and proc.name.isdigit():
            pids.append(int(proc.name))
    return pids


def folder_dataset(root: Path, n: int = 6, size: int = 40) -> Path:
    """A small folder+CSV dataset: images/, masks/ and labels.csv with ``n`` cases, half of
    each class (random images, a square tumour in every mask)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["id,label"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(
            root / "images" / f"c{i}.png")
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[10:20, 10:20] = 255
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
        rows.append(f"c{i},{'benign' if i % 2 else 'malignant'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_run(out: Path, methods: str, folds: str, epochs: int = 1, extra: tuple = ()) -> Path:
    """A real `mtlbench run` of ``methods`` on the synthetic set at 32², fp32 on the CPU,
    asserted to succeed (seconds): the run folder many tests read. ``extra``: more options."""
    from mtlbench.cli import main

    result = CliRunner().invoke(main, [
        "run", "--methods", methods, "--folds", folds, "--set", "image_size=32", "--set",
        f"epochs={epochs}", "--set", "precision=fp32", "--device", "cpu", "--out", str(out),
        *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def kept_run(tmp_path_factory):
    """A real run of cunet on folds 0 and 1 of the synthetic set at 32², its fold models kept
    in fp32 (--keep-models): what predict, export and evaluate tests read (do not change it)."""
    return tiny_run(tmp_path_factory.mktemp("kept") / "run", "cunet", "0,1",
                    extra=("--keep-models", "fp32"))
