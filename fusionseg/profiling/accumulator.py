"""`ProfileAccumulator`: one encoder's per-image measurements, batch by batch, gathered across processes.

A torchmetrics `Metric` with one list state per stride and field, each reduced by concatenation
(`dist_reduce_fx="cat"`), so `compute()` returns the values of every process's images under DDP
without a hand-written gather. `fusionseg profile` (`profile_encoders`) and the MetricProfiler
callback both measure through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from fusionseg.profiling.measure import fields, per_image_metrics

# Per-image values of one encoder: {stride: {field: (N,) float32 CPU tensor}}.
PerImage = dict[int, dict[str, Tensor]]


def _state(stride: int, name: str) -> str:
    return f"os{stride}_{name}"


class ProfileAccumulator(Metric):
    """Per-image metrics of one encoder's pyramid at `strides`, accumulated over batches.

    `update(feats, images, image_sizes, order)` measures a batch (on each image's unpadded part);
    `order` gives each image's position in the profiled set (default: in update order), so the
    gathered values come back in one order whatever process measured them. `compute()` returns
    `{stride: {field: (N,) float32 CPU tensor}}` of all images of all processes.

    >>> acc = ProfileAccumulator(strides=(8, 16))
    >>> acc.update({8: torch.rand(2, 4, 8, 8), 16: torch.rand(2, 4, 4, 4)}, torch.rand(2, 3, 64, 64))
    >>> acc.compute()[8]["sc"].shape
    torch.Size([2])
    """

    full_state_update = False

    def __init__(self, strides: Sequence[int], seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not strides:
            raise ValueError("ProfileAccumulator needs at least one stride")
        self.strides = tuple(sorted(int(s) for s in strides))
        self.fields = fields()
        self.seed = seed
        self._updated_images = 0
        for s in self.strides:
            for name in self.fields:
                self.add_state(_state(s, name), default=[], dist_reduce_fx="cat")
        self.add_state("order", default=[], dist_reduce_fx="cat")

    def update(self, feats: dict[int, Tensor], images: Tensor, image_sizes: Sequence[tuple[int, int]] | None = None,
               order: Sequence[int] | Tensor | None = None) -> None:
        missing = [s for s in self.strides if s not in feats]
        if missing:
            raise ValueError(f"features at strides {sorted(feats)} lack the profiled strides {missing}")
        values = per_image_metrics({s: feats[s] for s in self.strides}, images, image_sizes, seed=self.seed)
        batch = images.shape[0]
        if order is None:
            order = range(self._updated_images, self._updated_images + batch)
        order = torch.as_tensor(list(order) if not isinstance(order, Tensor) else order, dtype=torch.float32)
        if order.numel() != batch:
            raise ValueError(f"order has {order.numel()} entries for a batch of {batch} images")
        self._updated_images += batch
        for s in self.strides:
            for name in self.fields:
                getattr(self, _state(s, name)).append(values[s][name].detach().float().reshape(-1))
        self.order.append(order.to(images.device))

    def compute(self) -> PerImage:
        order = dim_zero_cat(self.order) if not isinstance(self.order, list) or self.order else torch.empty(0)
        if order.numel() == 0:
            raise ValueError("no images were measured: nothing to profile")
        index = torch.argsort(order.cpu(), stable=True)
        return {s: {name: dim_zero_cat(getattr(self, _state(s, name))).cpu()[index] for name in self.fields}
                for s in self.strides}

    def reset(self) -> None:
        super().reset()
        self._updated_images = 0
