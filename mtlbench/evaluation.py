"""Evaluating a trained model on its test fold: probabilities, then both metric modes per image
and per fold (spec §6), and the paper's per-epoch checkpoint score."""

from __future__ import annotations

import numpy as np
import torch

from mtlbench.cards import MethodCard
from mtlbench.data.fold import FoldTensors, model_input
from mtlbench.data.prepare import DatasetArrays
from mtlbench.metrics import classification_metrics, mean_dice, seg_metrics
from mtlbench.precision import autocast
from mtlbench.protocol import Protocol
from mtlbench.trial import TrialFailed


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
    return score(method, seg_probs, cls_probs, arrays, indices)


def score(method: MethodCard, seg_probs: np.ndarray | None, cls_probs: np.ndarray | None,
          arrays: DatasetArrays, indices: list[int]
          ) -> tuple[list[dict], dict[str, float], np.ndarray | None]:
    """``evaluate``'s rows, fold metrics and binary masks from probabilities already computed
    (one model's, or an ensemble's means) for the cases ``indices`` of ``arrays``."""
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
