"""COCO-format annotations, shared by COCO, ADE20K and Cityscapes: instance JSON and panoptic JSON + PNGs."""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionseg.data.base import segments_target
from fusionseg.data.errors import CorruptFileError, LabelRangeError
from fusionseg.data.io import read_json, read_label, rgb_to_segment_ids
from fusionseg.structures import SegTarget

ImagePath = Callable[[Mapping[str, Any]], Path]  # an entry of the JSON's "images" -> the image file

log = logging.getLogger(__name__)


def degenerate_reason(segmentation: Any) -> str | None:
    """Why an annotation's polygons give no mask ("an empty polygon list", "polygons of fewer than 3 points"),
    or None when it has one (RLE, or at least one polygon of 3 points or more)."""
    if not isinstance(segmentation, list):
        return None
    if not segmentation:
        return "an empty polygon list"
    if all(len(p) < 6 for p in segmentation):
        return "polygons of fewer than 3 points"
    return None


def _check_categories(json_path: Path, used: set[int], category_map: Mapping[int, int]) -> None:
    unknown = used - set(category_map)
    if unknown:
        known = sorted(category_map)
        raise LabelRangeError(json_path, unknown, f"the category ids {known[0]}..{known[-1]} of the dataset's table")


class PanopticAnnotations:
    """A COCO panoptic JSON (`segments_info` per image) and its PNG folder (RGB-encoded segment ids)."""

    def __init__(self, json_path: Path, png_dir: Path, image_path: ImagePath, category_map: Mapping[int, int]):
        data = read_json(json_path)
        images = {img["id"]: img for img in data.get("images", [])}
        self.json_path, self.png_dir, self.category_map = json_path, png_dir, category_map
        self.records: list[tuple[str, Path, Path, list[dict[str, Any]]]] = []
        used: set[int] = set()
        for ann in data.get("annotations", []):
            if ann["image_id"] not in images:
                raise LabelRangeError(json_path, [], f"image ids listed under 'images' (missing {ann['image_id']!r})")
            segments = ann.get("segments_info", [])
            used.update(s["category_id"] for s in segments)
            image_file = image_path(images[ann["image_id"]])
            self.records.append((str(ann["image_id"]), image_file, png_dir / ann["file_name"], segments))
        _check_categories(json_path, used, category_map)

    def __len__(self) -> int:
        return len(self.records)

    def load_target(self, index: int) -> SegTarget:
        _, _, png_path, segments = self.records[index]
        ids = rgb_to_segment_ids(read_label(png_path, rgb=True))
        listed = {s["id"] for s in segments}
        present = set(np.unique(ids).tolist()) - {0}
        if present - listed:
            raise LabelRangeError(png_path, present - listed, f"the segment ids listed for it in {self.json_path}")
        triples = [(s["id"], self.category_map[s["category_id"]], bool(s.get("iscrowd", 0))) for s in segments]
        return segments_target(ids, triples)


class InstanceAnnotations:
    """A COCO instance JSON read with pycocotools: polygons, RLE and uncompressed RLE; crowd regions kept."""

    def __init__(self, json_path: Path, image_path: ImagePath, category_map: Mapping[int, int]):
        from pycocotools.coco import COCO

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(json_path))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CorruptFileError(json_path, f"not a COCO instance annotation file ({type(err).__name__}: {err})")
        self.json_path, self.category_map = json_path, category_map
        self.image_ids = sorted(self.coco.imgs)
        self.image_files = [image_path(self.coco.imgs[i]) for i in self.image_ids]
        _check_categories(json_path, {a["category_id"] for a in self.coco.anns.values()}, category_map)
        # Annotations with no area are skipped when read; count them now, so the skip is not silent.
        reasons = (degenerate_reason(a.get("segmentation")) for a in self.coco.anns.values())
        self.dropped_annotations: Counter[str] = Counter(r for r in reasons if r is not None)
        if self.dropped_annotations:
            counts = ", ".join(f"{n} with {why}" for why, n in sorted(self.dropped_annotations.items()))
            log.warning(f"{json_path}: skipping {sum(self.dropped_annotations.values())} of {len(self.coco.anns)} "
                        f"annotations that have no area ({counts})")

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_target(self, index: int) -> SegTarget:
        image = self.coco.imgs[self.image_ids[index]]
        h, w = int(image["height"]), int(image["width"])
        masks, labels, crowd = [], [], []
        for ann in self.coco.imgToAnns.get(self.image_ids[index], []):
            segm = ann.get("segmentation")
            if isinstance(segm, list):  # polygons: ones with fewer than 3 points have no area
                segm = [p for p in segm if len(p) >= 6]
                if not segm:
                    continue
                ann = {**ann, "segmentation": segm}
            try:
                mask = self.coco.annToMask(ann)
            except Exception as err:  # pycocotools raises bare Exceptions for malformed segmentations
                raise CorruptFileError(self.json_path, f"annotation {ann.get('id')} has an invalid segmentation: {err}")
            if mask.shape != (h, w):
                message = f"annotation {ann.get('id')}: mask {mask.shape} != image {(h, w)}"
                raise CorruptFileError(self.json_path, message)
            masks.append(torch.from_numpy(mask.astype(bool)))
            labels.append(self.category_map[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
        if not masks:
            return SegTarget(torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0, dtype=torch.long))
        stacked = torch.stack(masks)
        keep = stacked.flatten(1).any(1)
        return SegTarget(
            masks=stacked[keep],
            labels=torch.tensor(labels, dtype=torch.long)[keep],
            iscrowd=torch.tensor(crowd, dtype=torch.bool)[keep],
        )
