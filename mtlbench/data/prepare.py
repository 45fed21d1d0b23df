"""Read a dataset once, resize it to the protocol size and cache the arrays on disk.

The cache file is keyed by the dataset's fingerprint and the size, so an epoch never touches
the disk and a second run starts at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtlbench.cards import DatasetCard
from mtlbench.files import atomic_writer

DATA_ENV = "MTLBENCH_DATA"
CACHE_VERSION = 1


class DatasetLayoutError(ValueError):
    """Files that do not fit the dataset's layout (missing, unreadable, mismatched); the message
    names them and says what to do."""


class DatasetOptionError(ValueError):
    """A dataset option that the dataset does not have or cannot parse."""


class DataNotFoundError(FileNotFoundError):
    """The dataset's folder is missing; the message says where we looked and what to do."""


@dataclass(frozen=True)
class DatasetArrays:
    """A whole dataset at one size, in memory.

    ``images``: uint8 (N, S, S); ``masks``: uint8 0/1 (N, S, S), resized nearest (training and
    strict metrics); ``soft_masks``: uint8 0..255 (N, S, S), resized bilinear (the paper's test
    ground truth, spec §6). ``folds``: each case's fold in the dataset's own partition (empty
    when it ships none); ``fields``: each case's recorded facts (``Case.fields``).
    """

    name: str
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    hashes: tuple[str, ...]
    groups: tuple[str, ...]
    labels: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    soft_masks: np.ndarray
    folds: tuple[str, ...] = ()
    fields: tuple[dict[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


def parse_dataset_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"busi:multimask=first,include_normal=true"`` -> ("busi", {...}); no options -> {}."""
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetOptionError(f"dataset {spec!r}: option {item!r} is not KEY=VALUE "
                                     f"(e.g. {name}:key=value)")
        options[key.strip().lower()] = value.strip()
    return name.strip().lower(), options


def canonical_dataset_spec(name: str, options: dict[str, str]) -> str:
    """One spelling per dataset and options: the name the store and trial ids use."""
    return name + ("" if not options else ":" + ",".join(f"{k}={options[k]}"
                                                        for k in sorted(options)))


def dataset_identity(card: DatasetCard, options: dict[str, str]) -> str:
    """The dataset as trial ids, split files and tables name it: its canonical spec, where an
    option naming a file or folder by absolute path (``card.path_options``) enters by its name
    alone. Moving the data, or a table kept outside it, then changes no id; a spec without an
    absolute path is named as canonical_dataset_spec names it (ids from before stay)."""
    named = {k: (Path(v).name or v) if k in card.path_options and Path(v).is_absolute() else v
             for k, v in options.items()}
    return canonical_dataset_spec(card.name, named)


def lookup_dataset(registry, spec: str) -> tuple[DatasetCard, dict[str, str]]:
    """The card and checked options of a dataset spec such as ``busi:multimask=first``."""
    name, options = parse_dataset_spec(spec)
    card = registry.get(name)
    check_options(card, options)
    return card, options


def as_bool(value: bool | str, option: str) -> bool:
    """A dataset option's boolean value from its command-line text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise DatasetOptionError(f"dataset option {option}={value!r}: expected true or false")


def check_options(card: DatasetCard, options: dict[str, str]) -> None:
    """DatasetOptionError for an option the card does not have or a value it refuses."""
    unknown = sorted(set(options) - set(card.options))
    if unknown:
        valid = ", ".join(card.options) or "none"
        raise DatasetOptionError(f"dataset {card.name!r} has no option {unknown[0]!r}; its "
                                 f"options: {valid}")
    if card.validate is not None:
        card.validate(options)


def resolve_root(card: DatasetCard, data_root: str | Path | None) -> Path | None:
    """The folder to read ``card`` from: ``data_root`` if given, else $MTLBENCH_DATA/<name>.

    Raises DataNotFoundError saying where it looked, the expected layout and how to point at it.
    """
    if not card.needs_files:
        return None
    folder = card.folder_name or card.name
    candidates: list[Path] = []
    if data_root:
        candidates.append(Path(data_root).expanduser())
    else:
        if os.environ.get(DATA_ENV):
            candidates.append(Path(os.environ[DATA_ENV]).expanduser() / folder)
        candidates.append(Path("data") / folder)
    for path in candidates:
        try:
            if path.is_dir() and any(path.iterdir()):
                return path.resolve()
        except PermissionError:
            raise DataNotFoundError(f"dataset {card.name!r}: the folder {path} cannot be read "
                                    "(permission denied); give this user read access to "
                                    "it") from None
        except (OSError, RuntimeError) as exc:  # a loop of links, or a link to a link
            raise DataNotFoundError(f"dataset {card.name!r}: the folder {path} cannot be "
                                    f"opened ({exc}); check the links on the way to it "
                                    "(`ls -l` each part)") from None
        if path.is_symlink() and not path.exists():
            raise DataNotFoundError(f"dataset {card.name!r}: {path} is a link to "
                                    f"{os.readlink(path)}, which does not exist (or is a loop "
                                    "of links); point the link at the data, or --data-root at "
                                    "the data itself")

    def described(p: Path) -> str:
        return str(p.absolute()) + (" (an empty folder)" if p.is_dir() else "")

    looked = ", ".join(described(p) for p in candidates)
    lines = [f"dataset {card.name!r} not found: looked in {looked}."]
    if card.layout:
        lines.append(f"Expected layout:\n{card.layout}")
    if card.obtain:
        lines.append(f"How to obtain it: {card.obtain}")
    lines.append(f"Point at it with --data-root PATH, or set {DATA_ENV}=DIR so that "
                 f"DIR/{folder} holds it.")
    raise DataNotFoundError("\n".join(lines))


@contextmanager
def reading(card: DatasetCard, root: Path | None) -> Iterator[None]:
    """Around a dataset card's load, fingerprint or check: a file or folder that cannot be
    read (no permission, a loop of links, an I/O error) becomes a DatasetLayoutError naming
    it, whichever card's code met it."""
    try:
        yield
    except PermissionError as exc:
        raise DatasetLayoutError(f"dataset {card.name!r}: {exc.filename or root} cannot be "
                                 "read (permission denied); give this user read access to "
                                 "the data folder and everything in it") from None
    except OSError as exc:
        raise DatasetLayoutError(f"dataset {card.name!r}: {exc.filename or root} cannot be "
                                 f"read ({exc.strerror or exc}); check the file or "
                                 "folder") from None
    except RuntimeError as exc:
        if "Symlink loop" not in str(exc):
            raise
        raise DatasetLayoutError(f"dataset {card.name!r}: {exc}; fix the links in the data "
                                 "folder") from None


def prepare_dataset(card: DatasetCard, root: Path | None, size: int,
                    cache_dir: Path | None, options: dict[str, str] | None = None
                    ) -> DatasetArrays:
    """The dataset resized to ``size``×``size``, from the cache when it is there."""
    options = options or {}
    check_options(card, options)
    with reading(card, root):
        key = f"{card.name}-{card.fingerprint(root, **options)}-{size}-c{CACHE_VERSION}"
    path = cache_dir / f"{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            return _read_cache(path, card, options)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache is rebuilt, never trusted
    with reading(card, root):
        cases = card.load(root, **options)
    if not cases:
        layout = f"; expected layout:\n{card.layout}" if card.layout else ""
        raise DatasetLayoutError(f"dataset {card.name!r} at {root}: no cases found (the folder "
                                 f"holds no labelled images){layout}")
    arrays = DatasetArrays(
        name=canonical_dataset_spec(card.name, options),
        classes=card.class_names(options),
        ids=tuple(c.id for c in cases),
        hashes=tuple(c.content_hash for c in cases),
        groups=tuple(c.group for c in cases),
        labels=np.array([c.label for c in cases], dtype=np.int64),
        images=np.stack([_resize(c.image, size, Image.BILINEAR) for c in cases]),
        masks=np.stack([_resize(c.mask.astype(np.uint8), size, Image.NEAREST) for c in cases]),
        soft_masks=np.stack([_resize(c.mask.astype(np.uint8) * 255, size, Image.BILINEAR)
                             for c in cases]),
        folds=tuple(c.fold for c in cases) if any(c.fold for c in cases) else (),
        fields=tuple(c.fields for c in cases) if any(c.fields for c in cases) else (),
    )
    if path is not None:
        _write_cache(path, arrays)
    return arrays


def _resize(array: np.ndarray, size: int, resample: int) -> np.ndarray:
    if array.shape == (size, size):
        return np.ascontiguousarray(array)
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def _write_cache(path: Path, arrays: DatasetArrays) -> None:
    with atomic_writer(path) as f:
        np.savez(f, ids=np.array(arrays.ids), hashes=np.array(arrays.hashes),
                 groups=np.array(arrays.groups), labels=arrays.labels, images=arrays.images,
                 masks=arrays.masks, soft_masks=arrays.soft_masks,
                 folds=np.array(arrays.folds, dtype=str),
                 fields=np.array(json.dumps(arrays.fields)))


def _read_cache(path: Path, card: DatasetCard, options: dict[str, str]) -> DatasetArrays:
    with np.load(path, allow_pickle=False) as z:
        return DatasetArrays(
            name=canonical_dataset_spec(card.name, options), classes=card.class_names(options),
            ids=tuple(str(s) for s in z["ids"]), hashes=tuple(str(s) for s in z["hashes"]),
            groups=tuple(str(s) for s in z["groups"]), labels=z["labels"],
            images=z["images"], masks=z["masks"], soft_masks=z["soft_masks"],
            # absent from caches written before datasets shipped folds and fields
            folds=tuple(str(s) for s in z["folds"]) if "folds" in z else (),
            fields=tuple(json.loads(str(z["fields"]))) if "fields" in z else (),
        )


def read_gray(path: Path) -> np.ndarray:
    """An 8-bit gray array of any PNG mode; DatasetLayoutError names an unreadable file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetLayoutError(f"cannot read {path}: {exc}; replace or remove the file") \
            from None
