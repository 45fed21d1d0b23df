"""What a result records about where it was computed: versions, device, CPU, commit, memory."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from mtlbench.plugins import Plugins
from mtlbench.precision import cpu_description
from mtlbench.trial import TrialSpec


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak memory so far in MB: the device's allocations on CUDA (since the trial started),
    the process's resident set otherwise (since the process started)."""
    if device.type == "cuda":
        return {"peak_device_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    import resource

    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(spec: TrialSpec, plugins: Plugins, owner: str) -> dict:
    """Versions, device and commit, recorded with every result."""
    from mtlbench import __version__

    info = plugins.info.get(owner)
    device = spec.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "mtlbench": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
        "device": device, "threads": torch.get_num_threads(), "cpu": cpu_description(),
        "plugin": owner, "plugin_version": info.version if info else "",
        "pretrained": spec.protocol.pretrained,
    }
