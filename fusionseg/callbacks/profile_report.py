"""From the profiler's per-image values to a plan, and the plan and profiles into TensorBoard."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure

from fusionseg.callbacks.profile_cache import PerImageValues
from fusionseg.callbacks.tensorboard import profile_tag, tensorboard_writer
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import FusionPlan
from fusionseg.profiling import STRUCTURE_LED, Profile, plan_fusion
from fusionseg.visualize import profile_figure


def encoder_names(master: EncoderSpec, aux: EncoderSpec | None) -> dict[str, str]:
    """How the profile and the plan name each role: the registry name, or the full spec when both share it."""
    if aux is None:
        return {"master": master.name}
    if str(master) == str(aux):
        raise ValueError(f"master and aux are the same encoder ({master}); fusing an encoder with itself adds nothing")
    if master.name != aux.name:
        return {"master": master.name, "aux": aux.name}
    return {"master": str(master), "aux": str(aux)}


def build_profile(names: Mapping[str, str], values: Mapping[str, PerImageValues]) -> Profile:
    """The profile of each role's encoder over the strides both pyramids share (injection happens there)."""
    common = set.intersection(*(set(v) for v in values.values()))
    if not common:
        raise ValueError(f"the encoders share no stride: {({r: sorted(v) for r, v in values.items()})}")
    return Profile.from_values({names[r]: {s: v[s] for s in sorted(common)} for r, v in values.items()})


def make_plan(master: EncoderSpec, aux: EncoderSpec, values: Mapping[str, PerImageValues], task: str) -> FusionPlan:
    """`plan_fusion` over the two profiles, keeping the configured roles.

    The configuration says which encoder trains (master) and which stays frozen (aux). When the
    metrics rank them the other way round the roles stay and a warning says so; the injection
    stride is still the aux's peak (EF for structure-led tasks, SC for `edge`).
    """
    names = encoder_names(master, aux)
    profile = build_profile(names, values)
    plan = plan_fusion(profile, task, roles=(names["master"], names["aux"]))
    suggested = plan.scores["metric_roles"]
    if suggested["master"] != names["master"]:
        metric = "EF" if task in STRUCTURE_LED else "SC"
        rank_zero_warn(
            f"MetricProfiler: the metrics rank {suggested['master']!r} as the master for task {task!r} "
            f"({plan.scores['rule']}), but the configuration makes {names['master']!r} the master. Keeping the "
            f"configured roles and injecting {names['aux']!r} at its {metric} peak, stride {plan.strides[0]}. "
            "Swap model.master and model.aux to follow the metrics."
        )
        plan = FusionPlan(plan.master, plan.aux, plan.strides, plan.task,
                          {**plan.scores, "roles": "configured (the metrics suggest swapping master and aux)"})
    return plan


def plan_markdown(plan: FusionPlan, profile: Profile, from_cache: Mapping[str, bool]) -> str:
    """The plan, the profile table and every score behind the choice, for TensorBoard's text tab."""
    cache = ", ".join(f"{role}: {'cache' if hit else 'computed'}" for role, hit in from_cache.items())
    table = "\n".join("    " + line for line in profile.table(("sc", "ef", "ef_cc")).splitlines())
    scores = "\n".join("    " + line for line in json.dumps(plan.scores, indent=2, default=float).splitlines())
    return (f"**{plan.summary()}**\n\nProfiles ({cache}):\n\n{table}\n\nScores behind the plan:\n\n{scores}\n")


def figure_to_array(figure: Figure) -> np.ndarray:
    """`(H, W, 3)` uint8 rendering of a matplotlib figure (Agg canvas, no pyplot)."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_profiles(trainer: Trainer, pl_module: LightningModule, values: Mapping[str, PerImageValues],
                 plan: FusionPlan, from_cache: Mapping[str, bool]) -> None:
    """Scalars `profile/<metric>/<role>/os<s>`, the text `fusion/plan` and the image `fusion/profile`."""
    writer = tensorboard_writer(trainer)
    if writer is None:
        return
    step = trainer.global_step
    for role, per_stride in values.items():
        for stride, metrics in per_stride.items():
            for metric in METRIC_NAMES:
                vals = metrics[metric]
                writer.add_scalar(profile_tag(metric, role, stride), float(np.mean(vals)), step)
    names = encoder_names(pl_module.master_spec, pl_module.aux_spec)
    profile = build_profile(names, values)
    writer.add_text("fusion/plan", plan_markdown(plan, profile, from_cache), step)
    writer.add_image("fusion/profile", figure_to_array(profile_figure(profile, plan)), step, dataformats="HWC")
    writer.flush()
