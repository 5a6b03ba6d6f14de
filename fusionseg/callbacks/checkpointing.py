"""Checkpoints a run can resume from: `last.ckpt` every N steps and at the end, and the best by the task's metric.

Both write to `<default_root_dir>/checkpoints` unless given a `dirpath`, so `fit --ckpt_path last`
finds the previous run's `last.ckpt` (Lightning's default would be the new run's logger version
folder, which is empty).

Both write atomically (`AtomicCheckpointIO`): Lightning's own writer stages the file under `$TMPDIR`
and moves it, which is a copy when `$TMPDIR` is on another filesystem, so a kill or a full disk during
the move leaves a truncated checkpoint. Here a failed or interrupted write leaves the previous file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from fusionseg.evaluation import HEADLINE_METRIC
from fusionseg.io_atomic import atomic_torch_save, temp_prefix
from fusionseg.lightning_private import last_saved_step, save_last_checkpoint
from fusionseg.run_folder import RUN_KEY


def main_metric(task: str) -> str:
    """`val/...` name of the metric that picks the best checkpoint for `task`, as FusedSegModule logs it."""
    if task not in HEADLINE_METRIC:
        raise ValueError(f"no main metric for task {task!r}; known tasks: {sorted(HEADLINE_METRIC)}")
    return f"val/{HEADLINE_METRIC[task]}"


def default_checkpoint_dir(trainer: Trainer) -> str:
    return os.path.join(trainer.default_root_dir, "checkpoints")


def _is_local(path: Any) -> bool:
    text = str(path)
    return "://" not in text or text.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that writes local checkpoints atomically (`fusionseg.io_atomic.atomic_torch_save`).

    The checkpoint is written to a temporary file in its own folder, fsynced and renamed into place, so
    the file at the path is always a whole checkpoint: the previous one, or the new one. Remote paths
    (`s3://...`) go through Lightning's writer. The checkpoint callbacks install it on the trainer's
    strategy when the strategy uses the plain `TorchCheckpointIO`; pass it as `Trainer(plugins=[...])` to
    use it with other callbacks.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))


def use_atomic_checkpoint_io(trainer: Trainer) -> None:
    """Make `trainer` write checkpoints with `AtomicCheckpointIO`, unless another writer was configured."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed checkpoint write left in `folder` (`.<name>.ckpt.*.tmp`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(temp_prefix("*.ckpt") + "*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class _RootDirCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose default folder is `<default_root_dir>/checkpoints`, stable across runs,
    written atomically."""

    def resolve_dirpath(self, trainer: Trainer) -> None:
        """Fix the folder now (`<default_root_dir>/checkpoints` unless given), before Lightning's setup does."""
        if self.dirpath is None:
            self.dirpath = default_checkpoint_dir(trainer)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.resolve_dirpath(trainer)
        use_atomic_checkpoint_io(trainer)
        if stage == "fit" and trainer.is_global_zero and self.dirpath is not None and _is_local(self.dirpath):
            remove_stale_temp_files(self.dirpath)
        super().setup(trainer, pl_module, stage)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # The TensorBoard version this run logs to, so a resumed run continues it (see fusionseg.run_folder).
        if trainer.logger is not None:
            checkpoint[RUN_KEY] = {"logger_version": trainer.logger.version}

    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:  # private hook: see fusionseg.lightning_private
        self.resolve_dirpath(trainer)
        return super()._find_last_checkpoints(trainer)


class LastCheckpoint(_RootDirCheckpoint):
    """`last.ckpt` every `every_n_train_steps` optimizer steps and once more when training ends.

    An interrupted run loses at most the steps since the last save; `fit --ckpt_path last`
    resumes it (plan, weights, optimizer, scheduler and data position).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 1000) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps={every_n_train_steps} must be >= 1")
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,  # one last.ckpt, overwritten
        )

    @property
    def state_key(self) -> str:
        # Stable across runs, so a resumed run restores this state even with another save interval.
        return self._generate_state_key(kind="last")

    def save_now(self, trainer: Trainer) -> str:
        """Write `last.ckpt` at the current step unless it holds this step already; returns its path.

        Call it on every rank (saving is collective); used at the end of training and on a stop signal.
        """
        if last_saved_step(self) != trainer.global_step and not trainer.fast_dev_run:
            save_last_checkpoint(self, trainer)
        return self.last_model_path

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning saves `last` at the end only if it never saved one; the steps since the last
        # multiple of every_n_train_steps would be lost.
        self.save_now(trainer)


def best_filename(monitor: str) -> str:
    """`best-step={step}-mIoU={val/mIoU:.1f}` for `monitor="val/mIoU"`: Lightning's own metric-name
    insertion would write `val/mIoU=...`, a folder `val/`, so the name is written out."""
    return f"best-step={{step}}-{monitor.split('/')[-1]}={{{monitor}:.1f}}"


class BestCheckpoint(_RootDirCheckpoint):
    """The best checkpoint by the task's main metric (`val/mIoU`, `val/AP` or `val/PQ`), after each validation.

    `monitor="auto"` picks the metric from the module's `task`; name another `val/...` key to override.
    `filename="auto"` names the file by step and metric, `best-step=400-mIoU=41.6.ckpt`, so a listing
    of the folder says which checkpoint is best and how good it is.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "auto",
        mode: str = "max",
        save_top_k: int = 1,
        filename: str = "auto",
    ) -> None:
        self._auto_monitor = monitor == "auto"
        self._auto_filename = filename == "auto"
        super().__init__(
            dirpath=dirpath,
            filename=None if self._auto_filename else filename,
            monitor=monitor,  # "auto" is replaced in setup, once the module's task is known
            mode=mode,
            save_top_k=save_top_k,
        )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._auto_monitor:
            task = getattr(pl_module, "task", None)
            if task is None:
                raise ValueError(
                    f"BestCheckpoint(monitor='auto') reads the task from the module, but "
                    f"{type(pl_module).__name__} has no `task`; pass monitor='val/<metric>'"
                )
            self.monitor = main_metric(task)
        if self._auto_filename:
            self.filename = best_filename(self.monitor)
            self.auto_insert_metric_name = False
        super().setup(trainer, pl_module, stage)
