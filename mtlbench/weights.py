"""Pretrained weights a method may ask for: where they live and a fast check before training.

Nothing is downloaded unless the protocol asks for pretrained weights. When they are asked for
and are neither in the cache nor downloadable, the run stops before any training with a
message naming the file and how to provide it offline.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mtlbench.files import atomic_writer

if TYPE_CHECKING:
    from mtlbench.cards import MethodCard
    from mtlbench.protocol import Protocol

OFFLINE_ENVS = ("MTLBENCH_OFFLINE", "HF_HUB_OFFLINE")
LOSSNET_VGG16 = "torchvision/vgg16-imagenet"
R50_VIT_IN21K = "timm/vit_base_r50_s16_224.orig_in21k"


NO_PRETRAINING = "run with --pretrained none to train from scratch"


@dataclass(frozen=True)
class WeightsSource:
    """One weights file: where it is cached and where it comes from.

    Files with an ``hf_repo`` live in the Hugging Face hub cache (timm's weights); the others
    in torch's hub cache (``$TORCH_HOME/hub/checkpoints``, torchvision's weights).
    """

    name: str
    filename: str
    url: str
    description: str
    instead: str = NO_PRETRAINING
    hf_repo: str = ""

    @property
    def path(self) -> Path:
        """Where the file is (Hugging Face: the snapshot path if cached, else the cache root)."""
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
        return (f"download {self.url} on a machine with internet and copy it to {self.path} "
                "(the folder follows TORCH_HOME)")


KNOWN_WEIGHTS = {
    w.name: w
    for w in (
        WeightsSource(
            "torchvision/resnet18-imagenet", "resnet18-f37072fd.pth",
            "https://download.pytorch.org/models/resnet18-f37072fd.pth",
            "torchvision ResNet-18 ImageNet weights (IMAGENET1K_V1)",
        ),
        WeightsSource(
            LOSSNET_VGG16, "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision VGG-16 ImageNet weights (IMAGENET1K_V1) for the perceptual losses "
            "(LossNet; Qu et al.'s term)",
            "run with --set lossnet_weight=0 (LossNet) and --set perceptual_weight=0 (Qu et "
            "al.'s term) to train without them, or with --set "
            "lossnet_vgg=random for a random VGG-16 (recorded with every result: it is not the "
            "paper's LossNet)",
        ),
        WeightsSource(
            R50_VIT_IN21K, "model.safetensors",
            "https://huggingface.co/timm/vit_base_r50_s16_224.orig_in21k/resolve/main/"
            "model.safetensors",
            "R50+ViT-B/16 ImageNet-21k weights for TransUNet (timm's port of Google's "
            "R50+ViT-B_16.npz)",
            hf_repo=R50_VIT_IN21K,
        ),
    )
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


def offline() -> bool:
    """True when the environment forbids downloads (MTLBENCH_OFFLINE or HF_HUB_OFFLINE set)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in OFFLINE_ENVS)


def ensure_weights(names: list[str], timeout_s: float = 10.0) -> None:
    """Make sure every named weights file is in the cache, downloading it if allowed.

    Raises WeightsUnavailableError (within about ``timeout_s``) listing what is missing and
    how to provide it.
    """
    problems = []
    for name in dict.fromkeys(names):
        source = KNOWN_WEIGHTS.get(name)
        if source is None:
            problems.append(f"unknown weights {name!r} (known: {', '.join(KNOWN_WEIGHTS)})")
            continue
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
        problems.append(f"{source.description}: {where} and {reason}. To provide it offline, "
                        f"{source.how_to_copy()}; or {source.instead}.")
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


def required_weights(cards: list[MethodCard], protocol: Protocol) -> list[str]:
    """The pretrained weights the trials of ``cards`` under ``protocol`` will load."""
    names = [w for card in cards for w in card.weights] if protocol.pretrained != "none" else []
    if uses_lossnet(cards, protocol) and protocol.lossnet_vgg == "imagenet":
        names.append(LOSSNET_VGG16)
    return list(dict.fromkeys(names))


def uses_lossnet(cards: list[MethodCard], protocol: Protocol) -> bool:
    """True when some of ``cards`` trains with a VGG-16 perceptual term (LossNet, or Qu et
    al.'s) under ``protocol``."""
    if protocol.loss_mode != "paper":
        return False
    weights = {"lossnet": protocol.lossnet_weight, "qu_perceptual": protocol.perceptual_weight}
    return any(weights.get(kind, 0) > 0 and "seg" in c.tasks
               for c in cards for kind in c.extra_losses)


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
