"""ADE20K (SceneParsing ADEChallengeData2016): semantic PNGs, and Mask2Former's panoptic / instance files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, require_dir, require_file, require_root, semantic_target
from fusionseg.data.coco_format import InstanceAnnotations, PanopticAnnotations
from fusionseg.data.errors import DatasetLayoutError
from fusionseg.data.io import check_label_range, read_image, read_label
from fusionseg.data.labels.ade20k import ADE20K_CLASSES, ADE20K_THING_IDS, ade20k_info
from fusionseg.structures import IGNORE_INDEX, SegTarget

LAYOUT = """\
<root>/ADEChallengeData2016/          (or root pointing at ADEChallengeData2016 itself)
  images/{training,validation}/ADE_*.jpg
  annotations/{training,validation}/ADE_*.png       semantic: 0 = unlabeled, 1..150 = classes
  ade20k_panoptic_{train,val}.json                  panoptic (Mask2Former's prepare_ade20k_pan_seg.py)
  ade20k_panoptic_{train,val}/ADE_*.png
  ade20k_instance_{train,val}.json                  instance (Mask2Former's prepare_ade20k_ins_seg.py)
"""
SPLIT_DIRS = {"train": "training", "val": "validation"}
NUM_CLASSES = len(ADE20K_CLASSES)
# Semantic PNG value -> class id: value - 1, and 0 (unlabeled) -> IGNORE_INDEX.
PNG_TO_CLASS = np.arange(256, dtype=np.int64) - 1
PNG_TO_CLASS[0] = IGNORE_INDEX


class ADE20KDataset(SegDataset):
    """ADE20K in its official layout; `split` is "train" or "val".

    semantic: `annotations/` PNGs (class = value - 1, 0 -> ignore). panoptic: `ade20k_panoptic_<split>.json`
    and PNGs (category ids 0..149). instance: `ade20k_instance_<split>.json`, the 100 thing classes.
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
        if split not in SPLIT_DIRS:
            raise ValueError(f"ADE20K split must be one of {sorted(SPLIT_DIRS)}, got {split!r}")
        base = require_root(root, "ade20k", LAYOUT)
        if (base / "ADEChallengeData2016").is_dir():
            base = base / "ADEChallengeData2016"
        self.root, self.split, self.info = base, split, ade20k_info(task)
        image_dir = require_dir(base / "images" / SPLIT_DIRS[split], "ade20k", root, LAYOUT, f"{split} images")

        def image_path(record: dict) -> Path:
            return image_dir / record["file_name"]

        self.panoptic: PanopticAnnotations | None = None
        self.instances: InstanceAnnotations | None = None
        if task == "semantic":
            label_dir = require_dir(base / "annotations" / SPLIT_DIRS[split], "ade20k", root, LAYOUT, "annotations")
            self.images = sorted(image_dir.glob("*.jpg"))
            self.labels = [label_dir / f"{p.stem}.png" for p in self.images]
            self.ids = [p.stem for p in self.images]
        elif task == "panoptic":
            json_path = require_file(base / f"ade20k_panoptic_{split}.json", "ade20k", root, LAYOUT, "panoptic JSON")
            png_dir = require_dir(base / f"ade20k_panoptic_{split}", "ade20k", root, LAYOUT, "panoptic PNG folder")
            self.panoptic = PanopticAnnotations(json_path, png_dir, image_path, {i: i for i in range(NUM_CLASSES)})
            self.ids = [r[0] for r in self.panoptic.records]
            self.images = [r[1] for r in self.panoptic.records]
        else:
            json_path = require_file(base / f"ade20k_instance_{split}.json", "ade20k", root, LAYOUT, "instance JSON")
            # The instance JSON uses the 150-class ids of the things; the instance task numbers them 0..99.
            category_map = {class_id: i for i, class_id in enumerate(ADE20K_THING_IDS)}
            self.instances = InstanceAnnotations(json_path, image_path, category_map)
            self.ids = [str(i) for i in self.instances.image_ids]
            self.images = self.instances.image_files
        if not self.images:
            raise DatasetLayoutError("ade20k", root, f"no {split} images found under {image_dir}", LAYOUT)

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        image = read_image(self.images[index])
        if self.panoptic is not None:
            return image, self.panoptic.load_target(index)
        if self.instances is not None:
            return image, self.instances.load_target(index)
        label = read_label(self.labels[index])
        check_label_range(label, NUM_CLASSES, self.labels[index])
        return image, semantic_target(PNG_TO_CLASS[label])

