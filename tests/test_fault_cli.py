"""The issue's faults, tried from the command line as a user would: each ends in a clear error, a counted skip
or a correct result, with no file lost or overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image

from fusionseg.callbacks.finite_guard import NonFiniteError
from fusionseg.checkpoint_check import CheckpointError
from fusionseg.cli import main as fusionseg_main
from fusionseg.encoders import GROUP
from fusionseg.lightning_cli import run_lightning_cli
from fusionseg.run_folder import RunFolderError

REPO = Path(__file__).parents[1]
SMALL = [
    "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--trainer.val_check_interval", "100",
    "--data.crop_size", "64", "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
    "--data.synthetic_train_images", "8", "--data.synthetic_val_images", "2", "--data.synthetic_image_size", "64",
    "--model.head.num_queries", "8", "--model.head.dec_layers", "1", "--model.head.enc_layers", "1",
    "--model.head.hidden_dim", "32", "--model.head.dim_feedforward", "64", "--model.head.enc_feedforward", "64",
    "--model.head.train_points", "256", "--model.master", "regions:channels=16", "--model.aux", "edges:channels=16",
    "--metric_profiler.num_batches", "1", "--visuals.num_images", "1", "--visuals.feature_metrics", "false",
    "--visuals.pca_maps", "false",
]


def _fit(root: Path, cache: Path, steps: int, *extra: str) -> list[str]:
    return ["fit", "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(root), "--trainer.max_steps",
            str(steps), "--metric_profiler.cache_dir", str(cache), "--last_checkpoint.every_n_train_steps", "2",
            *SMALL, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step run: its folder (with checkpoints/last.ckpt) and the profile cache."""
    faiss.omp_set_num_threads(1)
    base = tmp_path_factory.mktemp("fault_cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        run_lightning_cli(_fit(base / "run", base / "cache", 2))
    return base / "run", base / "cache"


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


# -- run folders -----------------------------------------------------------------------------------------------
def test_a_second_fit_into_a_run_folder_is_refused_and_a_resume_continues_its_tensorboard_version(
        trained, tmp_path, in_repo):
    root, cache = trained
    before = (root / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(RunFolderError, match=r"--ckpt_path last.*--trainer.default_root_dir.*--overwrite_checkpoints"):
        run_lightning_cli(_fit(root, cache, 2))
    assert (root / "checkpoints" / "last.ckpt").read_bytes() == before  # nothing was touched

    cli = run_lightning_cli(_fit(root, cache, 3, "--ckpt_path", "last"))
    assert cli.trainer.global_step == 3
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == ["version_0"]  # the same version
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_overwriting_a_run_folder_needs_the_explicit_flag(trained, tmp_path, in_repo):
    root, cache = trained
    copy = tmp_path / "copy"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints" / "last.ckpt").write_bytes((root / "checkpoints" / "last.ckpt").read_bytes())
    cli = run_lightning_cli(_fit(copy, cache, 1, "--overwrite_checkpoints", "true"))
    assert cli.trainer.global_step == 1
    assert torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


# -- --ckpt_path and numeric settings --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "state_dict"])
def test_a_wrong_ckpt_path_names_the_file_and_what_it_is(trained, tmp_path, in_repo, kind):
    root, cache = trained
    path = tmp_path / "model.ckpt"
    if kind == "random":
        path.write_bytes(bytes(range(7, 250)))
        expected = "not a PyTorch file"
    else:
        torch.save(torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"], path)
        expected = "a plain state dict"
    validate = ["validate", "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(tmp_path / "v"),
                *SMALL, "--metric_profiler.cache_dir", str(cache), "--ckpt_path", str(path)]
    with pytest.raises(CheckpointError, match=rf"--ckpt_path {path}: {expected}"):
        run_lightning_cli(validate)


def test_crop_size_0_is_a_clear_value_error(tmp_path, in_repo):
    with pytest.raises(ValueError, match="crop_size must be an int or \\[height, width\\] of positive ints, got 0"):
        run_lightning_cli(_fit(tmp_path, tmp_path / "cache", 1, "--data.crop_size", "0"))


# -- predict -----------------------------------------------------------------------------------------------------
def _photo(path: Path, value: int) -> Path:
    Image.fromarray(np.full((40, 48, 3), value, np.uint8)).save(path)
    return path


def test_predict_keeps_same_named_images_apart_skips_corrupt_ones_and_takes_a_single_file(
        trained, tmp_path, in_repo, capsys):
    root, cache = trained
    images = tmp_path / "images"
    images.mkdir()
    _photo(images / "a.jpg", 30)
    _photo(images / "a.png", 200)
    (images / "broken.jpg").write_text("not an image")
    out = tmp_path / "pred"
    predict = ["predict", "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(tmp_path / "p"), *SMALL,
               "--metric_profiler.cache_dir", str(cache), "--ckpt_path", str(root / "checkpoints" / "last.ckpt"),
               "--prediction_writer.output_dir", str(out)]
    run_lightning_cli([*predict, "--data.predict_root", str(images), "--data.skip_corrupt", "true"])
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.jpg.png", "a.png.png"]
    printed = capsys.readouterr().out
    assert f"wrote 2 images to {out}" in printed and "skipped 1 unreadable image(s)" in printed
    assert "broken.jpg" in printed

    single = tmp_path / "single"
    run_lightning_cli([*predict[:-1], str(single), "--data.predict_root", str(images / "a.png")])
    assert [p.name for p in (single / "labels").iterdir()] == ["a.png"]


# -- non-finite features ---------------------------------------------------------------------------------------
@pytest.fixture
def broken_encoders(monkeypatch):
    """`nan_regions` registered like any plugin encoder (tests/fault_encoders.py)."""
    from fusionseg.encoders import registry

    real = registry._entry_points
    extra = EntryPoint(name="nan_regions", value="fault_encoders:NaNRegions", group=GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {**real(), "nan_regions": extra})


def test_fit_with_a_nan_master_stops_at_step_0_naming_the_encoder_and_saves_nothing(
        broken_encoders, tmp_path, in_repo):
    args = _fit(tmp_path / "run", tmp_path / "cache", 4, "--model.master", "nan_regions:channels=16",
                "--metric_profiler.roles", "config")
    with pytest.raises(NonFiniteError, match=r"loss is nan at step 0 \(.*loss_ce=nan.*master encoder.*") as err:
        run_lightning_cli(args)
    assert "fusionseg profile" in str(err.value)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_fit_never_plans_a_nan_encoder_as_the_auxiliary(broken_encoders, tmp_path, in_repo):
    args = _fit(tmp_path / "run", tmp_path / "cache", 4, "--model.master", "nan_regions:channels=16")
    with pytest.raises(ValueError, match="nan_regions") as err:
        run_lightning_cli(args)
    assert "zero or non-finite" in str(err.value)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_profile_refuses_a_nan_encoder_as_the_auxiliary_and_reports_its_feature_maps(
        broken_encoders, tmp_path, capsys):
    argv = ["profile", "--encoders", "nan_regions:channels=8", "regions:channels=8", "--num-images", "2",
            "--image-size", "64", "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress", "--num-maps", "0"]
    assert fusionseg_main(argv) == 2
    err = capsys.readouterr().err
    assert "non-finite (NaN/Inf) feature maps" in err and "nan_regions" in err
    assert "fusionseg profile: error:" in err and "zero or non-finite" in err
    assert not (tmp_path / "out" / "plan.json").exists()


# -- profile inputs ---------------------------------------------------------------------------------------------
def test_profile_skips_and_counts_a_corrupt_image(tmp_path, capsys):
    from fusionseg.commands.profile import list_images, sample_images_dir

    images = tmp_path / "images"
    images.mkdir()
    for path in list_images(sample_images_dir())[:2]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "0_text.jpg").write_text("a text file named .jpg")
    argv = ["profile", "--encoders", "edges:channels=8", "regions:channels=8", "--images", str(images),
            "--num-images", "2", "--image-size", "64", "--out", str(tmp_path / "out"), "--device", "cpu",
            "--no-progress", "--num-maps", "0"]
    assert fusionseg_main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable image(s)" in captured.err and "0_text.jpg" in captured.err
    assert "on 2 images" in captured.out and (tmp_path / "out" / "plan.json").is_file()


def test_profile_checks_its_out_folder_before_any_work(tmp_path, capsys, monkeypatch):
    import fusionseg.commands.profile as command

    monkeypatch.setattr(command, "profile_encoders", lambda *a, **k: pytest.fail("profiled before checking --out"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = ["profile", "--out", str(blocker / "out"), "--device", "cpu", "--no-progress", "--num-images", "1"]
    assert fusionseg_main(argv) == 2
    assert f"--out {blocker / 'out'}: cannot write there" in capsys.readouterr().err


# -- a plan for another task ------------------------------------------------------------------------------------
def test_a_plan_made_for_another_task_is_refused(tmp_path, in_repo):
    plan = {"master": "regions", "aux": "edges", "strides": [8], "task": "instance"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="made for task 'instance', but this model is 'semantic'"):
        run_lightning_cli(_fit(tmp_path / "run", tmp_path / "cache", 1, "--model.plan", str(tmp_path / "plan.json")))


# -- stop signals, from outside -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_the_step_and_exits_143_without_worker_tracebacks(trained, tmp_path):
    _, cache = trained
    root = tmp_path / "run"
    args = _fit(root, cache, 100000, "--data.num_workers", "2", "--data.synthetic_train_images", "64")
    args[args.index("--last_checkpoint.every_n_train_steps") + 1] = "1000"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "fit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fusionseg.cli", *args, "--trainer.log_every_n_steps", "1",
                                 "--trainer.callbacks+=cli_probes.Probe", f"--trainer.callbacks.out_dir={tmp_path}"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        try:
            def training() -> bool:  # the first loss reached TensorBoard
                events = root.glob("lightning_logs/version_0/events.out.tfevents.*")
                return any(b"train/loss" in p.read_bytes() for p in events)

            while not training():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "training did not start within 4 minutes"
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler does: the whole group, workers included
            proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    assert "killed by signal" not in text and "Traceback" not in text, text[-3000:]
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] >= 1  # saved at the step it stopped, though every_n_train_steps is 1000
    assert "stopped by SIGTERM at step" in text
