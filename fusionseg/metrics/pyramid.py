"""Every metric of every stride of a feature pyramid, in one call."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fusionseg.metrics.edges import edge_fidelity
from fusionseg.metrics.structure import structural_coherence

METRIC_NAMES = ("sc", "sfc", "scs", "ef", "ef_cc", "ec", "ec_cc", "nc", "fc", "sp")


@torch.no_grad()
def feature_metrics(feat: Tensor, images: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """The ten metrics of `METRIC_NAMES` for one stride: float32 `(B,)` tensors, spec defaults."""
    values = {**structural_coherence(feat, seed=seed), **edge_fidelity(feat, images, seed=seed)}
    return {name: values[name] for name in METRIC_NAMES}


@torch.no_grad()
def pyramid_metrics(feats: Mapping[int, Tensor], images: Tensor, seed: int = 0) -> dict[int, dict[str, Tensor]]:
    """`{stride: {metric: (B,) tensor}}` for a `{stride: (B, C, h, w)}` pyramid of `(B, 3, H, W)` images in [0, 1]."""
    if not feats:
        raise ValueError("pyramid_metrics needs at least one stride of features, got an empty pyramid")
    return {int(s): feature_metrics(f, images, seed=seed) for s, f in sorted(feats.items())}
