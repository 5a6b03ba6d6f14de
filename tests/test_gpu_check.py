"""benchmarks/gpu_check.sh: its dry run (every step on the CPU at tiny sizes), its tiny ADE20K and its verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402  (benchmarks/ is not a package)


def test_the_tiny_ade20k_is_read_by_the_ade20k_reader(tmp_path):
    from fusionseg.data.ade20k import ADE20KDataset

    base = gpu_check.write_ade20k(tmp_path, train=3, val=1, size=64)
    train = ADE20KDataset(base, split="train")
    assert len(train) == 3 and len(ADE20KDataset(base, split="val")) == 1
    item = train[0]
    assert tuple(item.image.shape) == (3, 64, 80)
    labels = item.target.labels
    assert 2 <= len(labels) and int(labels.min()) >= 0 and int(labels.max()) < 150  # class = PNG value - 1


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def test_summary_reports_each_target_and_which_were_not_checked(tmp_path):
    _write(tmp_path / "env.status.json", {"rc": 0, "seconds": 1, "timed_out": False})
    _write(tmp_path / "fit.status.json", {"rc": 137, "seconds": 150, "timed_out": True})
    _write(tmp_path / "kmeans.json", {"faiss": {"objective_within_1pct": True, "speedup_at_least_10x": False},
                                      "scs_batched": {"objective_within_1pct": True}})
    _write(tmp_path / "train_step_gpu-base.json", {"verdicts": {"fused_within_budget": True}})
    result = gpu_check.summary(tmp_path)
    assert result["targets"]["faiss_gpu_at_least_10x_cpu"] is False
    assert result["targets"]["fused_step_within_1.10x_transformers_plus_aux"] is True
    assert result["targets"]["fit_20_steps_ran"] is False
    assert result["all_targets_met"] is False
    assert result["steps_failed"] == ["fit"]
    assert "profile_metrics_within_25pct_of_forward" in result["not_checked"]


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_the_summary(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path), "GPU_CHECK_DRY_RUN": "1", "PYTHON": sys.executable,
           "FUSIONSEG_PROFILE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    log = (tmp_path / "gpu_check.log").read_text() if (tmp_path / "gpu_check.log").exists() else done.stderr
    assert done.returncode == 0, log[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True and result["steps_failed"] == []
    assert set(result["steps"]) == {"env", "kmeans", "metrics", "train_step", "profile", "ade20k", "fit"}
    assert result["fit"]["steps"] == 3 and result["fit"]["step_s_median"] > 0
    assert result["kmeans"]["faiss"]["relative_objective_difference"] == 0.0  # the CPU against itself
    assert result["profile"]["summary"]["parts"]["metrics_master"]["calls"] == 2
    assert {"metrics_cpu.md", "profile_tiny.md", "train_step_dry.md"} <= {p.name for p in tmp_path.iterdir()}
