"""The data that crosses rooms: dataset metadata, per-image targets, batches and predictions.

Datasets produce `SegTarget`s, the head trains on them and produces `SegPrediction`s, and
`fusionseg.evaluation` compares the two. One format serves semantic, instance and panoptic
segmentation: a target is a set of binary masks with a class each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

IGNORE_INDEX = 255
# The segmentation tasks a model trains and is evaluated for; a fusion plan may also be made for "edge".
TASKS = ("semantic", "instance", "panoptic")
# The strides of every encoder's pyramid and of the Mask2Former head's input.
STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class DatasetInfo:
    """Class names, colours and the thing/stuff split of a dataset.

    Class ids are contiguous, `0 .. num_classes - 1`; `IGNORE_INDEX` marks unlabeled pixels.
    """

    name: str
    class_names: tuple[str, ...]
    thing_classes: tuple[bool, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if len(self.thing_classes) != n or len(self.colors) != n:
            raise ValueError(
                f"DatasetInfo({self.name!r}): {n} class names, {len(self.thing_classes)} "
                f"thing flags and {len(self.colors)} colours; all three must have one entry per class"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.thing_classes) if t)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.thing_classes) if not t)


@dataclass
class SegTarget:
    """Ground truth of one image as binary masks with a class each.

    semantic: one mask per class present. instance: one mask per thing instance.
    panoptic: one mask per segment (things and stuff), non-overlapping.
    `iscrowd` segments are ignored by the loss and by mask AP (COCO's crowd regions).
    """

    masks: Tensor  # (N, H, W) bool
    labels: Tensor  # (N,) int64, in [0, num_classes)
    iscrowd: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))  # (N,) bool

    def __post_init__(self) -> None:
        if self.iscrowd.numel() == 0 and self.labels.numel() > 0:
            self.iscrowd = torch.zeros(self.labels.shape[0], dtype=torch.bool, device=self.labels.device)

    def semantic_map(self, ignore_index: int = IGNORE_INDEX) -> Tensor:
        """`(H, W)` int64 class map; pixels outside every (non-crowd) mask get `ignore_index`."""
        h, w = self.masks.shape[-2:]
        out = torch.full((h, w), ignore_index, dtype=torch.int64, device=self.masks.device)
        for mask, label, crowd in zip(self.masks, self.labels, self.iscrowd):
            if not crowd:
                out[mask] = label
        return out


@dataclass
class SegBatch:
    """A collated batch. Images are padded bottom/right to a common size; sizes say what is real.

    Training batches: target masks are at the padded image size (padding lies outside every mask).
    Evaluation batches: target masks are at `orig_sizes`, where predictions are made and compared.
    """

    images: Tensor  # (B, 3, H, W) float in [0, 1] (not normalized: each encoder normalizes itself)
    targets: list[SegTarget]
    image_sizes: list[tuple[int, int]]  # (h, w) of each image inside the padding
    orig_sizes: list[tuple[int, int]]  # (H, W) of each image as read from disk
    image_ids: list[str]


@dataclass
class SegPrediction:
    """The output of one image, at its original size.

    semantic: `semantic` is set (class per pixel) and `probs` optionally `(num_classes, H, W)`.
    instance: `masks`, `labels`, `scores` (masks may overlap).
    panoptic: `masks`, `labels`, `scores` (non-overlapping; uncovered pixels are void) and
    `semantic` (the class map the segments imply, `IGNORE_INDEX` on void).
    """

    semantic: Tensor | None = None  # (H, W) int64
    masks: Tensor | None = None  # (K, H, W) bool
    labels: Tensor | None = None  # (K,) int64
    scores: Tensor | None = None  # (K,) float
    probs: Tensor | None = None  # (num_classes, H, W) float, semantic only
