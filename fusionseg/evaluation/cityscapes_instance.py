"""Instance segmentation under Cityscapes' rules (cityscapesScripts' `evalInstanceLevelSemanticLabeling`).

The rules, all of which differ from COCO's:

* ground-truth instances smaller than `min_region_size` (100 px) and group regions (crowd) are not scored;
  void pixels are ground-truth segments labelled outside `0..num_classes-1` (see `CityscapesDataset`);
* a prediction matches a ground-truth instance of its class when their IoU is *strictly* above the
  threshold (0.5, 0.55, ... 0.95, `np.arange(0.5, 1, 0.05)`); the best-scored match is a true positive,
  every other match of the same instance a false positive; there is no limit on detections per image;
* an unmatched prediction is a false positive unless more than the threshold's share of its pixels lies on
  void, on group regions of its class or on too small instances of its class (those pixels count twice
  for a small group, as in the official script); a prediction matching a group or a small instance above
  the threshold is neither;
* empty predicted masks are skipped; AP integrates the precision-recall curve step-wise with the official
  script's end points; a class without ground truth has NaN AP, one with ground truth but no prediction 0.

The official script fails (IndexError) for a class that has ground truth and predictions but no
prediction left to score; that case gets AP 0 here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fusionseg.evaluation.base import Results, SegEvaluator, percent
from fusionseg.evaluation.instance import instance_inputs
from fusionseg.evaluation.states import TypedListStates
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget

OVERLAPS = np.arange(0.5, 1.0, 0.05)  # the official float64 thresholds (0.6000000000000001, ...)
MIN_REGION_SIZE = 100


def pixel_counts(masks: Tensor) -> Tensor:
    """Pixels of each `(N, H, W)` bool mask, int64 (summed as bytes into int32: faster than a bool sum on a CPU)."""
    return masks.flatten(1).view(torch.uint8).sum(1, dtype=torch.int32).long()


def pair_counts(a: Tensor, b: Tensor, chunk: int = 8) -> Tensor:
    """`(A, B)` int64 pixel counts of `a[i] & b[j]` for bool masks `(A, H, W)`, `(B, H, W)`."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.long, device=a.device)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    # A float32 matmul counts exactly below 2**24 pixels; bigger images take float64. `a` goes in chunks so
    # 100 full-size masks never exist as floats at once.
    dtype = torch.float32 if a[0].numel() < 2**24 else torch.float64
    right = b.flatten(1).to(dtype).T
    for start in range(0, a.shape[0], chunk):
        out[start : start + chunk] = (a[start : start + chunk].flatten(1).to(dtype) @ right).round().long()
    return out


def step_ap(scores: np.ndarray, true: np.ndarray, hard_fns: int) -> float:
    """The official average precision of scored examples (`true`: 1 = matched instance, 0 = false positive)
    with `hard_fns` unmatched instances: the precision-recall curve at every distinct score, integrated
    step-wise (the script's convolution with [-0.5, 0, 0.5])."""
    if scores.size == 0:
        return 0.0
    order = np.argsort(scores)
    sorted_scores, cumsum = scores[order], np.cumsum(true[order])
    _, first = np.unique(sorted_scores, return_index=True)
    total, n = cumsum[-1], len(sorted_scores)
    cumsum = np.append(cumsum, 0)  # index -1 (the lowest threshold) reads 0
    below = cumsum[first - 1]
    tp = total - below
    fp = n - first - tp
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + below + hard_fns), 0.0)
    widths = np.convolve(np.concatenate([recall[:1], recall, [0.0]]), [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, widths))


def cityscapes_ap(records: dict[str, np.ndarray], num_classes: int, min_region_size: int) -> np.ndarray:
    """`(num_classes, len(OVERLAPS))` AP from the match records of all images (see `CityscapesInstanceAP`)."""
    gt_label, gt_pixels, gt_group = records["gt_label"], records["gt_pixels"], records["gt_group"].astype(bool)
    pred_label, pred_pixels, pred_void = records["pred_label"], records["pred_pixels"], records["pred_void"]
    pred_score = records["pred_score"]
    pair_pred, pair_gt, pair_inter = records["pair_pred"], records["pair_gt"], records["pair_inter"]
    small = gt_pixels < min_region_size
    scored_gt = ~gt_group & ~small
    overlap = pair_inter / (gt_pixels[pair_gt] + pred_pixels[pair_pred] - pair_inter)
    # Pixels of an unmatched prediction that are ignored: on groups, on small instances (both: twice), on void.
    ignore_weight = gt_group[pair_gt].astype(np.int64) + small[pair_gt]
    ignored = pred_void + np.bincount(pair_pred, pair_inter * ignore_weight, minlength=len(pred_label))
    ap = np.full((num_classes, len(OVERLAPS)), np.nan)
    for o, threshold in enumerate(OVERLAPS):
        hit = overlap > threshold
        matched_pred = np.zeros(len(pred_label), dtype=bool)
        matched_pred[pair_pred[hit]] = True
        for c in range(num_classes):
            gts = np.flatnonzero(scored_gt & (gt_label == c))
            if gts.size == 0:
                continue  # no ground truth: NaN
            preds = pred_label == c
            if not preds.any():
                ap[c, o] = 0.0
                continue
            # Each scored instance's matches: the best-scored one is a true positive, the others false positives.
            mine = hit & scored_gt[pair_gt] & (gt_label[pair_gt] == c)
            gt_of, score_of = pair_gt[mine], pred_score[pair_pred[mine]]
            order = np.lexsort((-score_of, gt_of))
            gt_of, score_of = gt_of[order], score_of[order]
            best = np.ones(len(gt_of), dtype=bool)
            best[1:] = gt_of[1:] != gt_of[:-1]
            hard_fns = gts.size - int(best.sum())
            # Unmatched predictions mostly on ignored pixels are not false positives.
            loose = preds & ~matched_pred & (ignored / pred_pixels <= threshold)
            scores = np.concatenate([score_of, pred_score[loose]])
            true = np.concatenate([best.astype(np.float64), np.zeros(int(loose.sum()))])
            ap[c, o] = step_ap(scores, true, hard_fns)
    return ap


def summarize(ap: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Overall AP and AP50 (NaN-means over classes, as `computeAverages`), per-class AP and AP50."""
    o50 = int(np.flatnonzero(np.isclose(OVERLAPS, 0.5))[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN means: no class has ground truth
        return float(np.nanmean(ap)), float(np.nanmean(ap[:, o50])), ap.mean(axis=1), ap[:, o50]


class CityscapesInstanceAP(TypedListStates):
    """Match records per image, as `assignGt2Preds` builds them: ground-truth segments (class, pixels,
    group), non-empty predictions (class, score, pixels, pixels on void) and the pixel count of every
    overlapping same-class (prediction, ground truth) pair. Flat tensors concatenated over images (and DDP
    ranks). `compute()` returns the `(classes, overlaps)` AP.
    """

    list_states = {
        "counts": torch.long,  # per image: ground-truth segments, predictions, pairs
        "gt_label": torch.long, "gt_pixels": torch.long, "gt_group": torch.long,
        "pred_label": torch.long, "pred_pixels": torch.long, "pred_void": torch.long, "pred_score": torch.float64,
        "pair_pred": torch.long, "pair_gt": torch.long, "pair_inter": torch.long,
    }

    def __init__(self, num_classes: int, min_region_size: int = MIN_REGION_SIZE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.min_region_size = num_classes, min_region_size

    def update(  # type: ignore[override]
        self,
        pred_masks: Tensor,
        pred_labels: Tensor,
        pred_scores: Tensor,
        gt_masks: Tensor,
        gt_labels: Tensor,
        gt_crowd: Tensor,
    ) -> None:
        """One image. Ground-truth segments labelled outside `0..num_classes-1` are void."""
        device = pred_masks.device
        gt_masks, gt_labels, gt_crowd = gt_masks.to(device).bool(), gt_labels.to(device), gt_crowd.to(device)
        pred_masks, pred_labels, pred_scores = pred_masks.bool(), pred_labels.to(device), pred_scores.to(device)
        known = (gt_labels >= 0) & (gt_labels < self.num_classes)
        void = gt_masks[~known].any(0)
        gt_masks, gt_labels, gt_crowd = gt_masks[known], gt_labels[known], gt_crowd[known]
        pred_pixels = pixel_counts(pred_masks)
        keep = (pred_labels >= 0) & (pred_labels < self.num_classes) & (pred_pixels > 0)
        pred_masks, pred_labels, pred_scores, pred_pixels = (
            pred_masks[keep], pred_labels[keep], pred_scores[keep], pred_pixels[keep]
        )
        pred_void = pixel_counts(pred_masks & void)
        # Only same-class pairs count (the script matches a prediction with its class's instances only).
        inter = torch.zeros(len(pred_labels), len(gt_labels), dtype=torch.long, device=device)
        for c in torch.unique(pred_labels).tolist():
            p, g = (pred_labels == c).nonzero().flatten(), (gt_labels == c).nonzero().flatten()
            if len(g):
                inter[p[:, None], g[None, :]] = pair_counts(pred_masks[p], gt_masks[g])
        pair_pred, pair_gt = inter.nonzero(as_tuple=True)
        self.append(
            counts=torch.tensor([len(gt_labels), len(pred_labels), len(pair_pred)]),
            gt_label=gt_labels, gt_pixels=pixel_counts(gt_masks), gt_group=gt_crowd,
            pred_label=pred_labels, pred_pixels=pred_pixels, pred_void=pred_void, pred_score=pred_scores,
            pair_pred=pair_pred, pair_gt=pair_gt, pair_inter=inter[pair_pred, pair_gt],
        )

    def records(self) -> dict[str, np.ndarray]:
        """All images' records, with prediction and ground-truth indices made global."""
        out = self.concatenated()
        counts = out.pop("counts").reshape(-1, 3)
        out["pair_gt"] = out["pair_gt"] + np.repeat(np.cumsum(counts[:, 0]) - counts[:, 0], counts[:, 2])
        out["pair_pred"] = out["pair_pred"] + np.repeat(np.cumsum(counts[:, 1]) - counts[:, 1], counts[:, 2])
        return out

    def compute(self) -> np.ndarray:  # type: ignore[override]
        return cityscapes_ap(self.records(), self.num_classes, self.min_region_size)


class CityscapesInstanceEvaluator(SegEvaluator):
    """`AP`, `AP50`, `AP/<class>` and `AP50/<class>` under Cityscapes' rules (module docstring), as
    `evalInstanceLevelSemanticLabeling` reports them: AP averages the ten overlaps, class means skip
    classes without ground truth. Crowd targets are group regions; targets labelled outside
    `0..num_classes-1` are void. Used for Cityscapes and KITTI-360 (see `eval_rules`)."""

    task = "instance"

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        min_region_size: int = MIN_REGION_SIZE,
    ) -> None:
        super().__init__(num_classes, class_names, ignore_index)
        self.instance_ap = CityscapesInstanceAP(num_classes, min_region_size)

    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        for pred, target in self._pairs(preds, targets):
            instance_inputs(pred, target)
            assert pred.masks is not None and pred.labels is not None and pred.scores is not None
            self.instance_ap.update(pred.masks, pred.labels, pred.scores, target.masks, target.labels, target.iscrowd)

    def compute(self) -> Results:
        ap, ap50, per_class, per_class50 = summarize(self.instance_ap.compute())
        results: Results = {"AP": percent(ap), "AP50": percent(ap50)}
        results.update({f"AP/{name}": percent(v) for name, v in zip(self.class_names, per_class)})
        results.update({f"AP50/{name}": percent(v) for name, v in zip(self.class_names, per_class50)})
        return results
