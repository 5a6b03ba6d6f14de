"""What the profiling measures of one feature pyramid, per image: the metrics, the map size, non-finite maps.

`measure_pyramid` is the one function every profiling path calls (`fusionseg profile`, the
MetricProfiler callback through `ProfileAccumulator`, and the TensorBoard visuals). Further
per-image stride scores join by one entry in `EXTRA_METRICS` (name -> `fn(feat, images) -> (B,)`);
the profile records them and `fusionseg.profiling.rules.PLAN_METRICS` can plan with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from fusionseg.metrics import MAP_SIDE, METRIC_NAMES, pyramid_metrics
from fusionseg.metrics.fcd import fcd

# Not a metric: 1.0 for an image whose feature map at that stride holds a NaN or an infinity (the
# metrics score such maps 0), so a profile can say how many images of an encoder were broken.
NONFINITE = "nonfinite"

StrideScore = Callable[[Tensor, Tensor], Tensor]
# Per-image stride scores beyond the ten metrics: `(B, C, h, w)` features and `(B, 3, H, W)` images
# in [0, 1] -> `(B,)`. Add an entry here and every profile records the score (and `plan_metric` may name it).
# `fcd`: the stride score of the paper's released code (docs/metrics.md), in [0, 100].
EXTRA_METRICS: dict[str, StrideScore] = {"fcd": fcd}


def fields() -> tuple[str, ...]:
    """Every per-image field a measured pyramid carries, in order."""
    return (*METRIC_NAMES, MAP_SIDE, NONFINITE, *EXTRA_METRICS)


@torch.no_grad()
def measure_pyramid(feats: Mapping[int, Tensor], images: Tensor, seed: int = 0, extras: bool = True
                    ) -> dict[int, dict[str, Tensor]]:
    """`{stride: {field: (B,) float32}}` of a `{stride: (B, C, h, w)}` pyramid of `(B, 3, H, W)` images in [0, 1].

    `extras=False` leaves out `EXTRA_METRICS` (e.g. for pictures that show only SC and EF)."""
    feats = {int(s): f.float() for s, f in feats.items()}
    out = pyramid_metrics(feats, images, seed=seed)
    for s, f in feats.items():
        out[s][NONFINITE] = (~torch.isfinite(f.flatten(1)).all(dim=1)).float()
        for name, score in (EXTRA_METRICS.items() if extras else ()):
            out[s][name] = score(f, images).float()
    return out


@torch.no_grad()
def per_image_metrics(feats: Mapping[int, Tensor], images: Tensor,
                      image_sizes: Sequence[tuple[int, int]] | None = None, seed: int = 0, extras: bool = True
                      ) -> dict[int, dict[str, Tensor]]:
    """`measure_pyramid` on each image's unpadded part (`image_sizes[i]` = `(h, w)` inside the padding)."""
    full = tuple(images.shape[-2:])
    if image_sizes is None or all(tuple(size) == full for size in image_sizes):
        return measure_pyramid(feats, images, seed=seed, extras=extras)
    parts: list[dict[int, dict[str, Tensor]]] = []
    for i, (h, w) in enumerate(image_sizes):
        crop = {s: f[i : i + 1, :, : math.ceil(h / s), : math.ceil(w / s)] for s, f in feats.items()}
        parts.append(measure_pyramid(crop, images[i : i + 1, :, :h, :w], seed=seed, extras=extras))
    return {s: {name: torch.cat([p[s][name] for p in parts]) for name in parts[0][s]} for s in parts[0]}
