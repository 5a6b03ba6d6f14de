"""Splits of datasets that ship numbered frames and no train/val split (Synscapes, UrbanSyn).

`split="train"` (or `"all"`) is every frame: these datasets are training sources, evaluated on another
dataset (`SegDataModule(val_dataset=...)`). A held-out part is named by a frame range, `"FIRST-LAST"`
(inclusive, e.g. `"24001-25000"`), so that a split is reproducible without a file list of our own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from fusionseg.data.errors import DatasetLayoutError

WHOLE = ("train", "all")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def frame_number(path: Path, prefix: str = "") -> int | None:
    """The frame number of `<prefix><number>.<ext>`, or None when the name is not of that form."""
    stem = path.stem
    if not stem.startswith(prefix) or not stem[len(prefix):].isdigit():
        return None
    return int(stem[len(prefix):])


def select_frames(
    numbers: Iterable[int], split: str, dataset: str, root: str | Path | None, layout: str
) -> list[int]:
    """The frame numbers of `split`, sorted: all for "train"/"all", those in FIRST..LAST for "FIRST-LAST"."""
    numbers = sorted(numbers)
    match = _RANGE.match(split)
    if split in WHOLE:
        chosen = numbers
    elif match:
        first, last = int(match.group(1)), int(match.group(2))
        if first > last:
            raise ValueError(f"{dataset}: split {split!r} is an empty range; write it as FIRST-LAST with FIRST <= LAST")
        chosen = [n for n in numbers if first <= n <= last]
    else:
        raise ValueError(
            f"{dataset} has no official {split!r} split (it ships numbered frames only). Use split='train' for "
            f"every frame, a frame range such as split='1-100', or evaluate on another dataset with "
            f"SegDataModule(val_dataset=..., val_root=...)"
        )
    if not chosen:
        raise DatasetLayoutError(dataset, root, f"no frames of split {split!r} found", layout)
    return chosen
