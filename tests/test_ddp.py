"""DDP with two CPU processes (gloo): every rank profiles its share of the images, the per-image metrics are
gathered, so both ranks set the same plan; after a few steps both hold the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_two_processes_agree_on_the_plan_and_the_weights(tmp_path):
    probe = tmp_path / "probe"
    command = [
        sys.executable, "-m", "fusionseg.cli", "fit", "--config", "configs/demo.yaml",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--data.crop_size", "64", "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
        "--data.synthetic_train_images", "16", "--data.synthetic_val_images", "2", "--data.synthetic_image_size", "64",
        "--model.head.num_queries", "8", "--model.head.dec_layers", "2", "--model.head.enc_layers", "1", "--model.head.hidden_dim", "32",
        "--model.head.dim_feedforward", "64", "--model.head.enc_feedforward", "64", "--model.head.train_points", "256",
        "--model.master", "regions:channels=16", "--model.aux", "edges:channels=16",
        "--metric_profiler.num_batches", "2", "--metric_profiler.cache_dir", str(tmp_path / "cache"),
        "--visuals.num_images", "1", "--visuals.feature_metrics", "false",
        "--trainer.callbacks+=cli_probes.Probe", f"--trainer.callbacks.out_dir={probe}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    ranks = [json.loads((probe / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["plan"] == ranks[1]["plan"] and ranks[0]["plan"]["aux"] == "edges"
    # Each rank profiled one batch of two; the plan was made from all four images.
    assert ranks[0]["plan"]["scores"]["num_images"] == {"regions": 4, "edges": 4}
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert [r["global_step"] for r in ranks] == [3, 3]
    # The distributed sampler gave the ranks different images.
    seen = [{i for b in r["batches"] for i in b["ids"]} for r in ranks]
    assert not seen[0] & seen[1]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
