"""The dataset contract: items of an image in [0, 1], a `SegTarget`, an id; corrupt files handled in one place."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from fusionseg.data.errors import CorruptFileError, DatasetLayoutError
from fusionseg.structures import IGNORE_INDEX, TASKS, DatasetInfo, SegTarget

# A transform takes the uint8 image and the target as read and returns the float image in [0, 1] and the target.
Transform = Callable[[Tensor, SegTarget], tuple[Tensor, SegTarget]]

# With skip_corrupt, an unreadable item is replaced by the next readable one, at most this many files ahead.
MAX_CONSECUTIVE_CORRUPT = 16


class SegItem(NamedTuple):
    """One dataset item. `orig_size` is (H, W) as read; `skipped` lists unreadable files this item replaced."""

    image: Tensor  # (3, H, W) float in [0, 1]
    target: SegTarget
    image_id: str
    orig_size: tuple[int, int]
    skipped: tuple[str, ...] = ()


class SegDataset(Dataset[SegItem], ABC):
    """Base class of the dataset readers.

    Subclasses set `info` and `ids` (one image id per item; `__len__` and `image_id` read it, or
    override both) and implement `load(i)`, which returns the uint8 image `(3, H, W)` and the
    `SegTarget` for `self.task`, raising `CorruptFileError` for unreadable files.
    """

    tasks: ClassVar[tuple[str, ...]] = TASKS
    info: DatasetInfo
    ids: list[str]

    def __init__(self, task: str, transform: Transform | None = None, skip_corrupt: bool = False) -> None:
        if task not in self.tasks:
            raise ValueError(f"{type(self).__name__} supports tasks {self.tasks}, got task={task!r}")
        self.task = task
        self.transform = transform
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.ids)

    def image_id(self, index: int) -> str:
        return self.ids[index]

    @abstractmethod
    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        """The uint8 image `(3, H, W)` and the target of item `index`."""

    def __getitem__(self, index: int) -> SegItem:
        seed = getattr(index, "seed", None)  # a resumable loader's SeededIndex: this item's augmentation seed
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {len(self)} items")
        index %= len(self)
        skipped: list[str] = []
        for attempt in range(min(len(self), MAX_CONSECUTIVE_CORRUPT)):
            i = (index + attempt) % len(self)
            try:
                image, target = self.load(i)
                break
            except CorruptFileError as err:
                if not self.skip_corrupt:
                    raise
                skipped.append(str(err.path))
        else:
            raise CorruptFileError(skipped[-1], f"{len(skipped)} consecutive items are unreadable ({skipped})")
        orig_size = (int(image.shape[-2]), int(image.shape[-1]))
        if tuple(target.masks.shape[-2:]) != orig_size:
            raise ValueError(
                f"{type(self).__name__}[{i}] ({self.image_id(i)}): image is {orig_size} but its annotation is "
                f"{tuple(target.masks.shape[-2:])}; image and label files must have the same size"
            )
        if self.transform is not None and seed is not None:
            with torch.random.fork_rng(devices=[]):  # the CPU generator only; the caller's draws are untouched
                torch.default_generator.manual_seed(seed)
                image, target = self.transform(image, target)
        elif self.transform is not None:
            image, target = self.transform(image, target)
        else:
            image = image.float().div_(255)
        return SegItem(image, target, self.image_id(i), orig_size, tuple(skipped))


def require_dir(path: Path, dataset: str, root: Path | str | None, layout: str, what: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(dataset, root, f"{what} not found: {path}", layout)
    return path


def require_file(path: Path, dataset: str, root: Path | str | None, layout: str, what: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(dataset, root, f"{what} not found: {path}", layout)
    return path


def require_root(root: str | Path | None, dataset: str, layout: str) -> Path:
    if root is None:
        raise DatasetLayoutError(dataset, root, "no root given; pass root=PATH to the dataset folder", layout)
    path = Path(root).expanduser()
    return require_dir(path, dataset, root, layout, "root folder")


def semantic_target(label: np.ndarray) -> SegTarget:
    """One mask per class present in a `(H, W)` class map (`IGNORE_INDEX` = unlabeled)."""
    label_t = torch.from_numpy(np.ascontiguousarray(label)).long()
    classes = torch.unique(label_t)
    classes = classes[classes != IGNORE_INDEX]
    return SegTarget(masks=label_t[None] == classes[:, None, None], labels=classes)


def segments_target(segment_ids: np.ndarray, segments: Sequence[tuple[int, int, bool]]) -> SegTarget:
    """Masks from a segment-id map and `(segment id, class, iscrowd)` triples; empty segments are dropped."""
    ids = torch.from_numpy(np.ascontiguousarray(segment_ids)).long()
    if not segments:
        h, w = ids.shape
        return SegTarget(torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0, dtype=torch.long))
    seg = torch.tensor([s[0] for s in segments], dtype=torch.long)
    masks = ids[None] == seg[:, None, None]
    keep = masks.flatten(1).any(1)
    labels = torch.tensor([s[1] for s in segments], dtype=torch.long)
    crowd = torch.tensor([bool(s[2]) for s in segments], dtype=torch.bool)
    return SegTarget(masks=masks[keep], labels=labels[keep], iscrowd=crowd[keep])


def merge_by_class(target: SegTarget) -> SegTarget:
    """A semantic target (one mask per class) from a panoptic or instance one; crowd regions keep their class."""
    if target.labels.numel() == 0:
        return SegTarget(target.masks, target.labels)
    classes = torch.unique(target.labels)
    masks = torch.stack([target.masks[target.labels == c].any(0) for c in classes])
    return SegTarget(masks=masks, labels=classes)
