"""The planning rules: master, auxiliary and injection stride from a profile (`plan_fusion`, metrics spec rules).

The per-stride score the auxiliary is chosen and injected by is a choice, `plan_metric`: a name in
`PLAN_METRICS` (`ef`, the paper's, `ef_cc`, or `fcd`, the released code's). A new stride score joins with one entry there
(name -> `score(profile, encoder, stride)`), usually a field the profile records (see
`fusionseg.profiling.measure.EXTRA_METRICS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import EDGE_TASK, PLAN_TASKS, FusionPlan
from fusionseg.profiling.measure import EXTRA_METRICS
from fusionseg.profiling.profile import Profile

# Feature maps shorter than this on a side are not scored for the plan: with a one-pixel border left
# out, EF of a 4x4 or 8x8 map is as high for white noise as for any encoder (see docs/method.md).
MIN_MAP_SIDE = 16

PlanMetric = Callable[[Profile, str, int], float]


def profile_field(name: str) -> PlanMetric:
    """The plan metric that reads the profile's mean of field `name` at a stride."""

    def score(profile: Profile, encoder: str, stride: int) -> float:
        return profile.mean(encoder, stride, name)

    score.__name__ = f"mean_{name}"
    return score


# name -> per-stride score of an encoder in a profile. `ef` is the paper's Edge Fidelity; `fcd` (from
# EXTRA_METRICS) the score the paper's released code plans with.
PLAN_METRICS: dict[str, PlanMetric] = {
    "ef": profile_field("ef"),
    "ef_cc": profile_field("ef_cc"),
    **{name: profile_field(name) for name in EXTRA_METRICS},
}
DEFAULT_PLAN_METRIC = "ef"


def _best(scores: Mapping[Any, float]) -> Any:
    """Key of the highest score; ties go to the smallest key (name, or stride). NaN never wins."""
    return min(scores, key=lambda k: (-scores[k] if math.isfinite(scores[k]) else math.inf, k))


def usable_strides(profile: Profile, encoder: str, min_map_side: int = MIN_MAP_SIDE) -> list[int]:
    """Strides whose recorded feature maps are at least `min_map_side` on a side (all when unrecorded)."""
    return [s for s in profile.strides(encoder)
            if (side := profile.map_side(encoder, s)) is None or side >= min_map_side]


def _check_aux(profile: Profile, aux: str, metric: str, curve: Mapping[int, float]) -> None:
    """An auxiliary whose scores are all zero or non-finite has nothing to inject: refuse it."""
    if any(math.isfinite(v) and v != 0 for v in curve.values()):
        return
    broken = {s: n for s in curve if (n := profile.nonfinite(aux, s))}
    why = (f"; {sum(broken.values())} of its feature maps were NaN/Inf (per stride: {broken}, "
           f"of {profile.num_images(aux)} images)" if broken else "")
    raise ValueError(
        f"cannot plan with {aux!r} as the auxiliary: its {metric} scores at strides {sorted(curve)} are "
        f"{ {s: curve[s] for s in sorted(curve)} }, all zero or non-finite{why}. Check the encoder's weights and "
        "inputs (features that are not finite score 0), or profile another encoder"
    )


def plan_fusion(
    profile: Profile,
    task: str = "semantic",
    plan_metric: str = DEFAULT_PLAN_METRIC,
    structure_metric: str = "sc",
    min_map_side: int = MIN_MAP_SIDE,
    roles: tuple[str, str] | None = None,
) -> FusionPlan:
    """Roles and injection stride from a profile of two or more encoders.

    Structure-led tasks (semantic, instance, panoptic): master = highest mean SC over its strides;
    aux = highest peak `plan_metric` (default EF) among the others; stride = argmax of the aux's
    `plan_metric`. Task `edge`: master = highest peak `plan_metric`; aux = highest mean SC among the
    others; stride = argmax of the aux's SC. Ties go to the encoder name first in sort order, then to
    the smaller stride. The stride is one the master's pyramid has too. `scores` records every number
    used and `scores["plan_metric"]` the metric. Strides whose feature maps were shorter than
    `min_map_side` (when the profile recorded map sizes) take no part (`scores["excluded_strides"]`).

    `roles=(master, aux)` fixes the roles (e.g. those a training config gives) and plans only the
    stride; `scores["metric_roles"]` then still says which roles the metrics alone would choose.
    An auxiliary whose scores are all zero or non-finite (broken features) is refused with an error.
    """
    if task not in PLAN_TASKS:
        raise ValueError(f"task {task!r} is not one of {PLAN_TASKS}")
    if plan_metric not in PLAN_METRICS:
        raise ValueError(f"unknown plan_metric {plan_metric!r}; choose one of {sorted(PLAN_METRICS)}")
    if structure_metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {structure_metric!r}; metrics: {list(METRIC_NAMES)}")
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
    edge_score = PLAN_METRICS[plan_metric]

    def curve(encoder: str, metric: str, within: list[int] | None = None) -> dict[int, float]:
        strides = [s for s in usable[encoder] if within is None or s in within]
        if metric == plan_metric:
            return {s: float(edge_score(profile, encoder, s)) for s in strides}
        return {s: profile.mean(encoder, s, metric) for s in strides}

    structure = {e: sum(curve(e, structure_metric).values()) / len(usable[e]) for e in profile.encoders}
    edge_curves = {e: curve(e, plan_metric) for e in profile.encoders}
    peak_stride = {e: _best(c) for e, c in edge_curves.items()}
    edge_peak = {e: edge_curves[e][peak_stride[e]] for e in profile.encoders}
    if task != EDGE_TASK:
        master = _best(structure)
        aux = _best({e: v for e, v in edge_peak.items() if e != master})
        aux_metric = plan_metric
        rule = (f"structure-led: master = highest mean {structure_metric}; aux = highest peak {plan_metric}; "
                f"stride = argmax {plan_metric} of aux")
    else:
        master = _best(edge_peak)
        aux = _best({e: v for e, v in structure.items() if e != master})
        aux_metric = structure_metric
        rule = (f"edge-led: master = highest peak {plan_metric}; aux = highest mean {structure_metric}; "
                f"stride = argmax {structure_metric} of aux")
    metric_roles = {"master": master, "aux": aux}
    if roles is not None:
        unknown = [e for e in roles if e not in profile.encoders]
        if unknown or roles[0] == roles[1]:
            raise ValueError(f"roles {roles} must name two different profiled encoders of {profile.encoders}")
        master, aux = roles
    aux_curve = curve(aux, aux_metric, within=profile.strides(master))
    if not aux_curve:
        raise ValueError(f"{aux!r} and {master!r} share no usable stride to inject at")
    _check_aux(profile, aux, aux_metric, aux_curve)
    stride = _best(aux_curve)
    scores = {
        "rule": rule,
        "plan_metric": plan_metric,
        f"{structure_metric}_mean": structure,
        f"{plan_metric}_peak": edge_peak,
        f"{plan_metric}_peak_stride": peak_stride,
        f"{aux_metric}_aux": {str(s): v for s, v in aux_curve.items()},
        "num_images": {e: profile.num_images(e) for e in profile.encoders},
        "metric_roles": metric_roles,
        "excluded_strides": {e: [s for s in profile.strides(e) if s not in usable[e]] for e in profile.encoders},
        "min_map_side": min_map_side,
    }
    return FusionPlan(master=master, aux=aux, strides=(stride,), task=task, scores=scores)
