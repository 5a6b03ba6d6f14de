"""Instance segmentation under COCO's rules: mask AP from pycocotools' COCOeval on every image."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fusionseg.evaluation.base import Results, SegEvaluator, check_size, percent
from fusionseg.evaluation.coco_ap import STATS_INDEX, CocoMaskAP
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget


def instance_inputs(pred: SegPrediction, target: SegTarget) -> None:
    """Check that `pred` is an instance prediction at the target's size."""
    if pred.masks is None or pred.labels is None or pred.scores is None:
        raise ValueError("instance evaluation needs SegPrediction.masks, .labels and .scores")
    check_size(pred.masks, target.masks.shape[-2:], "masks")


class InstanceEvaluator(SegEvaluator):
    """`AP`, `AP50`, `AP75`, `APs`, `APm`, `APl` and `AP/<class>`: COCOeval (iouType "segm") on all images.

    Images without ground truth count (their detections are false positives), crowd targets
    (`SegTarget.iscrowd`) are COCO crowd annotations, and at most `max_detections` per image are scored.
    Areas for the small/medium/large split are mask areas. Ground-truth segments labelled outside
    `0..num_classes-1` (void regions, see the Cityscapes rules) and detections of such labels are left
    out, as COCOeval leaves out categories it does not know. Classes without ground truth get NaN.
    """

    task = "instance"

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        max_detections: int = 100,
    ) -> None:
        super().__init__(num_classes, class_names, ignore_index)
        self.mask_ap = CocoMaskAP(num_classes, max_detections)

    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        for pred, target in self._pairs(preds, targets):
            instance_inputs(pred, target)
            assert pred.masks is not None and pred.labels is not None and pred.scores is not None
            known = (target.labels >= 0) & (target.labels < self.num_classes)
            scored = (pred.labels >= 0) & (pred.labels < self.num_classes)
            self.mask_ap.update(
                pred.masks[scored], pred.labels[scored], pred.scores[scored],
                target.masks[known], target.labels[known], target.iscrowd[known],
            )

    def compute(self) -> Results:
        stats, per_class = self.mask_ap.compute()
        results: Results = {k: percent(stats[i]) if stats[i] >= 0 else math.nan for k, i in STATS_INDEX.items()}
        results.update({f"AP/{name}": percent(v) for name, v in zip(self.class_names, per_class)})
        return results
