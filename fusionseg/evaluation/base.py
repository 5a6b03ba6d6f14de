"""The evaluator contract: an `nn.Module` of torchmetrics metrics (moves with the model, syncs under DDP)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import Tensor, nn
from torchmetrics import Metric

from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget

Results = dict[str, float | Tensor]


class SegEvaluator(nn.Module, ABC):
    """Accumulates predictions against targets (`update`), reports flat metrics in percent (`compute`).

    Predictions and targets are compared at the original image size. `reset()` starts over;
    `format_table(results)` renders a summary table in the paper's style and a per-class table.
    """

    task: str = ""

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None = None, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        names = tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(num_classes))
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for num_classes={num_classes}; give one name per class")
        self.num_classes, self.class_names, self.ignore_index = num_classes, names, ignore_index

    @abstractmethod
    def update(self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]) -> None:
        """Add one batch of predictions and their targets."""

    @abstractmethod
    def compute(self) -> Results:
        """Flat results over everything added since the last `reset()`, in percent."""

    def reset(self) -> None:
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()

    def format_table(self, results: Results) -> str:
        from fusionseg.evaluation.table import format_results

        return format_results(self.task, results, self.class_names)

    def _pairs(
        self, preds: Sequence[SegPrediction], targets: Sequence[SegTarget]
    ) -> list[tuple[SegPrediction, SegTarget]]:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets; give one prediction per image")
        return list(zip(preds, targets))


def check_size(pred: Tensor, target_size: tuple[int, ...], what: str) -> None:
    if tuple(pred.shape[-2:]) != tuple(target_size):
        raise ValueError(
            f"prediction {what} is {tuple(pred.shape[-2:])} but the target is {tuple(target_size)}: predictions "
            f"must be made at the original image size (SegBatch.orig_sizes)"
        )


def percent(value: Tensor | float) -> float:
    return float(value) * 100.0
