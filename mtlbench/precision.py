"""Which floating-point precision a trial computes in, chosen from what the device runs natively.

``precision=auto`` (the presets' value) means bfloat16 autocast where the device has bf16
arithmetic in hardware, and float32 everywhere else: a CPU without it emulates bf16 about 25×
slower than float32 (AMD EPYC, AVX2 only, torch 2.14), which turned a 5-minute job into an
unfinished one. Precision changes how fast a trial runs and its numbers only by rounding, so,
like the other speed options, it is not part of the protocol hash: the same run on an AMX CPU
(bf16) and on an AVX2 CPU (fp32) makes rows that ``mtlbench compare`` matches, and every result
records the precision that produced it (``env.precision``).

Native bf16 on a CPU: AMX or AVX512-BF16, as torch's cpuinfo reports it, *and* torch's own
kernels and oneDNN's allowed to use it. ``torch.cpu.get_capabilities()`` reads CPUID, so it
ignores the environment variables that cap the instruction sets; ``ATEN_CPU_CAPABILITY``
(torch's kernels, reflected by ``torch.backends.cpu.get_cpu_capability()``) and
``ONEDNN_MAX_CPU_ISA`` (oneDNN's convolutions, read here from the environment) are checked
beside it, so an AMX machine told to behave as an AVX2 one (benchmarks/README.md) is treated
as one.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtlbench.protocol import PRECISIONS

# torch is imported inside the functions that use it: the leaderboard and `compare` read
# `combined` and must start without torch (issue 19: a 1,000-trial leaderboard in <= 2 s).
if TYPE_CHECKING:
    import torch

#: oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which bf16 convolutions are still native.
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                     "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                     "AVX10_2_512_AMX_2", "DEFAULT", "ALL")

#: How much slower bf16 autocast trained than float32 where bf16 is emulated (AMD EPYC, AVX2,
#: 2 cores, torch 2.14.1: 33 s against 1.2-1.6 s a step of a small conv stack; see
#: benchmarks/results/precision-cpu.md for this figure under the AVX2 emulation).
EMULATED_BF16_SLOWDOWN = 25


@dataclass(frozen=True)
class DeviceBF16:
    """Whether ``device`` runs bfloat16 natively, and why (one phrase for messages)."""

    native: bool
    reason: str


@functools.lru_cache(maxsize=8)
def bf16_support(device: str) -> DeviceBF16:
    """Native bf16 on ``device`` ("cpu", "cuda", "cuda:1", "mps", ...)."""
    import torch
    kind = device.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            # A login node submitting to GPUs: the job decides on its own machine.
            return DeviceBF16(False, "no CUDA device visible to this process")
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return DeviceBF16(True, f"{torch.cuda.get_device_name(torch.device(device))} "
                                    "has bf16 arithmetic")
        return DeviceBF16(False, f"{torch.cuda.get_device_name(torch.device(device))} has no "
                                 "native bf16 (before Ampere)")
    if kind != "cpu":
        return DeviceBF16(False, f"bf16 autocast is not measured on {kind!r}; float32 is used")
    return _cpu_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_bf16() -> DeviceBF16:
    import torch
    return cpu_bf16_support(
        torch.cpu.get_capabilities(), torch.backends.cpu.get_cpu_capability(),
        os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")),
        torch.backends.mkldnn.is_available())


def cpu_bf16_support(caps, aten_capability: str, onednn_max_isa: str,
                     onednn_available: bool) -> DeviceBF16:
    """The decision for a CPU from what torch reports: ``caps`` (``torch.cpu.get_capabilities``,
    read from CPUID), ``aten_capability`` (``torch.backends.cpu.get_cpu_capability``, capped by
    ATEN_CPU_CAPABILITY), the oneDNN cap ONEDNN_MAX_CPU_ISA ('' when unset) and whether torch
    has oneDNN at all."""
    architecture = caps.get("architecture", platform.machine())
    if architecture not in ("x86_64", "x86"):
        return DeviceBF16(False, f"{architecture} CPU: bf16 speed not measured there, float32 "
                                 "is used")
    hardware = [name for name in ("amx_bf16", "avx512_bf16") if caps.get(name)]
    if not hardware:
        return DeviceBF16(False, "this CPU has neither AMX nor AVX512-BF16: bf16 is emulated")
    if not aten_capability.startswith("AVX512"):
        return DeviceBF16(False, f"torch's kernels are capped at {aten_capability} "
                                 "(ATEN_CPU_CAPABILITY): bf16 is emulated")
    if onednn_max_isa and onednn_max_isa.strip().upper() not in _ONEDNN_BF16_ISAS:
        return DeviceBF16(False, f"oneDNN is capped at {onednn_max_isa} (ONEDNN_MAX_CPU_ISA): "
                                 "bf16 convolutions are emulated")
    if not onednn_available:
        return DeviceBF16(False, "this torch has no oneDNN: bf16 convolutions are emulated")
    return DeviceBF16(True, f"the CPU has {' and '.join(n.upper() for n in hardware)}")


def resolve(requested: str, device: str) -> str:
    """The precision a trial computes in: ``auto`` becomes bf16 where ``device`` has native
    bf16, fp32 elsewhere; ``fp32`` and ``bf16`` are kept as asked."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} must be one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "bf16" if bf16_support(device).native else "fp32"


def slow_bf16_warning(requested: str, device: str) -> str | None:
    """A warning for an explicit ``bf16`` on a device that emulates it, else None."""
    if requested != "bf16":
        return None
    support = bf16_support(device)
    if support.native or device.startswith("cuda"):
        return None  # CUDA without bf16 is refused elsewhere, with its own message
    return (f"precision=bf16 on {device}: {support.reason}, so training will run about "
            f"{EMULATED_BF16_SLOWDOWN}× slower than in float32; drop --set precision=bf16 "
            "(auto picks fp32 here) unless bf16 numbers are what you want")


def cpu_description() -> dict:
    """The CPU a figure came from: model name, torch's kernel capability and native bf16."""
    import torch
    support = _cpu_bf16()
    return {"model": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": support.native, "bf16_reason": support.reason,
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what the platform says)."""
    import torch
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or torch.cpu.get_capabilities().get("cpu_name", "") or "unknown"


def cpu_kind() -> str:
    """A short label of the CPU kind for result file names: ``amx``, ``avx512``, ``avx2``, ...
    (the capability torch's kernels use, ``amx`` where bf16 is native as well)."""
    import torch
    if _cpu_bf16().native:
        return "amx" if torch.cpu.get_capabilities().get("amx_bf16") else "avx512bf16"
    return torch.backends.cpu.get_cpu_capability().lower()


def combined(used: list[str]) -> str:
    """One word for the precisions of several epochs or folds: the one, or ``mixed``."""
    kinds = sorted(set(used))
    if not kinds:
        return ""
    return kinds[0] if len(kinds) == 1 else "mixed"


def precision_record(requested: str, device: str, epochs: list[str], evaluation: str) -> dict:
    """What a result says about its precision: ``used`` is the one precision of every trained
    epoch and the evaluation, or ``mixed`` when a trial resumed on a device that chose another
    (``epochs`` then counts each); ``bf16_native`` and ``reason`` are of the device that
    finished the trial."""
    support = bf16_support(device)
    used = combined([*epochs, evaluation])
    record = {"requested": requested, "used": used, "evaluation": evaluation,
              "bf16_native": support.native, "reason": support.reason}
    if used == "mixed":
        record["epochs"] = {kind: epochs.count(kind) for kind in sorted(set(epochs))}
    return record


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The model's forward pass in the trial's resolved ``precision`` (``mtlbench.precision``):
    ``bf16`` runs it under bfloat16 autocast (weights, optimizer and losses stay float32);
    ``fp32`` is plain float32."""
    import torch
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
