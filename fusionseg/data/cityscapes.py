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
  gtFine/cityscapes_panoptic_{train,val}.json + gtFine/cityscapes_panoptic_{train,val}/*_gtFine_panoptic.png
      (optional, as cityscapesScripts' createPanopticImgs.py writes them: label ids, or train ids in
      cityscapes_panoptic_<split>_trainId.json + folder with --use-train-id; used for panoptic when present)
"""
LICENSE_PLATE_VALUE = 255  # label id -1 (license plate) where a PNG stores it as 255; read as unlabeled
VOID_SEGMENT = -1  # the segment id given to the void pixels of instance targets


def cityscapes_image(image_dir: Path, image_id: str) -> Path:
    """`<image_dir>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` for an image id `<city>_<seq>_<frame>`.

    createPanopticImgs.py names the image `<id>_gtFine_leftImg8bit.png` in its JSON's `file_name`, a file
    the dataset does not have, so the path comes from the id.
    """
    return image_dir / image_id.rsplit("_", 2)[0] / f"{image_id}_leftImg8bit.png"


class CityscapesDataset(SegDataset):
    """Cityscapes in its official layout; `split` is "train", "val" or "test".

    semantic: `*_labelIds.png` mapped to the 19 train ids. instance: `*_instanceIds.png`, values >= 1000 are
    instances of class `value // 1000`; thing-class values < 1000 are group regions (kept as crowd);
    values < 1000 of classes the official evaluation ignores (unlabeled, caravan group, ...) form one void
    segment, a crowd segment labelled `IGNORE_INDEX` (Cityscapes' instance rules ignore predictions on it;
    the loss and COCO's rules leave it out).
    panoptic: the official panoptic JSON + PNGs when present, else built from `*_instanceIds.png` the way
    createPanopticImgs.py builds them (unlabeled pixels are VOID).
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
        # createPanopticImgs.py's two outputs: label ids as category ids (its default), or train ids.
        label_ids, train_ids = {r[1]: r[2] for r in TRAIN_LABELS}, {r[2]: r[2] for r in TRAIN_LABELS}
        for name, category_map in ((f"cityscapes_panoptic_{split}", label_ids),
                                   (f"cityscapes_panoptic_{split}_trainId", train_ids)):
            if task == "panoptic" and self.panoptic is None and (gt_dir / f"{name}.json").is_file():
                self.panoptic = PanopticAnnotations(
                    gt_dir / f"{name}.json", gt_dir / name,
                    lambda record: cityscapes_image(image_dir, str(record["id"])), category_map,
                )
        if self.panoptic is not None:
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
        segments: list[tuple[int, int, bool]] = []
        values = np.unique(ids).tolist()
        label_ids = [v // 1000 if v >= 1000 else v for v in values]
        bad = [v for v, lid in zip(values, label_ids) if lid > MAX_LABEL_ID and v != LICENSE_PLATE_VALUE]
        if bad:
            raise LabelRangeError(path, bad, f"label ids 0..{MAX_LABEL_ID}, or label id * 1000 + instance")
        # Ignored classes outside instances (license plate 255 too) are void, as the official evaluation reads them.
        void = [v for v, lid in zip(values, label_ids) if v < 1000 and self.train_id[lid] == IGNORE_INDEX]
        if self.task == "instance" and void:
            ids = np.where(np.isin(ids, void), VOID_SEGMENT, ids)
            segments.append((VOID_SEGMENT, IGNORE_INDEX, True))
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
