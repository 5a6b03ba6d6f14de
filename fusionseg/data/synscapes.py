"""Synscapes (7D Labs / Linköping University): 25,000 rendered street scenes in Cityscapes' label convention.

Where the format facts come from:

* Layout, resolution, the class and instance PNG encodings: the dataset's page
  https://synscapes.on.liu.se/features.html ("img/class [1-25000].png ... img/instance ... img/rgb ...
  img/rgb-2k ... meta [1-25000].json"; "Class as single-channel PNG ... follows the Cityscapes convention";
  "The instance id can be found as R + G * 256 + B * 256^2"; native resolution 1440x720 in `img/rgb`,
  2048x1024 up-scaled images in `img/rgb-2k`).
* The instance -> class map `meta/<n>.json` -> `instance.class` (instance id as a string -> Cityscapes label id),
  and the label ids 24..33 of its classes: the dataset's own tools, github.com/7dlabs/synscapes-utils
  (`scripts/visualize-bbox.py`: `metadata['instance']['class'][inst]`, `class_id_to_str = {24: 'person', ...}`).
* Splits: the page lists no train/val split; the reader reads all frames for `split="train"` and a frame
  range such as `"24001-25000"` for a held-out part (see `fusionseg.data.frames`).

Not confirmed here: whether instance ids that are not in `meta/<n>.json` (e.g. the background value) ever
occur; the reader only takes the instances the JSON names, so other values are not instances either way.
The labels are stored at the native 1440x720, so the reader pairs them with `img/rgb` (not `img/rgb-2k`).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, require_dir, require_root, segments_target, semantic_target
from fusionseg.data.errors import CorruptFileError, DatasetLayoutError
from fusionseg.data.frames import frame_number, select_frames
from fusionseg.data.io import check_label_range, read_image, read_json, read_label, rgb_to_segment_ids
from fusionseg.data.labels.cityscapes import MAX_LABEL_ID, label_id_to_train_id
from fusionseg.data.labels.cityscapes_synthetic import synscapes_info, synscapes_instance_class
from fusionseg.structures import SegTarget

LAYOUT = """\
<root>/
  img/rgb/<n>.png          1440x720 RGB, n = 1..25000
  img/class/<n>.png        semantic: Cityscapes label ids 0..33 (single channel)
  img/instance/<n>.png     instance: id = R + 256 * G + 65536 * B
  meta/<n>.json            {"instance": {"class": {"<id>": <Cityscapes label id>, ...}, ...}, ...}
split: "train" (every frame; Synscapes has no official split) or a frame range "FIRST-LAST"
"""
UNLABELED_VALUE = 255  # a value some label PNGs use for "no label"; read as unlabeled, as Cityscapes' reader does


class SynscapesDataset(SegDataset):
    """Synscapes in its official layout, labels mapped to Cityscapes' train classes.

    semantic: `img/class` label ids -> the 19 train ids. instance: the instances named in `meta/<n>.json`
    whose class is one of Cityscapes' 8 evaluated thing classes, masks from `img/instance`.
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
        base = require_root(root, "synscapes", LAYOUT)
        self.root, self.split, self.info = base, split, synscapes_info(task)
        rgb_dir = require_dir(base / "img" / "rgb", "synscapes", root, LAYOUT, "images (img/rgb)")
        folder = "class" if task == "semantic" else "instance"
        self.label_dir = require_dir(base / "img" / folder, "synscapes", root, LAYOUT, f"labels (img/{folder})")
        if task == "instance":
            self.meta_dir = require_dir(base / "meta", "synscapes", root, LAYOUT, "per-image metadata (meta)")
        numbers = [n for n in map(frame_number, rgb_dir.glob("*.png")) if n is not None]
        if not numbers:
            raise DatasetLayoutError("synscapes", root, f"no <n>.png images under {rgb_dir}", LAYOUT)
        self.numbers = select_frames(numbers, split, "synscapes", root, LAYOUT)
        self.ids = [str(n) for n in self.numbers]
        self.train_id = label_id_to_train_id()
        self.instance_class = synscapes_instance_class()

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        frame = self.ids[index]
        image = read_image(self.root / "img" / "rgb" / f"{frame}.png")
        path = self.label_dir / f"{frame}.png"
        if self.task == "semantic":
            label = read_label(path)
            check_label_range(label, MAX_LABEL_ID, path, allowed=(UNLABELED_VALUE,))
            return image, semantic_target(self.train_id[label])
        instance_ids = rgb_to_segment_ids(read_label(path, rgb=True))
        meta_path = self.meta_dir / f"{frame}.json"
        classes = read_json(meta_path)
        try:
            by_id = classes["instance"]["class"]
            segments = [
                (int(inst), self.instance_class[int(label_id)], False)
                for inst, label_id in by_id.items()
                if int(label_id) in self.instance_class
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(meta_path, f"expected 'instance': {{'class': {{id: label id}}}} ({err!r})") from err
        return image, segments_target(instance_ids, segments)
