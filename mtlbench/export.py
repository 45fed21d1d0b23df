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
    """``mynet.mtlbench.safetensors``; with knobs or a balancing away from their defaults
    (``mynet-dwa``, ``mynet-width=16``) the name says so."""
    meta = model.meta
    parts = [meta["method"]]
    if meta.get("variant"):
        parts.append(meta["variant"].replace(", ", "_").replace(" ", ""))
    if model.balancing != "fixed":
        parts.append(model.balancing)
    parts += [f"{k}={v}" for k, v in sorted(model.balancing_knobs.items())]
    return "-".join(parts) + SUFFIX


def export_groups(models: list[FoldModel], methods: list[str] | None = None,
                  balancing: str | None = None) -> dict[str, list[FoldModel]]:
    """File name -> the models it holds: one file per setting (method with its knobs and
    balancing, every fold and seed), named by ``export_file_name`` (and the training dataset
    where one run folder holds several). PredictError for a method without kept models."""
    from mtlbench.predict import PredictError

    wanted = [m.strip() for m in methods] if methods else sorted({m.method for m in models})
    missing = [m for m in wanted if m not in {k.method for k in models}]
    if missing:
        raise PredictError(f"no kept model of {', '.join(missing)}; kept: "
                           f"{', '.join(sorted({m.method for m in models}))}")
    settings: dict[tuple, list[FoldModel]] = {}
    for model in models:
        if model.method in wanted and balancing in (None, model.balancing):
            settings.setdefault(model.group_key, []).append(model)
    if not settings:
        raise PredictError(f"no kept model of {', '.join(wanted)} with balancing {balancing!r}")
    names: dict[str, list[FoldModel]] = {}
    several = len({key[0] for key in settings}) > 1
    for group in settings.values():
        name = export_file_name(group[0])
        if several:
            name = group[0].meta["dataset"].replace(":", "_").replace("/", "_") + "-" + name
        names[name] = sorted(group, key=lambda m: (m.seed, m.fold))
    return names


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
