"""`fusionseg sweep`: train at every candidate plan, several seeds each, to check the plan's stride choice.

    fusionseg sweep --config configs/demo.yaml --out runs/sweep --seeds 3 --steps 300
    fusionseg sweep --config CFG --out OUT --strides 8 16 8,16 -- --trainer.accelerator gpu
    fusionseg sweep --config CFG --out OUT --print-commands     # for a cluster scheduler
    fusionseg sweep --config CFG --out OUT --report-only        # after the scheduler ran them

The same model (the config's master and auxiliary encoders) is trained at every candidate plan, all
else equal: the master alone (`aux` and `plan` null), and the auxiliary injected at each stride of the
pyramid (or at the stride sets `--strides` names, `8,16` for two at once). Each plan gets `--seeds`
runs; each run is an ordinary `fusionseg fit` in `<out>/<plan>/seed<k>` with a hand-written plan JSON
(`<out>/<plan>/plan.json`, the `FusionPlan` format) as `--model.plan`, `--steps` optimizer steps and one
validation at the end. Whatever follows `--` is passed to every fit (before the sweep's own settings,
which win). Running the sweep again skips finished runs and resumes interrupted ones (`--ckpt_path last`;
`fusionseg.commands.sweep_runs` decides what each run needs next).

Then the report (`fusionseg.commands.sweep_report`): `<out>/sweep.{md,csv,json,png}` and TensorBoard
summaries in `<out>/tb`, with the plan metrics' curves over strides from a profile of the encoders
(`fusionseg profile --data CFG`, written to `<out>/profile/`, or `--profile PATH`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusionseg.commands.sweep_runs import STOPPED, next_command, run_dir, run_fit, run_logged, run_result
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.plan import FusionPlan
from fusionseg.profiling import PLAN_METRICS

DEFAULT_STRIDES = ("4", "8", "16", "32")  # the Mask2Former head's pyramid (fusionseg.heads.mask2former.HEAD_STRIDES)
MASTER_ALONE = "master"
SETTINGS_FILE = "sweep_settings.json"


# -- the candidate plans --------------------------------------------------------------------------
def parse_stride_sets(tokens: Sequence[str]) -> list[tuple[int, ...]]:
    """`["8", "16", "8,16"]` -> `[(8,), (16,), (8, 16)]`, each set sorted, duplicates dropped, order kept."""
    sets: list[tuple[int, ...]] = []
    for token in tokens:
        try:
            strides = tuple(sorted({int(s) for s in str(token).split(",") if s.strip()}))
        except ValueError:
            raise ValueError(f"--strides takes strides or comma-separated stride sets (e.g. 8 16 8,16), got {token!r}")
        if not strides or any(s < 1 for s in strides):
            raise ValueError(f"--strides: {token!r} is not a set of positive strides (e.g. 8 or 8,16)")
        if strides not in sets:
            sets.append(strides)
    return sets


def plan_name(strides: Sequence[int]) -> str:
    """Folder name of a plan: `master` for the master alone, `os8` or `os8+16` for injection strides."""
    return "os" + "+".join(str(s) for s in sorted(strides)) if strides else MASTER_ALONE


def plan_encoder_names(master: EncoderSpec, aux: EncoderSpec) -> tuple[str, str]:
    """How a plan names the two encoders: the one naming rule of plans and profiles."""
    from fusionseg.plan import encoder_names

    master_name, aux_name = encoder_names([master, aux])
    return master_name, aux_name


def candidate_plans(master: EncoderSpec, aux: EncoderSpec, task: str,
                    stride_sets: Sequence[tuple[int, ...]]) -> dict[str, FusionPlan | None]:
    """`{plan name: plan}`: the master alone (None: no aux, no plan) first, then one plan per stride set."""
    master_name, aux_name = plan_encoder_names(master, aux)
    plans: dict[str, FusionPlan | None] = {MASTER_ALONE: None}
    for strides in stride_sets:
        plans[plan_name(strides)] = FusionPlan(master=master_name, aux=aux_name, strides=strides, task=task,
                                               scores={"rule": "fusionseg sweep: fixed by hand"})
    return plans


# -- what the config says -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSetup:
    """What the sweep needs from the training config (after the pass-through overrides)."""

    master: EncoderSpec
    aux: EncoderSpec | None
    task: str
    max_steps: int | None


def _override(overrides: Sequence[str], key: str) -> str | None:
    """The last value given to `--key` in `overrides` (`--key value` or `--key=value`), else None."""
    found = None
    for i, token in enumerate(overrides):
        if token == f"--{key}" and i + 1 < len(overrides):
            found = overrides[i + 1]
        elif token.startswith(f"--{key}="):
            found = token.split("=", 1)[1]
    return found


def _spec(value: Any, where: str) -> EncoderSpec | None:
    if value is None or value in ("null", "None"):
        return None
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = yaml.safe_load(value)
    try:
        return EncoderSpec.parse(value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def read_model_setup(config: Path, overrides: Sequence[str]) -> ModelSetup:
    """Master, aux, task and max_steps from the config YAML, `--model.master/aux`, `--data.task` and
    `--trainer.max_steps` overrides applied."""
    cfg = yaml.safe_load(Path(config).read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{config}: expected a fusionseg fit config (trainer:, model:, data:)")
    model = (cfg.get("model") or {}).get("init_args", cfg.get("model")) or {}
    data = (cfg.get("data") or {}).get("init_args", cfg.get("data")) or {}
    trainer = cfg.get("trainer") or {}
    master = _spec(_override(overrides, "model.master") or model.get("master"), "model.master")
    if master is None:
        raise ValueError(f"{config} names no model.master; the sweep trains the config's master encoder")
    aux_value = _override(overrides, "model.aux")
    aux = _spec(aux_value if aux_value is not None else model.get("aux"), "model.aux")
    task = _override(overrides, "data.task") or data.get("task") or model.get("task") or "semantic"
    steps = _override(overrides, "trainer.max_steps") or trainer.get("max_steps")
    max_steps = int(steps) if steps not in (None, "null", -1, "-1") else None
    return ModelSetup(master, aux, str(task), max_steps)


# -- the sweep ------------------------------------------------------------------------------------
def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The sweep's own arguments and, after a lone `--`, the overrides for every fit."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    own, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(
        prog="fusionseg sweep",
        description="Train the config's model at every candidate plan (master alone, aux at each stride), "
                    "several seeds each, and report whether the label-free plan metrics pick the best stride.",
        epilog="Arguments after `--` go to every `fusionseg fit` (e.g. -- --trainer.accelerator gpu).",
    )
    parser.add_argument("--config", type=Path, required=True, help="the fusionseg fit config (master, aux, data)")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default: runs/sweep_<config name>)")
    parser.add_argument("--strides", nargs="+", default=list(DEFAULT_STRIDES), metavar="S[,S...]",
                        help="injection strides, one plan each; `8,16` injects at both (default: 4 8 16 32)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per plan, seeds 0..N-1 (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the config's)")
    parser.add_argument("--print-commands", action="store_true",
                        help="print the fit commands of the unfinished runs (one per line) instead of running them")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: profile the encoders if needed and report the finished runs")
    parser.add_argument("--profile", type=Path, default=None,
                        help="profile.json of the two encoders (default: computed with `fusionseg profile --data`)")
    parser.add_argument("--profile-images", type=int, default=16, help="validation images profiled (default 16)")
    parser.add_argument("--profile-size", type=int, default=512, help="profile image size S x S (default 512)")
    parser.add_argument("--plan-metrics", nargs="+", default=list(PLAN_METRICS),
                        help="per-stride scores of the auxiliary to judge, each choosing its argmax stride "
                             f"(default: every plan metric, {' '.join(PLAN_METRICS)})")
    args = parser.parse_args(own)
    args.overrides = overrides
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    try:
        args.stride_sets = parse_stride_sets(args.strides)
    except ValueError as err:
        parser.error(str(err))
    if args.out is None:
        args.out = Path("runs") / f"sweep_{args.config.stem}"
    return args


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Runs in `out` are comparable only under the same config, overrides and step count: refuse a mix."""
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in ("config", "overrides", "steps", "task") if old.get(k) != settings.get(k)]
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
            raise ValueError(f"{out} holds a sweep with other settings ({diff}); use another --out "
                             f"(or the same settings) so that all runs of a sweep compare equally")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def profile_argv(args: argparse.Namespace, setup: ModelSetup) -> list[str]:
    assert setup.aux is not None
    return ["--data", str(args.config), "--encoders", str(setup.master), str(setup.aux),
            "--out", str(args.out / "profile"), "--num-images", str(args.profile_images),
            "--image-size", str(args.profile_size), "--task", setup.task, "--num-maps", "0", "--no-progress",
            "--no-sc-gt"]


def run_sweep(args: argparse.Namespace) -> int:
    from fusionseg.commands.sweep_report import HEADLINE  # not fusionseg.evaluation: torchmetrics loads slowly

    setup = read_model_setup(args.config, args.overrides)
    if setup.aux is None:
        raise ValueError(f"{args.config} has no model.aux: the sweep injects the auxiliary encoder at each "
                         "stride; set model.aux in the config or pass `-- --model.aux NAME[:k=v,...]`")
    steps = args.steps or setup.max_steps
    if steps is None:
        raise ValueError(f"{args.config} sets no trainer.max_steps; give the sweep --steps N")
    headline = HEADLINE[setup.task]
    out: Path = args.out
    check_settings(out, {"config": str(args.config), "overrides": args.overrides, "steps": steps,
                         "task": setup.task, "master": str(setup.master), "aux": str(setup.aux)})
    plans = candidate_plans(setup.master, setup.aux, setup.task, args.stride_sets)
    plan_paths: dict[str, Path | None] = {}
    for name, plan in plans.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        plan_paths[name] = None if plan is None else out / name / "plan.json"
        if plan is not None:
            plan.save(out / name / "plan.json")

    runs = [(name, seed) for name in plans for seed in range(args.seeds)]
    todo = [(name, seed, *next_command(args.config, run_dir(out, name, seed), plan_paths[name], seed, steps,
                                       args.overrides))
            for name, seed in runs if run_result(run_dir(out, name, seed), steps, headline) is None]
    profile_path = args.profile or out / "profile" / "profile.json"

    if args.print_commands:
        for _, _, _, argv in todo:
            print(shlex.join(["fusionseg", *argv]))
        print(f"# then: fusionseg sweep --config {shlex.quote(str(args.config))} --out {shlex.quote(str(out))} "
              "--report-only  (profiles the encoders if needed, and reports)", file=sys.stderr)
        return 0

    if args.profile is None and not profile_path.is_file():
        # Before training: what the plan metrics predict is on record before any result is.
        # A `fusionseg profile` of its own, like the fits: its data loader workers end with it.
        argv = ["profile", *profile_argv(args, setup)]
        print(f"profiling the encoders for the plan metrics' curves (log: {out / 'profile.log'})", flush=True)
        code = run_logged(out, argv, "profile.log")
        if code in STOPPED:
            return code
        if code != 0 or not profile_path.is_file():
            print("    the profile failed: the report will have no plan-metric curves", flush=True)
    failed: list[str] = []
    if not args.report_only:
        print(f"sweep: {len(plans)} plans x {args.seeds} seeds, {steps} steps each, in {out}; "
              f"{len(runs) - len(todo)} finished, {len(todo)} to run")
        for i, (name, seed, action, argv) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {name} seed {seed}: {action}", flush=True)
            code, message = run_fit(run_dir(out, name, seed), argv, steps, headline)
            print(f"    {message}", flush=True)
            if code in STOPPED:
                print("fusionseg sweep: stopped; run the same command again to resume", file=sys.stderr)
                return code
            if code != 0:
                failed.append(f"{name}/seed{seed}")

    from fusionseg.commands.sweep_report import build_report, write_report

    results = {name: {seed: r for seed in range(args.seeds)
                      if (r := run_result(run_dir(out, name, seed), steps, headline)) is not None}
               for name in plans}
    report = build_report(results, plans, setup.task, steps, profile_path if profile_path.is_file() else None,
                          args.plan_metrics)
    write_report(out, report)
    print(report["markdown"])
    print(f"wrote {out}/sweep.md, sweep.csv, sweep.json, sweep.png and TensorBoard summaries in {out}/tb")
    if failed:
        print(f"fusionseg sweep: {len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_sweep(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"fusionseg sweep: error: {err}", file=sys.stderr)
        return 2
