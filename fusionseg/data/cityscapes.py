"""Cityscapes (fine annotations): semantic with the 19 train ids, instance (8 thing classes), panoptic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, require_dir, require_root, segments_target, semantic_target
from fusionseg.data.coco_format import PanopticAnnotations
from fusionseg.data.errors import DatasetLayoutError, LabelRangeError
from fusionseg.data.io import check_label_range, read_image, read_label
from fusionseg.data.labels.cityscapes import (
    MAX_LABEL_ID,
    THING_LABEL_IDS,
    TRAIN_LABELS,
    cityscapes_info,
    label_id_to_instance_class,
    label_id_to_train_id,
)
from fusionseg.structures import IGNORE_INDEX, SegTarget

LAYOUT = """\
<root>/
  leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      semantic: label ids 0..33
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   instance/panoptic: id*1000+k
  gtFine/cityscapes_panoptic_{train,val}.json + gtFine/cityscapes_panoptic_{train,val}/*_panoptic.png
      (optional, cityscapesScripts' createPanopticImgs.py; used for panoptic when present)
"""
LICENSE_PLATE_VALUE = 255  # label id -1 (license plate) where a PNG stores it as 255; read as unlabeled


class CityscapesDataset(SegDataset):
    """Cityscapes in its official layout; `split` is "train", "val" or "test".

    semantic: `*_labelIds.png` mapped to the 19 train ids. instance: `*_instanceIds.png`, values >= 1000 are
    instances of class `value // 1000`; thing-class values < 1000 are group regions (kept as crowd).
    panoptic: the official panoptic JSON + PNGs when present, else built from `*_instanceIds.png`.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        task: str = "semantic",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(task, transform, skip_corrupt)
        base = require_root(root, "cityscapes", LAYOUT)
        self.root, self.split, self.info = base, split, cityscapes_info(task)
        image_dir = require_dir(base / "leftImg8bit" / split, "cityscapes", root, LAYOUT, f"{split} images")
        gt_dir = base / "gtFine"
        self.train_id = label_id_to_train_id()
        self.instance_class = label_id_to_instance_class()
        self.panoptic: PanopticAnnotations | None = None
        panoptic_json = gt_dir / f"cityscapes_panoptic_{split}.json"
        if task == "panoptic" and panoptic_json.is_file():
            category_map = {r[1]: r[2] for r in TRAIN_LABELS}
            self.panoptic = PanopticAnnotations(
                panoptic_json,
                gt_dir / f"cityscapes_panoptic_{split}",
                lambda rec: image_dir / rec["id"].split("_")[0] / rec["file_name"],
                category_map,
            )
            self.ids = [r[0] for r in self.panoptic.records]
            self.images = [r[1] for r in self.panoptic.records]
        else:
            require_dir(gt_dir / split, "cityscapes", root, LAYOUT, f"{split} annotations (gtFine/{split})")
            self.images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
            self.ids = [p.name[: -len("_leftImg8bit.png")] for p in self.images]
            suffix = "labelIds" if task == "semantic" else "instanceIds"
            self.labels = [
                gt_dir / split / p.parent.name / f"{i}_gtFine_{suffix}.png" for p, i in zip(self.images, self.ids)
            ]
        if not self.images:
            raise DatasetLayoutError("cityscapes", root, f"no *_leftImg8bit.png images under {image_dir}", LAYOUT)

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        image = read_image(self.images[index])
        if self.panoptic is not None:
            return image, self.panoptic.load_target(index)
        path = self.labels[index]
        label = read_label(path)
        if self.task == "semantic":
            check_label_range(label, MAX_LABEL_ID, path, allowed=(LICENSE_PLATE_VALUE,))
            return image, semantic_target(self.train_id[label])
        return image, self._segments(label, path)

    def _segments(self, ids: np.ndarray, path: Path) -> SegTarget:
        segments = []
        values = np.unique(ids).tolist()
        label_ids = [v // 1000 if v >= 1000 else v for v in values]
        bad = [v for v, lid in zip(values, label_ids) if lid > MAX_LABEL_ID and v != LICENSE_PLATE_VALUE]
        if bad:
            raise LabelRangeError(path, bad, f"label ids 0..{MAX_LABEL_ID}, or label id * 1000 + instance")
        for value, label_id in zip(values, label_ids):
            if value == LICENSE_PLATE_VALUE:
                continue
            is_instance = value >= 1000
            if self.task == "instance":
                if label_id in self.instance_class:
                    segments.append((value, self.instance_class[label_id], not is_instance))
                continue
            train_id = int(self.train_id[label_id])
            if train_id != IGNORE_INDEX:
                segments.append((value, train_id, label_id in THING_LABEL_IDS and not is_instance))
        return segments_target(ids, segments)
