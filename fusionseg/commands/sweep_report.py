"""The report of `fusionseg sweep`: per plan the task's metrics over seeds, the gain over the master alone,
and for each plan metric whether its chosen stride is the best one and how well it ranks the strides.

`build_report` turns the runs' final validation metrics and the encoders' profile into one dict;
`write_report` writes it as `sweep.json`, `sweep.csv`, `sweep.md`, the figure `sweep.png` and
TensorBoard summaries in `tb/`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusionseg.plan import FusionPlan

# As fusionseg.evaluation.HEADLINE_METRIC (a test holds them equal); importing it would load torchmetrics.
HEADLINE = {"semantic": "mIoU", "instance": "AP", "panoptic": "PQ"}
BOUNDARY = "boundary_mIoU"  # logged by the semantic evaluator (fusionseg.evaluation.boundary)

Results = Mapping[str, Mapping[int, Mapping[str, float]]]  # plan -> seed -> metric -> value


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (0 for one value), min, max and count of `values` (None fields when empty)."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values)}


def difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """`a - b` of two spreads' means, with its standard error `sqrt(std_a^2/n_a + std_b^2/n_b)`."""
    if not a["n"] or not b["n"]:
        return {"mean": None, "se": None}
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return {"mean": a["mean"] - b["mean"], "se": se}


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get average ranks); None with fewer than 3 points or a constant side."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:  # no ranking on a constant side
        return None
    rho = spearmanr(x, y).statistic
    return None if rho is None or not math.isfinite(float(rho)) else float(rho)


def _best(scores: Mapping[int, float]) -> int | None:
    """The stride with the highest score; ties go to the smaller stride (the plan rule's tie-break)."""
    finite = {s: v for s, v in scores.items() if v is not None and math.isfinite(v)}
    return min(finite, key=lambda s: (-finite[s], s)) if finite else None


def summarize_plans(results: Results, plans: Mapping[str, FusionPlan | None], metrics: Sequence[str]
                    ) -> list[dict[str, Any]]:
    """One row per plan: strides, per-seed values and the spread of each metric, and the gain over the master alone."""
    rows = []
    for name, plan in plans.items():
        seeds = results.get(name, {})
        row: dict[str, Any] = {"plan": name, "strides": list(plan.strides) if plan else [],
                               "seeds": sorted(seeds)}
        for metric in metrics:
            values = [seeds[s][metric] for s in sorted(seeds) if metric in seeds[s]]
            row[metric] = {**spread(values), "values": values}
        rows.append(row)
    master = rows[0]
    for row in rows:
        row["gain"] = {m: difference(row[m], master[m]) for m in metrics}
    return rows


def aux_curves(profile_path: Path | None, aux_names: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """The auxiliary's profile: `{metric: {stride: mean}}` for the metrics the profile holds, map sides, notes."""
    if profile_path is None:
        return {"source": None, "curves": {}, "missing": list(metrics),
                "note": "no profile: the plan metrics' curves are missing (run `fusionseg profile --data CFG`)"}
    data = json.loads(Path(profile_path).read_text())
    encoders = data.get("encoders", {})
    label = next((n for n in aux_names if n in encoders), None)
    if label is None and len(encoders) == 2:
        label = list(encoders)[1]  # the sweep profiles master then aux
    if label is None:
        raise ValueError(f"{profile_path} profiles {list(encoders)}; none is the auxiliary {list(aux_names)}")
    strides = {int(s): m for s, m in encoders[label]["strides"].items()}
    curves = {m: {s: float(v[m]["mean"]) for s, v in sorted(strides.items())}
              for m in metrics if all(m in v for v in strides.values())}
    sides = {s: float(v["map_side"]["mean"]) for s, v in strides.items() if "map_side" in v}
    return {"source": str(profile_path), "aux": label, "num_images": encoders[label].get("num_images"),
            "curves": curves, "map_side": sides, "missing": [m for m in metrics if m not in curves]}


def stride_analysis(rows: Sequence[dict[str, Any]], profile: Mapping[str, Any], headline: str,
                    boundary: str | None) -> list[dict[str, Any]]:
    """Per plan metric: its curve over strides, the stride it chooses (argmax over the strides whose maps
    are at least `fusionseg.profiling.MIN_MAP_SIDE` px, as the plan rule), the best single stride by the
    headline's mean, whether they agree, the chosen-minus-best difference, the best's margin over the
    runner-up (both ± standard error: a margin within it means the seeds cannot tell the strides apart),
    and Spearman's rho between the metric and the gain over the swept strides it may choose from."""
    from fusionseg.profiling import MIN_MAP_SIDE  # the plan rule's: smaller maps take no part

    single = {row["strides"][0]: row for row in rows if len(row["strides"]) == 1 and row[headline]["n"]}
    best = _best({s: r[headline]["mean"] for s, r in single.items()})
    out = []
    for name, curve in profile.get("curves", {}).items():
        sides = profile.get("map_side", {})
        usable = {s: v for s, v in curve.items() if sides.get(s, MIN_MAP_SIDE) >= MIN_MAP_SIDE}
        chosen = _best(usable)
        swept = sorted(s for s in single if s in usable)  # tiny maps' scores mean nothing: not ranked either
        runner_up = _best({s: r[headline]["mean"] for s, r in single.items() if s != best})
        entry: dict[str, Any] = {
            "metric": name, "curve": curve, "excluded_strides": sorted(set(curve) - set(usable)),
            "chosen_stride": chosen, "best_stride": best, "swept_strides": swept,
            "hit": None if chosen not in single or best is None else chosen == best,
            "chosen_minus_best": (difference(single[chosen][headline], single[best][headline])
                                  if chosen in single and best is not None and chosen != best
                                  else {"mean": 0.0, "se": 0.0} if chosen == best else {"mean": None, "se": None}),
            # Is the best stride told apart from the next one at all, given the seeds' spread?
            "best_minus_runner_up": (difference(single[best][headline], single[runner_up][headline])
                                     if runner_up is not None else {"mean": None, "se": None}),
            f"spearman_{headline}_gain": spearman([curve[s] for s in swept],
                                                  [single[s]["gain"][headline]["mean"] for s in swept]),
        }
        if boundary is not None:
            entry[f"spearman_{boundary}_gain"] = spearman([curve[s] for s in swept],
                                                          [single[s]["gain"][boundary]["mean"] for s in swept])
        out.append(entry)
    return out


def build_report(results: Results, plans: Mapping[str, FusionPlan | None], task: str, steps: int,
                 profile_path: Path | None, plan_metrics: Sequence[str]) -> dict[str, Any]:
    """Everything the sweep found, as plain data (what `sweep.json` holds)."""
    headline = HEADLINE[task]
    logged = {m for seeds in results.values() for r in seeds.values() for m in r}
    boundary = BOUNDARY if BOUNDARY in logged else None
    metrics = [headline] + ([boundary] if boundary else [])
    rows = summarize_plans(results, plans, metrics)
    aux_names = [p.aux for p in plans.values() if p is not None and p.aux is not None][:1]
    profile = aux_curves(profile_path, aux_names, plan_metrics)
    analysis = stride_analysis(rows, profile, headline, boundary)
    notes = []
    if boundary is None:
        notes.append(f"Boundary IoU: no finished run logged val/{BOUNDARY} (the semantic evaluator logs it; "
                     f"task {task!r}); missing from this report")
    if profile.get("missing"):
        notes.append(f"plan metrics not in the profile: {', '.join(profile['missing'])}")
    if profile.get("note"):
        notes.append(profile["note"])
    margin = analysis[0]["best_minus_runner_up"] if analysis else {"mean": None}
    if margin["mean"] is not None and abs(margin["mean"]) < 2 * margin["se"]:
        notes.append(f"the best stride ({analysis[0]['best_stride']}) leads the runner-up by {margin['mean']:.2f} ± "
                     f"{margin['se']:.2f} {headline}, within two standard errors: these seeds do not tell the strides "
                     "apart, so whether a metric's stride 'is best' is not established (more seeds or steps)")
    unfinished = [f"{r['plan']} ({r[headline]['n']} seeds)" for r in rows if r[headline]["n"] == 0]
    if unfinished:
        notes.append(f"plans without a finished run: {', '.join(unfinished)}")
    report = {"task": task, "steps": steps, "headline": headline, "boundary": boundary, "plans": rows,
              "profile": profile, "plan_metrics": analysis, "notes": notes}
    report["markdown"] = markdown(report)
    return report



# -- text ---------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread_cell(s: Mapping[str, Any]) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def _gain_cell(g: Mapping[str, Any]) -> str:
    return "-" if g["mean"] is None else f"{g['mean']:+.2f} ± {g['se']:.2f}"


def markdown(report: Mapping[str, Any]) -> str:
    """The plan table and the plan-metric table, in Markdown."""
    headline, boundary = report["headline"], report["boundary"]
    metrics = [headline] + ([boundary] if boundary else [])
    lines = [f"# Stride sweep ({report['task']}, {report['steps']} steps per run)", "",
             "Per plan, over seeds: mean ± sample std [min, max]; gain = mean minus the master alone's mean "
             "± its standard error.", ""]
    head = ["plan", "seeds"] + [c for m in metrics for c in (m, f"gain in {m}")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["plans"]:
        cells = [row["plan"], str(len(row["seeds"]))]
        for m in metrics:
            cells += [_spread_cell(row[m]), "(reference)" if row is report["plans"][0] else _gain_cell(row["gain"][m])]
        lines.append("| " + " | ".join(cells) + " |")
    profile = report["profile"]
    if report["plan_metrics"]:
        strides = sorted({s for a in report["plan_metrics"] for s in a["curve"]})
        from fusionseg.profiling import MIN_MAP_SIDE

        lines += ["", f"## Plan metrics: the auxiliary `{profile.get('aux')}` over strides",
                  "", f"Profile: `{profile.get('source')}` ({profile.get('num_images')} images). A metric's chosen "
                  f"stride is its argmax over strides whose maps are at least {MIN_MAP_SIDE} px; the best stride is "
                  f"the single-stride plan with the highest mean {headline}.", ""]
        head = (["metric"] + [f"OS {s}" for s in strides] +
                ["chosen", "best", "chosen is best", f"chosen − best {headline}", f"best − runner-up {headline}",
                 f"Spearman vs {headline} gain"])
        if boundary:
            head.append(f"Spearman vs {boundary} gain")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for a in report["plan_metrics"]:
            hit = {True: "yes", False: "no", None: "-"}[a["hit"]]
            cells = [a["metric"]] + [_num(a["curve"].get(s), 3) for s in strides]
            cells += [str(a["chosen_stride"]), str(a["best_stride"]), hit, _gain_cell(a["chosen_minus_best"]),
                      _gain_cell(a["best_minus_runner_up"]), _num(a[f"spearman_{headline}_gain"])]
            if boundary:
                cells.append(_num(a[f"spearman_{boundary}_gain"]))
            lines.append("| " + " | ".join(cells) + " |")
    if report["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def to_csv(report: Mapping[str, Any]) -> str:
    """One row per plan: strides, seeds, and mean, std, min, max, gain and its se of each metric."""
    metrics = [report["headline"]] + ([report["boundary"]] if report["boundary"] else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["plan", "strides", "seeds"] + [f"{m}_{k}" for m in metrics
                                                    for k in ("mean", "std", "min", "max", "gain", "gain_se")])
    for row in report["plans"]:
        cells: list[Any] = [row["plan"], "+".join(map(str, row["strides"])), len(row["seeds"])]
        for m in metrics:
            s, g = row[m], row["gain"][m]
            cells += [s["mean"], s["std"], s["min"], s["max"], g["mean"], g["se"]]
        writer.writerow(["" if c is None else c for c in cells])
    return out.getvalue()


# -- figure and TensorBoard ------------------------------------------------------------------------
def figure(report: Mapping[str, Any]) -> Any:
    """Left: each plan's metrics per seed and their mean ± std. Right: over strides, the gain over the master
    alone beside the plan metrics' curves (each divided by its maximum)."""
    from matplotlib.figure import Figure

    headline, boundary = report["headline"], report["boundary"]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    rows = report["plans"]
    xs = list(range(len(rows)))
    for metric, color, shift in ((headline, "tab:blue", -0.1), (boundary, "tab:orange", 0.1)):
        if metric is None:
            continue
        for x, row in zip(xs, rows):
            left.scatter([x + shift] * len(row[metric]["values"]), row[metric]["values"], s=12, color=color, alpha=0.4)
        have = [(x, r[metric]) for x, r in zip(xs, rows) if r[metric]["n"]]
        left.errorbar([x + shift for x, _ in have], [s["mean"] for _, s in have], yerr=[s["std"] for _, s in have],
                      fmt="o", color=color, capsize=4, label=f"{metric} (mean ± std over seeds; dots: seeds)")
        if rows[0][metric]["n"]:
            left.axhline(rows[0][metric]["mean"], color=color, linestyle=":", linewidth=1)
    left.set_xticks(xs, [r["plan"] for r in rows])
    left.set_xlabel("plan (master alone, or the auxiliary injected at the strides named)")
    left.set_ylabel("validation metric (%)")
    left.set_title(f"{report['task']}: {report['steps']} steps per run")
    left.legend(loc="best", fontsize=8)

    single = sorted((r["strides"][0], r) for r in rows if len(r["strides"]) == 1 and r[headline]["n"])
    if single:
        strides = [s for s, _ in single]
        right.errorbar(strides, [r["gain"][headline]["mean"] for _, r in single],
                       yerr=[r["gain"][headline]["se"] for _, r in single], fmt="o-", color="tab:blue", capsize=4,
                       label=f"gain in {headline} over the master alone (± se)")
        if boundary:
            right.errorbar(strides, [r["gain"][boundary]["mean"] for _, r in single],
                           yerr=[r["gain"][boundary]["se"] for _, r in single], fmt="s-", color="tab:orange",
                           capsize=4, label=f"gain in {boundary} (± se)")
        right.axhline(0, color="gray", linewidth=0.8)
    right.set_xscale("log", base=2)
    right.set_xlabel("injection stride (output stride of the auxiliary's features)")
    right.set_ylabel("gain over the master alone (points)")
    twin = right.twinx()
    styles = zip(("--", "-.", ":", (0, (5, 1))), ("tab:green", "tab:purple", "tab:brown", "tab:gray"))
    for a, (style, color) in zip(report["plan_metrics"], styles):
        curve = a["curve"]
        top = max(abs(v) for v in curve.values()) or 1.0
        twin.plot(list(curve), [v / top for v in curve.values()], linestyle=style, marker=".", color=color,
                  label=f"{a['metric']} of the auxiliary / max (chooses {a['chosen_stride']})")
    twin.set_ylabel("plan metric, divided by its maximum")
    strides = sorted({s for s, _ in single} | {s for a in report["plan_metrics"] for s in a["curve"]})
    if strides:
        right.set_xticks(strides, [str(s) for s in strides])
    handles = [h for ax in (right, twin) for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in (right, twin) for lab in ax.get_legend_handles_labels()[1]]
    if handles:
        right.legend(handles, labels, loc="best", fontsize=8)
    right.set_title("does the plan metric follow the gain?")
    return fig


def log_tensorboard(folder: Path, report: Mapping[str, Any], fig: Any) -> None:
    """`sweep/<metric>/<plan>` (mean), curves over strides as steps (`sweep/gain/<metric>`,
    `sweep/plan_metric/<name>`), the report as text and the figure. They replace an earlier report's."""
    from torch.utils.tensorboard import SummaryWriter

    for old in folder.glob("events.out.tfevents.*"):  # a report rewritten after more runs is one report
        old.unlink()
    headline, boundary = report["headline"], report["boundary"]
    with SummaryWriter(str(folder)) as writer:
        for row in report["plans"]:
            for m in [headline] + ([boundary] if boundary else []):
                if row[m]["n"]:
                    writer.add_scalar(f"sweep/{m}/{row['plan']}", row[m]["mean"], 0)
                    writer.add_scalar(f"sweep/{m}_std/{row['plan']}", row[m]["std"], 0)
                if len(row["strides"]) == 1 and row["gain"][m]["mean"] is not None:
                    writer.add_scalar(f"sweep/gain/{m}", row["gain"][m]["mean"], row["strides"][0])
        for a in report["plan_metrics"]:
            for stride, value in a["curve"].items():
                writer.add_scalar(f"sweep/plan_metric/{a['metric']}", value, stride)
        writer.add_text("sweep/report", report["markdown"], 0)
        writer.add_figure("sweep/figure", fig, 0)


def write_report(out: Path, report: Mapping[str, Any]) -> None:
    """`sweep.json`, `sweep.csv`, `sweep.md`, `sweep.png` and `tb/` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in report.items() if k != "markdown"}
    (out / "sweep.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "sweep.csv").write_text(to_csv(report))
    (out / "sweep.md").write_text(report["markdown"])
    fig = figure(report)
    fig.savefig(out / "sweep.png", dpi=110)
    log_tensorboard(out / "tb", report, fig)
