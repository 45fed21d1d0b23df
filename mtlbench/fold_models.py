"""Kept fold models: each finished trial's selected model, saved for `predict`, `evaluate`
and `export`.

One safetensors file per trial, ``models/<trial id>.safetensors`` in the run folder: the
model's ``state_dict`` only (no optimizer, no loss state: that is what ``--keep-checkpoints``
keeps), in half or full precision, and beside it, in the file's own metadata, everything
needed to build the model again and to feed it: the method and its plugin, its knobs, the
protocol, the dataset and its classes, the fold, the seed, the balancing and the mtlbench
version. safetensors holds tensors and a JSON header only, so reading a file runs no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from packaging.version import InvalidVersion, Version
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_tensors

from mtlbench import __version__
from mtlbench.files import atomic_writer

#: The layout of a kept model file's metadata; a file of a higher format is refused.
FORMAT = 1
MODELS_DIR = "models"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
META_KEY = "mtlbench"


class ModelFileError(ValueError):
    """A kept or exported model that cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class FoldModel:
    """One kept model: where its tensors are (``path``, under the key ``prefix``) and its
    metadata (``meta``: method, knobs, protocol, classes, fold, seed, ...)."""

    path: Path
    meta: dict[str, Any]
    prefix: str = ""

    @property
    def method(self) -> str:
        return self.meta["method"]

    @property
    def fold(self) -> int:
        return int(self.meta["fold"])

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def balancing(self) -> str:
        return self.meta.get("balancing", "fixed")

    @property
    def balancing_knobs(self) -> dict[str, Any]:
        """The balancing's knob values away from its defaults (none in files from before)."""
        return dict(self.meta.get("balancing_knobs") or {})

    @property
    def group_key(self) -> tuple:
        """What one ensemble shares: dataset, protocol, method with its knobs, balancing with
        its knobs."""
        return (self.meta["dataset"], self.meta["protocol_hash"], self.method,
                json.dumps(self.meta.get("knobs", {}), sort_keys=True), self.balancing,
                json.dumps(self.balancing_knobs, sort_keys=True))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's tensors (in the dtype they were kept in)."""
        return _prefixed(self.path, self.prefix)


def model_path(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / MODELS_DIR / f"{trial_id}.safetensors"


def model_metadata(spec, method, classes: tuple[str, ...], owner: str, plugin_version: str,
                   knobs: dict, selected_epoch: int, dtype: str) -> dict[str, Any]:
    """What a kept model carries beside its tensors (JSON-serialisable)."""
    features = method.image_features
    return {"format": FORMAT, "mtlbench_version": __version__, "trial_id": spec.trial_id,
            "dataset": spec.dataset, "classes": list(classes), "method": spec.method,
            "plugin": owner, "plugin_version": plugin_version, "knobs": knobs,
            "variant": spec.variant, "balancing": spec.balancing,
            "balancing_knobs": dict(spec.balancing_knobs), "fold": spec.fold,
            "seed": spec.seed, "protocol": spec.protocol.to_dict(),
            "protocol_hash": spec.protocol.hash, "tasks": sorted(method.tasks),
            "in_channels": method.in_channels,
            "image_features": features.name if features is not None else None,
            "selected_epoch": selected_epoch, "dtype": dtype}


def host_tensors(model: torch.nn.Module, dtype: str) -> dict[str, torch.Tensor]:
    """The model's state_dict on the CPU, contiguous, floating tensors cast to ``dtype``
    (integer buffers such as BatchNorm's counters keep theirs)."""
    out = {}
    for name, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(DTYPES[dtype])
        out[name] = value.contiguous().clone()
    return out


def save_fold_model(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model``'s weights with ``meta`` to ``path`` atomically (dtype: ``meta``'s)."""
    data = save_tensors(host_tensors(model, meta["dtype"]), metadata={META_KEY: json.dumps(meta)})
    with atomic_writer(path) as handle:
        handle.write(data)
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The mtlbench metadata of a safetensors file; ModelFileError for a file that is none."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (OSError, SafetensorError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({exc}); it may be "
                             "damaged or no mtlbench model: train again or export again") \
            from None
    if META_KEY not in header:
        raise ModelFileError(f"{path}: a safetensors file without mtlbench's metadata, so "
                             "not a model mtlbench kept or exported")
    try:
        return json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: its mtlbench metadata is damaged ({exc})") from None


def check_version(path: Path, meta: dict[str, Any]) -> None:
    """ModelFileError when ``meta`` was written by a newer mtlbench than this one."""
    written = str(meta.get("mtlbench_version", "0"))
    try:
        newer = Version(written) > Version(__version__)
    except InvalidVersion:
        newer = True
    if newer or int(meta.get("format", 0)) > FORMAT:
        raise ModelFileError(f"{path} was written by mtlbench {written} (model format "
                             f"{meta.get('format')}), newer than this mtlbench {__version__} "
                             f"(format {FORMAT}); install mtlbench >= {written} to use it "
                             "(pip install -U mtlbench)")


def kept_models(run_dir: str | Path) -> list[FoldModel]:
    """Every model kept in the run folder, in file-name order; ModelFileError when it holds
    none, saying how to keep them."""
    folder = Path(run_dir) / MODELS_DIR
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise ModelFileError(
            f"{run_dir}: this run folder keeps no trained models ({folder} "
            f"{'is empty' if folder.is_dir() else 'does not exist'}): its trials ran without "
            "--keep-models, or with an mtlbench from before kept models. Run the methods again "
            "with `mtlbench run ... --keep-models --out NEW_FOLDER` (a new folder: finished "
            "trials are skipped in this one)")
    return [FoldModel(f, read_metadata(f)) for f in files]


def build_model(plugins, model: FoldModel, device: str = "cpu") -> torch.nn.Module:
    """The kept model rebuilt by its method's card, its weights loaded, in eval mode, float32.

    ModelFileError when the method is not registered here (naming the plugin to install),
    the file is from a newer mtlbench, or its tensors do not fit the model."""
    from mtlbench.cards import ModelConfig

    meta = model.meta
    check_version(model.path, meta)
    if meta["method"] not in plugins.methods:
        plugin = meta.get("plugin") or "its plugin"
        version = meta.get("plugin_version")
        raise ModelFileError(
            f"{model.path}: method {meta['method']!r} is not registered here; install the "
            f"plugin that provides it ({plugin!r}{f' version {version}' if version else ''}, "
            "e.g. `pip install` its package so that `mtlbench list methods` shows "
            f"{meta['method']!r})")
    card = plugins.methods.get(meta["method"])
    config = ModelConfig(num_classes=len(meta["classes"]), in_channels=meta["in_channels"],
                         image_size=int(meta["protocol"]["image_size"]), pretrained="none",
                         options=dict(meta.get("knobs", {})))
    net = card.build(config)
    try:
        net.load_state_dict(model.state_dict(), strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"{model.path}: the kept weights do not fit method "
                             f"{meta['method']!r} as installed here ({first}); its plugin "
                             f"may have changed since (kept with plugin version "
                             f"{meta.get('plugin_version') or 'unknown'})") from None
    return net.float().to(device).eval()


def _prefixed(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose keys start with ``prefix``, without it (an exported file holds
    several models, each under its own prefix; a kept model's prefix is empty)."""
    with safe_open(str(path), framework="pt") as handle:
        return {key[len(prefix):]: handle.get_tensor(key) for key in handle.keys()
                if key.startswith(prefix)}
