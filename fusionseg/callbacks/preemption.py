"""Stopping on SIGTERM / SIGINT: save `last.ckpt` at the current step, then exit with the signal's code.

A cluster scheduler that preempts or times out a job sends SIGTERM (SLURM: then SIGKILL after
`KillWait`, 30 s by default); Ctrl-C sends SIGINT. Without this, Lightning finishes the step and exits
with status 0, losing the steps since the last periodic checkpoint, and the scheduler believes the run
finished. With it:

- the signal only sets a flag (nothing is interrupted half-way through a step or a checkpoint write);
- after the current optimizer step all ranks agree to stop if any rank got a signal
  (`strategy.reduce_boolean_decision`), save `last.ckpt` through every `LastCheckpoint` (or
  `<default_root_dir>/checkpoints/last.ckpt` without one), and raise `Preempted`, a `SystemExit`
  with code 128 + signal number (143 for SIGTERM, 130 for SIGINT);
- a second SIGINT stops at once (KeyboardInterrupt), for a user who does not want to wait.

`fusionseg fit --ckpt_path last` resumes from the saved step. SLURM's SIGUSR1 (Lightning's auto-requeue)
is left to Lightning. A signal that arrives during validation takes effect after the next training step.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from fusionseg.callbacks.checkpointing import LastCheckpoint, default_checkpoint_dir

STOP_SIGNALS = ("SIGTERM", "SIGINT")


class Preempted(SystemExit):
    """Training stopped on a signal after saving `last.ckpt`; `code` is 128 + the signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(128 + signum)


class Preemption(Callback):
    """Saves `last.ckpt` at the current step when the process gets one of `signals`, then exits non-zero.

    The handlers are installed when training starts and the previous ones put back when it ends.
    """

    def __init__(self, signals: tuple[str, ...] | list[str] = STOP_SIGNALS) -> None:
        unknown = [s for s in signals if not isinstance(getattr(signal, str(s), None), signal.Signals)]
        if unknown:
            raise ValueError(f"unknown signal name(s) {unknown}; use names such as 'SIGTERM', 'SIGINT', 'SIGUSR2'")
        self.signals = tuple(str(s) for s in signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    # -- the handler: only a flag, so no step or checkpoint write is cut in half ---------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.received is None:
            self.received = signum
            name = signal.Signals(signum).name
            rank_zero_info(f"fusionseg: got {name}; saving last.ckpt after this step, then stopping")

    def _install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name in self.signals:
            signum = getattr(signal, name)
            self._previous[signum] = signal.signal(signum, self._handle)

    def _uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # -- hooks ---------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.received = None
        self._install()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._uninstall()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._uninstall()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._uninstall()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not _is_optimizer_step_end(trainer, batch_idx):
            return  # stopping inside gradient accumulation would lose the accumulated batches
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        signum = self.received if self.received is not None else int(signal.SIGTERM)
        path = self._save_last(trainer)
        self._uninstall()
        name = signal.Signals(signum).name
        rank_zero_info(
            f"fusionseg: stopped by {name} at step {trainer.global_step}; saved {path}. "
            f"Resume with the same command and `--ckpt_path last`"
        )
        raise Preempted(signum, trainer.global_step, path)

    @staticmethod
    def _save_last(trainer: Trainer) -> str:
        savers = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)]
        if savers:
            return [saver.save_now(trainer) for saver in savers][0]
        path = os.path.join(default_checkpoint_dir(trainer), "last.ckpt")
        trainer.save_checkpoint(path)
        return path


def _is_optimizer_step_end(trainer: Trainer, batch_idx: int) -> bool:
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    num_batches = trainer.num_training_batches
    last = isinstance(num_batches, int) and batch_idx + 1 >= num_batches
    return (batch_idx + 1) % accumulate == 0 or last
