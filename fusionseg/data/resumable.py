"""A training DataLoader whose place in the epoch survives a checkpoint.

Lightning 2.6 saves the state of a training dataloader only when the loader implements
`state_dict()` / `load_state_dict()`; a plain `DataLoader` restarts its epoch from the first batch
after a mid-epoch resume, so the resumed run trains twice on what it already saw. This loader:

* shuffles with `EpochSeededSampler`, whose order depends only on `(seed, epoch)`, so a resumed
  process draws the same order as the interrupted one (under DDP Lightning swaps in its
  `DistributedSampler`, which is seeded per epoch too);
* counts the batches it has handed to the training loop in the current epoch and saves that count;
* after `load_state_dict`, skips that many batches of the same epoch by dropping their indices
  before any image is read.

Lightning's data fetcher does not read ahead of the training loop for loaders with a length, so
"handed out" equals "trained on" when a checkpoint is written at the end of a training step.

Augmentations are drawn per item, not from the process's generators: each index is handed to the
dataset as a `SeededIndex` carrying a seed made from `(seed, epoch, index)`, and `SegDataset` seeds
torch with it while it reads and transforms the item. The same item of the same epoch gets the same
crop, flip and jitter in any worker, with any number of workers, and in a resumed run. The loader also
draws its worker base seed from its own generator, so building an iterator leaves the global
generators alone (`callbacks.rng_state.RNGStates` restores those exactly).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fusionseg.data.collate import ReportingDataLoader


class SeededIndex(int):
    """A dataset index carrying the seed of that item's random augmentations (`seed` attribute)."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # workers receive indices pickled
        return (SeededIndex, (int(self), self.seed))


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for item `index` in `epoch` of a run seeded with `seed`."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFFFFFFFFFF]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochSeededSampler(Sampler[int]):
    """Random order of `range(len(data_source))` drawn from `seed + epoch`; Lightning calls `set_epoch`."""

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.num_samples = len(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_samples


def _epoch_sampler(loader: DataLoader) -> Any:
    """The sampler that carries the epoch (Lightning looks in the same two places)."""
    for candidate in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if candidate is not None and hasattr(candidate, "set_epoch"):
            return candidate
    return None


class _SkipResumed(Iterable):
    """The loader's index sampler, minus the batches the resumed epoch already trained on."""

    def __init__(self, loader: ResumableDataLoader, base: Iterable) -> None:
        self.loader = loader
        self.base = base

    def __iter__(self) -> Iterator[Any]:
        skip = self.loader._skip_in_epoch()
        self.loader._skipped = skip
        sampler = _epoch_sampler(self.loader)
        epoch = int(getattr(sampler, "epoch", 0) or 0) if sampler is not None else 0
        seed = self.loader.seed
        for i, indices in enumerate(self.base):
            if i >= skip:
                if isinstance(indices, (list, tuple)):
                    yield [SeededIndex(j, item_seed(seed, epoch, j)) for j in indices]
                else:
                    yield SeededIndex(indices, item_seed(seed, epoch, indices))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]


class ResumableDataLoader(DataLoader):
    """A `DataLoader` that remembers how many batches of the current epoch were trained on.

    `shuffle=True` without a `sampler` uses `EpochSeededSampler(dataset, seed)`; `seed=None` takes the
    run's seed (`PL_GLOBAL_SEED`, set by `seed_everything`, as Lightning's own DistributedSampler does). Everything else is
    passed to `torch.utils.data.DataLoader`. Lightning calls `state_dict()` when it writes a
    checkpoint and `load_state_dict()` before the resumed epoch starts.

    With `Trainer(limit_train_batches=...)` below the epoch's length a checkpoint written after an
    epoch ended still holds that epoch's count; the loader then drops it once the sampler reports
    the next epoch (always the case with `num_workers=0`, where indices are drawn lazily).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler | Iterable | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        if shuffle and sampler is None:
            sampler, shuffle = EpochSeededSampler(dataset, seed=seed), None  # type: ignore[arg-type]
        # Worker base seeds come from this generator, not the global one (see the module's docstring).
        kwargs.setdefault("generator", torch.Generator().manual_seed(int(seed) & 0xFFFFFFFF))
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, **kwargs)
        self.seed = seed
        self._handed_out = 0  # batches of the current epoch given to the training loop
        self._resume: tuple[int, int | None] | None = None  # (batches to skip, epoch they belong to)
        self._skipped = 0  # what the current epoch's index sampler skipped

    @property
    def _index_sampler(self) -> Iterable:  # torch draws every epoch's indices from here
        return _SkipResumed(self, super()._index_sampler)

    def _skip_in_epoch(self) -> int:
        if self._resume is None:
            return 0
        skip, epoch = self._resume
        sampler = _epoch_sampler(self)
        if epoch is not None and sampler is not None and getattr(sampler, "epoch", epoch) != epoch:
            skip = 0  # the saved epoch had ended; this is the next one
        return skip

    def __iter__(self) -> Iterator[Any]:
        return self._count(super().__iter__())

    def _count(self, iterator: Iterator[Any]) -> Iterator[Any]:
        total = len(self)
        for i, batch in enumerate(iterator):
            if i == 0:  # the index sampler has decided what to skip by now (workers draw early, else lazily)
                self._handed_out, self._resume = self._skipped, None
            self._handed_out += 1
            if self._handed_out >= total:
                self._handed_out = 0  # the epoch is complete: a resume starts the next one
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler = _epoch_sampler(self)
        epoch = getattr(sampler, "epoch", None) if sampler is not None else None
        return {"batches_in_epoch": self._handed_out, "epoch": epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "batches_in_epoch" not in state:
            raise ValueError(
                f"a ResumableDataLoader state has keys ['batches_in_epoch', 'epoch', 'seed']; got {sorted(state)}"
            )
        epoch = state.get("epoch")
        sampler = _epoch_sampler(self)
        if state.get("seed") is not None:  # the interrupted run's order and augmentations, whatever this run's seed
            self.seed = int(state["seed"])
            if isinstance(sampler, EpochSeededSampler):
                sampler.seed = self.seed
        if epoch is not None and sampler is not None:
            sampler.set_epoch(epoch)  # workers may draw indices before Lightning sets the epoch
        self._resume = (int(state["batches_in_epoch"]), epoch)


class ResumableReportingDataLoader(ResumableDataLoader, ReportingDataLoader):
    """SegDataModule's training loader: resumes mid-epoch and reports the unreadable files it skipped."""
