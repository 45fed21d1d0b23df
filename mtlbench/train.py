"""The one training and evaluation loop: ``run_trial(spec) -> TrialResult``.

Every executor runs every trial through this function. The data of a fold lives in memory as
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
import pickle
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.serialization import config as serialization_config

from mtlbench.cards import DatasetCard, MethodCard, ModelConfig
from mtlbench.checkpointing import CheckpointWriter, checkpoint_temp_files
from mtlbench.data.augment import augment_batch, draw_augmentations
from mtlbench.data.features import feature_arrays
from mtlbench.data.prepare import DatasetArrays, lookup_dataset, prepare_dataset, resolve_root
from mtlbench.data.splits import load_or_make_split, split_path
from mtlbench.files import atomic_writer
from mtlbench.losses import PIXEL_LOGITS, TrialLoss
from mtlbench.metrics import classification_metrics, seg_metrics
from mtlbench.plugins import Plugins, load_plugins
from mtlbench.precision import cpu_description, precision_record
from mtlbench.precision import resolve as resolve_precision
from mtlbench.predictions import gallery, mask_pngs
from mtlbench.profile import ModelProfile, profile_model
from mtlbench.protocol import Protocol
from mtlbench.trial import TrialResult, TrialSpec
from mtlbench.weights import required_weights

EpochCallback = Callable[[TrialSpec, dict], None]


class TrialFailed(RuntimeError):
    """A trial that cannot finish (non-finite loss, broken model contract, ...)."""


class ModelContractError(TrialFailed):
    """A method's model returned outputs that break the contract; names the method and plugin."""


@dataclass
class FoldTensors:
    """One fold's cases as tensors on the training device."""

    images: torch.Tensor  # uint8 (N, 1 + feature channels, S, S)
    masks: torch.Tensor  # uint8 (N, 1, S, S), 0/1
    labels: torch.Tensor  # int64 (N,)


def default_cache_dir() -> Path:
    """Where resized datasets are cached: $MTLBENCH_CACHE, else ~/.cache/mtlbench."""
    base = os.environ.get("MTLBENCH_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtlbench"
    return Path(base)


@functools.lru_cache(maxsize=1)
def _plugins() -> Plugins:
    return load_plugins(strict=True)


@functools.lru_cache(maxsize=2)
def load_arrays(card: DatasetCard, data_root: str | None, size: int, cache_dir: str | None,
                options: tuple[tuple[str, str], ...] = ()) -> DatasetArrays:
    """The dataset at ``size``, read once per process (and once per machine via the cache)."""
    root = resolve_root(card, data_root)
    return prepare_dataset(card, root, size,
                           Path(cache_dir) if cache_dir else default_cache_dir(), dict(options))


def fold_indices(spec: TrialSpec, arrays: DatasetArrays) -> tuple[list[int], list[int]]:
    """(train, test) case indices of the spec's fold, from the run's saved split."""
    p = spec.protocol
    path = split_path(Path(spec.run_dir) / "splits", spec.dataset, p.split, p.folds, p.split_seed)
    folds = load_or_make_split(path, arrays, p.folds, p.split, p.split_seed)
    if not 0 <= spec.fold < len(folds):
        raise ValueError(f"fold {spec.fold} does not exist: the protocol has {len(folds)} folds")
    test = folds[spec.fold]
    held_out = set(test)
    return [i for i in range(len(arrays)) if i not in held_out], test


def run_trial(spec: TrialSpec, plugins: Plugins | None = None,
              on_epoch: EpochCallback | None = None) -> TrialResult:
    """Train and evaluate one trial; resume from its checkpoint when one exists.

    Raises KeyboardInterrupt untouched (the last finished epoch is on disk); raises TrialFailed
    when the trial cannot finish.
    """
    plugins = plugins or _plugins()
    method = plugins.methods.get(spec.method)
    dataset, options = lookup_dataset(plugins.datasets, spec.dataset)
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
    config = ModelConfig(num_classes=len(arrays.classes), in_channels=method.in_channels,
                         image_size=p.image_size, pretrained=p.pretrained)
    model = method.build(config)
    profile = cached_profile(method, model, p.image_size)
    channels_last = spec.speed.channels_last_on(spec.device)
    precision = resolve_precision(p.precision, spec.device)
    place_model(model, device, channels_last)
    forward = compile_model(model) if spec.speed.compile else model
    loss = build_loss(method, p).to(device)
    optimizer = build_optimizer(model, loss, p, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, p))
    generator = torch.Generator().manual_seed(p.seed * 1000 + spec.fold)

    remove_stale_checkpoint_files(spec)
    state = TrainState()
    if spec.checkpoint_path.exists():
        state = load_checkpoint(spec, model, loss, optimizer, scheduler, generator)
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
                                 epoch, channels_last, precision=precision)
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
                                                    generator, state))
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
             "lossnet_vgg": loss.lossnet.weights if loss.lossnet is not None else None,
             "weights": required_weights([method], p),
             "precision": precision_record(p.precision, spec.device, state.precisions,
                                           precision),
             "speed": {**asdict(spec.speed), "channels_last": channels_last}},
        selected_epoch=selected, resumed_from_epoch=resumed_from,
        predictions={} if pred_masks is None else mask_pngs(test_ids, pred_masks),
        gallery=gallery([arrays.ids[i] for i in test_idx], arrays.labels[test_idx],
                        arrays.images[test_idx], arrays.masks[test_idx]),
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


def build_loss(method: MethodCard, p: Protocol) -> TrialLoss:
    """The trial's loss; a random LossNet VGG is drawn from its own seeded generator, so the
    model's initialisation does not depend on whether LossNet is used."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        return TrialLoss(method.tasks, method.extra_losses, p.loss_mode, p.cls_weight,
                         p.dice_smooth, p.lossnet_weight, p.lossnet_vgg, p.perceptual_weight)


def place_model(model, device: torch.device, channels_last: bool):
    """Move ``model`` to ``device`` (in place), in NHWC memory format when ``channels_last``."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_optimizer(model, loss: TrialLoss, p: Protocol, device: torch.device):
    """The protocol's Adam over the model's and the loss's parameters."""
    # One parameter group: the learned loss weights of loss_mode=code get the same Adam
    # settings, weight decay included, as in the released code (spec §3).
    # fused: one kernel for all parameters instead of a loop of small ops (the same update;
    # 4× faster optimizer steps on a 2-core CPU for ACSNet's 32 M parameters).
    return torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=p.lr,
                            betas=(p.beta1, p.beta2), weight_decay=p.weight_decay,
                            fused=device.type in ("cpu", "cuda"))


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The model's forward pass in the trial's resolved ``precision`` (``mtlbench.precision``):
    ``bf16`` runs it under bfloat16 autocast (weights, optimizer and losses stay float32);
    ``fp32`` is plain float32."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_factor(epoch: int, p: Protocol) -> float:
    """The learning-rate factor of ``epoch`` (spec §4): cosine from 1 to lr_final_factor."""
    if p.schedule == "constant" or p.epochs <= 1:
        return 1.0
    low = p.lr_final_factor
    return low + (1 - low) * (1 + math.cos(math.pi * epoch / p.epochs)) / 2


def to_tensors(arrays: DatasetArrays, indices: list[int], device: torch.device,
               features: np.ndarray | None = None) -> FoldTensors:
    """The cases ``indices`` on ``device``; a method's feature channels follow the image's."""
    idx = np.asarray(indices, dtype=np.int64)
    images = arrays.images[idx][:, None]
    if features is not None:
        images = np.concatenate([images, features[idx]], axis=1)
    return FoldTensors(
        images=torch.from_numpy(images).to(device),
        masks=torch.from_numpy(arrays.masks[idx]).unsqueeze(1).to(device),
        labels=torch.from_numpy(arrays.labels[idx]).to(device),
    )


def normalise(images_01: torch.Tensor, p: Protocol) -> torch.Tensor:
    """Protocol normalisation of the gray channel, replicated to the 3 channels the models
    expect; a method's feature channels (already in [0, 1]) follow unchanged."""
    gray = ((images_01[:, :1] - p.norm_mean) / p.norm_std).expand(-1, 3, -1, -1)
    return gray if images_01.shape[1] == 1 else torch.cat([gray, images_01[:, 1:]], dim=1)


def model_input(images_01: torch.Tensor, p: Protocol, channels_last: bool) -> torch.Tensor:
    """The normalised batch in the memory format the model was put in."""
    x = normalise(images_01, p)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_epoch(model, loss: TrialLoss, method: MethodCard, owner: str, data: FoldTensors,
                optimizer, generator: torch.Generator, p: Protocol, epoch: int,
                channels_last: bool = False, *, precision: str) -> dict:
    """One pass over the training cases in a random order; returns the epoch's curve record."""
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
        terms = loss.terms(outputs, masks, data.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0) + value.detach() * len(idx)
    seen = sum(len(b) for b in batches)
    record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
    record.update({f"loss_{k}": float(v) / seen for k, v in sums.items()})
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
    if "pixel_classes" in method.extra_losses:
        classes = tuple(outputs["cls"].shape)[1] if "cls" in outputs else None
        wanted = (batch, None if classes is None else 1 + classes, size, size)
        shape = tuple(outputs[PIXEL_LOGITS].shape) if PIXEL_LOGITS in outputs else None
        if shape != wanted:
            raise ModelContractError(f"{where}: its pixel-wise loss needs {PIXEL_LOGITS!r} of "
                                     f"shape (B, 1 + K, H, W) = {wanted}, got {shape}")


@torch.no_grad()
def predict(model, data: FoldTensors, p: Protocol, channels_last: bool = False, *,
            precision: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Sigmoid segmentation probabilities (N, S, S) and class probabilities (N, K), or None.

    Batches of ``eval_batch_size``; the outputs stay on the device until the last batch, so
    the host waits for the device once.
    """
    model.eval()
    seg, cls = [], []
    for i in range(0, data.labels.shape[0], p.eval_batch_size):
        images = data.images[i:i + p.eval_batch_size].float().div_(255)
        with autocast(precision, images.device):
            outputs = model(model_input(images, p, channels_last))
        if "seg" in outputs:
            seg.append(torch.sigmoid(outputs["seg"].float())[:, 0])
        if "cls" in outputs:
            cls.append(torch.softmax(outputs["cls"].float(), 1))
    return (torch.cat(seg).cpu().numpy() if seg else None,
            torch.cat(cls).cpu().numpy() if cls else None)


def evaluate(model, method: MethodCard, data: FoldTensors, arrays: DatasetArrays,
             indices: list[int], p: Protocol, channels_last: bool = False, *,
             precision: str) -> tuple[list[dict], dict[str, float], np.ndarray | None]:
    """Per-image rows and per-fold metrics of the test cases (both metric modes, spec §6), and
    the binary predicted masks, bool (N, S, S), or None for a method without ``seg``."""
    seg_probs, cls_probs = predict(model, data, p, channels_last, precision=precision)
    for task, probs in (("seg", seg_probs), ("cls", cls_probs)):
        if probs is not None and not np.isfinite(probs).all():  # on the host already
            raise TrialFailed(f"method {method.name!r}: its {task!r} outputs on the test fold "
                              "are NaN/inf after training (the weights diverged, e.g. in the "
                              "last step); lower the learning rate (--set lr=...) or check the "
                              "model's outputs for NaN/inf")
    idx = np.asarray(indices)
    labels = arrays.labels[idx]
    rows = [{"case_id": arrays.ids[i], "label": int(arrays.labels[i])} for i in idx]
    fold: dict[str, float] = {}
    pred_masks = None
    if "seg" in method.tasks and seg_probs is not None:
        pred_masks = seg_probs >= 0.5
        values = seg_metrics(pred_masks, arrays.masks[idx].astype(bool),
                             arrays.soft_masks[idx])
        for key, column in values.items():
            for row, value in zip(rows, column, strict=True):
                row[key] = float(value)
            fold[key] = float(np.mean(column))
    if "cls" in method.tasks and cls_probs is not None:
        preds = cls_probs.argmax(1)
        positive = cls_probs[:, 1] if cls_probs.shape[1] > 1 else cls_probs[:, 0]
        for row, pred, prob in zip(rows, preds, positive, strict=True):
            row["pred_label"], row["prob_positive"] = int(pred), float(prob)
        fold.update({f"cls.{k}": float(v)
                     for k, v in classification_metrics(labels, preds, positive).items()})
    return rows, fold, pred_masks


def selection_score(model, test: FoldTensors, arrays: DatasetArrays, test_idx: list[int],
                    p: Protocol, record: dict, channels_last: bool = False, *,
                    precision: str) -> float:
    """The paper's checkpoint score on the test fold, 0.7·Dice + 0.3·ACC (spec §4; leaky).

    Dice is the strict fold mean (equal to ``evaluate``'s ``strict.dice``) and ACC the accuracy,
    computed from the predictions alone: the distance metrics are not needed every epoch.
    """
    seg_probs, cls_probs = predict(model, test, p, channels_last, precision=precision)
    idx = np.asarray(test_idx)
    dice = acc = None
    if seg_probs is not None:
        dice = float(mean_dice(seg_probs >= 0.5, arrays.masks[idx].astype(bool)))
    if cls_probs is not None:
        acc = float(np.mean(cls_probs.argmax(1) == arrays.labels[idx]))
    record.update({"testfold_dice": dice, "testfold_acc": acc})
    if dice is not None and acc is not None:
        return 0.7 * dice + 0.3 * acc
    return dice if dice is not None else acc


def mean_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean strict Dice of (N, H, W) binary masks (1 where both are empty, as strict mode)."""
    inter = np.count_nonzero(pred & gt, axis=(1, 2))
    total = np.count_nonzero(pred, axis=(1, 2)) + np.count_nonzero(gt, axis=(1, 2))
    return float(np.mean(np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))))


_PROFILES: dict[tuple, ModelProfile] = {}


def cached_profile(method: MethodCard, model, size: int) -> ModelProfile:
    """The model's size and cost, counted once per (method, size) in a process: the five folds
    of a method build the same architecture, and counting TransUNet at 256² takes seconds."""
    key = (method.name, method.build, size, method.in_channels, method.thop_double_counted)
    if key not in _PROFILES:
        _PROFILES[key] = profile_model(model, size, method.in_channels,
                                       double_counted=method.thop_double_counted)
    return _PROFILES[key]


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak memory so far in MB: the device's allocations on CUDA (since the trial started),
    the process's resident set otherwise (since the process started)."""
    if device.type == "cuda":
        return {"peak_device_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    import resource

    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@dataclass
class TrainState:
    """What a checkpoint carries besides the model and optimizer."""

    epoch: int = -1
    curve: list | None = None
    best_score: float = -math.inf
    best_epoch: int = -1
    best_model: dict | None = None
    precisions: list | None = None  # the resolved precision of each epoch trained so far

    def __post_init__(self) -> None:
        self.curve = self.curve or []
        self.precisions = self.precisions or []


def checkpoint_payload(spec: TrialSpec, model, loss, optimizer, scheduler, generator,
                       state: TrainState) -> dict:
    """Everything a resumed trial needs, as tensors and plain data (live references: take a
    ``host_copy`` before training goes on)."""
    return {
        "trial_id": spec.trial_id, "trial": f"{spec.label}, protocol {spec.protocol.hash}",
        "epoch": state.epoch, "curve": list(state.curve),
        "model": model.state_dict(), "loss": loss.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(), "best_score": state.best_score,
        "best_epoch": state.best_epoch, "best_model": state.best_model,
        "precisions": list(state.precisions),
    }


def write_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a reader, or a process that is
    killed meanwhile, sees the previous checkpoint or this one, never a part.

    Without zip CRC32s: computing them took 60–70% of the save on a 2-core CPU (2.5 of 4 s for
    TransUNet's 1.26 GB), and they guard against disk corruption, not against the interrupted
    writes that the temp file and rename already make harmless.
    """
    with atomic_writer(path) as f, serialization_config.patch({"save.compute_crc32": False}):
        torch.save(payload, f)


def save_checkpoint(spec: TrialSpec, model, loss, optimizer, scheduler, generator,
                    state: TrainState) -> None:
    """Write the trial's checkpoint now, in this thread (``write_checkpoint``)."""
    write_checkpoint(spec.checkpoint_path,
                     checkpoint_payload(spec, model, loss, optimizer, scheduler, generator, state))


def remove_stale_checkpoint_files(spec: TrialSpec) -> None:
    """Delete temporary checkpoint files of this trial left by a process killed while writing
    one (the run lock makes this process the only writer; each can be as large as the model's
    whole training state)."""
    for stale in checkpoint_temp_files(spec.checkpoint_path):
        stale.unlink(missing_ok=True)


def load_checkpoint(spec: TrialSpec, model, loss, optimizer, scheduler,
                    generator) -> TrainState:
    """Restore a trial's checkpoint (weights only: no pickled code is ever executed)."""
    path = spec.checkpoint_path
    restart = ("delete it to restart this trial from scratch, or use another --out folder")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: code, or not ours
        # torch's message suggests weights_only=False; keep only the line naming the object.
        lines = [x.strip() for x in str(exc).splitlines()
                 if "GLOBAL" in x or x.startswith("Unsupported")]
        what = f" ({lines[0]})" if lines else ""
        raise TrialFailed(f"checkpoint {path} was refused: it holds objects other than tensors "
                          f"and plain data{what}, which mtlbench never writes and will not "
                          f"unpickle; {restart}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is treated alike
        raise TrialFailed(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                          f"{restart}") from exc
    if not isinstance(payload, dict) or "trial_id" not in payload:
        raise TrialFailed(f"checkpoint {path} is not a checkpoint of an mtlbench trial (no "
                          f"trial id in it); {restart}")
    if payload["trial_id"] != spec.trial_id:
        other = f" ({payload['trial']})" if payload.get("trial") else ""
        raise TrialFailed(f"checkpoint {path} belongs to trial {payload['trial_id']!r}{other}, "
                          f"not to {spec.trial_id!r} ({spec.label}, protocol "
                          f"{spec.protocol.hash}); {restart}")
    model.load_state_dict(payload["model"])
    loss.load_state_dict(payload.get("loss", {}))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    # Checkpoints written before precisions were recorded: those epochs' precision is unknown.
    precisions = payload.get("precisions") or ["unknown"] * (payload["epoch"] + 1)
    return TrainState(payload["epoch"], list(payload["curve"]), payload["best_score"],
                      payload["best_epoch"], payload["best_model"], list(precisions))


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
