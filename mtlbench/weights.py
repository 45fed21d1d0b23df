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

if TYPE_CHECKING:
    from mtlbench.cards import MethodCard
    from mtlbench.protocol import Protocol

OFFLINE_ENVS = ("MTLBENCH_OFFLINE", "HF_HUB_OFFLINE")
LOSSNET_VGG16 = "torchvision/vgg16-imagenet"


@dataclass(frozen=True)
class WeightsSource:
    """One weights file: its name in torch's hub cache and where it comes from."""

    name: str
    filename: str
    url: str
    description: str
    instead: str = "run with --set pretrained=none to train from scratch"

    @property
    def path(self) -> Path:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


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
            "torchvision VGG-16 ImageNet weights (IMAGENET1K_V1) for LossNet",
            "run with --set lossnet_weight=0 to train without LossNet, or with --set "
            "lossnet_vgg=random for a random VGG-16 (recorded with every result: it is not the "
            "paper's LossNet)",
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
        if source.path.exists():
            continue
        if offline():
            reason = "downloads are disabled (MTLBENCH_OFFLINE/HF_HUB_OFFLINE)"
        else:
            reason = _try_download(source, timeout_s)
            if reason is None:
                continue
        problems.append(
            f"{source.description}: {source.path} is missing and {reason}. Download "
            f"{source.url} on a machine with internet and copy it to that path (the folder "
            f"follows TORCH_HOME), or {source.instead}."
        )
    if problems:
        raise WeightsUnavailableError("pretrained weights unavailable:\n- " + "\n- ".join(problems))


def _try_download(source: WeightsSource, timeout_s: float) -> str | None:
    source.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = source.path.with_suffix(".partial")
    try:
        with urllib.request.urlopen(source.url, timeout=timeout_s) as response, \
                open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, source.path)
        return None
    except (TimeoutError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        return f"could not be downloaded ({exc})"


def required_weights(cards: list[MethodCard], protocol: Protocol) -> list[str]:
    """The pretrained weights the trials of ``cards`` under ``protocol`` will load."""
    names = [w for card in cards for w in card.weights] if protocol.pretrained != "none" else []
    if uses_lossnet(cards, protocol) and protocol.lossnet_vgg == "imagenet":
        names.append(LOSSNET_VGG16)
    return list(dict.fromkeys(names))


def uses_lossnet(cards: list[MethodCard], protocol: Protocol) -> bool:
    """True when some of ``cards`` trains with the LossNet term under ``protocol``."""
    return (protocol.loss_mode == "paper" and protocol.lossnet_weight > 0
            and any("lossnet" in c.extra_losses and "seg" in c.tasks for c in cards))
