"""Metric profiles of encoders over images, and the fusion plan made from them: one pipeline.

`measure_pyramid` measures one feature pyramid per image (the ten metrics of
`fusionseg.metrics.METRIC_NAMES`, the map size, non-finite maps); `ProfileAccumulator` (a
torchmetrics `Metric`) collects those values batch by batch and gathers them across processes;
`Profile` holds their mean and std per encoder and stride; `profile_encoders` runs encoders over
images (the `fusionseg profile` command); `plan_fusion` turns a profile into a `FusionPlan`
following the rules of docs/spec `metrics.md` ("The fusion plan"), scoring strides with a
`plan_metric` from `PLAN_METRICS`. The MetricProfiler callback uses the same parts inside `fit`.
"""

from fusionseg.profiling.accumulator import PerImage, ProfileAccumulator
from fusionseg.profiling.measure import EXTRA_METRICS, NONFINITE, measure_pyramid, per_image_metrics
from fusionseg.profiling.profile import PROFILE_FORMAT, PROFILE_VERSION, MetricStat, Profile, Values
from fusionseg.profiling.rules import (
    DEFAULT_PLAN_METRIC,
    MIN_MAP_SIDE,
    PLAN_METRICS,
    plan_fusion,
    profile_field,
    usable_strides,
)
from fusionseg.profiling.run import profile_encoders

__all__ = [
    "DEFAULT_PLAN_METRIC",
    "EXTRA_METRICS",
    "MIN_MAP_SIDE",
    "NONFINITE",
    "PLAN_METRICS",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "MetricStat",
    "PerImage",
    "Profile",
    "ProfileAccumulator",
    "Values",
    "measure_pyramid",
    "per_image_metrics",
    "plan_fusion",
    "profile_encoders",
    "profile_field",
    "usable_strides",
]
