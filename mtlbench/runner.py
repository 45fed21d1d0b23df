"""The driver of a run: plan the trials, check everything that can fail early, execute, store.

Everything that can be checked before training (method and dataset names, the data folder,
the split, pretrained weights) is checked first, so a bad input costs seconds, not a trial.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from mtlbench.balancing import DEFAULT_BALANCING, check_balancing, skips_axis
from mtlbench.balancing.knobs import resolve_balancing_knobs
from mtlbench.data.fold import fold_indices, load_arrays, split_notes
from mtlbench.data.prepare import canonical_dataset_spec, dataset_identity, lookup_dataset
from mtlbench.executors import Executor, RunEvents
from mtlbench.executors.local import LocalExecutor
from mtlbench.fold_models import model_path
from mtlbench.knobs import resolved
from mtlbench.leaderboard_table import write_leaderboard
from mtlbench.older_ids import adopt_older_trials
from mtlbench.plugins import Plugins
from mtlbench.precision import resolve as resolve_precision
from mtlbench.precision import slow_bf16_warning
from mtlbench.protocol import Protocol, ProtocolError
from mtlbench.result_files import ingest, write_result
from mtlbench.run_folder import RunFolderError, RunLockedError, run_lock  # noqa: F401 (API)
from mtlbench.store import STORE_NAME, Store, damaged_store
from mtlbench.trial import SpeedOptions, TrialResult, TrialSpec
from mtlbench.weights import ensure_weights, required_weights


@dataclass
class RunPlan:
    """The trials of a run, split into those still to do and those already in the store."""

    specs: list[TrialSpec]
    done: list[TrialSpec] = field(default_factory=list)
    resumable: list[TrialSpec] = field(default_factory=list)
    ingested: list[TrialResult] = field(default_factory=list)  # from result files, at planning
    problems: list[str] = field(default_factory=list)  # result files that could not be read
    warnings: list[str] = field(default_factory=list)  # said before training, e.g. slow bf16


@dataclass
class RunSummary:
    finished: list[TrialResult] = field(default_factory=list)
    failed: list[TrialResult] = field(default_factory=list)
    skipped: int = 0
    leaderboard_files: list[Path] = field(default_factory=list)
    # Results the store could not take, each written to a result file instead:
    # (result, file, the store's error).
    unstored: list[tuple[TrialResult, Path, str]] = field(default_factory=list)
    leaderboard_error: str = ""


def plan_run(plugins: Plugins, methods: list[str], dataset: str, protocol: Protocol,
             run_dir: Path, folds: list[int] | None = None, data_root: str | None = None,
             cache_dir: str | None = None, device: str = "cpu",
             speed: SpeedOptions | None = None,
             knob_overrides: dict[str, str] | None = None,
             seeds: list[int] | None = None,
             balancings: list[str] | None = None,
             balancing_sets: dict[str, dict[str, str]] | None = None,
             keep_models: str = "") -> RunPlan:
    """Trial specs for every (method, balancing, fold, seed), after the early checks; finished
    ones are skipped.

    ``balancings``: the task balancings (mtlbench.balancing; default ``fixed`` alone); a
    method with one task loss skips the axis (its one trial per fold and seed is ``fixed``).
    ``balancing_sets``: ``--set BALANCING.KNOB=VALUE`` values (balancing -> knob -> value
    text; mtlbench.balancing.knobs), checked against the run's balancings.

    ``knob_overrides``: ``--set`` values of the methods' knobs (mtlbench.knobs); each method
    takes those it has. ``seeds``: the training seeds, replicates of every (method, fold)
    (default: the protocol's seed alone); the split is the same for all of them
    (``split_seed``), and so is the protocol's hash. ``keep_models``: "fp16" or "fp32" keeps
    each finished trial's selected model in the run folder (mtlbench.fold_models)."""
    card, options = lookup_dataset(plugins.datasets, dataset)
    data_spec = canonical_dataset_spec(card.name, options)
    dataset = dataset_identity(card, options)  # no absolute path: the data may move
    check_partition(plugins, card, protocol)
    knobs = {name: resolved(plugins.methods.get(name), protocol.name, knob_overrides,
                            plugins.methods.owner(name)) for name in methods}
    axis = {m: balancings_of(plugins.methods.get(m), dict(knobs[m][0]), protocol, balancings)
            for m in methods}
    # A method with one task loss runs ``fixed`` even when --balancing does not name it: the
    # knobs of a balancing not named are its defaults (none for ``fixed``).
    balancing_knobs = resolve_balancing_knobs(plugins.balancings,
                                              balancings or [DEFAULT_BALANCING], balancing_sets)
    warnings = check_precision(protocol, device)
    speed = speed or SpeedOptions()
    check_speed(speed, device, protocol)
    needed_by: dict[str, list[str]] = {}
    weights = []
    for name in methods:
        for source in required_weights(plugins.methods.get(name), protocol,
                                       dict(knobs[name][0])):
            weights.append(source)
            needed_by.setdefault(source.name, []).append(name)
    if weights:  # first: it is the cheapest check and needs no data
        ensure_weights(weights, needed_by=needed_by)
    folds = list(range(protocol.folds)) if folds is None else folds
    bad = [f for f in folds if not 0 <= f < protocol.folds]
    if bad:
        raise ProtocolError(f"--folds {','.join(map(str, bad))}: protocol {protocol.name!r} "
                            f"has folds 0..{protocol.folds - 1}")
    arrays = load_arrays(card, data_root, protocol.image_size, cache_dir,
                         tuple(sorted(options.items())))
    seeds = [protocol.seed] if seeds is None else seeds
    if not seeds or any(s < 0 for s in seeds):
        raise ProtocolError(f"--seeds {','.join(map(str, seeds))}: give one or more seeds >= 0")
    replicas = [dataclasses.replace(protocol, seed=s) for s in seeds]
    specs = [TrialSpec(dataset, m, f, p, str(run_dir), data_root, cache_dir, device,
                       speed, knobs=knobs[m][0], variant=knobs[m][1], data_spec=data_spec,
                       balancing=b, balancing_knobs=balancing_knobs.get(b, ()),
                       keep_model=keep_models or "")
             for m in methods for b in axis[m] for f in folds for p in replicas]
    if specs:
        fold_indices(specs[0], arrays)  # computes and saves the split once, or checks it
        warnings += split_notes(specs[0], arrays)
    try:
        with Store.in_run_dir(run_dir) as store:
            store.check_writable()  # a damaged or read-only store stops the run before work
            # Results that cluster jobs (or a run whose store failed) wrote count as done.
            plan_ingested, plan_problems = ingest(store, run_dir)
            warnings += adopt_older_trials(store, specs)
            if arrays.fields:
                store.record_case_fields(dataset, dict(zip(arrays.ids, arrays.fields,
                                                           strict=True)))
            finished = store.finished_ids()
            warnings += rehashed_protocol_notes(store, protocol)
    except sqlite3.DatabaseError as exc:
        raise damaged_store(run_dir / STORE_NAME, exc) from None
    plan = RunPlan([s for s in specs if s.trial_id not in finished],
                   [s for s in specs if s.trial_id in finished],
                   ingested=plan_ingested, problems=plan_problems, warnings=warnings)
    plan.resumable = [s for s in plan.specs if s.checkpoint_path.exists()]
    if keep_models:
        plan.warnings += unkept_notes(plan.done, run_dir)
    return plan


def unkept_notes(done: list[TrialSpec], run_dir: Path) -> list[str]:
    """A note when finished trials (skipped by this run) have no kept model: --keep-models
    keeps the models of the trials it trains, and does not train finished ones again."""
    missing = [s for s in done if not model_path(run_dir, s.trial_id).exists()]
    if not missing:
        return []
    return [f"--keep-models: {len(missing)} finished trial(s) of this run folder were trained "
            f"without keeping their models (e.g. {missing[0].label}) and are not trained "
            "again; to keep their models too, run the same command with another --out"]


def balancings_of(method, knobs: dict, protocol: Protocol,
                  balancings: list[str] | None) -> list[str]:
    """The balancings ``method`` runs with: ``balancings`` (default ``fixed``), or ``fixed``
    alone for a method with one task loss; BalancingError when loss_mode=code meets another
    balancing than ``fixed``."""
    chosen = balancings or [DEFAULT_BALANCING]
    for name in chosen:
        check_balancing(name, protocol.loss_mode)
    return [DEFAULT_BALANCING] if skips_axis(method, knobs, protocol.loss_mode) else chosen


def check_partition(plugins: Plugins, card, protocol: Protocol) -> None:
    """ProtocolError when ``split=official`` asks for a partition the dataset does not ship
    (before any data is read)."""
    if protocol.split != "official" or card.partition:
        return
    shipping = [name for name, c in plugins.datasets.items() if c.partition]
    raise ProtocolError(f"dataset {card.name!r} ships no partition of its own, so "
                        f"split=official cannot be followed (datasets that ship one: "
                        f"{', '.join(shipping) or 'none'}); use --set split=stratified-group "
                        "(the default) or split=paper")


def rehashed_protocol_notes(store: Store, protocol: Protocol) -> list[str]:
    """A note for each protocol of the store's finished trials whose settings are this one's but
    whose hash is not: stored by an mtlbench that hashed the protocol differently (before
    precision left the hash, or while methods' loss weights were protocol settings). Those
    trials are kept and shown; these run again."""
    knobs = protocol.knobs()
    notes = []
    for phash, text in store.finished_protocols().items():
        if phash == protocol.hash:
            continue
        try:
            same = Protocol.from_dict(json.loads(text)).knobs() == knobs
        except (ValueError, TypeError):
            continue  # a protocol this version cannot read: another protocol in any case
        if same:
            notes.append(f"this run folder also holds finished trials of this protocol under "
                         f"its older hash {phash} (earlier mtlbench versions hashed precision, "
                         f"the training seed and some methods' loss weights with the protocol; "
                         f"those weights are the methods' knobs now); they stay in the store "
                         f"and the leaderboard as rows of their own and are not reused: trials "
                         f"are matched on the "
                         f"current hash {protocol.hash}")
    return notes


def check_precision(protocol: Protocol, device: str) -> list[str]:
    """Raise ProtocolError when the device cannot run the protocol's precision; return the
    warnings to show before training (an explicit bf16 where it is emulated, and slow)."""
    if protocol.precision == "bf16" and device.startswith("cuda"):
        import torch

        # Where this process has no GPU (a cluster's login node), the trial checks on its own.
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ProtocolError(f"protocol {protocol.name!r} runs in bfloat16, which "
                                f"{device} does not support; add --set precision=auto or "
                                "precision=fp32")
    warning = slow_bf16_warning(protocol.precision, device)
    return [warning] if warning else []


def check_speed(speed: SpeedOptions, device: str, protocol: Protocol | None = None) -> None:
    """Raise ProtocolError when a speed option cannot work here (before any training)."""
    if speed.checkpoint_every_s < 0:
        raise ProtocolError(f"--checkpoint-every {speed.checkpoint_every_s:g}: must be ≥ 0 "
                            "seconds (0 writes a checkpoint after every epoch)")
    if speed.compile and not device.startswith("cuda"):
        import shutil

        if protocol is not None and resolve_precision(protocol.precision, device) == "bf16":
            # torch 2.14's CPU inductor: conv -> GroupNorm -> amax under bf16 autocast gets
            # non-finite gradients (eager is fine); several built-in methods have that pattern,
            # and any model may, so compile runs in fp32 on the CPU.
            raise ProtocolError(f"--compile on the CPU with protocol {protocol.name!r}'s "
                                "bfloat16 autocast gives NaN gradients for GroupNorm → amax "
                                "(a torch.compile bug; the built-in attention modules have "
                                "that pattern); add --set precision=fp32 or leave out --compile")
        if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "c++", "g++")):
            raise ProtocolError("--compile on the CPU needs a C/C++ compiler for torch.compile's "
                                "kernels, and none is on PATH; install one or leave out "
                                "--compile")


def execute(plan: RunPlan, run_dir: Path, events: RunEvents,
            executor: Executor | None = None, plugins: Plugins | None = None,
            keep_checkpoints: bool = False) -> RunSummary:
    """Run the planned trials; record each result in the store the moment it arrives."""
    executor = executor or LocalExecutor(plugins)
    summary = RunSummary(skipped=len(plan.done))
    if not keep_checkpoints:  # left by a run killed between storing a trial and removing it
        for spec in plan.done:
            spec.checkpoint_path.unlink(missing_ok=True)
    specs = {s.trial_id: s for s in plan.specs}
    with Store.in_run_dir(run_dir) as store:
        try:
            for result in executor.run(plan.specs, events):
                try:
                    store.record(result)
                except sqlite3.DatabaseError as exc:
                    # Nothing trained is lost: the result goes to a file beside the store,
                    # which the next run (or `mtlbench collect`) imports.
                    path = write_result(run_dir, result)
                    summary.unstored.append((result, path, str(exc)))
                spec = specs[result.trial_id]
                if result.status == "finished":
                    summary.finished.append(result)
                    if not keep_checkpoints:
                        spec.checkpoint_path.unlink(missing_ok=True)
                else:
                    summary.failed.append(result)
                if hasattr(events, "trial_finished"):
                    events.trial_finished(spec, result)
        finally:
            try:
                summary.leaderboard_files = write_leaderboard(store, run_dir)
            except (sqlite3.DatabaseError, OSError) as exc:
                summary.leaderboard_error = str(exc)
    return summary
