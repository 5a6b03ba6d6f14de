"""Evaluation equal to the official code: mIoU and Boundary IoU, mask AP (COCO's or Cityscapes' rules), PQ.

`build_evaluator(task, ..., rules=...)` returns a `SegEvaluator` (an `nn.Module`: it moves with the model and its
torchmetrics states sync under DDP) with `update(preds, targets)`, `compute()`, `reset()` and
`format_table(results)`. Metrics are in percent, as in the paper's tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from fusionseg.evaluation.base import Results, SegEvaluator
from fusionseg.evaluation.boundary import BoundaryIoU, mask_boundary
from fusionseg.evaluation.cityscapes_instance import CityscapesInstanceEvaluator
from fusionseg.evaluation.instance import InstanceEvaluator
from fusionseg.evaluation.panoptic import PanopticEvaluator
from fusionseg.evaluation.rules import RULES, check_rules, eval_rules
from fusionseg.evaluation.semantic import SemanticEvaluator
from fusionseg.structures import IGNORE_INDEX, TASKS

# The number each task is judged by (the paper's tables): the best checkpoint and the progress bar use it.
HEADLINE_METRIC = {"semantic": "mIoU", "instance": "AP", "panoptic": "PQ"}


def build_evaluator(
    task: str,
    num_classes: int,
    thing_ids: Sequence[int] = (),
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    rules: str = "coco",
) -> SegEvaluator:
    """The evaluator of `task`: semantic -> mIoU + boundary mIoU; instance -> mask AP; panoptic -> PQ (+ mIoU).

    `rules` ("coco" or "cityscapes", `eval_rules(info.name)` for a dataset) picks the instance AP:
    COCOeval's, or cityscapesScripts'. For instance segmentation every class is a thing (`thing_ids` is
    not used).
    """
    check_rules(rules)
    if task == "semantic":
        return SemanticEvaluator(num_classes, class_names, ignore_index)
    if task == "instance" and rules == "cityscapes":
        return CityscapesInstanceEvaluator(num_classes, class_names, ignore_index)
    if task == "instance":
        return InstanceEvaluator(num_classes, class_names, ignore_index)
    if task == "panoptic":
        return PanopticEvaluator(num_classes, thing_ids, class_names, ignore_index)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


__all__ = [
    "HEADLINE_METRIC",
    "RULES",
    "BoundaryIoU",
    "CityscapesInstanceEvaluator",
    "InstanceEvaluator",
    "PanopticEvaluator",
    "Results",
    "SegEvaluator",
    "SemanticEvaluator",
    "build_evaluator",
    "eval_rules",
    "mask_boundary",
]
