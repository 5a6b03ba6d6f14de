"""UrbanSyn (huggingface.co/datasets/UrbanSyn/UrbanSyn): 7,539 rendered street scenes with Cityscapes' classes.

Where the format facts come from:

* Folders `rgb/`, `ss/`, `ss_color/`, `panoptic/`, `depth/`, `bbox2d/`: the dataset repository's file tree on
  Hugging Face. The README ("Folder structure and content"): `rgb` holds 2048x1024 PNG images; `ss` the
  semantic labels in grayscale "(value = Class ID)", following "the 19 training classes defined on
  Cityscapes" (a table of name / trainId / colour), i.e. Cityscapes train ids 0..18.
* File names `rgb/rgb_<n>.png`, `ss/ss_<n>.png`, `depth/depth_<n>.exr` (zero-padded numbers such as `0001`):
  the Hugging Face file pages (e.g. `rgb/rgb_0043.png`) and readers of the repository that list it.

Not confirmed here (the README section that describes `panoptic/` could not be read):
* the name of the panoptic files; the reader takes the file in `panoptic/` whose name ends in `_<n>.png`
  (`panoptic_<n>.png` by the pattern of the other folders);
* how a panoptic PNG encodes an instance. The reader relies only on each instance having its own value
  (RGB colour, or the value of a single-channel PNG, 0 / black = none) and takes each instance's class from
  `ss/` (the train id that covers most of its pixels). This does not depend on which channels hold the
  instance number or the class, and a segment whose majority class is not one of the 8 things is skipped;
* the value of unlabeled pixels in `ss/`: every value outside 0..18 is read as unlabeled.
UrbanSyn has no official train/val split: `split="train"` reads every frame, `"FIRST-LAST"` a frame range.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, require_dir, require_root, segments_target, semantic_target
from fusionseg.data.errors import CorruptFileError, DatasetLayoutError
from fusionseg.data.frames import frame_number, select_frames
from fusionseg.data.io import read_image, read_label, rgb_to_segment_ids
from fusionseg.data.labels.cityscapes_synthetic import (
    train_id_to_instance_class,
    train_id_to_train_id,
    urbansyn_info,
)
from fusionseg.structures import SegTarget

LAYOUT = """\
<root>/
  rgb/rgb_<n>.png              2048x1024 RGB, n zero-padded (0001, 0002, ...)
  ss/ss_<n>.png                semantic: Cityscapes train ids 0..18 (single channel); other values unlabeled
  panoptic/panoptic_<n>.png    instance: one colour (or value) per instance, 0 = none
split: "train" (every frame; UrbanSyn has no official split) or a frame range "FIRST-LAST"
"""
_NUMBERED = re.compile(r"_(\d+)\.png$")


def _numbered_files(folder: Path) -> dict[int, Path]:
    """`<anything>_<n>.png` files of `folder` by frame number."""
    files = {}
    for path in folder.glob("*.png"):
        match = _NUMBERED.search(path.name)
        if match:
            files[int(match.group(1))] = path
    return files


def instance_segments(instance_ids: np.ndarray, semantic: np.ndarray, instance_class: dict[int, int]) -> list:
    """`(instance id, instance class, iscrowd)` per instance: the class is the train id under most of its pixels."""
    ids = instance_ids.astype(np.int64).ravel()
    sem = semantic.astype(np.int64).ravel()
    keys, counts = np.unique(ids[ids != 0] * 256 + sem[ids != 0], return_counts=True)  # train ids are < 256
    if keys.size == 0:
        return []
    segment, train_id = np.divmod(keys, 256)
    # Largest count first within each segment, so the first row of a segment is its majority class.
    order = np.lexsort((-counts, segment))
    segment, train_id = segment[order], train_id[order]
    first = np.concatenate([[True], segment[1:] != segment[:-1]])
    return [
        (int(s), instance_class[int(t)], False)
        for s, t in zip(segment[first], train_id[first])
        if int(t) in instance_class
    ]


def read_instance_ids(path: Path) -> np.ndarray:
    """Instance ids of a panoptic PNG: `R + 256 G + 65536 B` of an RGB(A) file, the values of a single-channel one."""
    try:
        with Image.open(path) as im:
            mode = im.mode
    except (OSError, ValueError, SyntaxError) as err:
        raise CorruptFileError(path, f"{type(err).__name__}: {err}") from err
    if mode in ("RGB", "RGBA"):
        return rgb_to_segment_ids(read_label(path, rgb=True))
    return read_label(path).astype(np.int64)


class UrbanSynDataset(SegDataset):
    """UrbanSyn in its Hugging Face layout, labels in Cityscapes' train classes.

    semantic: `ss/` train ids (19 classes). instance: the instances of `panoptic/` whose majority class in
    `ss/` is one of Cityscapes' 8 thing classes (person .. bicycle).
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
        base = require_root(root, "urbansyn", LAYOUT)
        self.root, self.split, self.info = base, split, urbansyn_info(task)
        rgb_dir = require_dir(base / "rgb", "urbansyn", root, LAYOUT, "images (rgb)")
        ss_dir = require_dir(base / "ss", "urbansyn", root, LAYOUT, "semantic labels (ss)")
        images = {n: p for p in rgb_dir.glob("rgb_*.png") if (n := frame_number(p, "rgb_")) is not None}
        if not images:
            raise DatasetLayoutError("urbansyn", root, f"no rgb_<n>.png images under {rgb_dir}", LAYOUT)
        self.numbers = select_frames(images.keys(), split, "urbansyn", root, LAYOUT)
        self.images = [images[n] for n in self.numbers]
        self.ids = [p.stem[len("rgb_"):] for p in self.images]  # "0001": the dataset's own numbering
        self.semantic = [ss_dir / f"ss_{i}.png" for i in self.ids]
        self.panoptic: list[Path] = []
        if task == "instance":
            panoptic_dir = require_dir(base / "panoptic", "urbansyn", root, LAYOUT, "instance labels (panoptic)")
            found = _numbered_files(panoptic_dir)
            missing = [i for i, n in zip(self.ids, self.numbers) if n not in found]
            if missing:
                problem = f"no panoptic/*_<n>.png for frames {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                raise DatasetLayoutError("urbansyn", root, problem, LAYOUT)
            self.panoptic = [found[n] for n in self.numbers]
        self.train_id = train_id_to_train_id()
        self.instance_class = train_id_to_instance_class()

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        image = read_image(self.images[index])
        label = read_label(self.semantic[index])
        # Values above 255 (a 16-bit PNG) are outside 0..18 as well: unlabeled.
        semantic = self.train_id[np.minimum(label, 255)]
        if self.task == "semantic":
            return image, semantic_target(semantic)
        instance_ids = read_instance_ids(self.panoptic[index])
        return image, segments_target(instance_ids, instance_segments(instance_ids, semantic, self.instance_class))
