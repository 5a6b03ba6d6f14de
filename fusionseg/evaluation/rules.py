"""Which official protocol scores a dataset: COCO's (pycocotools) or Cityscapes' (cityscapesScripts).

Only instance segmentation differs between the two: COCO mask AP (`InstanceEvaluator`) or Cityscapes'
instance AP (`CityscapesInstanceEvaluator`). PQ (panopticapi = cityscapesScripts' panoptic evaluation)
and mIoU are the same computation under both.
"""

from __future__ import annotations

RULES = ("coco", "cityscapes")

# KITTI-360's official 2D instance evaluation (kitti360Scripts, evaluation/semantic_2d) is Cityscapes'
# script with its own classes and void list, and pixels weighted by the ground truth's confidence maps
# (see docs/reproduce.md: fusionseg counts every pixel as 1).
DATASET_RULES = {"cityscapes": "cityscapes", "kitti360": "cityscapes"}


def eval_rules(dataset: str) -> str:
    """The rules the official evaluation of `dataset` (a `DatasetInfo.name`) follows; "coco" by default."""
    return DATASET_RULES.get(dataset, "coco")


def check_rules(rules: str) -> str:
    if rules not in RULES:
        raise ValueError(f"unknown evaluation rules {rules!r}; choose one of {RULES}")
    return rules
