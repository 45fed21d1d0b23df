"""The executors that ship with the core, registered through the same hook as any plugin."""

from __future__ import annotations

from mtlbench.executors import (
    ExecutorCard,
    ExecutorContext,
    ExecutorOption,
    ExecutorOptionError,
    parse_int,
)
from mtlbench.hookspecs import hookimpl


def _local(context: ExecutorContext, options: dict[str, str]):
    from mtlbench.executors.local import LocalExecutor

    return LocalExecutor(context.plugins, context.device)


def _pool(context: ExecutorContext, options: dict[str, str]):
    from mtlbench.executors.pool import PoolExecutor, parse_devices

    per_device = parse_int(options, "trials_per_device", "pool", minimum=1)
    if options["devices"]:
        devices = parse_devices(options["devices"], "--devices")
    else:
        devices = parse_devices(context.device, "--device")
    return PoolExecutor(devices, per_device)


def _slurm(context: ExecutorContext, options: dict[str, str]):
    from mtlbench.executors.slurm import SlurmExecutor

    if context.device not in ("cpu", "auto"):
        raise ExecutorOptionError(
            f"--device {context.device} does not apply to --executor slurm: each job runs on "
            "the node SLURM gives it, on a GPU when --executor-set gpus=N is above 0")
    return SlurmExecutor(context.run_dir, options)


@hookimpl
def mtlbench_register_executors(register):
    from mtlbench.executors.slurm import SLURM_OPTIONS, outstanding_jobs

    register(ExecutorCard(
        "local", _local, "One trial after another in this process (the default)."))
    register(ExecutorCard(
        "pool", _pool,
        "Trials in worker processes, several at once on one or more devices "
        "(also chosen by --devices / --trials-per-device).",
        {"devices": ExecutorOption("", "CUDA device numbers (0,1), cuda:N or cpu "
                                       "(default: --device)"),
         "trials_per_device": ExecutorOption("1", "trials at once on each device")},
        flags=("devices", "trials_per_device")))
    register(ExecutorCard(
        "slurm", _slurm,
        "One SLURM job per trial (a job array per run) through submitit; results come back "
        "as files in the run folder (`mtlbench collect` gathers them later too).",
        SLURM_OPTIONS, local_device=False, outstanding=outstanding_jobs))
