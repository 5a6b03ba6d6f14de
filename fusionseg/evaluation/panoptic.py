"""Panoptic quality as panopticapi's `pq_compute` (and cityscapesScripts' `evalPanopticSemanticLabeling`,
a copy of it) computes it, per category and over things and stuff.

Per image, with ground-truth pixels outside every segment being VOID:

* a prediction matches a non-crowd ground-truth segment of its category when
  IoU = |G & P| / (|G| + |P| - |G & P| - |VOID & P|) > 0.5 (only VOID pixels leave the union);
* unmatched non-crowd ground truth is a false negative; crowd segments never are;
* an unmatched prediction is a false positive unless more than half of it lies on VOID plus the crowd
  region of its own category (the last crowd segment of that category, as in the official dict).

Categories with no true positive, false positive or false negative are left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from fusionseg.evaluation.base import Results, SegEvaluator, check_size, percent
from fusionseg.evaluation.semantic import SemanticEvaluator
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget


def segment_map(masks: Tensor, keep: Tensor) -> Tensor:
    """`(H, W)` ids: 1 + the index of the last kept mask covering a pixel (a PNG's ids), 0 elsewhere."""
    h, w = masks.shape[-2:]
    ids = torch.zeros(h, w, dtype=torch.long, device=masks.device)
    for k in keep.nonzero().flatten().tolist():
        ids[masks[k]] = k + 1
    return ids


def pq_image_stats(
    pred_ids: Tensor, pred_labels: Sequence[int], gt_ids: Tensor, gt_labels: Sequence[int],
    gt_crowd: Sequence[bool], num_classes: int,
) -> np.ndarray:
    """`(4, num_classes)` IoU sum, TP, FP, FN of one image from segment-id maps (0 = VOID / no segment)."""
    n_pred, n_gt = len(pred_labels) + 1, len(gt_labels) + 1
    joint = torch.bincount((gt_ids * n_pred + pred_ids).flatten(), minlength=n_gt * n_pred)
    table = joint.view(n_gt, n_pred).cpu().numpy()  # table[g, p]: pixels of gt segment g-1 under pred p-1
    gt_area, pred_area = table.sum(1), table.sum(0)
    stats = np.zeros((4, num_classes))
    gt_matched, pred_matched = set(), set()
    for g, p in zip(*np.nonzero(table[1:, 1:])):
        if gt_crowd[g] or gt_labels[g] != pred_labels[p] or pred_area[p + 1] == 0:
            continue
        inter = table[g + 1, p + 1]
        iou = inter / (pred_area[p + 1] + gt_area[g + 1] - inter - table[0, p + 1])
        if iou > 0.5:
            stats[0, gt_labels[g]] += iou
            stats[1, gt_labels[g]] += 1
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_of: dict[int, int] = {}
    for g, (label, crowd) in enumerate(zip(gt_labels, gt_crowd)):
        if crowd:
            crowd_of[label] = g
        elif g not in gt_matched and gt_area[g + 1] > 0:
            stats[3, label] += 1
    for p, label in enumerate(pred_labels):
        if p in pred_matched or pred_area[p + 1] == 0:
            continue
        ignored = table[0, p + 1] + (table[crowd_of[label] + 1, p + 1] if label in crowd_of else 0)
        if ignored / pred_area[p + 1] <= 0.5:
            stats[2, label] += 1
    return stats


class PanopticStats(Metric):
    """Per-category IoU sum, TP, FP and FN over a dataset (summed across DDP ranks)."""

    full_state_update = False
    stats: Tensor

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("stats", torch.zeros(4, num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(  # type: ignore[override]
        self, pred_masks: Tensor, pred_labels: Tensor, gt_masks: Tensor, gt_labels: Tensor, gt_crowd: Tensor
    ) -> None:
        """One image. Segments labelled outside `0..num_classes-1` are VOID (ground truth) or no segment."""
        device = pred_masks.device
        gt_masks, gt_labels, gt_crowd = gt_masks.to(device).bool(), gt_labels.to(device), gt_crowd.to(device)
        gt_known = (gt_labels >= 0) & (gt_labels < self.num_classes)
        pred_known = (pred_labels >= 0) & (pred_labels < self.num_classes)
        stats = pq_image_stats(
            segment_map(pred_masks.bool(), pred_known), pred_labels.tolist(),
            segment_map(gt_masks, gt_known), gt_labels.tolist(), gt_crowd.bool().tolist(), self.num_classes,
        )
        self.stats += torch.from_numpy(stats).to(self.stats.device)

    def compute(self) -> Tensor:
        return self.stats


def pq_from_stats(stats: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-category PQ, SQ, RQ and a mask of categories that occur (tp + fp + fn > 0), as in panopticapi."""
    iou, tp, fp, fn = stats
    seen = (tp + fp + fn) > 0
    denom = (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-9)
    sq = torch.where(tp > 0, iou / tp.clamp(min=1), torch.zeros_like(iou))
    return iou / denom, sq, tp / denom, seen


class PanopticEvaluator(SegEvaluator):
    """`PQ`, `SQ`, `RQ`, `PQ_th`, `SQ_th`, `RQ_th`, `PQ_st`, `SQ_st`, `RQ_st`, and `PQ|SQ|RQ/<class>`
    (module docstring for the rules); plus `mIoU` / `IoU/<class>` from `SegPrediction.semantic` when
    predictions carry it. Predicted masks should not overlap; where they do, the later one wins."""

    task = "panoptic"

    def __init__(
        self,
        num_classes: int,
        thing_ids: Sequence[int],
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(num_classes, class_names, ignore_index)
        things = {int(i) for i in thing_ids}
        if not things <= set(range(num_classes)):
            raise ValueError(f"thing_ids {sorted(things)} must lie in 0..{num_classes - 1}")
        self.thing_ids = tuple(sorted(things))
        self.pq_stats = PanopticStats(num_classes)
        self.semantic = SemanticEvaluator(num_classes, self.class_names, ignore_index, boundary=False)
        self.has_semantic = False

    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        for pred, target in self._pairs(preds, targets):
            if pred.masks is None or pred.labels is None:
                raise ValueError("panoptic evaluation needs SegPrediction.masks and .labels (non-overlapping)")
            check_size(pred.masks, target.masks.shape[-2:], "masks")
            self.pq_stats.update(pred.masks, pred.labels, target.masks, target.labels, target.iscrowd)
            if pred.semantic is not None:
                self.has_semantic = True
                self.semantic.update([pred], [target])

    def compute(self) -> Results:
        pq, sq, rq, seen = (v.cpu() for v in pq_from_stats(self.pq_stats.compute()))
        is_thing = torch.zeros(self.num_classes, dtype=torch.bool)
        is_thing[list(self.thing_ids)] = True
        results: Results = {}
        for suffix, group in (("", torch.ones_like(is_thing)), ("_th", is_thing), ("_st", ~is_thing)):
            chosen = seen & group
            for name, values in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
                results[f"{name}{suffix}"] = percent(values[chosen].mean()) if chosen.any() else float("nan")
        for i, class_name in enumerate(self.class_names):
            for name, values in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
                results[f"{name}/{class_name}"] = percent(values[i]) if seen[i] else float("nan")
        if self.has_semantic:
            results.update(self.semantic.compute())
        return results

    def reset(self) -> None:
        super().reset()
        self.has_semantic = False
