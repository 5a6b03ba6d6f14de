"""Every metric of every stride of a feature pyramid, in one call."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fusionseg.metrics.edges import edge_fidelity
from fusionseg.metrics.structure import structural_coherence

METRIC_NAMES = ("sc", "sfc", "scs", "ef", "ef_cc", "ec", "ec_cc", "nc", "fc", "sp")
# Not a metric: the shorter side of the feature map, recorded beside the metrics because EF is not
# informative on tiny maps (on 4x4 maps every encoder and white noise score alike).
MAP_SIDE = "map_side"


@torch.no_grad()
def feature_metrics(feat: Tensor, images: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """The ten metrics of `METRIC_NAMES` for one stride: float32 `(B,)` tensors, spec defaults."""
    values = {**structural_coherence(feat, seed=seed), **edge_fidelity(feat, images, seed=seed)}
    return {name: values[name] for name in METRIC_NAMES}


@torch.no_grad()
def pyramid_metrics(feats: Mapping[int, Tensor], images: Tensor, seed: int = 0) -> dict[int, dict[str, Tensor]]:
    """`{stride: {metric: (B,) tensor}}` for a `{stride: (B, C, h, w)}` pyramid of `(B, 3, H, W)` images in [0, 1].

    Besides the ten metrics, each stride carries `MAP_SIDE`: `min(h, w)` of its feature map, per image.
    """
    if not feats:
        raise ValueError("pyramid_metrics needs at least one stride of features, got an empty pyramid")
    out = {}
    for s, f in sorted(feats.items()):
        side = torch.full((f.shape[0],), float(min(f.shape[-2:])), dtype=torch.float32, device=f.device)
        out[int(s)] = {**feature_metrics(f, images, seed=seed), MAP_SIDE: side}
    return out
