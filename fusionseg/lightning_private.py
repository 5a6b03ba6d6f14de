"""Every private Lightning, torchmetrics and torch member fusionseg relies on, in one place.

Each is used because no public API does the job; the reason stands beside it. Call sites use the
functions here, and subclasses that override a private hook list it in `OVERRIDDEN`.
`tests/test_lightning_private.py` checks that every member still exists with the signature we call,
so an upgrade that changes one fails there, by name, instead of deep inside a run.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader
from torchmetrics import Metric

# Private hooks that fusionseg's subclasses override, `(owner, name, parameter names)`:
# - ModelCheckpoint._find_last_checkpoints: Trainer(ckpt_path="last") asks the checkpoint callbacks for their
#   last*.ckpt through it, before our callbacks' `setup` has resolved their `<root>/checkpoints` folder.
# - Metric._sync_dist: a rank that saw no images holds empty list states, which torchmetrics gathers as a
#   float32 placeholder that breaks the typed concatenation (fusionseg.evaluation.states).
# - DataLoader._index_sampler: where torch draws each epoch's indices; resuming mid-epoch skips the batches
#   already trained on there (fusionseg.data.resumable).
OVERRIDDEN: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (ModelCheckpoint, "_find_last_checkpoints", ("self", "trainer")),
    (Metric, "_sync_dist", ("self", "dist_sync_fn", "process_group")),
    (DataLoader, "_index_sampler", ()),
)


def find_last_checkpoints(callback: ModelCheckpoint, trainer: Trainer) -> set[str]:
    """The `last*.ckpt` files `callback` offers for `ckpt_path="last"`: Lightning's own rule.

    Public route: none; the Trainer resolves "last" inside `fit`, after the CLI needs the file (to check it
    and to continue the run's TensorBoard version).
    """
    return callback._find_last_checkpoints(trainer)


def save_last_checkpoint(callback: ModelCheckpoint, trainer: Trainer) -> None:
    """Write `callback`'s `last.ckpt` now, at the current step.

    Public route: none; ModelCheckpoint saves "last" only at its own intervals, and a stop signal or the end
    of training falls between them.
    """
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
    callback._last_global_step_saved = trainer.global_step


def last_saved_step(callback: ModelCheckpoint) -> int:
    """The optimizer step `callback` last saved at (so a step is never written twice)."""
    return int(callback._last_global_step_saved)


def pin_logger_version(logger: Any, version: Any) -> bool:
    """Make a TensorBoardLogger built without a version log to `version` (a resumed run's); True if pinned.

    Public route: none; TensorBoardLogger takes a version only in its constructor, which LightningCLI calls
    before the checkpoint to resume from is known.
    """
    if version is None or not isinstance(logger, TensorBoardLogger) or logger._version is not None:
        return False
    logger._version = version
    return True
