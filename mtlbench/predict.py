"""Predict new images with a run's kept fold models (or an exported file's).

The ensemble averages **probabilities**, then thresholds them, as nnU-Net does: each model's
sigmoid tumour map at the protocol size and its softmax class probabilities are averaged with
equal weight over the models; the mean map is resized bilinearly to the image's own size and
thresholded at 0.5, the class is the argmax of the mean probabilities. Averaging before the
threshold keeps each model's confidence (a majority vote of masks would throw it away) and
gives a malignancy probability that is itself a mean of probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from mtlbench.data.fold import model_input
from mtlbench.files import atomic_writer
from mtlbench.fold_models import FoldModel, ModelFileError, build_model
from mtlbench.identity import balancing_label
from mtlbench.protocol import Protocol

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CSV_NAME = "predictions.csv"


class PredictError(ValueError):
    """Inputs or a model choice that cannot be predicted; the message says what to do."""


@dataclass
class ImageSource:
    """One image to predict: its output name, and its file (or its pixels, for a dataset's
    cases)."""

    name: str
    path: Path | None = None
    pixels: np.ndarray | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"case {self.name}"

    def read(self) -> tuple[np.ndarray, str]:
        """The image as 8-bit gray (H, W) and its PIL mode; ValueError saying why not."""
        if self.pixels is not None:
            return self.pixels, "L"
        try:
            with Image.open(self.path) as image:
                mode = image.mode
                return np.asarray(image.convert("L")), mode
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) \
                as exc:
            raise ValueError(f"cannot read {self.path}: {exc}") from None


def image_files(inputs: Iterable[str | Path]) -> list[ImageSource]:
    """The images of ``inputs`` (files, and folders searched recursively for image files),
    named by their path inside the folder without the suffix (a file given alone: its stem);
    PredictError for an input that does not exist or a folder without images."""
    sources: list[ImageSource] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise PredictError(f"{path}: no image files in this folder (looked for "
                                   f"{', '.join(IMAGE_SUFFIXES)}, in subfolders too)")
            sources += [ImageSource(p.relative_to(path).with_suffix("").as_posix(), p)
                        for p in found]
        elif path.exists():
            sources.append(ImageSource(path.stem, path))
        else:
            raise PredictError(f"{path}: no such file or folder; give image files, folders "
                               "of images, or --dataset NAME")
    return unique_names(sources)


def unique_names(sources: list[ImageSource]) -> list[ImageSource]:
    """Sources whose names repeat get ``~2``, ``~3``, ... so that no output overwrites another;
    a name's parts that could lead out of the output folder (``..``, absolute) become ``_``."""
    seen: dict[str, int] = {}
    for source in sources:
        parts = [p if p not in ("", ".", "..") else "_" for p in source.name.split("/")]
        source.name = "/".join(parts)
        count = seen.get(source.name, 0) + 1
        seen[source.name] = count
        if count > 1:
            source.name = f"{source.name}~{count}"
    return sources


def select_models(models: list[FoldModel], method: str, *, fold: int | None = None,
                  seed: int | None = None, pool_seeds: bool = False,
                  balancing: str | None = None, variant: str | None = None,
                  dataset: str | None = None) -> list[FoldModel]:
    """The models one prediction averages: the fold models of one (method, balancing, seed)
    (the seed: ``seed``, else the lowest kept), every seed's with ``pool_seeds``, one fold's
    with ``fold``. PredictError, listing what there is, when nothing or more than one
    setting (dataset, protocol, knobs, balancing) matches."""
    chosen = [m for m in models if m.method == method]
    if not chosen:
        have = sorted({m.method for m in models})
        raise PredictError(f"no kept model of method {method!r}; kept: {', '.join(have)}")
    filters = (("balancing", balancing, lambda m: m.balancing),
               ("variant", variant, lambda m: m.meta.get("variant", "")),
               ("dataset", dataset, lambda m: m.meta["dataset"]))
    for name, wanted, value in filters:
        if wanted is None and name == "balancing":
            kept = {value(m) for m in chosen}
            wanted = "fixed" if "fixed" in kept or len(kept) != 1 else kept.pop()
        if wanted is None:
            continue
        matching = [m for m in chosen if value(m) == wanted]
        if not matching:
            have = ", ".join(sorted({repr(value(m)) for m in chosen}))
            raise PredictError(f"no kept model of {method!r} with {name} {wanted!r}; "
                               f"kept: {have} (--{name})")
        chosen = matching
    settings = {m.group_key for m in chosen}
    if len(settings) > 1:
        listed = "; ".join(f"dataset {d}, protocol {p}, knobs {k}, balancing {b}"
                           + (f" {bk}" if bk != "{}" else "")
                           for d, p, _, k, b, bk in sorted(settings))
        raise PredictError(f"the kept models of {method!r} belong to {len(settings)} settings "
                           f"({listed}); choose one with --dataset, --variant or --balancing")
    if not pool_seeds:
        seeds = sorted({m.seed for m in chosen})
        if seed is None:
            seed = seeds[0]
        if seed not in seeds:
            raise PredictError(f"no kept model of {method!r} with seed {seed}; kept seeds: "
                               f"{', '.join(map(str, seeds))}")
        chosen = [m for m in chosen if m.seed == seed]
    if fold is not None:
        folds = sorted({m.fold for m in chosen})
        chosen = [m for m in chosen if m.fold == fold]
        if not chosen:
            raise PredictError(f"no kept model of {method!r} for fold {fold}; kept folds: "
                               f"{', '.join(map(str, folds))}")
    return sorted(chosen, key=lambda m: (m.seed, m.fold))


def choose_models(source, method: str | None = None, **choice) -> list[FoldModel]:
    """``select_models`` over the models of ``source`` (a run folder or a model file); the
    method may be left out where the source holds one."""
    from mtlbench.export import load_models

    models = load_models(source)
    if method is None:
        methods = sorted({m.method for m in models})
        if len(methods) > 1:
            raise PredictError(f"{source} holds models of {', '.join(methods)}; choose one "
                               "with --method")
        method = methods[0]
    return select_models(models, method, **choice)


class Ensemble:
    """Fold models of one setting, rebuilt; ``probabilities`` averages them."""

    chunk = 32  # images per forward pass

    def __init__(self, plugins, models: list[FoldModel], device: str = "cpu") -> None:
        if not models:
            raise PredictError("no models to predict with")
        self.models = models
        self.nets = [build_model(plugins, m, device) for m in models]
        meta = models[0].meta
        self.meta = meta
        self.classes = tuple(meta["classes"])
        self.protocol = Protocol.from_dict(meta["protocol"])
        self.card = plugins.methods.get(meta["method"])
        self.device = torch.device(device)
        if (self.card.image_features.name if self.card.image_features else None) != \
                meta.get("image_features"):
            raise ModelFileError(f"{models[0].path}: method {meta['method']!r} computes other "
                                 "input features here than when it was trained; install the "
                                 f"plugin version it was kept with "
                                 f"({meta.get('plugin_version') or 'unknown'})")

    @property
    def size(self) -> int:
        return self.protocol.image_size

    def resized(self, gray: np.ndarray) -> np.ndarray:
        """``gray`` at the protocol size, resized as datasets are prepared (bilinear)."""
        if gray.shape == (self.size, self.size):
            return np.ascontiguousarray(gray)
        return np.asarray(Image.fromarray(gray).resize((self.size, self.size), Image.BILINEAR))

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, each: bool = False):
        """Mean tumour probability maps (N, S, S) and class probabilities (N, K) over the
        models (None for a task the method lacks), of uint8 gray images (N, S, S) at the
        protocol size; with ``each``, lists of every model's instead of the means."""
        if len(images) > self.chunk:
            parts = [self.probabilities(images[i:i + self.chunk], each=True)
                     for i in range(0, len(images), self.chunk)]
            segs = [np.concatenate(m) for m in zip(*[s for s, _ in parts], strict=True)] \
                if parts[0][0] is not None else []
            clss = [np.concatenate(m) for m in zip(*[c for _, c in parts], strict=True)] \
                if parts[0][1] is not None else []
            return self._combine(segs, clss, each)
        channels = images[:, None]
        features = self.card.image_features
        if features is not None:
            values = np.asarray(features.compute(images))
            channels = np.concatenate([channels, np.rint(values * 255).astype(np.uint8)], 1)
        x = model_input(torch.from_numpy(channels).to(self.device).float().div_(255),
                        self.protocol, False)
        segs, clss = [], []
        for net in self.nets:
            outputs = net(x)
            if "seg" in outputs:
                segs.append(torch.sigmoid(outputs["seg"].float())[:, 0].cpu().numpy())
            if "cls" in outputs:
                clss.append(torch.softmax(outputs["cls"].float(), 1).cpu().numpy())
        return self._combine(segs, clss, each)

    @staticmethod
    def _combine(segs: list, clss: list, each: bool):
        if each:
            return segs or None, clss or None
        return (np.mean(segs, 0) if segs else None), (np.mean(clss, 0) if clss else None)


def mask_at(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """The binary mask (H, W) of a probability map: resized bilinearly, then ≥ 0.5."""
    t = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    if t.shape[-2:] != (height, width):
        t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear",
                                            align_corners=False)
    return t[0, 0].numpy() >= 0.5


def predict_images(ensemble: Ensemble, sources: list[ImageSource], out_dir: Path,
                   batch_size: int = 8,
                   on_image: Callable[[ImageSource, str], None] | None = None) -> pd.DataFrame:
    """Predict every source; write ``masks/<name>.png`` (0/255, the image's own size) and
    ``predictions.csv`` under ``out_dir``, and return the CSV's rows. A source that cannot be
    read gets its error in the ``error`` column and the others go on; ``on_image(source,
    error)`` is called after each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for start in range(0, len(sources), batch_size):
        batch, read = sources[start:start + batch_size], []
        for source in batch:
            try:
                gray, mode = source.read()
                read.append((source, gray, mode))
            except ValueError as exc:
                rows.append({"name": source.name, "source": source.source, "error": str(exc)})
                if on_image:
                    on_image(source, str(exc))
        if not read:
            continue
        stacked = np.stack([ensemble.resized(gray) for _, gray, _ in read])
        seg, cls = ensemble.probabilities(stacked)
        for i, (source, gray, mode) in enumerate(read):
            height, width = gray.shape
            row = {"name": source.name, "source": source.source, "width": width,
                   "height": height, "mode": mode, "error": ""}
            if cls is not None:
                row["pred_label"] = ensemble.classes[int(cls[i].argmax())]
                for k, name in enumerate(ensemble.classes):
                    row[f"prob_{name}"] = float(cls[i, k])
            if seg is not None:
                mask = mask_at(seg[i], height, width)
                relative = Path("masks") / f"{source.name}.png"
                with atomic_writer(out_dir / relative) as handle:
                    Image.fromarray(mask.astype(np.uint8) * 255).save(handle, format="PNG")
                row["mask"] = relative.as_posix()
                row["tumour_pixels"] = int(mask.sum())
            rows.append(row)
            if on_image:
                on_image(source, "")
    order = {s.name: i for i, s in enumerate(sources)}
    frame = pd.DataFrame(sorted(rows, key=lambda r: order[r["name"]]))
    columns = ["name", "source", "width", "height", "mode", "pred_label",
               *[f"prob_{c}" for c in ensemble.classes], "mask", "tumour_pixels", "error"]
    frame = frame.reindex(columns=[c for c in columns if c in frame.columns])
    for column in ("width", "height", "tumour_pixels"):  # whole numbers, empty for errors
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    with atomic_writer(out_dir / CSV_NAME, "w", encoding="utf-8") as handle:
        frame.to_csv(handle, index=False)
    return frame


def describe(models: list[FoldModel]) -> str:
    """The models in words: method, setting and which folds and seeds."""
    meta = models[0].meta
    folds = sorted({m.fold for m in models})
    seeds = sorted({m.seed for m in models})
    kind = "fold model" if len(models) == 1 else f"ensemble of {len(models)} fold models"
    return (f"{meta['method']}" + (f" [{meta['variant']}]" if meta.get("variant") else "")
            + (f" · {balancing_label(meta['balancing'], meta.get('balancing_knobs') or {})}"
               if meta.get("balancing", "fixed") != "fixed" else "")
            + f", {kind} (folds {','.join(map(str, folds))}; seed{'s' if len(seeds) > 1 else ''}"
            f" {','.join(map(str, seeds))}) trained on {meta['dataset']} under protocol "
            f"{meta['protocol']['name']} ({meta['protocol_hash']}), "
            f"{meta['protocol']['image_size']}², weights kept in {meta.get('dtype', 'fp32')}")
