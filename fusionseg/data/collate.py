"""Batching items of different sizes into a `SegBatch`, and reporting files skipped as unreadable."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch.utils.data import DataLoader

from fusionseg.data.base import SegItem
from fusionseg.data.workers import quiet_worker_init
from fusionseg.structures import SegBatch, SegTarget

log = logging.getLogger(__name__)


@dataclass
class CollatedBatch(SegBatch):
    """A `SegBatch` that also names the unreadable files its items replaced (`skip_corrupt=True`)."""

    skipped: list[str] = field(default_factory=list)

    def pin_memory(self) -> CollatedBatch:
        """Called by `DataLoader(pin_memory=True)`."""
        self.images = self.images.pin_memory()
        for t in self.targets:
            t.masks, t.labels, t.iscrowd = t.masks.pin_memory(), t.labels.pin_memory(), t.iscrowd.pin_memory()
        return self


class SegCollate:
    """Pads images bottom/right to a common size, a multiple of `size_divisor`.

    `pad_targets=True` (training): target masks are padded to the batch's image size (the padding lies
    outside every mask). `pad_targets=False` (evaluation): targets stay at their original size.
    """

    def __init__(self, pad_targets: bool, size_divisor: int = 32) -> None:
        self.pad_targets = pad_targets
        self.size_divisor = size_divisor

    def __call__(self, items: Sequence[SegItem]) -> CollatedBatch:
        sizes = [(int(it.image.shape[-2]), int(it.image.shape[-1])) for it in items]
        d = self.size_divisor
        height = math.ceil(max(h for h, _ in sizes) / d) * d
        width = math.ceil(max(w for _, w in sizes) / d) * d
        images = items[0].image.new_zeros((len(items), 3, height, width))
        targets = []
        for i, (it, (h, w)) in enumerate(zip(items, sizes)):
            images[i, :, :h, :w] = it.image
            target = it.target
            if self.pad_targets:
                mh, mw = target.masks.shape[-2:]
                padded = F.pad(target.masks, (0, width - mw, 0, height - mh))
                target = SegTarget(masks=padded, labels=target.labels, iscrowd=target.iscrowd)
            targets.append(target)
        return CollatedBatch(
            images=images,
            targets=targets,
            image_sizes=sizes,
            orig_sizes=[tuple(it.orig_size) for it in items],
            image_ids=[it.image_id for it in items],
            skipped=[path for it in items for path in it.skipped],
        )


class ReportingDataLoader(DataLoader):
    """A `DataLoader` that, at the end of each pass, logs a warning naming the unreadable files it skipped.

    Its workers ignore SIGTERM and SIGINT (`workers.quiet_worker_init`, unless another `worker_init_fn`
    is given): the main process saves and stops, then shuts them down.

    `skipped_files` keeps the files of the last pass (unique, in order of first appearance).
    """

    def __init__(self, *args, stage: str = "train", **kwargs) -> None:
        kwargs.setdefault("worker_init_fn", quiet_worker_init)  # a stop signal is the main process's to handle
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.skipped_files: list[str] = []

    def __iter__(self) -> Iterator[CollatedBatch]:  # type: ignore[override]
        seen: dict[str, None] = {}
        try:
            for batch in super().__iter__():
                for path in getattr(batch, "skipped", ()):
                    seen.setdefault(path, None)
                yield batch
        finally:
            self.skipped_files = list(seen)
            if seen:
                report_skipped(self.stage, self.skipped_files)


def report_skipped(stage: str, paths: Sequence[str]) -> None:
    """Log (warning level, logger `fusionseg.data.collate`) how many files were skipped, and which."""
    shown = "\n  ".join(paths[:50]) + (f"\n  ... and {len(paths) - 50} more" if len(paths) > 50 else "")
    message = f"{stage}: skipped {len(paths)} unreadable file(s) this epoch (skip_corrupt=True):\n  {shown}"
    log.warning(message)

