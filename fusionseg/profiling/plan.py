"""`plan_fusion`: the master, the auxiliary and the injection stride from a profile (metrics spec rules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import PLAN_TASKS, FusionPlan
from fusionseg.profiling.profile import Profile

STRUCTURE_LED = ("semantic", "instance", "panoptic")


def _best(scores: Mapping[Any, float]) -> Any:
    """Key of the highest score; ties go to the smallest key (name, or stride)."""
    return min(scores, key=lambda k: (-scores[k], k))


def plan_fusion(
    profile: Profile, task: str = "semantic", structure_metric: str = "sc", edge_metric: str = "ef"
) -> FusionPlan:
    """Roles and injection stride from a profile of two or more encoders.

    Structure-led tasks (semantic, instance, panoptic): master = highest mean SC over its strides;
    aux = highest peak EF among the others; stride = argmax of the aux's EF. Task `edge`: master =
    highest peak EF; aux = highest mean SC among the others; stride = argmax of the aux's SC.
    Ties go to the encoder name first in sort order, then to the smaller stride. `scores` records
    every number used.
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
    structure = {e: sum(profile.curve(e, structure_metric).values()) / len(profile.strides(e))
                 for e in profile.encoders}
    peak_stride = {e: _best(profile.curve(e, edge_metric)) for e in profile.encoders}
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
    aux_curve = profile.curve(aux, aux_metric)
    stride = _best(aux_curve)
    scores = {
        "rule": rule,
        f"{structure_metric}_mean": structure,
        f"{edge_metric}_peak": edge_peak,
        f"{edge_metric}_peak_stride": peak_stride,
        f"{aux_metric}_aux": {str(s): v for s, v in aux_curve.items()},
        "num_images": {e: profile.num_images(e) for e in profile.encoders},
    }
    return FusionPlan(master=master, aux=aux, strides=(stride,), task=task, scores=scores)
