"""From the profiler's profile to a plan (roles from the metrics or from the configuration), and its report:
printed before the first step, saved as files under `<default_root_dir>/profile/`, and sent to every logger
(the text `fusion/plan` with the SC/EF table and the reasons, the figure `fusion/profile`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.figure import Figure

from fusionseg.callbacks.tensorboard import flush, log_image, log_text
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


def _ranked(values: Mapping[str, float], digits: int) -> str:
    return ", ".join(f"{k} {float(v):.{digits}f}" for k, v in sorted(values.items(), key=lambda kv: -float(kv[1])))


def left_out(plan: FusionPlan, profile: Profile) -> dict[int, str]:
    """Strides the plan did not use, with the reason (`OS 32: maps 4 px < 16 px`)."""
    excluded = sorted({int(x) for v in (plan.scores.get("excluded_strides") or {}).values() for x in v})
    minimum = plan.scores.get("min_map_side", "?")
    out = {}
    for stride in excluded:
        sides = [side for e in profile.encoders if stride in profile.strides(e)
                 and (side := profile.map_side(e, stride)) is not None]
        out[stride] = f"maps {round(min(sides))} px < {minimum} px" if sides else f"maps < {minimum} px"
    return out


def explain_plan(plan: FusionPlan, profile: Profile) -> list[str]:
    """Why the plan is what it is, in a few lines: the rule, the numbers behind the roles and the stride,
    and the strides left out."""
    scores = plan.scores
    if plan.aux is None:
        return [f"{plan.master} alone: no auxiliary encoder"]
    metric = str(scores.get("plan_metric", "ef"))
    aux_metric = "sc" if plan.task == EDGE_TASK else metric
    lines = [f"rule: {scores['rule']}"] if "rule" in scores else []
    if "sc_mean" in scores:
        lines.append(f"mean SC over the used strides: {_ranked(scores['sc_mean'], 3)}")
    peaks, where = scores.get(f"{metric}_peak") or {}, scores.get(f"{metric}_peak_stride") or {}
    if peaks:
        lines.append(f"peak {metric.upper()}: " + ", ".join(
            f"{e} {float(v):.2f} (OS {where.get(e, '?')})" for e, v in sorted(peaks.items(), key=lambda kv: -kv[1])))
    curve = scores.get(f"{aux_metric}_aux") or {}
    if curve:
        lines.append(f"{aux_metric.upper()} of the aux ({plan.aux}) per used stride: "
                     + ", ".join(f"OS {k} {float(v):.2f}" for k, v in curve.items())
                     + f" -> injected at OS {', '.join(str(s) for s in plan.strides)}")
    excluded = left_out(plan, profile)
    if excluded:
        lines.append("not used: " + "; ".join(f"OS {s} ({why})" for s, why in excluded.items())
                     + " - too small for SC and EF to mean anything")
    if scores.get("roles"):
        lines.append(f"roles: {scores['roles']}")
    return lines


def _shown_metrics(plan: FusionPlan, profile: Profile) -> list[str]:
    return profile.recorded(list(dict.fromkeys(("sc", "ef", str(plan.scores.get("plan_metric", "ef"))))))


def _sources(from_cache: Mapping[str, bool]) -> str:
    if all(from_cache.values()):
        return "profiles read from the cache"
    if not any(from_cache.values()):
        return "profiles measured now"
    return ", ".join(f"{role} {'read from the cache' if hit else 'measured now'}" for role, hit in from_cache.items())


def plan_report(plan: FusionPlan, profile: Profile, from_cache: Mapping[str, bool]) -> str:
    """What `fit` prints before the first step: the plan, why, and the SC/EF table."""
    source = _sources(from_cache)
    images = "/".join(sorted({str(profile.num_images(e)) for e in profile.encoders}))
    excluded = left_out(plan, profile)
    note = f"; not used for the plan: {', '.join(f'OS {s}' for s in excluded)}" if excluded else ""
    lines = [f"Fusion plan: {plan.summary()}", *(f"  {line}" for line in explain_plan(plan, profile)), "",
             f"SC and EF per stride, mean ±std over {images} images ({source}{note}):",
             profile.table(_shown_metrics(plan, profile))]
    return "\n".join(lines)


def plan_markdown(plan: FusionPlan, profile: Profile, from_cache: Mapping[str, bool]) -> str:
    """The plan, why, the profile as a Markdown table (strides left out marked) and every score behind the
    choice, for TensorBoard's text tab."""
    cache = _sources(from_cache)
    role = {plan.master: "master (trainable)", plan.aux: "aux (frozen)"}
    excluded = left_out(plan, profile)
    strides = sorted({s for e in profile.encoders for s in profile.strides(e)})
    head = ["encoder", "role", "metric", *(f"OS {s}" + (" (not used)" if s in excluded else "") for s in strides)]
    rows = []
    for encoder in profile.encoders:
        for metric in profile.recorded(REPORTED):
            cells = [encoder, role.get(encoder, ""), metric.upper()]
            for s in strides:
                if s not in profile.strides(encoder):
                    cells.append("-")
                    continue
                text = f"{profile.mean(encoder, s, metric):.3g} ± {profile.std(encoder, s, metric):.2g}"
                cells.append(f"*{text}*" if s in excluded else text)
            rows.append(cells)
    table = "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows])
    reasons = "\n".join(f"- {line}" for line in explain_plan(plan, profile))
    scores = "\n".join("    " + line for line in json.dumps(plan.scores, indent=2, default=float).splitlines())
    broken = "".join(f"\n\n**{line}**" for line in profile.nonfinite_report())
    return (f"**{plan.summary()}**\n\n{reasons}\n\n{table}\n\nMean ± std over images ({cache}); *italic*: "
            f"strides the plan did not use.{broken}\n\nScores behind the plan:\n\n{scores}\n")


def figure_to_array(figure: Figure) -> np.ndarray:
    """`(H, W, 3)` uint8 rendering of a matplotlib figure (Agg canvas, no pyplot)."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def profile_folder(trainer: Trainer) -> Path:
    """`<default_root_dir>/profile`: the run's profile.json, plan.json and profile.png, beside checkpoints/."""
    return Path(trainer.default_root_dir) / "profile"


def log_profiles(trainer: Trainer, profile: Profile, plan: FusionPlan, from_cache: Mapping[str, bool]) -> None:
    """The plan's report (global rank 0): printed, saved under `profile_folder`, and sent to every logger as
    the text `fusion/plan` and the image `fusion/profile` (TensorBoard, or files for loggers without
    pictures). The profile is one table, not a scalar chart per number: each would hold a single point."""
    if not trainer.is_global_zero:
        return
    print("\n" + plan_report(plan, profile, from_cache) + "\n", flush=True)
    figure = profile_figure(profile, plan)
    folder = profile_folder(trainer)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        profile.save_json(folder / "profile.json")
        plan.save(folder / "plan.json")
        figure.savefig(folder / "profile.png", dpi=120)
    except OSError as err:  # a read-only run folder loses the copies, not the run
        rank_zero_warn(f"MetricProfiler: could not write the profile files to {folder}: {err}")
    step = trainer.global_step
    log_text(trainer, "fusion/plan", plan_markdown(plan, profile, from_cache), step)
    # Stacked panels with larger text: TensorBoard shrinks every picture to a narrow card.
    log_image(trainer, "fusion/profile", figure_to_array(profile_figure(profile, plan, columns=1, font_size=14)), step)
    flush(trainer)
