"""Semantic segmentation: mIoU from a confusion matrix (torchmetrics) and Boundary IoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from fusionseg.evaluation.base import Results, SegEvaluator, check_size, percent
from fusionseg.evaluation.boundary import BoundaryIoU
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget


def iou_from_confusion(confusion: Tensor, num_classes: int) -> Tensor:
    """Per-class IoU from a `(C + 1, C + 1)` confusion matrix (rows: truth; the last column: void predictions).

    NaN for classes that appear neither in the truth nor in the predictions.
    """
    confusion = confusion.double()
    tp = confusion.diagonal()[:num_classes]
    union = confusion[:num_classes].sum(1) + confusion[:, :num_classes].sum(0) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


class SemanticEvaluator(SegEvaluator):
    """mIoU (and `IoU/<class>`), plus `boundary_mIoU` (and `boundary_IoU/<class>`) when `boundary=True`.

    Predicted values outside `0..num_classes-1` (e.g. void from panoptic inference) count as wrong.
    Classes absent from both truth and predictions are left out of the means.
    """

    task = "semantic"

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        boundary: bool = True,
        dilation_ratio: float = 0.02,
    ) -> None:
        super().__init__(num_classes, class_names, ignore_index)
        # One extra class collects predictions outside the label set (void).
        self.confusion = MulticlassConfusionMatrix(num_classes + 1, ignore_index=ignore_index, validate_args=False)
        self.boundary = BoundaryIoU(num_classes, ignore_index, dilation_ratio) if boundary else None

    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        device = self.confusion.confmat.device
        for pred, target in self._pairs(preds, targets):
            if pred.semantic is None:
                raise ValueError("semantic evaluation needs SegPrediction.semantic, a (H, W) class map")
            truth = target.semantic_map(self.ignore_index).to(device)
            check_size(pred.semantic, truth.shape, "semantic map")
            guess = pred.semantic.to(device=device, dtype=torch.long)
            guess = torch.where((guess >= 0) & (guess < self.num_classes), guess, self.num_classes)
            self.confusion.update(guess.flatten(), truth.flatten())
            if self.boundary is not None:
                self.boundary.update(guess, truth)

    def compute(self) -> Results:
        iou = iou_from_confusion(self.confusion.compute(), self.num_classes)
        results: Results = {"mIoU": percent(iou.nanmean())}
        results.update({f"IoU/{name}": percent(v) for name, v in zip(self.class_names, iou)})
        if self.boundary is not None:
            intersection, union = self.boundary.compute()
            biou = torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))
            results["boundary_mIoU"] = percent(biou.nanmean())
            results.update({f"boundary_IoU/{name}": percent(v) for name, v in zip(self.class_names, biou)})
        return results
