"""Metric profiles of encoders over images, and the fusion plan made from them.

A `Profile` holds, per encoder and per stride, the mean and population std over images of the
ten metrics of `fusionseg.metrics.METRIC_NAMES`, and the number of images. `ProfileBuilder`
collects per-image values batch by batch (they can be gathered from several processes and added
together); `profile_encoders` runs encoders over images; `plan_fusion` turns a profile into a
`FusionPlan` following the rules of docs/spec `metrics.md` ("The fusion plan").
"""

from fusionseg.profiling.plan import MIN_MAP_SIDE, STRUCTURE_LED, plan_fusion, usable_strides
from fusionseg.profiling.profile import PROFILE_FORMAT, PROFILE_VERSION, MetricStat, Profile, ProfileBuilder, Values
from fusionseg.profiling.run import profile_encoders

__all__ = [
    "MIN_MAP_SIDE",
    "usable_strides",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "STRUCTURE_LED",
    "MetricStat",
    "Profile",
    "ProfileBuilder",
    "Values",
    "plan_fusion",
    "profile_encoders",
]
