"""Random number generator states in the checkpoint, so a resumed run draws what the interrupted one would have.

Lightning restores weights, optimizer, schedulers and (with `ResumableDataLoader`) the place in the epoch,
but not the generators: after a resume the training step's random draws (Mask2Former's point sampling,
dropout) and the augmentations would differ from the uninterrupted run. `RNGStates` stores the torch
(CPU and every CUDA device), numpy and Python states of every rank and puts each rank's back right
before its first training batch after the resume (after the data loader was built, which draws from the
generators too, and after any profiling or logging done at the start).

Augmentations do not depend on these states: `ResumableDataLoader` seeds each item from the run's seed,
the epoch and the item's index, so workers and a resumed epoch draw the same augmentations.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer


def capture_rng_states() -> dict[str, Any]:
    """This process's generator states: torch CPU, torch CUDA (all devices), numpy, Python.

    Only tensors and plain Python values, so `torch.load(..., weights_only=True)` reads the checkpoint.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set this process's generators to `states` (from `capture_rng_states`)."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds CUDA generator states of {len(cuda)} devices, this process sees "
                f"{torch.cuda.device_count()}; resume on the same number of GPUs per process"
            )
        torch.cuda.set_rng_state_all(cuda)


class RNGStates(Callback):
    """Saves every rank's generator states in the checkpoint and restores them when a fit resumes.

    `state_dict()` gathers the states of all ranks (it runs on every rank while a checkpoint is written);
    a resumed run restores rank r's states at its first `on_train_batch_start`. A checkpoint written with
    another number of processes is refused with the two world sizes named.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "RNGStates"

    def state_dict(self) -> dict[str, Any]:
        local = capture_rng_states()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            return {"ranks": gathered}
        return {"ranks": [local]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks")
        if not isinstance(ranks, list) or not ranks:
            raise ValueError(
                f"RNGStates: expected {{'ranks': [state per rank]}} in the checkpoint, got keys {sorted(state_dict)}"
            )
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(ranks) != world:
            raise ValueError(
                f"RNGStates: the checkpoint was written by {len(ranks)} process(es), this run has {world}; the random "
                f"draws cannot continue exactly. Resume with the same number of devices and nodes, or drop the "
                f"'RNGStates' entry from the checkpoint's 'callbacks' to continue with fresh generators"
            )
        self._pending = ranks[rank]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None
