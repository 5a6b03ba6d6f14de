"""From the profiler's profile to a plan (roles from the metrics or from the configuration), and into TensorBoard."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.figure import Figure

from fusionseg.callbacks.tensorboard import profile_tag, tensorboard_writer
from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import EDGE_TASK, FusionPlan
from fusionseg.profiling import EXTRA_METRICS, Profile, plan_fusion
from fusionseg.visualize import profile_figure


# The metrics the plan text shows (those a profile recorded): structure, and every stride score a plan may use.
REPORTED = ("sc", "ef", "ef_cc", *EXTRA_METRICS)


def choose_plan(profile: Profile, names: Mapping[str, str], task: str, roles: str = "auto",
                plan_metric: str = "ef") -> FusionPlan:
    """`plan_fusion` over the profiles of the configured `names` (`{"master": ..., "aux": ...}`).

    `roles="auto"`: the metrics choose master and aux; when they make the configured aux the master, one
    log line says so and `scores["roles"]` records it (the module swaps the two when the plan is set).
    `roles="config"`: the configured roles stay; a warning says when the metrics rank them the other way
    round, and the injection stride is still the aux's peak (`plan_metric` for structure-led tasks, SC for
    `edge`).
    """
    configured = (names["master"], names["aux"])
    if roles == "auto":
        plan = plan_fusion(profile, task, plan_metric=plan_metric)
        if plan.master != configured[0]:
            rank_zero_info(
                f"MetricProfiler: the metrics make {plan.master!r} the master and {plan.aux!r} the auxiliary "
                f"({plan.scores['rule']}), the other way round from the configuration; swapping the roles "
                "(MetricProfiler(roles='config') keeps the configured ones)"
            )
            return FusionPlan(plan.master, plan.aux, plan.strides, plan.task,
                              {**plan.scores, "roles": "from the metrics (the configured roles were swapped)"})
        return FusionPlan(plan.master, plan.aux, plan.strides, plan.task, {**plan.scores, "roles": "from the metrics"})
    plan = plan_fusion(profile, task, plan_metric=plan_metric, roles=configured)
    suggested = plan.scores["metric_roles"]
    if suggested["master"] != configured[0]:
        metric = "SC" if task == EDGE_TASK else plan_metric.upper()
        rank_zero_warn(
            f"MetricProfiler: the metrics rank {suggested['master']!r} as the master for task {task!r} "
            f"({plan.scores['rule']}), but roles='config' keeps {configured[0]!r} the master. Injecting "
            f"{configured[1]!r} at its {metric} peak, stride {plan.strides[0]}. roles='auto' follows the metrics."
        )
        return FusionPlan(plan.master, plan.aux, plan.strides, plan.task,
                          {**plan.scores, "roles": "configured (the metrics suggest swapping master and aux)"})
    return FusionPlan(plan.master, plan.aux, plan.strides, plan.task, {**plan.scores, "roles": "configured"})


def plan_markdown(plan: FusionPlan, profile: Profile, from_cache: Mapping[str, bool]) -> str:
    """The plan, the profile table and every score behind the choice, for TensorBoard's text tab."""
    cache = ", ".join(f"{role}: {'cache' if hit else 'computed'}" for role, hit in from_cache.items())
    table = "\n".join("    " + line for line in profile.table(REPORTED).splitlines())
    scores = "\n".join("    " + line for line in json.dumps(plan.scores, indent=2, default=float).splitlines())
    broken = "".join(f"\n\n**{line}**" for line in profile.nonfinite_report())
    return (f"**{plan.summary()}** (roles: {plan.scores.get('roles', 'given')})\n\nProfiles ({cache}):\n\n"
            f"{table}{broken}\n\nScores behind the plan:\n\n{scores}\n")


def figure_to_array(figure: Figure) -> np.ndarray:
    """`(H, W, 3)` uint8 rendering of a matplotlib figure (Agg canvas, no pyplot)."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_profiles(trainer: Trainer, profile: Profile, plan: FusionPlan, from_cache: Mapping[str, bool]) -> None:
    """Scalars `profile/<metric>/<role>/os<s>` (roles as planned), the text `fusion/plan` and the image
    `fusion/profile`."""
    writer = tensorboard_writer(trainer)
    if writer is None:
        return
    step = trainer.global_step
    for role, encoder in (("master", plan.master), ("aux", plan.aux)):
        for stride in profile.strides(encoder):
            for metric in profile.recorded((*METRIC_NAMES, *EXTRA_METRICS)):
                writer.add_scalar(profile_tag(metric, role, stride), profile.mean(encoder, stride, metric), step)
    writer.add_text("fusion/plan", plan_markdown(plan, profile, from_cache), step)
    writer.add_image("fusion/profile", figure_to_array(profile_figure(profile, plan)), step, dataformats="HWC")
    writer.flush()
