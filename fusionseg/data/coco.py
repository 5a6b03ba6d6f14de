"""COCO 2017: instance (80 things, polygons / RLE, crowd), panoptic (133 classes), semantic from panoptic."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, merge_by_class, require_dir, require_file, require_root
from fusionseg.data.coco_format import InstanceAnnotations, PanopticAnnotations
from fusionseg.data.errors import DatasetLayoutError
from fusionseg.data.io import read_image
from fusionseg.data.labels.coco import coco_categories, coco_info
from fusionseg.structures import SegTarget

LAYOUT = """\
<root>/
  {train,val}2017/*.jpg
  annotations/instances_{train,val}2017.json     instance: polygons / RLE, iscrowd
  annotations/panoptic_{train,val}2017.json      panoptic (semantic: its segments merged per class)
  panoptic_{train,val}2017/*.png                 RGB segment ids (annotations/panoptic_{train,val}2017/ also works)
"""


class COCODataset(SegDataset):
    """COCO in its official layout; `split` is "train" or "val" (the 2017 splits).

    instance: `instances_<split>2017.json`, the 80 thing categories as contiguous ids 0..79.
    panoptic: `panoptic_<split>2017.json` + PNGs, 133 categories (things first, then stuff).
    semantic: the panoptic annotations merged per class (133 classes).
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        task: str = "instance",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(task, transform, skip_corrupt)
        base = require_root(root, "coco", LAYOUT)
        self.root, self.split, self.info = base, split, coco_info(task)
        image_dir = require_dir(base / f"{split}2017", "coco", root, LAYOUT, f"{split} images")
        category_map = {cat[0]: i for i, cat in enumerate(coco_categories(task))}
        annotations = base / "annotations"

        def image_path(record: dict) -> Path:
            return image_dir / record["file_name"]

        self.panoptic: PanopticAnnotations | None = None
        self.instances: InstanceAnnotations | None = None
        if task == "instance":
            json_path = require_file(annotations / f"instances_{split}2017.json", "coco", root, LAYOUT, "instance JSON")
            self.instances = InstanceAnnotations(json_path, image_path, category_map)
            self.ids = [str(i) for i in self.instances.image_ids]
            self.images = self.instances.image_files
        else:
            json_path = require_file(annotations / f"panoptic_{split}2017.json", "coco", root, LAYOUT, "panoptic JSON")
            png_dir = base / f"panoptic_{split}2017"
            if not png_dir.is_dir() and (annotations / png_dir.name).is_dir():
                png_dir = annotations / png_dir.name
            require_dir(png_dir, "coco", root, LAYOUT, "panoptic PNG folder")
            self.panoptic = PanopticAnnotations(json_path, png_dir, image_path, category_map)
            self.ids = [r[0] for r in self.panoptic.records]
            self.images = [r[1] for r in self.panoptic.records]
        if not self.images:
            raise DatasetLayoutError("coco", root, f"{json_path} lists no images", LAYOUT)

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        image = read_image(self.images[index])
        if self.instances is not None:
            return image, self.instances.load_target(index)
        assert self.panoptic is not None
        target = self.panoptic.load_target(index)
        return image, merge_by_class(target) if self.task == "semantic" else target
