"""Callbacks the command-line tests add with `--trainer.callbacks`: they record what a run did, or stop it.

Importable by name (`cli_probes.Probe`) in-process and, with `tests/` on PYTHONPATH, in DDP workers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


def state_digest(module: LightningModule) -> str:
    """sha256 of every tensor of the module's state dict, to compare weights across processes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Probe(Callback):
    """Writes `<out_dir>/probe_rank<r>.json` when training ends: plan, weights digest, the image ids of
    every training batch with the step it was trained at, and the final global step."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.batches: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.batches.append({"step": trainer.global_step, "epoch": trainer.current_epoch, "ids": list(batch.image_ids)})

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = {
            "plan": pl_module.plan.to_dict() if pl_module.plan is not None else None,
            "weights": state_digest(pl_module),
            "batches": self.batches,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
        }
        path = Path(self.out_dir) / f"probe_rank{trainer.global_rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, default=float))


class StopAfterStep(Callback):
    """Fails after optimizer step `step` the way a crash would: the checkpoint
    callbacks run after this one (Lightning orders them last), so the step itself is not saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash after step {trainer.global_step}")


class SimulatedCrash(RuntimeError):
    """The failure StopAfterStep raises."""
