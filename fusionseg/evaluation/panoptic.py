"""Panoptic segmentation: PQ / SQ / RQ overall, for things and for stuff (torchmetrics' PanopticQuality).

Matching follows COCO's panopticapi: a prediction matches a ground-truth segment of its class at IoU > 0.5;
unlabeled ground truth is void (ignored, and predictions mostly on void are not false positives).
Pixels the prediction leaves uncovered are given an extra category that no ground truth has, so they
count against recall and IoU as in panopticapi (torchmetrics would treat them as void).
Crowd regions are void here (panopticapi ignores a prediction mostly on a crowd region of its own class;
here, mostly on any crowd region).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.detection import PanopticQuality

from fusionseg.evaluation.base import Results, SegEvaluator, check_size, percent
from fusionseg.evaluation.semantic import SemanticEvaluator
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget


class PanopticCounts(PanopticQuality):
    """PanopticQuality whose `compute()` returns the synced per-category counts `(4, categories)`:
    IoU sum, true positives, false positives, false negatives (torchmetrics' continuous category order)."""

    def compute(self) -> Tensor:  # type: ignore[override]
        counts = (self.iou_sum, self.true_positives, self.false_positives, self.false_negatives)
        return torch.stack([c.double() for c in counts])


def pq_from_counts(counts: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-category PQ, SQ, RQ and a mask of categories that occur (tp + fp + fn > 0), as in panopticapi."""
    iou, tp, fp, fn = counts
    seen = (tp + fp + fn) > 0
    denom = (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-9)
    sq = torch.where(tp > 0, iou / tp.clamp(min=1), torch.zeros_like(iou))
    rq = tp / denom
    return sq * rq, sq, rq, seen


class PanopticEvaluator(SegEvaluator):
    """`PQ`, `SQ`, `RQ`, `PQ_th`, `SQ_th`, `RQ_th`, `PQ_st`, `SQ_st`, `RQ_st`, and `PQ|SQ|RQ/<class>`;
    plus `mIoU` / `IoU/<class>` from `SegPrediction.semantic` when predictions carry it."""

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
        self.uncovered = num_classes  # the extra category of uncovered predicted pixels
        stuffs = set(range(num_classes)) - things | {self.uncovered}
        self.counts = PanopticCounts(things=things, stuffs=stuffs, allow_unknown_preds_category=True)
        self.void = self.counts.void_color[0]  # num_classes + 1: unlabeled and crowd ground truth
        self.semantic = SemanticEvaluator(num_classes, self.class_names, ignore_index, boundary=False)
        self.has_semantic = False

    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        device = self.counts.iou_sum.device
        for pred, target in self._pairs(preds, targets):
            if pred.masks is None or pred.labels is None:
                raise ValueError("panoptic evaluation needs SegPrediction.masks and .labels (non-overlapping)")
            check_size(pred.masks, target.masks.shape[-2:], "masks")
            guess = self._encode(pred.masks.to(device), pred.labels.to(device), None, fill=self.uncovered)
            crowd = target.iscrowd.to(device)
            truth = self._encode(target.masks.to(device), target.labels.to(device), crowd, fill=self.void)
            self.counts.update(guess[None], truth[None])
            if pred.semantic is not None:
                self.has_semantic = True
                self.semantic.update([pred], [target])

    @staticmethod
    def _encode(masks: Tensor, labels: Tensor, crowd: Tensor | None, fill: int) -> Tensor:
        """`(H, W, 2)` (category, instance) pairs; pixels outside every (non-crowd) mask get category `fill`."""
        h, w = masks.shape[-2:]
        out = torch.zeros(h, w, 2, dtype=torch.long, device=masks.device)
        out[..., 0] = fill
        for k, (mask, label) in enumerate(zip(masks.bool(), labels.long())):
            if crowd is not None and bool(crowd[k]):
                continue
            out[mask] = torch.stack([label, label.new_tensor(k + 1)])
        return out

    def compute(self) -> Results:
        pq, sq, rq, seen = pq_from_counts(self.counts.compute())
        order = self.counts.cat_id_to_continuous_id
        index = torch.tensor([order[c] for c in range(self.num_classes)])
        pq, sq, rq, seen = pq[index], sq[index], rq[index], seen[index]
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
