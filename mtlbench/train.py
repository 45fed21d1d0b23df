"""The one training loop: ``run_trial(spec) -> TrialResult``.

Every executor runs every trial through this function; its parts live where their kind does
(the fold's tensors in ``mtlbench.data.fold``, evaluation in ``mtlbench.evaluation``,
checkpoint files in ``mtlbench.checkpointing``, what a result records about its machine in
``mtlbench.environment``). The data of a fold lives in memory as
uint8 tensors on the training device and is augmented a whole batch at a time, so no
DataLoader worker is needed, and a training step never waits for the device (no per-step
``.item()`` or host copy: losses are summed on the device and read once per epoch). A
checkpoint is written atomically after every epoch, in the background while the next one trains
(``mtlbench.checkpointing``; ``SpeedOptions.checkpoint_every_s`` can space them out); a trial
whose checkpoint exists resumes from it.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from mtlbench.balancing import (
    DEFAULT_BALANCING,
    BalancingConfig,
    BalancingError,
    check_balancing,
    skips_axis,
)
from mtlbench.balancing.knobs import balancing_knob_values
from mtlbench.cards import MethodCard, ModelConfig
from mtlbench.checkpointing import (
    CheckpointWriter,
    TrainState,
    checkpoint_payload,
    load_checkpoint,
    remove_stale_checkpoint_files,
    save_checkpoint,
    write_checkpoint,
)
from mtlbench.data.augment import augment_batch, draw_augmentations
from mtlbench.data.features import feature_arrays
from mtlbench.data.fold import (
    FoldTensors,
    default_cache_dir,
    fold_indices,
    load_arrays,
    model_input,
    normalise,
    to_tensors,
)
from mtlbench.data.prepare import lookup_dataset
from mtlbench.environment import environment, peak_memory
from mtlbench.evaluation import evaluate, predict, selection_score
from mtlbench.fold_models import model_metadata, model_path, save_fold_model
from mtlbench.knobs import defaults as knob_defaults
from mtlbench.knobs import knob_values
from mtlbench.losses import TrialLoss, build_terms
from mtlbench.multitask_gain import default_references
from mtlbench.plugins import Plugins, load_plugins
from mtlbench.precision import autocast, precision_record
from mtlbench.precision import resolve as resolve_precision
from mtlbench.predictions import gallery, mask_pngs
from mtlbench.profile import cached_profile
from mtlbench.protocol import Protocol
from mtlbench.trial import ModelContractError, TrialFailed, TrialResult, TrialSpec
from mtlbench.weights import required_weights

#: Names that moved out of this module (issue 17) and are still importable from it, for
#: plugins and scripts written against mtlbench.train.
__all__ = ["EpochCallback", "run_trial", "train_epoch", "check_contract", "build_loss",
           "build_optimizer", "place_model", "compile_model", "lr_factor", "TrialFailed",
           "ModelContractError", "FoldTensors", "default_cache_dir", "fold_indices",
           "load_arrays", "model_input", "to_tensors", "autocast", "TrainState",
           "save_checkpoint", "evaluate", "predict", "normalise"]

EpochCallback = Callable[[TrialSpec, dict], None]


@functools.lru_cache(maxsize=1)
def _plugins() -> Plugins:
    return load_plugins(strict=True)


def run_trial(spec: TrialSpec, plugins: Plugins | None = None,
              on_epoch: EpochCallback | None = None) -> TrialResult:
    """Train and evaluate one trial; resume from its checkpoint when one exists.

    Raises KeyboardInterrupt untouched (the last finished epoch is on disk); raises TrialFailed
    when the trial cannot finish.
    """
    plugins = plugins or _plugins()
    method = plugins.methods.get(spec.method)
    dataset, options = lookup_dataset(plugins.datasets, spec.data_spec or spec.dataset)
    p = spec.protocol
    started = time.perf_counter()
    arrays = load_arrays(dataset, spec.data_root, p.image_size, spec.cache_dir,
                         tuple(sorted(options.items())))
    train_idx, test_idx = fold_indices(spec, arrays)
    device = torch.device(spec.device)

    if device.type == "cuda":
        # The shapes never change within a trial, so cuDNN's autotuner pays off at once.
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(p.seed)
    # Every knob of the method: the spec's values, the knobs' defaults under the protocol's
    # preset for any it does not name (a spec built by hand, or by an older planner).
    knobs = knob_values(method, p.name, dict(spec.knobs), plugins.methods.owner(spec.method))
    config = ModelConfig(num_classes=len(arrays.classes), in_channels=method.in_channels,
                         image_size=p.image_size, pretrained=p.pretrained, options=knobs)
    model = method.build(config)
    profile = cached_profile(method, model, p.image_size)
    channels_last = spec.speed.channels_last_on(spec.device)
    precision = resolve_precision(p.precision, spec.device)
    place_model(model, device, channels_last)
    forward = compile_model(model) if spec.speed.compile else model
    loss = build_loss(method, p, knobs).to(device)
    # Every knob of the balancing: its defaults, replaced by the spec's (those away from them).
    balancing_knobs = balancing_knob_values(plugins.balancings.get(spec.balancing),
                                            dict(spec.balancing_knobs),
                                            plugins.balancings.owner(spec.balancing))
    balancing = build_balancing(plugins, spec.balancing, method, p, knobs, model,
                                balancing_knobs).to(device)
    optimizer = build_optimizer(model, loss, p, device, extra=list(balancing.parameters()))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, p))
    generator = torch.Generator().manual_seed(p.seed * 1000 + spec.fold)

    remove_stale_checkpoint_files(spec)
    state = TrainState()
    if spec.checkpoint_path.exists():
        state = load_checkpoint(spec, model, loss, optimizer, scheduler, generator,
                                balancing=balancing)
    resumed_from = state.epoch

    features = None
    if method.image_features is not None:
        features = feature_arrays(arrays, method.image_features,
                                  Path(spec.cache_dir) if spec.cache_dir else default_cache_dir())
    train = to_tensors(arrays, train_idx, device, features)
    test = to_tensors(arrays, test_idx, device, features)
    owner = plugins.methods.owner(spec.method)
    writer = CheckpointWriter(functools.partial(write_checkpoint, spec.checkpoint_path),
                              spec.speed.checkpoint_every_s)
    try:
        for epoch in range(state.epoch + 1, p.epochs):
            record = train_epoch(forward, loss, method, owner, train, optimizer, generator, p,
                                 epoch, channels_last, precision=precision, balancing=balancing)
            scheduler.step()
            if p.checkpoint == "paper":
                score = selection_score(forward, test, arrays, test_idx, p, record,
                                        channels_last, precision=precision)
                if score > state.best_score:
                    state.best_score, state.best_epoch = score, epoch
                    state.best_model = {k: v.detach().clone()
                                        for k, v in model.state_dict().items()}
            state.epoch = epoch
            state.curve.append(record)
            state.precisions.append(precision)
            writer.offer(lambda: checkpoint_payload(spec, model, loss, optimizer, scheduler,
                                                    generator, state, balancing=balancing))
            if on_epoch:
                on_epoch(spec, record)
    finally:
        writer.close()  # the checkpoint in flight lands, even on Ctrl-C
    train_s = time.perf_counter() - started

    selected = state.epoch
    if p.checkpoint == "paper" and state.best_model is not None:
        model.load_state_dict(state.best_model)
        selected = state.best_epoch
    eval_started = time.perf_counter()
    rows, fold_metrics, pred_masks = evaluate(forward, method, test, arrays, test_idx, p,
                                              channels_last, precision=precision)
    eval_s = time.perf_counter() - eval_started
    if spec.keep_model:
        info = plugins.info.get(owner)
        meta = model_metadata(spec, method, arrays.classes, owner, info.version if info else "",
                              knobs, selected, spec.keep_model)
        kept = save_fold_model(model_path(spec.run_dir, spec.trial_id), model, meta)
    test_ids = [arrays.ids[i] for i in test_idx]
    epochs_run = max(1, p.epochs - 1 - resumed_from)
    return TrialResult(
        trial_id=spec.trial_id, dataset=spec.dataset, method=spec.method, fold=spec.fold,
        seed=spec.seed, protocol=p.to_dict(), protocol_hash=p.hash, status="finished",
        image_rows=rows, fold_metrics=fold_metrics, curve=state.curve,
        profile={"params": profile.params, "flops": profile.flops, "macs": profile.macs,
                 "paper_params": profile.paper_params, "paper_macs": profile.paper_macs,
                 "image_size": p.image_size},
        timing={"train_s": train_s, "eval_s": eval_s, "wall_s": train_s + eval_s,
                "train_images_per_s": epochs_run * len(train_idx) / max(train_s, 1e-9),
                "eval_images_per_s": len(test_idx) / max(eval_s, 1e-9),
                "checkpoints_written": writer.written, "checkpoints_skipped": writer.skipped,
                **peak_memory(device)},
        env={**environment(spec, plugins, owner), "loss": loss.describe(),
             "balancing": spec.balancing, "balancing_knobs": balancing_knobs,
             "kept_model": ({"file": kept.name, "dtype": spec.keep_model,
                             "bytes": kept.stat().st_size} if spec.keep_model else None),
             "caveats": loss.caveats(),
             "tasks": sorted(method.tasks), "reference_for": sorted(method.reference_for),
             "references": default_references(plugins.methods.items()),
             "weights": [w.name for w in required_weights(method, p, knobs)],
             "precision": precision_record(p.precision, spec.device, state.precisions,
                                           precision),
             "speed": {**asdict(spec.speed), "channels_last": channels_last}},
        selected_epoch=selected, resumed_from_epoch=resumed_from,
        predictions={} if pred_masks is None else mask_pngs(test_ids, pred_masks),
        gallery=gallery([arrays.ids[i] for i in test_idx], arrays.labels[test_idx],
                        arrays.images[test_idx], arrays.masks[test_idx]),
        knobs=knobs, variant=spec.variant, balancing=spec.balancing,
        balancing_knobs=dict(spec.balancing_knobs),
    )


def compile_model(model):
    """``torch.compile(model)``; under a capped CPU capability (ATEN_CPU_CAPABILITY, as the
    AVX2 emulation of benchmarks/README.md sets) with its own kernel cache, unless
    TORCHINDUCTOR_CACHE_DIR says where: torch 2.14 reused kernels compiled under the cap in
    an uncapped process on the same machine, which crashed (segmentation fault)."""
    capped = os.environ.get("ATEN_CPU_CAPABILITY")
    if capped and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        user = os.environ.get("USER") or str(os.getuid())
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
            tempfile.gettempdir(), f"torchinductor_{user}_{capped.lower()}")
    return torch.compile(model)


def build_loss(method: MethodCard, p: Protocol, knobs: dict | None = None) -> TrialLoss:
    """The trial's loss: the method's task losses and its active loss terms under ``knobs``
    (defaults: the knobs' values under the protocol's preset)."""
    if knobs is None:
        knobs = knob_defaults(method, p.name)
    return TrialLoss(method.tasks, p.loss_mode, p.cls_weight, p.dice_smooth,
                     build_terms(method, knobs, p), knobs)


def build_balancing(plugins: Plugins, name: str, method: MethodCard, p: Protocol,
                    knobs: dict, model, balancing_knobs: dict | None = None):
    """The trial's balancing (``mtlbench.balancing``) for ``model``, with ``balancing_knobs``
    (its knobs' values; those it does not name at their defaults); TrialFailed names the
    balancing and the method when it cannot apply (a method with one task loss, or
    loss_mode=code with another balancing than ``fixed``)."""
    card = plugins.balancings.get(name)
    if name != DEFAULT_BALANCING:
        try:
            check_balancing(name, p.loss_mode)
        except BalancingError as exc:
            raise TrialFailed(str(exc)) from None
        if skips_axis(method, knobs, p.loss_mode):
            raise TrialFailed(f"method {method.name!r} has one task loss, nothing for balancing "
                              f"{name!r} to balance; run it with --balancing fixed")
    shared = None
    if method.shared_parameters is not None:
        shared = frozenset(id(q) for q in method.shared_parameters(model))
    config = BalancingConfig(tuple(sorted(method.tasks)), p.cls_weight, p.seed, p.epochs, shared,
                             dict(balancing_knobs or {}))
    return card.build(card.with_defaults(config))


def place_model(model, device: torch.device, channels_last: bool):
    """Move ``model`` to ``device`` (in place), in NHWC memory format when ``channels_last``."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_optimizer(model, loss: TrialLoss, p: Protocol, device: torch.device, extra=()):
    """The protocol's Adam over the model's and the loss's parameters, and ``extra`` ones (a
    balancing's learned weights)."""
    # One parameter group: the learned loss weights of loss_mode=code get the same Adam
    # settings, weight decay included, as in the released code (spec §3).
    # fused: one kernel for all parameters instead of a loop of small ops (the same update;
    # 4× faster optimizer steps on a 2-core CPU for a 32 M-parameter model).
    return torch.optim.Adam([*model.parameters(), *loss.parameters(), *extra], lr=p.lr,
                            betas=(p.beta1, p.beta2), weight_decay=p.weight_decay,
                            fused=device.type in ("cpu", "cuda"))


def lr_factor(epoch: int, p: Protocol) -> float:
    """The learning-rate factor of ``epoch`` (spec §4): cosine from 1 to lr_final_factor."""
    if p.schedule == "constant" or p.epochs <= 1:
        return 1.0
    low = p.lr_final_factor
    return low + (1 - low) * (1 + math.cos(math.pi * epoch / p.epochs)) / 2


def train_epoch(model, loss: TrialLoss, method: MethodCard, owner: str, data: FoldTensors,
                optimizer, generator: torch.Generator, p: Protocol, epoch: int,
                channels_last: bool = False, *, precision: str, balancing=None) -> dict:
    """One pass over the training cases in a random order; returns the epoch's curve record.

    ``balancing`` (mtlbench.balancing) makes each step's gradients from the task losses; None:
    the loss's total, backpropagated (what ``fixed`` does). A balancing other than ``fixed``
    adds each task's weight to the record (``weight_<task>``, its last step's)."""
    model.train()
    started = time.perf_counter()
    n = data.labels.shape[0]
    device = data.labels.device
    order = torch.randperm(n, generator=generator).to(device)
    batches = [order[i:i + p.batch_size] for i in range(0, n, p.batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one sample
        batches = batches[:-1]
    draws = draw_augmentations(sum(len(b) for b in batches), generator, device)
    sums: dict[str, torch.Tensor] = {}
    task_sums: dict[str, torch.Tensor] = {}
    params = [q for q in model.parameters() if q.requires_grad]
    offset = 0
    for step, idx in enumerate(batches):
        images = data.images[idx].float().div_(255)
        masks = data.masks[idx].float()
        images, masks = augment_batch(images, masks, p, draws[offset:offset + len(idx)])
        offset += len(idx)
        with autocast(precision, images.device):
            outputs = model(model_input(images, p, channels_last))
        if epoch == 0 and step == 0:
            check_contract(outputs, method, owner, images.shape[0], p.image_size)
        terms, tasks = loss.terms_and_tasks(outputs, masks, data.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        if balancing is None:
            terms["total"].backward()
        else:
            balancing.backward(tasks, terms["total"], params)
        optimizer.step()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0) + value.detach() * len(idx)
        for key, value in tasks.items():
            task_sums[key] = task_sums.get(key, 0) + value.detach() * len(idx)
    seen = sum(len(b) for b in batches)
    record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
    record.update({f"loss_{k}": float(v) / seen for k, v in sums.items()})
    if balancing is not None:
        balancing.end_epoch({k: float(v) / seen for k, v in task_sums.items()})
        record.update({f"weight_{k}": v for k, v in balancing.weights().items()})
    if loss.weighting is not None:
        record.update(zip(("sigma_dice", "sigma_ce"), loss.weighting.sigma.tolist(),
                          strict=True))
    # NaN/inf: checked here, on the epoch's summed losses that were read once anyway, so the
    # steps never wait for the device; one non-finite step makes the epoch's sum non-finite.
    if not math.isfinite(record["loss_total"]):
        bad = [k[5:] for k, v in record.items() if k.startswith("loss_") and not math.isfinite(v)]
        raise TrialFailed(f"method {method.name!r} (plugin {owner!r}): training loss became "
                          f"{record['loss_total']} at epoch {epoch} (non-finite: "
                          f"{', '.join(bad)}); lower the learning rate (--set lr=...) or check "
                          "the model's outputs for NaN/inf")
    seconds = time.perf_counter() - started
    record.update({"seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)})
    return record


def check_contract(outputs, method: MethodCard, owner: str, batch: int, size: int) -> None:
    """Raise ModelContractError unless ``outputs`` follows the model contract of DESIGN."""
    where = f"method {method.name!r} (plugin {owner!r})"
    if not isinstance(outputs, dict):
        raise ModelContractError(f"{where}: forward must return a dict with 'seg'/'cls', "
                                 f"got {type(outputs).__name__}")
    expected = {"seg": (batch, 1, size, size)}
    for task in sorted(method.tasks):
        if task not in outputs:
            raise ModelContractError(f"{where}: solves {task!r} but forward returned keys "
                                     f"{sorted(outputs)}")
        shape = tuple(outputs[task].shape)
        if task == "seg" and shape != expected["seg"]:
            raise ModelContractError(f"{where}: 'seg' must be {expected['seg']}, got {shape}")
        if task == "cls" and (len(shape) != 2 or shape[0] != batch):
            raise ModelContractError(f"{where}: 'cls' must be (B, K) = ({batch}, K), got {shape}")
    if method.check_outputs is not None:
        problem = method.check_outputs(outputs, batch, size)
        if problem:
            raise ModelContractError(f"{where}: {problem}")
