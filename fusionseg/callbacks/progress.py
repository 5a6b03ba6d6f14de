"""A training progress bar counted in optimizer steps of the whole run: `fit 120/600`, right after a resume too.

fusionseg's schedules are step-based (`max_steps`, `val_check_interval` in steps), so Lightning's
per-epoch bar reads badly here: `Epoch 0/-2` (max_epochs is -1), a batch count that restarts every
epoch and is wrong after a mid-epoch resume, and `v_num` (the logger's version) among the metrics.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override


def run_total(trainer: Trainer) -> float:
    """Optimizer steps of the whole run: `max_steps`, else Lightning's estimate (inf when unbounded)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return trainer.max_steps
    total = trainer.estimated_stepping_batches
    return total if math.isfinite(total) else float("inf")


class StepProgressBar(TQDMProgressBar):
    """One training bar for the whole run, in optimizer steps (`fit 120/600`), starting at the resumed step;
    the metrics shown without `v_num`. Validation, test and predict bars are Lightning's."""

    @property
    @override
    def train_description(self) -> str:
        return "fit"

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        total = run_total(trainer)
        bar.total = None if math.isinf(total) else total
        bar.n = trainer.global_step  # a resumed run starts where it stopped
        bar.refresh()

    @override
    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        pass  # one bar for the run: epochs do not restart it

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is None or bar.disable or step == bar.n:  # no new optimizer step (gradient accumulation)
            return
        if step % max(1, self.refresh_rate) == 0 or step == bar.total:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws the bar once

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    @override
    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version number, not a metric
        return items
