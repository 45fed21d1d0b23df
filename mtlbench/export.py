"""Export a method's kept fold models as one file that `mtlbench predict` takes elsewhere.

The file is one safetensors file: model ``i``'s tensors under the keys ``m<i>/<name>``, and in
its metadata the kept models' own metadata (method, knobs, protocol, classes, fold, seed, the
plugin and its version, the mtlbench version) as a list. A machine needs mtlbench and the
method's plugin, nothing of the run folder; reading the file runs no code.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save as save_tensors

from mtlbench import __version__
from mtlbench.files import atomic_writer
from mtlbench.fold_models import (
    FORMAT,
    META_KEY,
    FoldModel,
    ModelFileError,
    check_version,
    kept_models,
    read_metadata,
)

SUFFIX = ".mtlbench.safetensors"


def export_file_name(model: FoldModel) -> str:
    """``cunet.mtlbench.safetensors``; with knobs or a balancing away from their defaults
    (``cunet-dwa``, ``acsnet-lossnet_weight=0.5``) the name says so."""
    meta = model.meta
    parts = [meta["method"]]
    if meta.get("variant"):
        parts.append(meta["variant"].replace(", ", "_").replace(" ", ""))
    if model.balancing != "fixed":
        parts.append(model.balancing)
    return "-".join(parts) + SUFFIX


def export_models(models: list[FoldModel], path: Path) -> Path:
    """Write ``models`` (one method's fold models, any seeds) into one file at ``path``."""
    tensors, members = {}, []
    for i, model in enumerate(models):
        for name, value in model.state_dict().items():
            tensors[f"m{i}/{name}"] = value
        members.append(model.meta)
    first = models[0].meta
    header = {"format": FORMAT, "kind": "export", "mtlbench_version": __version__,
              "method": first["method"], "plugin": first.get("plugin", ""),
              "plugin_version": first.get("plugin_version", ""), "models": members}
    data = save_tensors(tensors, metadata={META_KEY: json.dumps(header)})
    with atomic_writer(path) as handle:
        handle.write(data)
    return path


def exported_models(path: Path) -> list[FoldModel]:
    """The models of an exported file; ModelFileError for a file that is none, or from a
    newer mtlbench."""
    header = read_metadata(path)
    check_version(path, header)
    if header.get("kind") != "export":
        return [FoldModel(path, header)]  # one kept model's file, given directly
    return [FoldModel(path, meta, prefix=f"m{i}/") for i, meta in enumerate(header["models"])]


def load_models(source: str | Path) -> list[FoldModel]:
    """The models of a run folder (its kept models) or of a model file (exported or kept)."""
    path = Path(source)
    if path.is_dir():
        return kept_models(path)
    if path.is_file():
        return exported_models(path)
    raise ModelFileError(f"{path}: no such run folder or model file; give a run folder "
                         "trained with --keep-models, or a file of `mtlbench export`")
