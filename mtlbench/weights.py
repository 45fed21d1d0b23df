"""Pretrained weights a method may ask for: where they live and a fast check before training.

A method's card declares the files its model loads (``MethodCard.weights``) and its loss terms
the files they load (``LossTerm.weights``), as ``WeightsSource``s; the core provides the
generic ones its building blocks use (``RESNET18_IMAGENET``). Nothing is downloaded unless a
trial needs the file. When it is needed and is neither in its cache nor downloadable, the run
stops before any training with a message naming the file and how to provide it offline.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlbench.files import atomic_writer

if TYPE_CHECKING:
    from mtlbench.cards import MethodCard
    from mtlbench.protocol import Protocol

OFFLINE_ENVS = ("MTLBENCH_OFFLINE", "HF_HUB_OFFLINE")


NO_PRETRAINING = "run with --pretrained none to train from scratch"


@dataclass(frozen=True)
class WeightsSource:
    """One weights file: where it is cached and where it comes from.

    Files with an ``hf_repo`` live in the Hugging Face hub cache (timm's weights); files with
    a ``directory`` (``~`` and environment variables expanded) there, as the method's own code
    reads them; the others in torch's hub cache (``$TORCH_HOME/hub/checkpoints``,
    torchvision's weights). ``url`` may be a ``file://`` address. ``instead`` says how to run
    without the file.
    """

    name: str
    filename: str
    url: str
    description: str
    instead: str = NO_PRETRAINING
    hf_repo: str = ""
    directory: str = ""

    @property
    def path(self) -> Path:
        """Where the file is (Hugging Face: the snapshot path if cached, else the cache root)."""
        if self.directory:
            return Path(os.path.expandvars(os.path.expanduser(self.directory))) / self.filename
        if self.hf_repo:
            from huggingface_hub import constants, try_to_load_from_cache

            found = try_to_load_from_cache(self.hf_repo, self.filename)
            return Path(found) if isinstance(found, str) else Path(constants.HF_HUB_CACHE)
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def cached(self) -> bool:
        return self.path.is_file()

    def how_to_copy(self) -> str:
        if self.hf_repo:
            return (f"run `hf download {self.hf_repo} {self.filename}` on a machine with "
                    f"internet and copy the folder models--{self.hf_repo.replace('/', '--')} "
                    f"from its Hugging Face cache into {self.path} (the folder follows HF_HOME)")
        follows = "" if self.directory else " (the folder follows TORCH_HOME)"
        return f"download {self.url} on a machine with internet and copy it to {self.path}{follows}"


#: torchvision's ImageNet ResNet-18, which the core's ResNet18Encoder (and smp's) loads.
RESNET18_IMAGENET = WeightsSource(
    "torchvision/resnet18-imagenet", "resnet18-f37072fd.pth",
    "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "torchvision ResNet-18 ImageNet weights (IMAGENET1K_V1)",
)

#: The weights a card may name by string instead of declaring a WeightsSource: the core's.
KNOWN_WEIGHTS = {RESNET18_IMAGENET.name: RESNET18_IMAGENET}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


def offline() -> bool:
    """True when the environment forbids downloads (MTLBENCH_OFFLINE or HF_HUB_OFFLINE set)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in OFFLINE_ENVS)


def source_of(weights: str | WeightsSource, method: str = "") -> WeightsSource:
    """The WeightsSource a card's ``weights`` entry stands for; WeightsUnavailableError for a
    name the core does not provide (a plugin declares its own files as WeightsSource)."""
    if isinstance(weights, WeightsSource):
        return weights
    if weights in KNOWN_WEIGHTS:
        return KNOWN_WEIGHTS[weights]
    where = f"method {method!r} asks for " if method else ""
    raise WeightsUnavailableError(
        f"{where}unknown weights {weights!r}: the core provides {', '.join(KNOWN_WEIGHTS)}; "
        "a plugin declares its own files as mtlbench.weights.WeightsSource on its card")


def ensure_weights(sources: list[WeightsSource | str], timeout_s: float = 10.0,
                   needed_by: dict[str, list[str]] | None = None) -> None:
    """Make sure every weights file is in its cache, downloading it if allowed.

    Raises WeightsUnavailableError (within about ``timeout_s``) listing what is missing, for
    which methods (``needed_by``: source name -> method names) and how to provide it.
    """
    problems = []
    unique = {}
    for entry in sources:
        try:
            source = source_of(entry)
        except WeightsUnavailableError as exc:
            problems.append(str(exc))
            continue
        unique.setdefault(source.name, source)
    for source in unique.values():
        if source.cached():
            continue
        if offline():
            reason = "downloads are disabled (MTLBENCH_OFFLINE/HF_HUB_OFFLINE)"
        else:
            reason = _try_download(source, timeout_s)
            if reason is None:
                continue
        where = f"{source.hf_repo}/{source.filename} is not in {source.path}" if source.hf_repo \
            else f"{source.path} is missing"
        methods = (needed_by or {}).get(source.name)
        who = f" (needed by method {', '.join(map(repr, methods))})" if methods else ""
        problems.append(f"{source.description}{who}: {where} and {reason}. To provide it "
                        f"offline, {source.how_to_copy()}; or {source.instead}.")
    if problems:
        raise WeightsUnavailableError("pretrained weights unavailable:\n- " + "\n- ".join(problems))


def _try_download(source: WeightsSource, timeout_s: float) -> str | None:
    """Download ``source`` into its cache; None on success, else why not."""
    if source.hf_repo:
        return _try_hf_download(source, timeout_s)
    try:
        with urllib.request.urlopen(source.url, timeout=timeout_s) as response, \
                atomic_writer(source.path) as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        return None
    except (TimeoutError, OSError) as exc:
        return f"could not be downloaded ({exc})"


def required_weights(method: MethodCard, protocol: Protocol,
                     knobs: dict[str, Any] | None = None) -> list[WeightsSource]:
    """The pretrained files a trial of ``method`` with ``knobs`` under ``protocol`` loads: the
    model's when the protocol asks for pretrained weights, and those of its active loss
    terms."""
    knobs = knobs or {}
    sources = ([source_of(w, method.name) for w in method.weights]
               if protocol.pretrained != "none" else [])
    for term in method.loss_terms:
        if term.active(knobs, protocol.loss_mode, method.tasks):
            sources.extend(term.sources(knobs))
    return list({s.name: s for s in sources}.values())


def _try_hf_download(source: WeightsSource, timeout_s: float) -> str | None:
    # huggingface_hub retries a failed connection five times with back-off (about 25 s), so
    # one plain request first tells within ``timeout_s`` whether the hub can be reached.
    try:
        urllib.request.urlopen(urllib.request.Request(source.url, method="HEAD"),
                               timeout=timeout_s).close()
    except (TimeoutError, OSError) as exc:
        return f"the Hugging Face hub cannot be reached ({exc})"
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(source.hf_repo, source.filename, etag_timeout=timeout_s)
    except Exception as exc:  # the hub's own errors: report them with the way on
        return f"could not be downloaded ({type(exc).__name__}: {exc})"
    return None
