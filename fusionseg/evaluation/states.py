"""Metric states kept as lists of flat, typed tensors: concatenated over updates and, under DDP, over ranks.

torchmetrics gathers list states with its "cat" reduction, each rank's tensors in rank order. One gap is
filled here, in one place: for a rank that saw no image torchmetrics gathers an empty *float32* tensor,
which does not match the int64 / uint8 tensors of the other ranks (gloo and NCCL fail on the mismatch).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors


class TypedListStates(Metric):
    """Base of metrics whose states are the `list_states` (name -> dtype), each a list of 1-D tensors."""

    list_states: ClassVar[dict[str, torch.dtype]] = {}
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self.list_states:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def append(self, **values: Tensor) -> None:
        """Add one image's values: a 1-D tensor per state, cast to the state's dtype and device."""
        for name, dtype in self.list_states.items():
            getattr(self, name).append(values[name].reshape(-1).to(device=self.device, dtype=dtype))

    def concatenated(self) -> dict[str, np.ndarray]:
        """Every state as one NumPy array (all images, all ranks after a sync)."""
        out = {}
        for name, dtype in self.list_states.items():
            states = getattr(self, name)
            empty = isinstance(states, list) and not states
            out[name] = (torch.zeros(0, dtype=dtype) if empty else dim_zero_cat(states).cpu().to(dtype)).numpy()
        return out

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        for name, dtype in self.list_states.items():
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                setattr(self, name, [torch.zeros(0, dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group)
