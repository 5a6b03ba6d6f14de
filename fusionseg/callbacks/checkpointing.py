"""Checkpoints a run can resume from: `last.ckpt` every N steps and at the end, and the best by the task's metric.

Both write to `<default_root_dir>/checkpoints` unless given a `dirpath`, so `fit --ckpt_path last`
finds the previous run's `last.ckpt` (Lightning's default would be the new run's logger version
folder, which is empty).
"""

from __future__ import annotations

import os

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from fusionseg.evaluation import HEADLINE_METRIC


def main_metric(task: str) -> str:
    """`val/...` name of the metric that picks the best checkpoint for `task`, as FusedSegModule logs it."""
    if task not in HEADLINE_METRIC:
        raise ValueError(f"no main metric for task {task!r}; known tasks: {sorted(HEADLINE_METRIC)}")
    return f"val/{HEADLINE_METRIC[task]}"


def default_checkpoint_dir(trainer: Trainer) -> str:
    return os.path.join(trainer.default_root_dir, "checkpoints")


class _RootDirCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose default folder is `<default_root_dir>/checkpoints`, stable across runs."""

    def _resolve_dirpath(self, trainer: Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = default_checkpoint_dir(trainer)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._resolve_dirpath(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:  # Lightning resolves `ckpt_path="last"` here
        self._resolve_dirpath(trainer)
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

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning saves `last` at the end only if it never saved one; the steps since the last
        # multiple of every_n_train_steps would be lost.
        if self._last_global_step_saved != trainer.global_step and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step


class BestCheckpoint(_RootDirCheckpoint):
    """The best checkpoint by the task's main metric (`val/mIoU`, `val/AP` or `val/PQ`), after each validation.

    `monitor="auto"` picks the metric from the module's `task`; name another `val/...` key to override.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "auto",
        mode: str = "max",
        save_top_k: int = 1,
        filename: str = "best-{step}",
    ) -> None:
        self._auto_monitor = monitor == "auto"
        super().__init__(
            dirpath=dirpath,
            filename=filename,
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
        super().setup(trainer, pl_module, stage)
