"""Interrupted runs resume: the training loader continues mid-epoch, and `fit --ckpt_path last` finishes a
crashed run with the same plan, continuing its step count on the batches it had not trained on yet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import pytest
import torch
from cli_probes import SimulatedCrash
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from fusionseg.callbacks import MetricProfiler
from fusionseg.data.resumable import EpochSeededSampler, ResumableDataLoader
from fusionseg.lightning_cli import run_lightning_cli


def _ids(loader: ResumableDataLoader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


# -- the loader ------------------------------------------------------------------------------------------
@given(n=st.integers(1, 40), batch_size=st.integers(1, 7), seed=st.integers(0, 5), epoch=st.integers(0, 3),
       data=st.data())
def test_a_resumed_loader_yields_exactly_the_batches_the_interrupted_one_had_left(n, batch_size, seed, epoch, data):
    dataset = TensorDataset(torch.arange(n))
    first = ResumableDataLoader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
    first.sampler.set_epoch(epoch)
    full = _ids(first)
    consumed = data.draw(st.integers(0, len(full) - 1))
    iterator = iter(first)
    seen = [next(iterator)[0].tolist() for _ in range(consumed)]
    state = first.state_dict()
    assert state == {"batches_in_epoch": consumed, "epoch": epoch, "seed": seed}

    resumed = ResumableDataLoader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
    resumed.load_state_dict(state)
    rest = _ids(resumed)
    assert seen + rest == full
    assert sorted(i for b in full for i in b) == list(range(n))
    resumed.sampler.set_epoch(epoch + 1)
    assert len(_ids(resumed)) == len(full)  # the skip applies to the interrupted epoch only


def test_a_finished_epoch_saves_position_zero_and_the_next_epoch_is_not_skipped():
    loader = ResumableDataLoader(TensorDataset(torch.arange(6)), batch_size=2, shuffle=True, seed=1)
    assert len(_ids(loader)) == 3
    assert loader.state_dict()["batches_in_epoch"] == 0
    state = {"batches_in_epoch": 2, "epoch": 0}
    loader.load_state_dict(state)
    loader.sampler.set_epoch(1)  # what Lightning does when the checkpoint's epoch had ended
    assert len(_ids(loader)) == 3


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochSeededSampler(range(20), seed=3), EpochSeededSampler(range(20), seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b) and sorted(b) == list(range(20))


def test_bad_state_is_refused():
    loader = ResumableDataLoader(TensorDataset(torch.arange(4)), batch_size=2)
    with pytest.raises(ValueError, match="batches_in_epoch"):
        loader.load_state_dict({"position": 3})


def test_worker_processes_resume_at_the_same_place():
    dataset = TensorDataset(torch.arange(12))
    full = _ids(ResumableDataLoader(dataset, batch_size=2, shuffle=True, seed=0))
    resumed = ResumableDataLoader(dataset, batch_size=2, shuffle=True, seed=0, num_workers=1)
    resumed.load_state_dict({"batches_in_epoch": 4, "epoch": 0})
    assert _ids(resumed) == full[4:]


# -- a crashed run, resumed from the command line ---------------------------------------------------------------
def _fit_args(root, cache, probe_dir, *extra):
    return [
        "fit", "--config", "configs/demo.yaml",
        "--trainer.default_root_dir", str(root), "--trainer.max_steps", "6", "--trainer.val_check_interval", "100",
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--data.crop_size", "64", "--data.batch_size", "2", "--data.num_workers", "0",
        "--data.synthetic_train_images", "20", "--data.synthetic_val_images", "2", "--data.synthetic_image_size", "64",
        "--model.head.num_queries", "8", "--model.head.dec_layers", "2", "--model.head.enc_layers", "1", "--model.head.hidden_dim", "32",
        "--model.head.dim_feedforward", "64", "--model.head.enc_feedforward", "64", "--model.head.train_points", "256",
        "--model.master", "regions:channels=16", "--model.aux", "edges:channels=16",
        "--metric_profiler.num_batches", "1", "--metric_profiler.cache_dir", str(cache),
        "--last_checkpoint.every_n_train_steps", "2", "--visuals.num_images", "1",
        "--visuals.feature_metrics", "false", "--visuals.pca_maps", "false",
        "--trainer.callbacks+=cli_probes.Probe", f"--trainer.callbacks.out_dir={probe_dir}",
        *extra,
    ]


def test_a_crashed_run_resumes_from_last_ckpt_with_its_plan_and_data_position(tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).parents[1])
    faiss.omp_set_num_threads(1)
    root, cache = tmp_path / "run", tmp_path / "cache"
    with pytest.raises(SimulatedCrash):
        run_lightning_cli(_fit_args(root, cache, tmp_path / "crashed",
                                    "--trainer.callbacks+=cli_probes.StopAfterStep", "--trainer.callbacks.step=3"))
    last = root / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2  # saved every 2 steps; step 3 was lost with the crash
    crashed_plan = ckpt["hyper_parameters"]["plan"]  # the plan, stored once

    cli = run_lightning_cli(_fit_args(root, cache, tmp_path / "resumed", "--ckpt_path", "last"))
    probe = json.loads((tmp_path / "resumed" / "probe_rank0.json").read_text())
    assert cli.trainer.global_step == 6 and probe["global_step"] == 6
    assert probe["plan"] == crashed_plan
    assert [b["step"] for b in probe["batches"]] == [2, 3, 4, 5]  # the step count continues
    # The profiles came back with the checkpoint instead of being measured again.
    saved = next(state for key, state in ckpt["callbacks"].items() if key.startswith("MetricProfiler"))
    profiler = cli._callback(MetricProfiler)
    assert profiler.profiles == saved["profiles"] and profiler.profiles["aux"]["encoder"] == "edges:channels=16"

    # An uninterrupted run of the same configuration trains on the same batches in the same order.
    straight = run_lightning_cli(_fit_args(tmp_path / "straight", cache, tmp_path / "straight_probe"))
    reference = json.loads((tmp_path / "straight_probe" / "probe_rank0.json").read_text())
    assert straight.trainer.global_step == 6
    assert [b["ids"] for b in reference["batches"][2:]] == [b["ids"] for b in probe["batches"]]
    assert reference["plan"] == crashed_plan
    # ... and ends with exactly its weights: generators and augmentations continue where they stopped.
    assert reference["weights"] == probe["weights"]
    resumed_sd = torch.load(last, weights_only=True)["state_dict"]
    straight_sd = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert resumed_sd.keys() == straight_sd.keys()
    assert all(torch.equal(resumed_sd[k], straight_sd[k]) for k in resumed_sd)


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    """No clean shutdown at all: the process dies between steps, or while a checkpoint is being written."""
    repo = Path(__file__).parents[1]
    root, cache = tmp_path / "run", tmp_path / "cache"
    args = _fit_args(root, cache, tmp_path / "killed")
    args[args.index("--trainer.max_steps") + 1] = "100000"  # it would run for hours: only the kill ends it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fusionseg.cli", *args], cwd=repo, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        last = root / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        try:
            while not (last.exists() and torch.load(last, weights_only=True)["global_step"] >= 4):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint at step 4 within 4 minutes"
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(last, weights_only=True)  # the file is whole: Lightning writes checkpoints atomically
    step = ckpt["global_step"]

    resumed_args = _fit_args(root, cache, tmp_path / "resumed", "--ckpt_path", "last")
    resumed_args[resumed_args.index("--trainer.max_steps") + 1] = str(step + 2)
    cli = run_lightning_cli(resumed_args)
    probe = json.loads((tmp_path / "resumed" / "probe_rank0.json").read_text())
    assert cli.trainer.global_step == step + 2
    assert [b["step"] for b in probe["batches"]] == [step, step + 1]
    assert probe["plan"] == ckpt["hyper_parameters"]["plan"]
