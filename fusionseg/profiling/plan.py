"""`plan_fusion`: the master, the auxiliary and the injection stride from a profile (metrics spec rules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import PLAN_TASKS, FusionPlan
from fusionseg.profiling.profile import Profile

STRUCTURE_LED = ("semantic", "instance", "panoptic")
# Feature maps shorter than this on a side are not scored for the plan: with a one-pixel border left
# out, EF of a 4x4 or 8x8 map is as high for white noise as for any encoder (see docs/method.md).
MIN_MAP_SIDE = 16


def _best(scores: Mapping[Any, float]) -> Any:
    """Key of the highest score; ties go to the smallest key (name, or stride)."""
    return min(scores, key=lambda k: (-scores[k], k))


def usable_strides(profile: Profile, encoder: str, min_map_side: int = MIN_MAP_SIDE) -> list[int]:
    """Strides whose recorded feature maps are at least `min_map_side` on a side (all when unrecorded)."""
    return [s for s in profile.strides(encoder)
            if (side := profile.map_side(encoder, s)) is None or side >= min_map_side]


def plan_fusion(
    profile: Profile,
    task: str = "semantic",
    structure_metric: str = "sc",
    edge_metric: str = "ef",
    min_map_side: int = MIN_MAP_SIDE,
    roles: tuple[str, str] | None = None,
) -> FusionPlan:
    """Roles and injection stride from a profile of two or more encoders.

    Structure-led tasks (semantic, instance, panoptic): master = highest mean SC over its strides;
    aux = highest peak EF among the others; stride = argmax of the aux's EF. Task `edge`: master =
    highest peak EF; aux = highest mean SC among the others; stride = argmax of the aux's SC.
    Ties go to the encoder name first in sort order, then to the smaller stride. `scores` records
    every number used. Strides whose feature maps were shorter than `min_map_side` (when the profile
    recorded map sizes) take no part, and `scores["excluded_strides"]` lists them.

    `roles=(master, aux)` fixes the roles (e.g. those a training config gives) and plans only the
    stride; `scores["metric_roles"]` then still says which roles the metrics alone would choose.
    """
    if task not in PLAN_TASKS:
        raise ValueError(f"task {task!r} is not one of {PLAN_TASKS}")
    for metric in (structure_metric, edge_metric):
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; metrics: {list(METRIC_NAMES)}")
    if len(profile.encoders) < 2:
        raise ValueError(
            f"a fusion plan needs profiles of at least two encoders, got {profile.encoders}; "
            "profile a structure-strong and an edge-strong encoder together"
        )
    usable = {e: usable_strides(profile, e, min_map_side) for e in profile.encoders}
    too_small = [e for e, strides in usable.items() if not strides]
    if too_small:
        sides = {s: profile.map_side(too_small[0], s) for s in profile.strides(too_small[0])}
        raise ValueError(
            f"every feature map of {too_small} is shorter than {min_map_side} px on a side ({sides}); "
            f"profile larger images (e.g. 512x512) or lower min_map_side"
        )

    def curve(encoder: str, metric: str) -> dict[int, float]:
        return {s: profile.mean(encoder, s, metric) for s in usable[encoder]}

    structure = {e: sum(curve(e, structure_metric).values()) / len(usable[e]) for e in profile.encoders}
    peak_stride = {e: _best(curve(e, edge_metric)) for e in profile.encoders}
    edge_peak = {e: profile.mean(e, peak_stride[e], edge_metric) for e in profile.encoders}
    if task in STRUCTURE_LED:
        master = _best(structure)
        aux = _best({e: v for e, v in edge_peak.items() if e != master})
        aux_metric = edge_metric
        rule = (f"structure-led: master = highest mean {structure_metric}; aux = highest peak {edge_metric}; "
                f"stride = argmax {edge_metric} of aux")
    else:
        master = _best(edge_peak)
        aux = _best({e: v for e, v in structure.items() if e != master})
        aux_metric = structure_metric
        rule = (f"edge-led: master = highest peak {edge_metric}; aux = highest mean {structure_metric}; "
                f"stride = argmax {structure_metric} of aux")
    metric_roles = {"master": master, "aux": aux}
    if roles is not None:
        unknown = [e for e in roles if e not in profile.encoders]
        if unknown or roles[0] == roles[1]:
            raise ValueError(f"roles {roles} must name two different profiled encoders of {profile.encoders}")
        master, aux = roles
    aux_curve = curve(aux, aux_metric)
    stride = _best(aux_curve)
    scores = {
        "rule": rule,
        f"{structure_metric}_mean": structure,
        f"{edge_metric}_peak": edge_peak,
        f"{edge_metric}_peak_stride": peak_stride,
        f"{aux_metric}_aux": {str(s): v for s, v in aux_curve.items()},
        "num_images": {e: profile.num_images(e) for e in profile.encoders},
        "metric_roles": metric_roles,
        "excluded_strides": {e: [s for s in profile.strides(e) if s not in usable[e]] for e in profile.encoders},
        "min_map_side": min_map_side,
    }
    return FusionPlan(master=master, aux=aux, strides=(stride,), task=task, scores=scores)
