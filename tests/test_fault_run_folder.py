"""One run per folder: a second fit into a folder with checkpoints is refused (naming the two ways on) unless
it resumes or asks to overwrite; every checkpoint records the TensorBoard version its run logs to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import TensorBoardLogger

from fusionseg.callbacks.checkpointing import LastCheckpoint
from fusionseg.run_folder import RUN_KEY, RunFolderError, check_run_folder, existing_checkpoints, logger_version


def _previous_run(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 5}, root / "checkpoints" / "last.ckpt")
    torch.save({"global_step": 4}, root / "checkpoints" / "best-step=4.ckpt")
    return root / "checkpoints"


def test_a_new_fit_into_a_folder_with_checkpoints_is_refused_naming_the_ways_on(tmp_path):
    folder = _previous_run(tmp_path)
    with pytest.raises(RunFolderError) as err:
        check_run_folder(tmp_path, [folder], ckpt_path=None)
    message = str(err.value)
    assert "--ckpt_path last" in message and "--trainer.default_root_dir" in message
    assert "--overwrite_checkpoints true" in message and str(folder / "last.ckpt") in message
    assert err.value.checkpoints[0].name == "last.ckpt"


def test_resuming_overwriting_or_an_empty_folder_are_allowed(tmp_path):
    folder = _previous_run(tmp_path / "old")
    check_run_folder(tmp_path / "old", [folder], ckpt_path="last")
    check_run_folder(tmp_path / "old", [folder], ckpt_path=None, overwrite=True)
    check_run_folder(tmp_path / "new", [tmp_path / "new" / "checkpoints"], ckpt_path=None)
    assert existing_checkpoints([tmp_path / "missing"]) == []


def test_a_requeued_slurm_job_resumes_by_itself_and_is_allowed(tmp_path, monkeypatch):
    folder = _previous_run(tmp_path)
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    check_run_folder(tmp_path, [folder], ckpt_path=None)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive shell is not a requeued job
    with pytest.raises(RunFolderError):
        check_run_folder(tmp_path, [folder], ckpt_path=None)


def test_checkpoints_record_the_tensorboard_version_of_their_run(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="lightning_logs", version=7)
    trainer = Trainer(default_root_dir=tmp_path, max_steps=1, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, callbacks=[LastCheckpoint()])
    trainer.fit(BoringModel())
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)[RUN_KEY] == {"logger_version": 7}
    assert logger_version(last) == 7
    assert logger_version(tmp_path / "nothing.ckpt") is None
