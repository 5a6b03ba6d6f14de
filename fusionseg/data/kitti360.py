"""KITTI-360 2D: instance (7 evaluated classes) and semantic (19 train ids), official train/val frame lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, require_file, require_root, segments_target, semantic_target
from fusionseg.data.errors import CorruptFileError, DatasetLayoutError, LabelRangeError
from fusionseg.data.io import check_label_range, read_image, read_label
from fusionseg.data.labels.kitti360 import (
    MAX_LABEL_ID,
    instance_void_ids,
    kitti360_info,
    semantic_id_to_instance_class,
    semantic_id_to_train_id,
)
from fusionseg.structures import IGNORE_INDEX, SegTarget

LAYOUT = """\
<root>/
  data_2d_raw/2013_05_28_drive_<seq>_sync/image_00/data_rect/<frame>.png
  data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt     lines: "<image path> <semantic path>"
  data_2d_semantics/train/2013_05_28_drive_<seq>_sync/image_00/semantic/<frame>.png   semantic ids
  data_2d_semantics/train/2013_05_28_drive_<seq>_sync/image_00/instance/<frame>.png   semanticId*1000 + instanceId
"""


class KITTI360Dataset(SegDataset):
    """KITTI-360 perspective images (camera 00) with 2D labels; `split` is "train" or "val".

    instance: `instance/` PNGs, classes building, person, rider, car, truck, motorcycle, bicycle (the
    official 2D instance evaluation's classes); values below 1000 of those classes are kept as crowd, those
    of the classes the evaluation ignores (`ignoreInInst`) form a void segment (crowd, `IGNORE_INDEX`).
    semantic: `semantic/` PNGs mapped to the 19 train ids.
    """

    tasks = ("semantic", "instance")

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        task: str = "instance",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(task, transform, skip_corrupt)
        base = require_root(root, "kitti360", LAYOUT)
        self.root, self.split, self.info = base, split, kitti360_info(task)
        frames = base / "data_2d_semantics" / "train" / f"2013_05_28_drive_{split}_frames.txt"
        require_file(frames, "kitti360", root, LAYOUT, f"{split} frame list")
        try:
            lines = [line.split() for line in frames.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise CorruptFileError(frames, f"{type(err).__name__}: {err}") from err
        if not lines or any(len(parts) < 2 for parts in lines):
            problem = f"{frames} must list '<image> <semantic label>' per line"
            raise DatasetLayoutError("kitti360", root, problem, LAYOUT)
        self.images = [base / parts[0] for parts in lines]
        folder = "instance" if task == "instance" else "semantic"
        self.labels = [base / Path(parts[1]).parent.parent / folder / Path(parts[1]).name for parts in lines]
        # "2013_05_28_drive_0000_sync/.../0000000250.png" -> "0000_0000000250", the benchmark's file naming
        self.ids = [f"{Path(p[0]).parts[-4].split('_')[-2]}_{Path(p[0]).stem}" for p in lines]
        self.train_id = semantic_id_to_train_id()
        self.instance_class = semantic_id_to_instance_class()
        self.void_ids = instance_void_ids()

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        image = read_image(self.images[index])
        path = self.labels[index]
        label = read_label(path)
        if self.task == "semantic":
            check_label_range(label, MAX_LABEL_ID, path)
            return image, semantic_target(self.train_id[label])
        values = np.unique(label).tolist()
        semantic_ids = [v // 1000 if v >= 1000 else v for v in values]
        bad = [v for v, s in zip(values, semantic_ids) if s > MAX_LABEL_ID]
        if bad:
            raise LabelRangeError(path, bad, f"semantic ids 0..{MAX_LABEL_ID}, or semantic id * 1000 + instance")
        segments = [
            (v, self.instance_class[s], v < 1000) for v, s in zip(values, semantic_ids) if s in self.instance_class
        ]
        target = segments_target(label, segments)
        # Void for the Cityscapes-style rules: a crowd segment labelled IGNORE_INDEX. A garage region (34) is
        # both void and a building group region, as in the official evaluation.
        void = torch.from_numpy(np.isin(label, self.void_ids))
        if not void.any():
            return image, target
        return image, SegTarget(
            torch.cat([target.masks, void[None]]), torch.cat([target.labels, torch.tensor([IGNORE_INDEX])]),
            torch.cat([target.iscrowd, torch.tensor([True])]),
        )
