"""`fusionseg sweep`: the candidate plans, the fit commands, resuming, and the report."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from fusionseg.commands import sweep_runs
from fusionseg.commands.sweep import candidate_plans, main, parse_stride_sets, plan_name, read_model_setup
from fusionseg.commands.sweep_runs import fit_command, next_command, read_val_metrics, run_dir, run_result
from fusionseg.commands.sweep_report import build_report, spearman, spread, write_report
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.plan import FusionPlan

REPO = Path(__file__).parents[1]
DEMO = REPO / "configs" / "demo.yaml"


def test_stride_sets_and_plan_names():
    assert parse_stride_sets(["16", "8", "16,8", "8"]) == [(16,), (8,), (8, 16)]
    assert [plan_name(s) for s in ((), (8,), (16, 8))] == ["master", "os8", "os8+16"]
    with pytest.raises(ValueError, match="8,x"):
        parse_stride_sets(["8,x"])


def test_candidate_plans_name_the_encoders_as_the_module_accepts_them():
    plans = candidate_plans(EncoderSpec.parse("regions:channels=64"), EncoderSpec.parse("edges:channels=64"),
                            "semantic", [(8,), (8, 16)])
    assert list(plans) == ["master", "os8", "os8+16"]
    assert plans["master"] is None
    assert (plans["os8+16"].master, plans["os8+16"].aux, plans["os8+16"].strides) == ("regions", "edges", (8, 16))
    # Two encoders of one registry name are told apart by their full spec.
    same = candidate_plans(EncoderSpec.parse("timm:model_name=resnet18"),
                           EncoderSpec.parse("timm:model_name=convnext_atto"), "semantic", [(4,)])
    assert same["os4"].aux == "timm:model_name=convnext_atto"


def test_model_setup_reads_the_config_and_the_overrides():
    setup = read_model_setup(DEMO, [])
    assert (setup.master.name, setup.aux.name, setup.task, setup.max_steps) == ("regions", "edges", "semantic", 600)
    setup = read_model_setup(DEMO, ["--model.aux=timm:model_name=resnet18", "--trainer.max_steps", "7"])
    assert (str(setup.aux), setup.max_steps) == ("timm:model_name=resnet18", 7)
    assert read_model_setup(DEMO, ["--model.aux", "null"]).aux is None


def test_fit_command_puts_the_sweep_settings_after_the_overrides():
    args = fit_command(DEMO, Path("out/os8/seed1"), Path("out/os8/plan.json"), 1, 50, ["--trainer.max_steps", "9"],
                       resume=True)
    assert args[:3] == ["fit", "--config", str(DEMO)]
    assert args.index("--trainer.max_steps") < len(args) - 1 - args[::-1].index("--trainer.max_steps")
    tail = " ".join(args)
    assert "--trainer.max_steps 50 --trainer.val_check_interval 50" in tail
    assert "--seed_everything 1" in tail and tail.endswith("--model.plan out/os8/plan.json --ckpt_path last")
    alone = fit_command(DEMO, Path("r"), None, 0, 5, [], resume=False)
    assert alone[-4:] == ["--model.aux", "null", "--model.plan", "null"]


def _log_val(run: Path, version: int, step: int, miou: float) -> None:
    with SummaryWriter(str(run / "lightning_logs" / f"version_{version}")) as writer:
        writer.add_scalar("val/mIoU", miou, step)
        writer.add_scalar("val/boundary_mIoU", miou / 2, step)
        writer.add_scalar("val/IoU/meadow", 1.0, step)  # per-class values are not part of the result


def test_a_run_is_finished_when_its_last_step_was_validated(tmp_path):
    run = tmp_path / "run"
    assert run_result(run, 20, "mIoU") is None
    _log_val(run, 0, 9, 10.0)
    assert run_result(run, 20, "mIoU") is None  # interrupted after a validation at step 10
    _log_val(run, 1, 19, 30.0)  # the resumed run (a new logger version) validated the last step
    assert read_val_metrics(run) == (19, {"boundary_mIoU": 15.0, "mIoU": 30.0})
    assert run_result(run, 20, "mIoU") == {"boundary_mIoU": 15.0, "mIoU": 30.0}
    assert json.loads((run / "result.json").read_text())["steps"] == 20


def _argv(out: Path, *extra: str) -> list[str]:
    return ["--config", str(DEMO), "--out", str(out), "--strides", "8", "16", "--seeds", "2", "--steps", "20", *extra]


def test_print_commands_lists_unfinished_runs_and_resumes_interrupted_ones(tmp_path, capsys):
    out = tmp_path / "sweep"
    _log_val(run_dir(out, "os8", 0), 0, 19, 40.0)  # finished: not printed
    ckpt = run_dir(out, "os16", 1) / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")  # interrupted: resumed from last.ckpt
    assert main(_argv(out, "--print-commands", "--", "--data.num_workers", "0")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    fits = [shlex.split(line) for line in lines if line.startswith("fusionseg fit")]
    assert len(fits) == len(lines) == 5
    roots = [f[f.index("--trainer.default_root_dir") + 1] for f in fits]
    assert str(run_dir(out, "os8", 0)) not in roots
    resumed = [f for f in fits if f[-2:] == ["--ckpt_path", "last"]]
    assert [r[r.index("--trainer.default_root_dir") + 1] for r in resumed] == [str(run_dir(out, "os16", 1))]
    assert all(f[4:6] == ["--data.num_workers", "0"] for f in fits)  # after `fusionseg fit --config CFG`
    plan = FusionPlan.load(out / "os8" / "plan.json")
    assert (plan.master, plan.aux, plan.strides, plan.task) == ("regions", "edges", (8,), "semantic")


def test_other_settings_in_the_same_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(_argv(out, "--print-commands")) == 0
    assert main([*_argv(out, "--print-commands")[:-2], "30"]) == 2
    assert "other settings" in capsys.readouterr().err


def _profile(path: Path, ef: dict[int, float], size: int = 512) -> Path:
    metric = {m: {"mean": 0.5, "std": 0.0} for m in ("sc", "ef_cc")}
    encoders = {
        "regions": {"num_images": 4, "strides": {str(s): {**metric, "ef": {"mean": 1.0, "std": 0.0}} for s in ef}},
        "edges": {"num_images": 4, "strides": {str(s): {**metric, "ef": {"mean": v, "std": 0.0},
                                                        "map_side": {"mean": size / s, "std": 0.0}}
                                                for s, v in ef.items()}},
    }
    path.write_text(json.dumps({"format": "fusionseg-profile", "encoders": encoders}))
    return path


def test_resume_skips_finished_runs_and_reports(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    for (plan, miou) in (("master", 30.0), ("os8", 36.0), ("os16", 33.0)):
        for seed in (0, 1):
            _log_val(run_dir(out, plan, seed), 0, 19, miou + seed)
    monkeypatch.setattr(sweep_runs.subprocess, "call", lambda *a, **k: pytest.fail("a finished run was started again"))
    profile = _profile(tmp_path / "profile.json", {4: 5.0, 8: 9.0, 16: 7.0, 32: 8.0})
    assert main(_argv(out, "--profile", str(profile))) == 0
    report = json.loads((out / "sweep.json").read_text())
    rows = {r["plan"]: r for r in report["plans"]}
    assert rows["os8"]["mIoU"]["mean"] == 36.5 and rows["os8"]["gain"]["mIoU"]["mean"] == pytest.approx(6.0)
    ef = next(a for a in report["plan_metrics"] if a["metric"] == "ef")
    assert (ef["chosen_stride"], ef["best_stride"], ef["hit"]) == (8, 8, True)
    assert "fcd" in " ".join(report["notes"])  # asked for by default, absent from the profile given
    assert (out / "sweep.png").stat().st_size > 0 and len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert main(_argv(out, "--profile", str(profile), "--report-only")) == 0
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # the new report replaces the old
    assert "| os8 | 2 | 36.50 ± 0.71" in (out / "sweep.md").read_text()


def test_the_report_judges_each_task_by_its_headline_metric():
    from fusionseg.commands.sweep_report import HEADLINE
    from fusionseg.evaluation import HEADLINE_METRIC

    assert HEADLINE == HEADLINE_METRIC


def test_report_statistics():
    assert spread([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5), "min": 1.0, "max": 3.0, "n": 2}
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    plans = {"master": None, "os4": FusionPlan("regions", "edges", (4,)), "os8": FusionPlan("regions", "edges", (8,))}
    results = {"master": {0: {"mIoU": 10.0}}, "os4": {0: {"mIoU": 12.0}}, "os8": {}}
    report = build_report(results, plans, "semantic", 5, None, ["ef"])
    assert report["boundary"] is None and any("Boundary IoU" in n for n in report["notes"])
    assert any("os8" in n for n in report["notes"])  # a plan without a finished run is named


def test_write_report_without_profile(tmp_path):
    plans = {"master": None, "os8": FusionPlan("regions", "edges", (8,))}
    results = {"master": {0: {"mIoU": 10.0}}, "os8": {0: {"mIoU": 12.0}}}
    write_report(tmp_path, build_report(results, plans, "semantic", 5, None, ["ef"]))
    assert (tmp_path / "sweep.csv").read_text().splitlines()[2].startswith("os8,8,1,12.0")


@pytest.mark.slow
def test_sweep_runs_two_plans_end_to_end(tmp_path, monkeypatch):
    """Two real `fusionseg fit` runs (master alone, aux at stride 8), one seed, 2 steps, 64 px images."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(REPO)
    small = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--data.crop_size", "64", "--data.batch_size", "2", "--data.eval_batch_size", "2",
             "--data.num_workers", "0", "--data.synthetic_train_images", "4", "--data.synthetic_val_images", "2",
             "--data.synthetic_image_size", "64", "--model.head.num_queries", "4", "--model.head.dec_layers", "1",
             "--model.head.enc_layers", "1", "--model.head.hidden_dim", "32", "--model.head.dim_feedforward", "32",
             "--model.head.enc_feedforward", "32", "--model.head.train_points", "64",
             "--model.master", "regions:channels=8",
             "--model.aux", "edges:channels=8", "--visuals.num_images", "1", "--visuals.pca_maps", "false",
             "--visuals.feature_metrics", "false"]
    out = tmp_path / "sweep"
    argv = ["--config", str(DEMO), "--out", str(out), "--strides", "8", "--seeds", "1", "--steps", "2",
            "--profile-images", "2", "--profile-size", "128", "--", *small]
    assert main(argv) == 0, (out / "os8" / "seed0" / "fit.log").read_text()[-3000:]
    report = json.loads((out / "sweep.json").read_text())
    assert [r["plan"] for r in report["plans"]] == ["master", "os8"]
    assert all(r["mIoU"]["n"] == 1 for r in report["plans"])
    assert {a["metric"] for a in report["plan_metrics"]} == {"ef", "ef_cc", "fcd"}
    # Run again: everything is finished, nothing is trained.
    monkeypatch.setattr(sweep_runs.subprocess, "call", lambda *a, **k: pytest.fail("a finished run was started again"))
    assert main(argv) == 0


def test_the_report_says_when_the_seeds_cannot_tell_the_strides_apart(tmp_path):
    plans = {"master": None, **{f"os{s}": FusionPlan("regions", "edges", (s,)) for s in (4, 8)}}
    profile = _profile(tmp_path / "profile.json", {4: 5.0, 8: 9.0})
    noisy = {"master": {0: {"mIoU": 10.0}, 1: {"mIoU": 12.0}},
             "os4": {0: {"mIoU": 8.0}, 1: {"mIoU": 16.0}}, "os8": {0: {"mIoU": 9.0}, 1: {"mIoU": 14.0}}}
    report = build_report(noisy, plans, "semantic", 5, profile, ["ef"])
    ef = report["plan_metrics"][0]
    assert (ef["chosen_stride"], ef["best_stride"], ef["hit"]) == (8, 4, False)
    assert ef["best_minus_runner_up"]["mean"] == pytest.approx(0.5)
    assert any("do not tell the strides apart" in n for n in report["notes"])
    clear = {**noisy, "os4": {0: {"mIoU": 30.0}, 1: {"mIoU": 31.0}}}
    assert not any("apart" in n for n in build_report(clear, plans, "semantic", 5, profile, ["ef"])["notes"])


def test_strides_too_small_to_score_are_neither_chosen_nor_ranked(tmp_path):
    plans = {"master": None, **{f"os{s}": FusionPlan("regions", "edges", (s,)) for s in (4, 8, 16, 32)}}
    results = {name: {0: {"mIoU": 10.0 + i}} for i, name in enumerate(plans)}
    profile = _profile(tmp_path / "profile.json", {4: 5.0, 8: 9.0, 16: 7.0, 32: 50.0}, size=128)  # maps 32 .. 4 px
    ef = build_report(results, plans, "semantic", 5, profile, ["ef"])["plan_metrics"][0]
    assert ef["excluded_strides"] == [16, 32] and ef["chosen_stride"] == 8 and ef["best_stride"] == 32
    assert ef["swept_strides"] == [4, 8] and ef["spearman_mIoU_gain"] is None  # two strides: no ranking


def test_a_fit_stopped_by_a_signal_stops_the_sweep(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(sweep_runs.subprocess, "call", lambda argv, **kw: calls.append(argv) or 143)  # SIGTERM'd
    profile = _profile(tmp_path / "profile.json", {8: 9.0, 16: 7.0})
    assert main(_argv(tmp_path / "sweep", "--profile", str(profile))) == 143
    assert len(calls) == 1 and "run the same command again to resume" in capsys.readouterr().err


def test_a_run_stopped_in_its_final_validation_is_validated_from_last_ckpt(tmp_path):
    run = tmp_path / "os8" / "seed0"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"global_step": 20}, ckpt)  # every step done, the final validation never logged
    action, argv = next_command(DEMO, run, Path("plan.json"), 0, 20, ["--data.num_workers", "0"])
    assert action == "validating last.ckpt" and argv[0] == "validate" and argv[-2:] == ["--ckpt_path", str(ckpt)]
    assert run_result(run, 20, "mIoU") is None
    _log_val(run, 1, 0, 25.0)  # what `fusionseg validate` logs: step 0, after last.ckpt was written
    assert run_result(run, 20, "mIoU") == {"boundary_mIoU": 12.5, "mIoU": 25.0}
    torch.save({"global_step": 12}, ckpt)  # an interrupted run resumes instead
    assert next_command(DEMO, tmp_path / "other", None, 0, 20, [])[0] == "running"
    assert next_command(DEMO, run, None, 0, 20, [])[0] == "resuming"
