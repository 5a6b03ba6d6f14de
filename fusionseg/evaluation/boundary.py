"""Boundary IoU (Cheng et al., CVPR 2021) for semantic segmentation, accumulated per class as a torchmetrics Metric.

A mask's boundary region is the part of the mask within `d` pixels of its contour, the image border
included, `d = max(1, round(dilation_ratio * image diagonal))` (ratio 0.02, as in the paper's code).
Per class, Boundary IoU = |G_d ∩ P_d| / |G_d ∪ P_d| summed over the dataset; pixels whose ground truth
is `ignore_index` are left out of both regions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


def _window_any(x: Tensor, radius: int, dim: int) -> Tensor:
    """For bool `x`, whether any element within `radius` along `dim` is True; outside the tensor counts as True."""
    n = x.shape[dim]
    pad_shape = list(x.shape)
    pad_shape[dim] = radius
    pad = torch.ones(pad_shape, dtype=torch.bool, device=x.device)
    y = torch.cat([pad, x, pad], dim=dim)
    length, span = 2 * radius + 1, 1
    # Doubling: after each step y[i] covers 2x as many elements, so a window costs O(log radius) passes.
    while span * 2 <= length:
        y = y.narrow(dim, 0, y.shape[dim] - span) | y.narrow(dim, span, y.shape[dim] - span)
        span *= 2
    return y.narrow(dim, 0, n) | y.narrow(dim, length - span, n)


def mask_boundary(masks: Tensor, dilation: int) -> Tensor:
    """Inner boundary regions of `(..., H, W)` bool masks: pixels of the mask within `dilation` of its outside."""
    outside = ~masks
    near_outside = _window_any(_window_any(outside, dilation, -1), dilation, -2)
    return masks & near_outside


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


class BoundaryIoU(Metric):
    """Per-class boundary intersection and union over a dataset; `compute()` returns `(intersection, union)`."""

    full_state_update = False
    intersection: Tensor
    union: Tensor

    def __init__(self, num_classes: int, ignore_index: int = 255, dilation_ratio: float = 0.02, chunk: int = 8):
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.dilation_ratio, self.chunk = dilation_ratio, chunk
        self.add_state("intersection", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """`pred`, `target`: `(H, W)` class maps of one image."""
        valid = target != self.ignore_index
        dilation = boundary_dilation(*target.shape[-2:], self.dilation_ratio)
        present = torch.cat([pred[valid], target[valid]]).unique()
        present = present[(present >= 0) & (present < self.num_classes)]
        for classes in present.split(self.chunk):
            ids = classes[:, None, None]
            gt = mask_boundary(target[None] == ids, dilation) & valid
            pr = mask_boundary((pred[None] == ids) & valid, dilation) & valid
            self.intersection[classes] += (gt & pr).flatten(1).sum(1).double()
            self.union[classes] += (gt | pr).flatten(1).sum(1).double()

    def compute(self) -> tuple[Tensor, Tensor]:
        return self.intersection, self.union
