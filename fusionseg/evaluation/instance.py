"""Instance segmentation: COCO mask AP through torchmetrics' MeanAveragePrecision (pycocotools underneath)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torchmetrics.detection import MeanAveragePrecision

from fusionseg.evaluation.base import Results, SegEvaluator, check_size, percent
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget

_SUMMARY = {
    "AP": "map", "AP50": "map_50", "AP75": "map_75", "APs": "map_small", "APm": "map_medium", "APl": "map_large"
}


class InstanceEvaluator(SegEvaluator):
    """`AP`, `AP50`, `AP75`, `APs`, `APm`, `APl` and `AP/<class>` (COCOeval, iou_type="segm").

    Crowd targets (`SegTarget.iscrowd`) are passed as COCO crowd annotations: detections matching them are
    neither true nor false positives. Areas for the small/medium/large split are mask areas. Classes without
    ground truth get NaN per-class AP.
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
        # COCOeval's own float64 thresholds: torchmetrics' defaults come from a float32 linspace, which lifts
        # e.g. 0.75 to 0.7500000119 and turns exact-threshold matches into misses.
        self.mask_ap = MeanAveragePrecision(
            iou_type="segm",
            iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
            rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
            max_detection_thresholds=[1, 10, max_detections],
            extended_summary=True,
        )

    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        detections, truths = [], []
        for pred, target in self._pairs(preds, targets):
            if pred.masks is None or pred.labels is None or pred.scores is None:
                raise ValueError("instance evaluation needs SegPrediction.masks, .labels and .scores")
            check_size(pred.masks, target.masks.shape[-2:], "masks")
            detections.append(
                {"masks": pred.masks.bool().cpu(), "labels": pred.labels.long().cpu(),
                 "scores": pred.scores.float().cpu()}
            )
            truths.append(
                {"masks": target.masks.bool().cpu(), "labels": target.labels.long().cpu(),
                 "iscrowd": target.iscrowd.long().cpu()}
            )
        # torchmetrics encodes masks as RLE right away, so nothing image-sized stays on the device.
        self.mask_ap.update(detections, truths)

    def compute(self) -> Results:
        raw = self.mask_ap.compute()
        results: Results = {k: percent(raw[n]) if raw[n] >= 0 else float("nan") for k, n in _SUMMARY.items()}
        per_class = {i: float("nan") for i in range(self.num_classes)}
        if "precision" in raw:
            # precision: (iou thresholds, recall thresholds, classes, area ranges, max detections)
            precision = raw["precision"][:, :, :, 0, -1]
            for k, class_id in enumerate(raw["classes"].flatten().tolist()):
                values = precision[:, :, k]
                values = values[values > -1]
                if values.numel() and 0 <= class_id < self.num_classes:
                    per_class[class_id] = percent(values.mean())
        results.update({f"AP/{self.class_names[i]}": v for i, v in per_class.items()})
        return results

